"""Soak: hours of chat in one process; memory must stay flat and every save must resume exactly.

    python scripts/soak.py [--model M] [--tokens 50000] [--budget 1024] [--out runs/soak/x.jsonl]

Each cycle ingests a document, asks two questions, saves the session,
restores the save into a second session on the same model, and then asks
both sessions the same next question: the restored one must answer with the
same tokens, or the save lost something. The cycle goes on with the restored
session, so every later cycle runs on state that went through a file.

Why this and not a unit test: leaks and drift show only over many cycles
of a real model (here ~10 minutes per 10k tokens on a busy CPU). Prints (and
with --out also writes) one JSON line per cycle (tokens seen, RSS, MLX active
memory, heap bytes, whether the restore answered alike) and a summary;
exits non-zero if RSS grew more than --max-growth percent between the cycle
that reached 25% of the tokens and the last (the first cycles pay for
warm-up: allocator pools grow in steps before they settle), if the heap's
bytes changed once it was full, or if any restore answered differently.
MLX's buffer cache is never cleared by hand: the app does not do it either.
The transcript grows with the session (it is the user's data), a few
hundred KB per 100k tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

import mlx.core as mx
import psutil

from mlx_kv.engine import Session
from mlx_kv.tasks import filler_text

QUESTIONS = ("What is the special magic number for apple ?", "Summarise the last paragraph in one line.",
             "Which place was mentioned first ?", "Name one noun from the text.")


def reply_ids(session: Session, question: str, max_tokens: int) -> list[int]:
    """The ids a turn fed, its prompt and its greedy reply (the session's own record)."""
    before = len(session._token_ids)
    "".join(session.chat(question, max_tokens=max_tokens))
    return session._token_ids[before:].tolist()


def cycle_once(session: Session, path: str, rng: random.Random, args: argparse.Namespace) -> tuple[Session, dict]:
    """One ingest/chat/save/restore cycle; returns the restored session and what was checked."""
    session.ingest(filler_text(rng.randint(args.doc_words // 2, args.doc_words), rng))
    for _ in range(2):
        reply_ids(session, rng.choice(QUESTIONS), args.reply_tokens)
    session.save(path)
    restored = Session.restore(path, model=session.model, tokenizer=session.tokenizer)
    question = rng.choice(QUESTIONS)
    original = reply_ids(session, question, args.check_tokens)
    resumed = reply_ids(restored, question, args.check_tokens)
    return restored, {"same_next_tokens": original == resumed, "compared_ids": len(original),
                      "first_difference": next((i for i, (a, b) in enumerate(zip(original, resumed)) if a != b),
                                               None if len(original) == len(resumed) else min(len(original),
                                                                                              len(resumed)))}


def summarise(records: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    base = next(r for r in records if r["tokens_seen"] >= 0.25 * args.tokens)
    last = records[-1]
    growth = 100.0 * (last["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    full = [r["heap_bytes"] for r in records if r["tokens_seen"] > 2 * args.budget]
    return {"cycles": len(records), "tokens_seen": last["tokens_seen"], "budget": args.budget,
            "policy": args.policy, "model": records[0]["model"],
            "rss_first_cycle_mb": records[0]["rss_mb"], "baseline_cycle": base["cycle"],
            "rss_start_mb": base["rss_mb"], "rss_end_mb": last["rss_mb"],
            "rss_max_mb": max(r["rss_mb"] for r in records), "rss_growth_pct": round(growth, 2),
            "heap_bytes_distinct": sorted(set(full)),
            "restores": len(records), "restores_alike": sum(r["same_next_tokens"] for r in records),
            "elapsed_s": last["elapsed_s"],
            "flat": growth <= args.max_growth, "heap_constant": len(set(full)) <= 1,
            "restores_exact": all(r["same_next_tokens"] for r in records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the default model (mlx-kv fetch)")
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--policy", default="h2o")
    parser.add_argument("--doc-words", type=int, default=1500)
    parser.add_argument("--reply-tokens", type=int, default=24)
    parser.add_argument("--check-tokens", type=int, default=12)
    parser.add_argument("--max-growth", type=float, default=5.0)
    parser.add_argument("--out", default=None, help="also write the JSON lines here")
    args = parser.parse_args()

    process = psutil.Process(os.getpid())
    rng = random.Random(0)
    out = open(args.out, "w") if args.out else None

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    session = Session.load(args.model, budget=args.budget, policy=args.policy)
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "soak.session")
        while session.tokens_seen < args.tokens:
            session, check = cycle_once(session, path, rng, args)
            record = {"cycle": len(records) + 1, "model": session.model_name, "tokens_seen": session.tokens_seen,
                      "rss_mb": round(process.memory_info().rss / 2**20, 1),
                      "mlx_active_mb": round(mx.get_active_memory() / 2**20, 1),
                      "mlx_cache_mb": round(mx.get_cache_memory() / 2**20, 1),
                      "heap_bytes": session.heap_stats().nbytes,
                      "session_file_kb": round(os.path.getsize(path) / 1024, 1),
                      "elapsed_s": round(time.perf_counter() - start, 1), **check}
            records.append(record)
            emit(record)
    summary = summarise(records, args)
    emit(summary)
    return 0 if summary["flat"] and summary["heap_constant"] and summary["restores_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
