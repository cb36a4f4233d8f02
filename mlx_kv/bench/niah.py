"""`mlx-kv bench niah`: retrieval accuracy per task x policy x pruning ratio x setting.

aware: the question is part of the prefill that the heap compresses (one
    pass, so the observation window sees it, as in SnapKV's setting).
agnostic: the document is prefilled and compressed first; the question
    arrives afterwards, as in a chat where a document is loaded before anyone
    asks about it.
`full` is mlx-lm's KVCache: the reference every ratio is compared with.
A prune ratio r keeps (1 - r) of the document's tokens per layer.
A heap policy name takes variants after `+` (see mlx_kv.bench.variants);
`kv_bytes` is the cache's mean nbytes when the answer starts, so variants
compare memory and accuracy together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlx_kv.bench.variants import policy_config
from mlx_kv.generate import decode, prefill
from mlx_kv.heap.prompt_cache import make_heap_cache, total_bytes
from mlx_kv.hook import heap_hook
from mlx_kv.tasks import answer_text, format_prompt, make_sample

CHUNK = 512
EVAL_SEED_BASE = 10**9  # training uses seeds below this


@dataclass(frozen=True)
class Cell:
    task: str
    policy: str
    prune_ratio: float
    setting: str
    context_tokens: int
    trials: int
    correct: float
    kv_bytes: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.trials if self.trials else float("nan")

    def as_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.trials)
        return {"task": self.task, "policy": self.policy, "prune_ratio": self.prune_ratio,
                "setting": self.setting, "context_tokens": self.context_tokens, "trials": self.trials,
                "accuracy": round(self.accuracy, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
                "kv_bytes": int(self.kv_bytes)}


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval; fractional successes (multi-answer tasks) are allowed."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def heap_budget(n_doc_tokens: int, prune_ratio: float, sinks: int, window: int) -> int:
    return max(sinks + window + 2, int(round((1.0 - prune_ratio) * n_doc_tokens)))


class Runner:
    """Runs one sample through one cache and scores the greedy answer."""

    def __init__(self, model: Any, tokenizer: Any, *, sinks: int = 4, window: int = 32, max_answer_tokens: int = 48,
                 profile: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.profile = profile  # `mlx-kv profile` output, for +entropy
        self.sinks, self.window, self.max_answer = sinks, window, max_answer_tokens
        self.eos = set(getattr(tokenizer, "eos_token_ids", None) or [])

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def make_cache(self, policy: str, budget: int) -> list:
        if policy == "full":
            return [KVCache() for _ in self.model.layers]
        window = min(self.window, max(1, (budget - self.sinks) // 4))
        return make_heap_cache(self.model, policy_config(policy, self.profile, budget=budget, sinks=self.sinks,
                                                         window=window))

    def prefill(self, cache: list, tokens: list[int], previous: mx.array | None = None,
                chunk: int = CHUNK) -> mx.array:
        return prefill(self.model, cache, tokens, chunk=chunk, previous=previous)[0]

    def answer(self, cache: list, logits: mx.array, limit: int) -> str:
        """The greedy answer, up to `limit` tokens or an end-of-sequence token."""
        steps = decode(self.model, cache, logits, max_tokens=limit, stop_tokens=self.eos)
        return self.tokenizer.decode([token for token, _ in steps])

    def trial(self, sample, policy: str, prune_ratio: float, setting: str) -> float:
        doc = format_prompt(self.tokenizer, sample, include_question=False)
        full = format_prompt(self.tokenizer, sample, include_question=True)
        doc_tokens = self.encode(doc)
        budget = heap_budget(len(doc_tokens), prune_ratio, self.sinks, self.window)
        cache = self.make_cache(policy, budget)
        limit = min(self.max_answer, len(self.encode(answer_text(sample))) + 8)
        if setting == "aware" or not full.startswith(doc):
            # One pass: the heap compresses once, after the question's queries
            # have attended (SnapKV's setting); chunked, it would compress the
            # document before the question arrived, as in the agnostic setting.
            tokens = self.encode(full)
            logits = self.prefill(cache, tokens, chunk=len(tokens))
        else:
            logits = self.prefill(cache, doc_tokens)
            logits = self.prefill(cache, self.encode(full[len(doc):]), previous=logits)
        self.last_kv_bytes = total_bytes(cache)
        prediction = self.answer(cache, logits, limit)
        return float(sample.score(prediction))


def bench_niah(model: Any, tokenizer: Any, *, tasks: Iterable[str], policies: Iterable[str],
               ratios: Iterable[float], settings: Iterable[str], context: int, trials: int, seed: int,
               window: int = 32, emit: Callable[[Cell], None] = lambda c: None,
               depths: Iterable[float] | None = None, profile: str | None = None) -> list[Cell]:
    """Every (task, setting, policy, ratio) on the same samples; `full` once per setting."""
    runner = Runner(model, tokenizer, window=window, profile=profile)
    policies, ratios, settings = list(policies), list(ratios), list(settings)
    cells = []
    with heap_hook(model):
        for task in tasks:
            samples = [make_sample(task, context, tokenizer, depth=_depth(i, trials, depths),
                                   seed=EVAL_SEED_BASE + seed + i) for i in range(trials)]
            for setting in settings:
                for policy in policies:
                    for ratio in ([0.0] if policy == "full" else ratios):
                        correct, kv_bytes = 0.0, 0
                        for s in samples:
                            correct += runner.trial(s, policy, ratio, setting)
                            kv_bytes += runner.last_kv_bytes
                        cell = Cell(task, policy, ratio, setting, context, trials, correct, kv_bytes / max(1, trials))
                        cells.append(cell)
                        emit(cell)
    return cells


def _depth(i: int, trials: int, depths: Iterable[float] | None) -> float:
    """Spread needles evenly over the document (or over given depths)."""
    if depths:
        depths = list(depths)
        return depths[i % len(depths)]
    return (i + 0.5) / trials


def grid(model: Any, tokenizer: Any, *, policy: str, ratio: float, setting: str, lengths: list[int],
         depths: list[float], trials: int, seed: int, window: int = 32) -> list[dict]:
    """Single-needle accuracy over a length x depth grid."""
    runner = Runner(model, tokenizer, window=window)
    rows = []
    with heap_hook(model):
        for length in lengths:
            for depth in depths:
                samples = [make_sample("single_needle", length, tokenizer, depth=depth, seed=EVAL_SEED_BASE + seed + i)
                           for i in range(trials)]
                acc = sum(runner.trial(s, policy, ratio, setting) for s in samples) / trials
                rows.append({"policy": policy, "prune_ratio": ratio, "setting": setting,
                             "context_tokens": length, "depth": depth, "trials": trials, "accuracy": acc})
    return rows


def format_table(cells: list[Cell]) -> str:
    """Seed 001's layout: one row per task/setting/policy, one column per prune ratio."""
    ratios = sorted({c.prune_ratio for c in cells if c.policy != "full"})
    head = f"{'task':<18} {'setting':<9} {'policy':<10} " + " ".join(f"{f'{r:.0%}':>13}" for r in ratios)
    lines = [head, "-" * len(head)]
    keyed = {(c.task, c.setting, c.policy, c.prune_ratio): c for c in cells}
    for task in dict.fromkeys(c.task for c in cells):
        for setting in dict.fromkeys(c.setting for c in cells):
            full = keyed.get((task, setting, "full", 0.0))
            if full:
                lo, hi = wilson_interval(full.correct, full.trials)
                lines.append(f"{task:<18} {setting:<9} {'full':<10} " +
                             f"{full.accuracy:>6.0%} [{lo:.0%}-{hi:.0%}] (all ratios)")
            for policy in dict.fromkeys(c.policy for c in cells if c.policy != "full"):
                parts = []
                for r in ratios:
                    c = keyed.get((task, setting, policy, r))
                    parts.append(f"{c.accuracy:>13.0%}" if c else f"{'':>13}")
                lines.append(f"{task:<18} {setting:<9} {policy:<10} " + " ".join(parts))
    return "\n".join(lines)


def plot_grid(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from mlx_kv.errors import UserError

        raise UserError("--plot needs matplotlib: pip install 'mlx-kv[plot]'") from None
    import numpy as np

    lengths = sorted({r["context_tokens"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    acc = np.array([[next(r["accuracy"] for r in rows if r["context_tokens"] == L and r["depth"] == d)
                     for L in lengths] for d in depths])
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 2))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context tokens")
    ax.set_ylabel("needle depth")
    r0 = rows[0]
    ax.set_title(f"single needle: {r0['policy']} at {r0['prune_ratio']:.0%} pruned ({r0['setting']})")
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
