"""`mlx-kv bench speed`: decode and prefill speed and memory, heap vs mlx-lm caches.

Every configuration runs on the same model and the same prompt in one
process, and the timings are interleaved because this machine's speed
drifts by a third over minutes (a shared CPU): in each repeat every
configuration prefills in turn, then all of them decode side by side,
DECODE_BLOCK tokens each in turn, so a slow minute falls on every
configuration alike; the median of the repeats is reported. Every
configuration's cache is held until the repeat ends, so the run needs
their sum in memory.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, QuantizedKVCache, RotatingKVCache

from mlx_kv.bench.variants import policy_config
from mlx_kv.generate import prefill, settle_replays
from mlx_kv.heap.prompt_cache import make_heap_cache, total_bytes, wants_replay
from mlx_kv.hook import heap_hook
from mlx_kv.replay import Replay

PREFILL_CHUNK = 512
DECODE_BLOCK = 8  # tokens each configuration decodes before the next one's turn
# SmolLM2's replay prompts are 8 and 13 tokens, its template's suffix 5.
STAND_IN_REPLAY = Replay(first=tuple(range(1, 9)), later=tuple(range(1, 14)), suffix=tuple(range(1, 6)))


@dataclass
class Setup:
    name: str
    kind: str  # kvcache | rotating | quantized8 | quantized4 | heap
    ratio: float
    make: Callable[[], list]


def baseline_setups(model: Any, context: int, baselines: list[str], ratios: list[float], sinks: int) -> list[Setup]:
    n = len(model.layers)
    out = []
    for name in baselines:
        if name == "kvcache":
            out.append(Setup("kvcache", "kvcache", 1.0, lambda: [KVCache() for _ in range(n)]))
        elif name == "rotating":
            for r in ratios:
                size = max(sinks + 1, int(context * r))
                out.append(Setup(f"rotating@{r:g}", "rotating", r,
                                 lambda size=size: [RotatingKVCache(max_size=size, keep=sinks) for _ in range(n)]))
        elif name in ("quantized8", "quantized4"):
            bits = int(name[-1])
            group = quant_group_size(model)
            if group is None:
                continue  # MLX quantizes in groups of 32/64/128 along head_dim
            out.append(Setup(name, name, 1.0,
                             lambda bits=bits: [QuantizedKVCache(group_size=group, bits=bits) for _ in range(n)]))
        else:
            raise ValueError(f"baselines: unknown baseline {name!r}")
    return out


def quant_group_size(model: Any) -> int | None:
    from mlx_kv.budget import kv_geometry

    head_dim = kv_geometry(model).head_dim
    return next((g for g in (64, 32) if head_dim % g == 0), None)


def heap_setups(model: Any, context: int, policies: list[str], ratios: list[float],
                thresholds: list[float], decode_tokens: int, window: int,
                profile: str | None = None) -> list[Setup]:
    """One setup per policy (with its variants, e.g. h2o+q4), ratio and compaction threshold."""
    out = []
    for policy in policies:
        for r in ratios:
            # ratio 1.0 means "evicts nothing": room for the prompt and every decoded token
            budget = context + decode_tokens + 1 if r >= 1.0 else max(int(context * r), 4 + window + 2)
            for t in thresholds:
                cfg = policy_config(policy, profile, budget=budget, compact_threshold=t, window=window)
                suffix = f"@{r:g}" + (f",compact={t:g}" if len(thresholds) > 1 else "")
                out.append(Setup(f"heap:{policy}{suffix}", "heap", r,
                                 lambda cfg=cfg: make_heap_cache(model, cfg)))
    return out


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 3) -> float:
    """This machine's streaming bandwidth (bytes/s): best of a few large copies,
    counting the read and the write."""
    src = np.ones(n_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * n_bytes / best


@dataclass
class Run:
    """One configuration's cache through one repeat: its prefill, then its decode turns."""

    cache: list
    prefill_tps: float
    peak_mem_mb: float
    next_token: mx.array
    decoded: int = 0
    decode_s: float = 0.0

    @property
    def result(self) -> dict[str, float]:
        return {"prefill_tps": self.prefill_tps, "decode_tps": self.decoded / self.decode_s,
                "kv_bytes": float(total_bytes(self.cache)), "peak_mem_mb": self.peak_mem_mb}


def prefill_run(model: Any, make: Callable[[], list], prompt: np.ndarray, decode_tokens: int,
                replay: Replay | None = None, others: int = 0) -> Run:
    """Prefill through the one loop every cache shares (generate.prefill: the
    same chunks, the vocabulary projection of the last position only, and the
    replay of each chunk for a policy that scores by reconstruction, put off
    as a session puts it off until the budget binds). The peak leaves out
    `others`, the bytes the other configurations' caches hold meanwhile."""
    mx.synchronize()
    mx.reset_peak_memory()
    cache = make()
    start = time.perf_counter()
    tokens = prompt.tolist()
    last, _ = prefill(model, cache, tokens, chunk=PREFILL_CHUNK, replay=replay, history=[])
    if replay is not None and wants_replay(cache):
        settle_replays(model, cache, replay, tokens, room=decode_tokens)  # (what decoding would evict)
    y = mx.argmax(last)
    mx.eval(y)
    prefill_s = time.perf_counter() - start
    return Run(cache, len(prompt) / prefill_s, (mx.get_peak_memory() - others) / 2**20, y)


def decode_turn(model: Any, run: Run, tokens: int) -> None:
    """`tokens` greedy decode steps of one configuration, timed."""
    y = run.next_token
    start = time.perf_counter()
    for _ in range(tokens):
        y = mx.argmax(model(y.reshape(1, 1), cache=run.cache)[0, -1])
        mx.async_eval(y)
    mx.eval(y)
    run.decode_s += time.perf_counter() - start
    run.decoded += tokens
    run.next_token = y


def run_interleaved(model: Any, setups: list[Setup], prompt: np.ndarray, decode_tokens: int,
                    replay: Replay | None) -> dict[str, dict[str, float]]:
    """One repeat: every configuration prefills in turn, then they decode
    DECODE_BLOCK tokens each in turn until each has decoded `decode_tokens`."""
    resident = mx.get_active_memory()  # the model's
    runs = {}
    for setup in setups:
        others = mx.get_active_memory() - resident
        runs[setup.name] = prefill_run(model, setup.make, prompt, decode_tokens, replay, others)
    for done in range(0, decode_tokens, DECODE_BLOCK):
        for run in runs.values():
            decode_turn(model, run, min(DECODE_BLOCK, decode_tokens - done))
    results = {name: run.result for name, run in runs.items()}
    del runs
    mx.clear_cache()
    return results


def bench_speed(model: Any, *, contexts: list[int], ratios: list[float], policies: list[str],
                baselines: list[str], decode_tokens: int, repeats: int = 3, thresholds: list[float] = (0.0,),
                window: int = 64, sinks: int = 4, vocab: int | None = None, profile: str | None = None,
                replay: Replay | None = None, emit: Callable[[dict], None] = print) -> list[dict]:
    """`replay`: the model's reconstruction prompt (Replay.for_tokenizer), for
    policies such as kvzip; without one (a random-weight model) a stand-in of
    the same length is replayed, which costs the same."""
    from mlx_kv.budget import weights_bytes

    replay = replay or STAND_IN_REPLAY

    vocab = vocab or model.args.vocab_size
    bandwidth = copy_bandwidth()
    weights = weights_bytes(model)
    rows = []
    for context in contexts:
        prompt = np.random.default_rng(context).integers(0, vocab, size=context)
        setups = baseline_setups(model, context, baselines, ratios, sinks)
        setups += heap_setups(model, context, policies, ratios, list(thresholds), decode_tokens, window, profile)
        runs: dict[str, list[dict]] = {s.name: [] for s in setups}
        with heap_hook(model):
            warm = prefill_run(model, setups[0].make, prompt[: min(len(prompt), 1024)], 8)  # not recorded
            decode_turn(model, warm, 8)
            del warm
            for _ in range(repeats):
                for name, result in run_interleaved(model, setups, prompt, decode_tokens, replay).items():
                    runs[name].append(result)
        base = {k: statistics.median(r[k] for r in runs["kvcache"]) for k in ("decode_tps", "prefill_tps")} \
            if "kvcache" in runs else None
        for setup in setups:
            med = {k: statistics.median(r[k] for r in runs[setup.name]) for k in runs[setup.name][0]}
            row = {"config": setup.name, "kind": setup.kind, "context": context, "budget_ratio": setup.ratio,
                   "decode_tokens": decode_tokens, "repeats": repeats,
                   "decode_tps": round(med["decode_tps"], 2), "prefill_tps": round(med["prefill_tps"], 1),
                   "kv_bytes": int(med["kv_bytes"]), "peak_mem_mb": round(med["peak_mem_mb"], 1)}
            # Decoding reads every weight and every kept key/value once per token.
            bytes_per_token = weights + med["kv_bytes"]
            row["bytes_per_decode_token"] = int(bytes_per_token)
            row["achieved_gbps"] = round(bytes_per_token * med["decode_tps"] / 1e9, 2)
            row["copy_gbps"] = round(bandwidth / 1e9, 2)
            row["fraction_of_copy_bandwidth"] = round(bytes_per_token * med["decode_tps"] / bandwidth, 3)
            if base:
                row["decode_ratio_vs_kvcache"] = round(med["decode_tps"] / base["decode_tps"], 3)
                row["prefill_ratio_vs_kvcache"] = round(med["prefill_tps"] / base["prefill_tps"], 3)
            rows.append(row)
            emit(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'context':>8} {'config':<28} {'decode t/s':>10} {'x kv':>6} {'prefill t/s':>11} {'x kv':>6} "
            f"{'KV MB':>8} {'peak MB':>8} {'GB/s':>6} {'of copy':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['context']:>8} {r['config']:<28} {r['decode_tps']:>10.1f} {r.get('decode_ratio_vs_kvcache', float('nan')):>6.2f} "
                     f"{r['prefill_tps']:>11.1f} {r.get('prefill_ratio_vs_kvcache', float('nan')):>6.2f} "
                     f"{r['kv_bytes'] / 2**20:>8.2f} {r['peak_mem_mb']:>8.1f} {r['achieved_gbps']:>6.2f} "
                     f"{r['fraction_of_copy_bandwidth']:>7.1%}")
    return "\n".join(lines)
