"""Kill -9 study: every syscall of a save, and many random moments, for each writer of user data.

    python scripts/crash_study.py [--random 40] [--targets session,store,convert] [--out runs/crash/study.jsonl]

What tests/test_kill_during_save.py samples for CI, in full: a calibration
run lists every file-changing syscall of one save (session file, the app's
SQLite store with its snapshot, a GGUF conversion); a child is killed just
before each of them (strace), then `--random` more times at random moments;
after every kill the data is loaded as the next start would load it
(tests/crash_harness.py). Prints one JSON line per kill and a Markdown
table: kills, which save loaded, acknowledged saves byte-identical,
acknowledged saves lost or changed, leftovers and whether the next save removed them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crash_harness import (_hashes, calibrate, check_convert, check_session, check_store,  # noqa: E402
                           convert_problems, have_strace, run_child, session_problems, spread, store_problems)


def study(target: str, work: Path, model_dir: Path, gguf: Path, loaded: tuple, n_random: int, rng: random.Random,
          emit, n_points: int = 0) -> list[dict]:
    if target == "session":
        where, check, problems = work / "saves" / "s.session", \
            lambda o: check_session(work / "saves" / "s.session", o, *loaded), session_problems
        a, b, delays, markers = model_dir, where, (0.0, 0.3), {}
    elif target == "store":
        where, check, problems = work / "data", lambda o: check_store(work / "data", o, *loaded), store_problems
        a, b, delays, markers = model_dir, where, (0.0, 0.3), {}
    else:
        from mlx_kv.gguf import convert_gguf

        out = work / "models" / "out"
        out.parent.mkdir(parents=True)
        reference = _hashes(convert_gguf(gguf, work / "reference"))
        where, check = out, lambda o: check_convert(gguf, out, o, reference)
        problems = lambda r: convert_problems(r, finished_ok=r["point"] == "random")  # noqa: E731
        a, b, delays, markers = gguf, out, (0.0, 1.0), {"first": "saved 0 ", "last": "converted", "stop": None}
    records = []
    points = calibrate(target, a, b, **markers) if have_strace() else []
    if n_points:
        points = spread(points, n_points)
    if target == "convert" and out.exists():
        shutil.rmtree(out)
    runs = [("point", p) for p in points] + [("random", rng.uniform(*delays)) for _ in range(n_random)]
    for kind, arg in runs:
        outcome = run_child(target, a, b, inject=arg) if kind == "point" else run_child(target, a, b, kill_after=arg)
        r = check(outcome)
        r.update(target=target, kind=kind, problems=problems(r), landed=(outcome.acked == 1) if kind == "point"
                 and target != "convert" else None)
        records.append(r)
        emit(r)
    return records


def table(records: list[dict]) -> str:
    lines = ["| target | kills | at a syscall / random | loaded: last acknowledged / the one in flight | "
             "acknowledged byte-identical | acknowledged saves lost or changed | left litter / removed by the next save | problems |",
             "|---|---|---|---|---|---|---|---|"]
    for target in ("session", "store", "convert"):
        rs = [r for r in records if r["target"] == target]
        if not rs:
            continue
        kinds = Counter(r["kind"] for r in rs)
        killed = sum(r["killed"] for r in rs)
        if target == "convert":
            loaded = f"nothing {sum(not r['present'] for r in rs)} / whole model {sum(bool(r['complete']) for r in rs)}"
            exact = "-"
        else:
            loaded = f"{sum(r['loaded'] == r['acked'] for r in rs)} / {sum(r['loaded'] == r['acked'] + 1 for r in rs)}"
            exact = f"{sum(r['exact'] is True for r in rs)} of {sum(r['loaded'] == r['acked'] for r in rs)}"
        lost = sum(1 for r in rs if r.get("exact") is False or r.get("complete") is False
                   or ("loaded" in r and r["loaded"] < r["acked"]))
        litter = sum(1 for r in rs if r["litter"])
        removed = sum(1 for r in rs if r["litter"] and not any(p.startswith("the next") for p in r["problems"]))
        problems = sum(1 for r in rs if r["problems"])
        lines.append(f"| {target} | {killed} of {len(rs)} | {kinds['point']} / {kinds['random']} | {loaded} | "
                     f"{exact} | {lost} | {litter} / {removed} | {problems} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=40, help="random-moment kills per target")
    parser.add_argument("--targets", default="session,store,convert")
    parser.add_argument("--points", type=int, default=0, help="kill points per target, spread over a save (0: all)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = open(args.out, "w") if args.out else None

    def emit(record: dict) -> None:
        line = json.dumps(record, default=str)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    from conftest import build_model, write_model_folder
    from gguf_files import byte_level_tokenizer_metadata, llama_gguf
    from mlx_kv.models import load_model

    rng = random.Random(args.seed)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mlx-kv-crash-") as tmp:
        work = Path(tmp)
        model_dir = write_model_folder(work / "model")
        meta, _ = byte_level_tokenizer_metadata(["The quick brown fox jumps over the lazy dog. " * 20])
        gguf = work / "tiny.gguf"
        llama_gguf(gguf, build_model("llama", vocab_size=len(meta["tokenizer.ggml.tokens"])), meta)
        model, tokenizer, _ = load_model(str(model_dir))
        for target in args.targets.split(","):
            (work / target).mkdir()
            records += study(target, work / target, model_dir, gguf, (model, tokenizer), args.random, rng, emit,
                             args.points)
    print(table(records))
    missed = [r for r in records if r.get("landed") is False]
    print(f"kill points that landed outside the aimed save: {len(missed)}")
    return 1 if any(r["problems"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
