"""`mlx-kv bench stream`: a long document streamed through a fixed budget.

Synthetic filler with three needles (10%, 50%, 90% depth) is generated and
fed chunk by chunk, so neither the text nor its tokens are ever held whole.
Every 10% of progress a record notes throughput, heap bytes and process
RSS; at the end each needle is asked for from a copy of the heap, so the
questions do not disturb one another. Flat memory and flat throughput are
the point: `rss_growth_pct` compares the end with the 10% record.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any, Callable

import mlx.core as mx
import numpy as np
import psutil

from mlx_kv.bench.niah import Runner
from mlx_kv.chat_format import ChatFormat
from mlx_kv.config import HeapConfig
from mlx_kv.generate import prefill
from mlx_kv.heap.headwise import heaps
from mlx_kv.heap.prompt_cache import clone_heap, make_heap_cache, recovery_stats, total_bytes
from mlx_kv.hook import heap_hook
from mlx_kv.replay import Replay
from mlx_kv.tasks import KEYS, VALUES, filler_text, needle_sentence

CHUNK = 512
DEPTHS = (0.1, 0.5, 0.9)


def template_parts(tokenizer: Any, question: str) -> tuple[str, str]:
    """(text before the document, text after it up to the answer) in the model's chat template."""
    marker = "\u2063DOC\u2063"
    messages = [{"role": "document", "content": marker}, {"role": "user", "content": question}]
    rendered = ChatFormat.probe(tokenizer).render(tokenizer, messages, add_generation_prompt=True)
    before, after = rendered.split(marker)
    return before, after


def found_in(answer: str, value: str) -> bool:
    return value.lower() in re.findall(r"[a-z0-9]+", answer.lower())


def kept_share(cache: list, start: int, offsets) -> float:
    """The share of (layer, KV head) pairs still holding the tokens at
    positions start + offsets, averaged over those tokens: whether a needle
    the model failed to recall was evicted or kept and not read."""
    wanted = [start + i for i in offsets]
    if not wanted:
        return float("nan")
    held = [np.isin(wanted, kept).mean() for layer in cache for kept in layer.kept_positions()]
    return round(float(np.mean(held)), 4)


def stream(model: Any, tokenizer: Any, *, tokens: int, config: HeapConfig, seed: int = 0,
           emit: Callable[[dict], None] = lambda r: None, haystack: Any = None) -> dict:
    """haystack: a mlx_kv.haystack.Prose to stream instead of the generated filler."""
    rng = random.Random(seed)
    needles = [(d, rng.choice(KEYS), rng.choice(VALUES)) for d in DEPTHS]
    while len({k for _, k, _ in needles}) < len(needles):
        needles = [(d, rng.choice(KEYS), rng.choice(VALUES)) for d in DEPTHS]
    before, _ = template_parts(tokenizer, "?")
    encode = lambda text: list(tokenizer.encode(text, add_special_tokens=False))
    prose = haystack.filler(random.Random(f"stream:{seed}")) if haystack is not None else None
    more_text = (lambda: " ".join(prose() for _ in range(8))) if prose else (lambda: filler_text(200, rng))
    replay = Replay.for_tokenizer(tokenizer)
    process = psutil.Process(os.getpid())
    records: list[dict] = []
    pending = encode(before)
    fed, next_needle, next_record, last = 0, 0, 0.1, None
    needle_at: list[int] = []
    with heap_hook(model):
        cache = make_heap_cache(model, config)
        start = decile_start = time.perf_counter()
        decile_tokens = 0
        while fed < tokens:
            while next_needle < len(needles) and fed + CHUNK > needles[next_needle][0] * tokens:  # (in the chunk that crosses it)
                _, key, value = needles[next_needle]
                sentence = encode(" " + needle_sentence(key, value))
                needle_at.append((fed + len(pending), sentence))  # the token position the sentence starts at
                pending += sentence
                next_needle += 1
            while len(pending) < CHUNK:
                pending += encode(" " + more_text())
            chunk, pending = pending[:CHUNK], pending[CHUNK:]
            chunk = chunk[: max(1, tokens - fed)]
            last, _ = prefill(model, cache, chunk, chunk=CHUNK, previous=last, replay=replay)
            fed += len(chunk)
            decile_tokens += len(chunk)
            if fed >= next_record * tokens - 1e-9 or fed >= tokens:
                now = time.perf_counter()
                mx.clear_cache()
                record = {"progress": round(fed / tokens, 3), "tokens": fed,
                          "tokens_per_s": round(decile_tokens / max(now - decile_start, 1e-9), 1),
                          "heap_bytes": total_bytes(cache),
                          "rss_mb": round(process.memory_info().rss / 2**20, 1),
                          "mlx_active_mb": round(mx.get_active_memory() / 2**20, 1),
                          "elapsed_s": round(now - start, 1)}
                records.append(record)
                emit(record)
                decile_start, decile_tokens = now, 0
                next_record += 0.1
        found = []
        runner = Runner(model, tokenizer)
        for (depth, key, value), (position, sentence) in zip(needles, needle_at):
            _, tail = template_parts(tokenizer, f"What is the special magic number for {key} ?")
            probe = clone_heap(cache)
            logits = runner.prefill(probe, encode(tail), previous=last)
            answer = runner.answer(probe, logits, 32, enough=lambda text: found_in(text, value))
            digits = [i for i, t in enumerate(sentence) if any(c.isdigit() for c in tokenizer.decode([t]))]
            found.append({"depth": depth, "position": position, "key": key, "value": value, "answer": answer.strip(),
                          "found": found_in(answer, value),
                          "kept_share": kept_share(cache, position, range(len(sentence))),
                          "value_kept_share": kept_share(cache, position, digits)})
    first, last = records[0], records[-1]
    tps = [r["tokens_per_s"] for r in records]
    budgets = [unit.budget for unit in heaps(cache)]  # per layer, or with +headwise per layer and KV head
    summary = {
        "tokens": fed, "budget_tokens": config.budget, "policy": config.policy,
        "layer_budgets": [min(budgets), max(budgets)],
        "positions": config.positions,
        "peak_rss_mb": max(r["rss_mb"] for r in records),
        "rss_growth_pct": round(100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2),
        "tps_first_decile": tps[0], "tps_last_decile": tps[-1],
        "needles_found": sum(f["found"] for f in found), "needles_total": len(found),
        "needles": found, "heap_bytes": last["heap_bytes"], "elapsed_s": last["elapsed_s"],
    }
    stores = recovery_stats(cache)
    if stores is not None:
        for key in ("disk_bytes", "spilled", "dropped", "table_bytes"):
            summary[f"recovery_{key}"] = stores[key]
    return summary
