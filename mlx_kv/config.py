"""The heap's settings, validated once so every later layer can trust them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlx_kv.sizes import parse_bytes

__all__ = ["HeapConfig", "parse_bytes", "POSITIONS", "ALLOCATIONS", "PROFILED"]

POSITIONS = ("absolute", "cache")
ALLOCATIONS = ("uniform", "pyramid", "entropy", "adaptive", "headwise", "retrieval")
PROFILED = ("entropy", "retrieval")  # allocations that read `mlx-kv profile`'s output


@dataclass
class HeapConfig:
    """How the generational heap sizes and collects each layer's cache.

    budget: tokens kept per layer (per KV head) as an int, bytes for the whole
        heap as a string ("2GB", "512MiB", "2G"), or "auto" (from the
        machine's free memory); the size syntax is mlx_kv.sizes'.
    sinks: first tokens of the stream, never evicted.
    window: the young generation: the most recent tokens, always kept.
    tenured: capacity of the tenured tier in tokens per layer; None gives a
        quarter of the space left after sinks and window.
    promote_after: collections an intermediate token must survive before it
        may be tenured.
    major_every: every Nth collection also re-ranks the tenured tier (a major
        collection); the others rank only the intermediate tier.
    collect_batch: extra tokens freed per collection so that decoding collects
        once per batch instead of every step; None picks budget/32, at least
        budget/8 up to 16 (1..64).
    policy: name of the scoring policy; policy_args its parameters.
    compact_threshold: evicted slots are masked (and reused by decode tokens)
        until the dead fraction passes this; then the arrays are reallocated
        contiguously. 0.0 compacts at every collection, the faster choice
        measured here (8k context, 25% budget: 239 vs 186 decode tokens/s
        with 0.5; `mlx-kv bench speed --compact-thresholds 0.5,0`).
    rank_noise: std of Gaussian noise added to normalised scores before
        ranking (privacy: blurs which tokens survive); 0 disables it.
    score_every: a decode step computes attention explicitly (so the policy
        sees its weights) only every Nth call; the others take MLX's fused
        kernel. Prefill chunks and replays always score. 1 scores every step.
    recovery: disk allowance ("1GB", for the whole model: each layer gets
        its share) for the recovery tier, where evicted tokens spill (int8,
        in pages with min/max key summaries) and from where a question's
        queries recall the `recovery_pages` best pages per KV head; None
        (the default) keeps it off.
    cold_bits: store the intermediate tier at 8 or 4 bits (per-token affine
        quantization, see mlx_kv.heap.cold); None keeps every token at the
        model's dtype. Tenured tokens, sinks and the young window always do.
        The cold tier is rebuilt at each compaction, so it compacts at every
        collection: with cold_bits set, compact_threshold must be 0.0 (any
        other value is an error rather than being ignored).
    allocation: how the total is split across layers: "adaptive" (uniform to
        start, then after every replayed chunk moved to the layers whose
        tokens score highest, KVzip's cross-layer selection), "headwise" (the
        same between every layer's KV heads, each head its own heap keeping
        its own count: mlx_kv.heap.headwise), "retrieval" (each KV head its
        own count, fixed by its profiled retrieval score: mlx_kv.retrieval;
        any policy, no replay; needs `profile`), "uniform", "pyramid"
        (more for lower layers, PyramidKV) or "entropy" (in proportion to
        each layer's measured attention entropy; needs `profile`, the JSON
        `mlx-kv profile` writes).
    """

    budget: int | str = 2048
    sinks: int = 4
    window: int = 64
    tenured: int | None = None
    promote_after: int = 2
    major_every: int = 8
    collect_batch: int | None = None
    policy: str = "h2o"
    policy_args: dict[str, Any] = field(default_factory=dict)
    compact_threshold: float = 0.0
    positions: str = "absolute"
    rank_noise: float = 0.0
    score_block: int = 256
    score_every: int = 1
    seed: int = 0
    recovery: int | str | None = None
    recovery_pages: int = 4
    allocation: str = "uniform"
    profile: str | None = None
    cold_bits: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from mlx_kv.policies import POLICIES

        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, str)):
            raise ValueError(f"budget: expected tokens (int) or a size string, got {self.budget!r}")
        if isinstance(self.budget, int):
            if self.budget <= 0:
                raise ValueError(f"budget: must be positive, got {self.budget}")
            if self.budget < self.sinks + self.window + 1:
                raise ValueError(
                    f"budget: {self.budget} tokens per layer is smaller than "
                    f"sinks + window + 1 = {self.sinks + self.window + 1}"
                )
        elif self.budget.strip().lower() != "auto":
            parse_bytes(self.budget, "budget")
        _non_negative_int("sinks", self.sinks)
        _non_negative_int("window", self.window)
        if self.tenured is not None:
            _non_negative_int("tenured", self.tenured)
        _positive_int("promote_after", self.promote_after)
        _positive_int("major_every", self.major_every)
        if self.collect_batch is not None:
            _positive_int("collect_batch", self.collect_batch)
        _positive_int("score_block", self.score_block)
        _positive_int("score_every", self.score_every)
        if not isinstance(self.policy, str) or self.policy not in POLICIES:
            raise ValueError(
                f"policy: unknown policy {self.policy!r}; choose one of {', '.join(sorted(POLICIES))}"
            )
        if not isinstance(self.policy_args, dict):
            raise ValueError("policy_args: expected a dict of the policy's parameters")
        try:
            POLICIES[self.policy](**self.policy_args)
        except TypeError as exc:
            raise ValueError(f"policy_args: {exc}") from None
        if not (0.0 <= float(self.compact_threshold) <= 1.0):
            raise ValueError(f"compact_threshold: must be in [0, 1], got {self.compact_threshold}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions: must be one of {POSITIONS}, got {self.positions!r}")
        if self.recovery is not None:
            if isinstance(self.recovery, bool) or not isinstance(self.recovery, (int, str)):
                raise ValueError(f"recovery: expected a disk size like '1GB', got {self.recovery!r}")
            if isinstance(self.recovery, int) and self.recovery <= 0:
                raise ValueError(f"recovery: must be positive, got {self.recovery}")
            if isinstance(self.recovery, str):
                parse_bytes(self.recovery, "recovery")
        _positive_int("recovery_pages", self.recovery_pages)
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation: must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.allocation in ("adaptive", "headwise") and not self.make_policy().replays:
            raise ValueError(f"allocation: {self.allocation!r} moves the budget by replay scores; policy {self.policy!r} "
                             "does not replay (use kvzip)")
        if self.allocation in PROFILED and not self.profile:
            raise ValueError(f"allocation: {self.allocation!r} needs a profile; run `mlx-kv profile --model M` first")
        if self.cold_bits is not None and (isinstance(self.cold_bits, bool) or self.cold_bits not in (4, 8)):
            raise ValueError(f"cold_bits: must be 4, 8 or None, got {self.cold_bits!r}")
        if self.cold_bits is not None and float(self.compact_threshold) != 0.0:
            raise ValueError(f"compact_threshold: the cold tier (cold_bits={self.cold_bits}) is rebuilt at each "
                             f"compaction, so it needs compact_threshold=0, got {self.compact_threshold}")
        if not (float(self.rank_noise) >= 0.0):
            raise ValueError(f"rank_noise: must be >= 0, got {self.rank_noise}")

    def recovery_settings(self) -> dict | None:
        if self.recovery is None:
            return None
        max_bytes = self.recovery if isinstance(self.recovery, int) else parse_bytes(self.recovery, "recovery")
        return {"max_bytes": max_bytes, "page_size": 64, "recall_pages": self.recovery_pages,
                "recall_max_chunk": 256, "query_rows": 8}

    def make_policy(self):
        from mlx_kv.policies import POLICIES

        return POLICIES[self.policy](**self.policy_args)


def _non_negative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: must be a non-negative integer, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
