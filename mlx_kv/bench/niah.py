"""`mlx-kv bench niah`: retrieval accuracy per task x policy x pruning ratio x setting.

The document sits in a user turn of the model's own chat template
(mlx_kv.chat_format); a prune ratio r keeps (1 - r) of the document's tokens
per layer (the question and the answer are extra, as in kvpress: only the
context is compressed). Settings:
  stream    question-agnostic, the heap's own mode: the document is fed in
            chunks and the budget holds after every chunk, as in a session
            that streams a long document (a million tokens need it);
  compress  question-agnostic, kvpress's and KVzip's protocol: one exact
            prefill of the document, one compression at its end;
  aware     the question appended to the document's turn, one prefill, one
            compression after the question.
The question comes in the next user turn in both agnostic settings.
`full` is mlx-lm's KVCache: the reference every ratio is compared with.
A heap policy name takes variants after `+` (see mlx_kv.bench.variants);
`kv_bytes` is the cache's nbytes when the answer starts, so variants compare
memory and accuracy together. `export_samples` writes the same prompts as
token ids for an external referee (scripts/kvpress_referee.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlx_kv.bench.variants import policy_config
from mlx_kv.chat_format import ChatFormat
from mlx_kv.generate import decode, prefill
from mlx_kv.heap.layer import default_collect_batch
from mlx_kv.heap.prompt_cache import clone_heap, hide_globally, make_heap_cache, rebalance, total_bytes
from mlx_kv.hook import heap_hook
from mlx_kv.replay import Replay
from mlx_kv.tasks import answer_text, make_sample

CHUNK = 512
EVAL_SEED_BASE = 10**9  # training uses seeds below this
SETTINGS = ("stream", "compress", "aware")
ALIASES = {"agnostic": ("stream",), "both": ("aware", "stream"), "all": SETTINGS}


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
    haystack: str = "filler"

    @property
    def accuracy(self) -> float:
        return self.correct / self.trials if self.trials else float("nan")

    def as_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.trials)
        return {"task": self.task, "policy": self.policy, "prune_ratio": self.prune_ratio,
                "setting": self.setting, "context_tokens": self.context_tokens, "haystack": self.haystack,
                "trials": self.trials, "accuracy": round(self.accuracy, 4), "ci_low": round(lo, 4),
                "ci_high": round(hi, 4), "kv_bytes": int(self.kv_bytes)}


@dataclass(frozen=True)
class Prompt:
    """One sample as token ids: what each setting feeds."""

    doc: list[int]  # the conversation up to the end of the document's turn: what is compressed
    question: list[int]  # the question's turn and the generation prompt (agnostic settings)
    aware: list[int]  # document and question in one prefill, up to the generation prompt
    answer_limit: int


@dataclass(frozen=True)
class Trial:
    score: float
    kv_bytes: int
    prediction: str


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
        self.format = ChatFormat.probe(tokenizer)
        self.replay = Replay.for_tokenizer(tokenizer) if tokenizer is not None else None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, sample) -> Prompt:
        doc = [{"role": "document", "content": sample.context}]
        question = {"role": "user", "content": sample.question}
        doc_text = self.format.stable_prefix(self.tokenizer, doc)
        full = self.format.render(self.tokenizer, doc + [question], add_generation_prompt=True)
        if not full.startswith(doc_text):  # (stable_prefix guarantees it; a template could still surprise)
            raise ValueError("the chat template rewrites the document's turn once the question follows")
        if self.format.document_role:  # a model trained with its own document turn keeps it
            aware = full
        else:
            merged = {"role": "user", "content": sample.context + "\n\n" + sample.question}
            aware = self.format.render(self.tokenizer, [merged], add_generation_prompt=True)
        # room for a real model to echo the question ("The special magic number for X is ...")
        limit = min(self.max_answer, len(self.encode(answer_text(sample))) + 24)
        return Prompt(self.encode(doc_text), self.encode(full[len(doc_text):]), self.encode(aware), limit)

    def make_cache(self, policy: str, budget: int) -> list:
        if policy == "full":
            return [KVCache() for _ in self.model.layers]
        window = min(self.window, max(1, (budget - self.sinks) // 4))
        return make_heap_cache(self.model, policy_config(policy, self.profile, budget=budget, sinks=self.sinks,
                                                         window=window))

    def prefill(self, cache: list, tokens: list[int], previous: mx.array | None = None,
                chunk: int = CHUNK, history: list[int] | None = None) -> mx.array:
        return prefill(self.model, cache, tokens, chunk=chunk, previous=previous, replay=self.replay,
                       history=history)[0]

    def answer(self, cache: list, logits: mx.array, limit: int, enough: Callable[[str], bool] | None = None) -> str:
        """The greedy reply, up to `limit` tokens, EOS, or until `enough(text)`
        (once every expected item is there, more tokens cannot change the score)."""
        out: list[int] = []
        for token, _ in decode(self.model, cache, logits, max_tokens=limit, stop_tokens=self.eos):
            out.append(token)
            if enough is not None and enough(self.tokenizer.decode(out)):
                break
        return self.tokenizer.decode(out)

    def trial(self, sample, policy: str, prune_ratio: float, setting: str, prompt: Prompt | None = None) -> Trial:
        if setting not in SETTINGS:
            raise ValueError(f"setting: {setting!r} is not one of {', '.join(SETTINGS)}")
        refuse_headmask([policy], [setting])
        p = prompt or self.prompt(sample)
        keep = heap_budget(len(p.doc), prune_ratio, self.sinks, self.window)
        if setting == "aware":
            cache = self.make_cache(policy, keep + len(p.aware) - len(p.doc))
            logits = self.prefill(cache, p.aware, chunk=len(p.aware))
        else:
            cache = self.make_cache(policy, keep)
            # streamed as a session reads: a replay put off until the budget binds
            history = [] if setting == "stream" else None
            logits = self.prefill(cache, p.doc, chunk=CHUNK if setting == "stream" else len(p.doc), history=history)
            _widen(cache, len(p.question))  # only the document is compressed
            logits = self.prefill(cache, p.question, previous=logits, chunk=len(p.question),
                                  history=None if history is None else p.doc)
        return self._finish(sample, p, cache, logits)

    def compress_trials(self, sample, policy: str, ratios: list[float], prompt: Prompt | None = None
                        ) -> dict[float, Trial]:
        """The compress setting at every ratio from one exact prefill (and one
        replay): the document is read by a heap that evicts nothing, then each
        ratio compresses its own copy once, as a heap of that budget would
        have at the end of its one chunk."""
        p = prompt or self.prompt(sample)
        policy, masked = split_headmask(policy)
        keeps = {r: heap_budget(len(p.doc), r, self.sinks, self.window) for r in ratios}
        window = min(self.window, max(1, (min(keeps.values()) - self.sinks) // 4))
        config = policy_config(policy, self.profile, budget=len(p.doc) + 1, sinks=self.sinks, window=window)
        read = make_heap_cache(self.model, config)
        logits = self.prefill(read, p.doc, chunk=len(p.doc))
        trials = {}
        for ratio, keep in keeps.items():
            cache = clone_heap(read)
            for layer in cache:
                layer.collect_batch = default_collect_batch(keep)
            if masked:
                hide_globally(cache, keep)
            elif cache[0].adaptive:
                rebalance(cache, keep)
            else:
                for layer in cache:
                    layer.set_budget(keep)
            _widen(cache, len(p.question))
            trials[ratio] = self._finish(sample, p, cache, self.prefill(cache, p.question, previous=logits,
                                                                        chunk=len(p.question)))
        return trials

    def _finish(self, sample, p: Prompt, cache: list, logits: mx.array) -> Trial:
        kv_bytes = total_bytes(cache)
        _widen(cache, p.answer_limit)
        prediction = self.answer(cache, logits, p.answer_limit, enough=lambda text: sample.score(text) == 1.0)
        return Trial(float(sample.score(prediction)), kv_bytes, prediction)


def split_headmask(policy: str) -> tuple[str, bool]:
    """`kvzip+headmask`: the compress setting done as kvpress does it, every
    layer's (head, token) pairs ranked together and the losers masked, not
    freed (prompt_cache.hide_globally); the policy without it, and whether it was there."""
    parts = policy.split("+")
    return "+".join(p for p in parts if p != "headmask"), "headmask" in parts[1:]


def refuse_headmask(policies: Iterable[str], settings: Iterable[str]) -> None:
    """ValueError if a +headmask policy would run in a setting other than compress."""
    masked = [p for p in policies if split_headmask(p)[1]]
    if masked and set(settings) != {"compress"}:
        raise ValueError(f"policies: {masked[0]} masks one exact prefill (kvpress's protocol): "
                         "compress setting only (--setting compress)")


def _widen(cache: list, tokens: int) -> None:
    """Room for `tokens` more without evicting (a no-op for KVCache)."""
    for layer in cache:
        if hasattr(layer, "set_budget"):
            layer.set_budget(layer.budget + tokens)


def make_samples(tokenizer: Any, task: str, context: int, trials: int, seed: int,
                 depths: Iterable[float] | None = None, haystack=None) -> list:
    """The evaluation samples of one task (seeds above the training range)."""
    return [make_sample(task, context, tokenizer, depth=_depth(i, trials, depths), seed=EVAL_SEED_BASE + seed + i,
                        haystack=haystack) for i in range(trials)]


def bench_niah(model: Any, tokenizer: Any, *, tasks: Iterable[str], policies: Iterable[str],
               ratios: Iterable[float], settings: Iterable[str], context: int, trials: int, seed: int,
               window: int = 32, emit: Callable[[Cell], None] = lambda c: None,
               depths: Iterable[float] | None = None, profile: str | None = None, haystack=None,
               details: Callable[[dict], None] | None = None) -> list[Cell]:
    """Every (task, setting, policy, ratio) on the same samples; `full` once per prompt shape."""
    runner = Runner(model, tokenizer, window=window, profile=profile)
    policies, ratios, settings = list(policies), list(ratios), list(settings)
    refuse_headmask(policies, settings)
    name = haystack.name if haystack is not None else "filler"
    cells = []
    with heap_hook(model):
        for task in tasks:
            samples = make_samples(tokenizer, task, context, trials, seed, depths, haystack)
            prompts = [runner.prompt(s) for s in samples]
            shapes_done: set[str] = set()
            for setting in settings:
                for policy in policies:
                    if policy == "full":  # once per prompt shape: stream and compress feed KVCache alike
                        if _shape(setting) in shapes_done:
                            continue
                        shapes_done.add(_shape(setting))
                    cell_ratios = [0.0] if policy == "full" else ratios
                    results: dict[float, list[Trial]] = {r: [] for r in cell_ratios}
                    for sample, prompt in zip(samples, prompts):
                        if setting == "compress" and policy != "full":  # one prefill serves every ratio
                            by_ratio = runner.compress_trials(sample, policy, cell_ratios, prompt)
                        else:
                            by_ratio = {r: runner.trial(sample, policy, r, setting, prompt) for r in cell_ratios}
                        for ratio, result in by_ratio.items():
                            results[ratio].append(result)
                            if details is not None:
                                details({"task": task, "policy": policy, "prune_ratio": ratio, "setting": setting,
                                         "seed": sample.seed, "depth": sample.depth, "score": result.score,
                                         "prediction": result.prediction})
                    for ratio, done in results.items():
                        cell = Cell(task, policy, ratio, setting, context, trials, sum(t.score for t in done),
                                    sum(t.kv_bytes for t in done) / max(1, trials), name)
                        cells.append(cell)
                        emit(cell)
    return cells


def export_samples(tokenizer: Any, path: str, *, tasks: Iterable[str], context: int, trials: int, seed: int,
                   depths: Iterable[float] | None = None, haystack=None) -> int:
    """The agnostic prompts as token ids (JSONL), for a referee outside MLX."""
    runner = Runner(None, tokenizer)
    count = 0
    with open(path, "w") as f:
        for task in tasks:
            for sample in make_samples(tokenizer, task, context, trials, seed, depths, haystack):
                p = runner.prompt(sample)
                f.write(json.dumps({"id": f"{task}-{sample.seed}", "task": task, "depth": sample.depth,
                                    "context_tokens": context, "doc_ids": p.doc, "question_ids": p.question,
                                    "aware_ids": p.aware, "answers": list(sample.answer),
                                    "max_new_tokens": p.answer_limit}) + "\n")
                count += 1
    return count


def _depth(i: int, trials: int, depths: Iterable[float] | None) -> float:
    """Spread needles evenly over the document (or over given depths)."""
    if depths:
        depths = list(depths)
        return depths[i % len(depths)]
    return (i + 0.5) / trials


def grid(model: Any, tokenizer: Any, *, policy: str, ratio: float, setting: str, lengths: list[int],
         depths: list[float], trials: int, seed: int, window: int = 32, haystack=None) -> list[dict]:
    """Single-needle accuracy over a length x depth grid."""
    runner = Runner(model, tokenizer, window=window)
    rows = []
    with heap_hook(model):
        for length in lengths:
            for depth in depths:
                samples = make_samples(tokenizer, "single_needle", length, trials, seed, [depth], haystack)
                acc = sum(runner.trial(s, policy, ratio, setting).score for s in samples) / trials
                rows.append({"policy": policy, "prune_ratio": ratio, "setting": setting,
                             "context_tokens": length, "depth": depth, "trials": trials, "accuracy": acc})
    return rows


def _shape(setting: str) -> str:
    """The prompt a setting feeds: the full cache gives the same answer in both agnostic settings."""
    return "aware" if setting == "aware" else "agnostic"


def format_table(cells: list[Cell]) -> str:
    """Seed 001's layout: one row per task/setting/policy, one column per prune ratio."""
    ratios = sorted({c.prune_ratio for c in cells if c.policy != "full"})
    head = f"{'task':<18} {'setting':<9} {'policy':<10} " + " ".join(f"{f'{r:.0%}':>13}" for r in ratios)
    lines = [head, "-" * len(head)]
    keyed = {(c.task, c.setting, c.policy, c.prune_ratio): c for c in cells}
    for task in dict.fromkeys(c.task for c in cells):
        for setting in dict.fromkeys(c.setting for c in cells):
            full = next((c for c in cells if c.task == task and c.policy == "full"
                         and _shape(c.setting) == _shape(setting)), None)
            if full:
                lo, hi = wilson_interval(full.correct, full.trials)
                lines.append(f"{task:<18} {setting:<9} {'full':<10} " +
                             f"{full.accuracy:>6.0%} [{lo:.0%}-{hi:.0%}] (all ratios)")
            for policy in dict.fromkeys(c.policy for c in cells if c.policy != "full" and c.setting == setting):
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
