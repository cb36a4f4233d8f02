"""Heap policy names with variants, shared by the benchmarks.

A policy name takes variants after `+`, so one flag compares memory and
accuracy (or speed) settings side by side: `h2o+q4` / `h2o+q8` store the
intermediate tier at 4 / 8 bits, `h2o+pyramid` / `h2o+entropy` split the
total budget across layers (`h2o+retrieval` across KV heads, by their profiled retrieval scores), `h2o+noise0.05` ranks with that much rank_noise, `h2o+every4` scores
one decode step in four (the others use the fused kernel), `h2o+recover` spills
evicted tokens to the recovery tier (1 GB of disk, 10^9 bytes) for a question to recall,
`h2o+cache` numbers positions within the cache (positions="cache", as long streams do),
`surprise+alpha=1` passes a policy argument.
"""

from __future__ import annotations

from typing import Any

from mlx_kv.config import PROFILED, HeapConfig

RECOVERY_ALLOWANCE = "1GB"
VARIANTS = "+q4, +q8, +cache, +pyramid, +entropy, +adaptive, +headwise, +retrieval, +recover, +everyN, +noiseX or +arg=value"


def parse_policy(policy: str) -> tuple[str, dict[str, Any]]:
    """`h2o+q4+noise0.05` -> ("h2o", {"cold_bits": 4, "rank_noise": 0.05});
    `surprise+alpha=1` -> ("surprise", {"policy_args": {"alpha": 1.0}})."""
    name, *variants = policy.split("+")
    settings: dict[str, Any] = {}
    for variant in variants:
        if variant in ("q4", "q8"):
            settings["cold_bits"] = int(variant[1:])
        elif variant == "cache":  # positions within the cache (StreamingLLM's numbering), as `bench stream` uses
            settings["positions"] = "cache"
        elif variant == "recover":  # the recovery tier: evicted tokens spill to disk, a question recalls pages
            settings["recovery"] = RECOVERY_ALLOWANCE
        elif variant in ("pyramid", "entropy", "adaptive", "headwise", "retrieval"):  # how the same total is split
            settings["allocation"] = variant
        elif "=" in variant:  # a policy argument, e.g. surprise+alpha=1.0 or surprise+signal=entropy
            key, value = variant.split("=", 1)
            try:
                parsed: Any = float(value)
            except ValueError:
                parsed = value
            settings.setdefault("policy_args", {})[key] = parsed
        elif variant.startswith("every") and variant[len("every"):].isdigit():
            settings["score_every"] = int(variant[len("every"):])
        elif variant.startswith("noise"):
            try:
                settings["rank_noise"] = float(variant[len("noise"):])
            except ValueError:
                raise ValueError(f"policies: cannot read {variant!r}; write e.g. h2o+noise0.05") from None
        else:
            raise ValueError(f"policies: unknown variant {variant!r} in {policy!r}; use {VARIANTS}")
    return name, settings


def policy_config(policy: str, profile: str | None = None, **settings: Any) -> HeapConfig:
    """The HeapConfig a heap policy name and its variants stand for (ValueError
    naming what is wrong); `profile` is the model's saved profile, for +entropy."""
    name, variants = parse_policy(policy)
    if variants.get("allocation") in PROFILED:
        if not profile:
            raise ValueError(f"policies: +{variants['allocation']} needs the model's profile; "
                             "run `mlx-kv profile --model M` first")
        variants["profile"] = profile
    for key, value in variants.items():  # (a command's own flag for the same setting, say --recovery with +recover)
        given = settings.get(key)
        if given is not None and given != value:
            raise ValueError(f"policies: {policy} sets {key} to {value!r} and the command line to {given!r}; give it once")
    return HeapConfig(policy=name, **{**settings, **variants})
