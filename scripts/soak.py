"""Soak: a long session of repeated ingests, chats, saves and resumes; memory must stay flat.

    python scripts/soak.py [--model M] [--tokens 100000] [--budget 1024]

Prints one JSON line per cycle (tokens seen, RSS, MLX active memory, heap
bytes) and a summary; exits non-zero if RSS grew more than --max-growth
percent between the cycle that reached 25% of the tokens and the last (the
first cycles pay for warm-up: allocator pools grow in steps of tens of MB
before they settle). The transcript itself grows with the session (it is
the user's data), a few hundred KB per 100k tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

import mlx.core as mx
import psutil

from mlx_kv.engine import Session
from mlx_kv.tasks import filler_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--doc-words", type=int, default=6000)
    parser.add_argument("--max-growth", type=float, default=5.0)
    args = parser.parse_args()

    process = psutil.Process(os.getpid())
    rng = random.Random(0)
    session = Session.load(args.model, budget=args.budget, positions="cache")
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "soak.session")
        cycle = 0
        while session.tokens_seen < args.tokens:
            session.ingest(filler_text(args.doc_words, rng))
            "".join(session.chat("What is the special magic number for apple ?", max_tokens=16))
            session.save(path)
            session = Session.restore(path, model=session.model, tokenizer=session.tokenizer)
            mx.clear_cache()
            cycle += 1
            record = {"cycle": cycle, "tokens_seen": session.tokens_seen,
                      "rss_mb": round(process.memory_info().rss / 2**20, 1),
                      "mlx_active_mb": round(mx.get_active_memory() / 2**20, 1),
                      "heap_bytes": session.heap_stats().nbytes,
                      "session_file_kb": round(os.path.getsize(path) / 1024, 1),
                      "elapsed_s": round(time.perf_counter() - start, 1)}
            records.append(record)
            print(json.dumps(record), flush=True)
    base = next(r for r in records if r["tokens_seen"] >= 0.25 * args.tokens)
    last = records[-1]
    growth = 100.0 * (last["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    summary = {"cycles": len(records), "tokens_seen": last["tokens_seen"], "budget": args.budget,
               "rss_first_cycle_mb": records[0]["rss_mb"], "baseline_cycle": base["cycle"],
               "rss_start_mb": base["rss_mb"], "rss_end_mb": last["rss_mb"], "rss_growth_pct": round(growth, 2),
               "heap_bytes_end": last["heap_bytes"], "elapsed_s": last["elapsed_s"],
               "flat": growth <= args.max_growth}
    print(json.dumps(summary))
    return 0 if summary["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
