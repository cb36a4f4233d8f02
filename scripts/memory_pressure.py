"""Real memory pressure: a session and a memory hog in one memory-limited cgroup.

    python scripts/memory_pressure.py [--model M] [--budget 8192] [--limit auto] [--guard on|off|both]
                                      [--out runs/pressure]

What a user in a container meets: the session fills its heap, then a
second process in the same cgroup allocates (16 MiB a second) past
what the cgroup can hold with the full heap, holds it, and frees it. With
the guard on, the session samples the real probe (mlx_kv.system, which reads
the cgroup's limit, usage and pressure) every half second, between decode
steps and prefill chunks, as the app's engine thread does, and the guard
tightens the heap; with it off (the control) nothing does. Both runs report
whether the kernel's OOM killer killed anyone, the session's answers, and a
trace (JSON lines in --out, a table on stdout).

--limit auto measures the session alone first (what it holds with a full
heap: the cgroup's usage less reclaimable file pages) and sets the limit
400 MiB above it; each run sets the hog's target once its heap is full (the
limit less the group's usage then, plus half the heap), so that it fits
only if the heap gives back at least half of itself. Needs root and a cgroup hierarchy
with the memory controller (tests/cgroups.py; v1 or v2).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
MiB = 1 << 20


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


# -- the two processes inside the cgroup ------------------------------------------------

def run_session(args: argparse.Namespace) -> int:
    import mlx.core as mx
    import psutil

    from mlx_kv.engine import Session
    from mlx_kv.system import SystemProbe
    from mlx_kv.tasks import filler_text

    probe, me = SystemProbe(), psutil.Process()
    started = time.monotonic()
    session = Session.load(args.model, budget=args.budget, policy="h2o")
    last = [0.0]

    def tick(phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - last[0] < 0.5:
            return
        last[0] = now
        sample = probe.sample()
        note = session.observe_system(sample) if args.guard == "on" else None
        group = sample.raw.get("cgroup") or {}
        emit({"role": "session", "t": round(now - started, 2), "phase": phase, "pressure": sample.pressure,
              "cgroup_mb": round(group.get("usage", 0) / MiB, 1),
              "used_mb": round((sample.ram_used or 0) / MiB, 1), "limit_mb": round(group.get("limit", 0) / MiB, 1),
              "rss_mb": round(me.memory_info().rss / MiB, 1), "mlx_cache_mb": round(mx.get_cache_memory() / MiB, 1),
              "heap_mb": round(session.heap_stats().nbytes / MiB, 1), "budget": session.cache[0].budget,
              "tokens": session.tokens_seen, "note": note})

    words = int(args.budget * 0.9)  # ~1.2 tokens per filler word: the heap fills and starts evicting
    session.ingest(filler_text(words, 1), progress=lambda p: tick("fill"))
    tick("ready", force=True)
    print("READY", flush=True)
    answers = 0
    end = time.monotonic() + args.seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        for _ in session.chat(f"Question {i}: what is the special magic number for apple ?", max_tokens=8):
            tick("chat")
        answers += 1
        if i % 4 == 0:  # more text keeps the heap at its budget (and lets a relaxed budget fill again)
            session.ingest(filler_text(100, i), progress=lambda p: tick("ingest"))
        tick("chat")
    emit({"role": "session", "done": True, "answers": answers, "t": round(time.monotonic() - started, 2)})
    return 0


def run_hog(args: argparse.Namespace) -> int:
    import numpy as np

    held = []
    started = time.monotonic()
    while len(held) * 16 < args.hog_mb:
        held.append(np.ones(16 * MiB // 8))  # touched: resident, charged to the cgroup
        emit({"role": "hog", "t": round(time.monotonic() - started, 2), "held_mb": len(held) * 16})
        time.sleep(args.hog_step_s)
    time.sleep(args.hold)
    held.clear()
    emit({"role": "hog", "t": round(time.monotonic() - started, 2), "held_mb": 0, "freed": True})
    time.sleep(3600)
    return 0


# -- the parent -----------------------------------------------------------------------

def child(role: str, args: argparse.Namespace, group, log) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--budget", str(args.budget), "--guard", args.guard_run,
           "--seconds", str(args.seconds), "--hog-mb", str(args.hog_mb), "--hold", str(args.hold),
           "--hog-step-s", str(args.hog_step_s)]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ, MLX_KV_OPENBLAS="0")
    return group.spawn(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def scenario(args: argparse.Namespace, guard: str, limit: int, heap_mb: float, out: Path) -> dict:
    """One run; the hog's target is set once the heap is full, from what the
    group holds then: the limit plus half the heap, so that only a heap that
    gives back at least half of itself lets both fit."""
    from cgroups import limited_cgroup, why_not

    args.guard_run = guard
    group = limited_cgroup(f"mlx-kv-pressure-{guard}", limit)
    if group is None:
        raise SystemExit(f"memory_pressure: {why_not}")
    log_path = out / f"guard_{guard}.jsonl"
    with open(log_path, "w") as log:
        session = child("session", args, group, log)
        hog = hog_mb = at_ready = None
        try:
            while session.poll() is None and "READY" not in log_path.read_text():
                time.sleep(0.5)
            peak_before = _peak(group)
            at_ready = _usage(group)
            hog_mb = args.hog_mb = int(limit / MiB - at_ready + heap_mb / 2)
            if session.poll() is None:
                hog = child("hog", args, group, log)
            session.wait(timeout=args.seconds + 600)
        finally:
            events = group.events()
            if hog is not None:
                hog.kill()
            session.kill() if session.poll() is None else None
            group.remove()
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    done = next((r for r in records if r.get("done")), None)
    return {"guard": guard, "limit_mb": round(limit / MiB), "hog_target_mb": hog_mb,
            "session_exit": session.returncode, "session_finished": done is not None,
            "answers": done["answers"] if done else None, "oom_kills": events.get("oom_kill"),
            "limit_hits": events.get("max"), "peak_before_hog_mb": peak_before, "usage_at_ready_mb": at_ready,
            "records": records,
            "log": str(log_path)}


def _usage(group) -> float:
    for name in ("memory.usage_in_bytes", "memory.current"):
        try:
            return round(int(group.read(name)) / MiB, 1)
        except (OSError, ValueError):
            continue
    raise SystemExit("memory_pressure: cannot read the cgroup's usage")


def _peak(group) -> float | None:
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        try:
            return round(int(group.read(name)) / MiB, 1)
        except (OSError, ValueError):
            continue
    return None


def measure_alone(args: argparse.Namespace, out: Path) -> float:
    """The cgroup's peak usage for the session alone with a full heap (no hog, no limit to speak of)."""
    from cgroups import limited_cgroup, why_not

    args.guard_run, args.hog_mb = "off", 0
    group = limited_cgroup("mlx-kv-pressure-alone", 64 << 30)
    if group is None:
        raise SystemExit(f"memory_pressure: {why_not}")
    log_path = out / "alone.jsonl"
    saved = args.seconds
    args.seconds = 20
    try:
        with open(log_path, "w") as log:
            child("session", args, group, log).wait(timeout=1200)
        return _peak(group)
    finally:
        args.seconds = saved
        group.remove()


def table(result: dict) -> str:
    rows = ["| t (s) | hog MiB | cgroup MiB | pressure | heap budget (tokens/layer) | heap MiB | event |",
            "|---|---|---|---|---|---|---|"]
    hog = 0
    for r in result["records"]:
        if r.get("role") == "hog":
            hog = r["held_mb"]
            continue
        if r.get("role") != "session" or r.get("done") or r.get("phase") == "fill":
            continue
        if r.get("note") or r.get("phase") == "ready" or (hog and int(r["t"] * 2) % 10 == 0):
            rows.append(f"| {r['t']} | {hog} | {r['cgroup_mb']} | {r['pressure']} | {r['budget']} | {r['heap_mb']} | "
                        f"{r.get('note') or r['phase']} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["parent", "session", "hog"], default="parent")
    parser.add_argument("--model", default=None)
    parser.add_argument("--budget", type=int, default=8192)
    parser.add_argument("--limit", default="auto", help="bytes (e.g. 1800MiB), or auto")
    parser.add_argument("--guard", default="both", help="on, off or both (parent); on/off (session)")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the session chats once its heap is full")
    parser.add_argument("--hog-mb", type=int, default=0, help="(hog) what it allocates; the parent sizes it")
    parser.add_argument("--hold", type=float, default=25.0, help="seconds the hog holds its memory")
    parser.add_argument("--hog-step-s", type=float, default=1.0, help="seconds between the hog's 16 MiB steps")
    parser.add_argument("--heap-mb", type=float, default=0.0,
                        help="with --limit: the full heap's size from an earlier run, which skips the run alone")
    parser.add_argument("--out", default="runs/pressure")
    args = parser.parse_args()
    if args.role == "session":
        return run_session(args)
    if args.role == "hog":
        return run_hog(args)
    # a plain kill (or ^C of a background run, where SIGINT is ignored) still removes the cgroups and their processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from mlx_kv.sizes import parse_bytes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.limit != "auto" and args.heap_mb:  # a repeat of an earlier measurement: no run alone
        alone, records, heap = None, [], args.heap_mb
    else:
        alone = measure_alone(args, out)
        records = [json.loads(line) for line in (out / "alone.jsonl").read_text().splitlines() if line.startswith("{")]
        heap = max(r.get("heap_mb", 0) for r in records if r.get("role") == "session")
    # what the session itself holds (the cgroup's usage less its reclaimable file pages, as the probe counts it);
    # the cgroup's peak also counts the page cache of reading the model, which the kernel drops before any kill
    used = max((r.get("used_mb", 0) for r in records if r.get("role") == "session"), default=None)
    # the limit: the session alone plus a hog that fits only if the heap gives back half of itself
    limit = parse_bytes(args.limit, "limit") if args.limit != "auto" else int((used + 400) * MiB)
    summary = {"session_alone_peak_mb": alone, "session_alone_used_mb": used, "full_heap_mb": heap,
               "limit_mb": round(limit / MiB),
               "hog_target": "limit - usage once the heap is full + full_heap_mb / 2"}
    emit(summary)
    results = []
    for guard in (["on", "off"] if args.guard == "both" else [args.guard]):
        result = scenario(args, guard, limit, heap, out)
        results.append(result)
        emit({k: v for k, v in result.items() if k != "records"})
        print(table(result), flush=True)
    (out / "summary.json").write_text(json.dumps({**summary, "runs": [{k: v for k, v in r.items() if k != "records"}
                                                                       for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
