"""Profiling a model's attention: which layers spread attention, which focus it.

Seeds 001 and 002: early and late layers need more of the cache, middle
layers tolerate more pruning, but it depends on the model, so measure it
first. `profile_model` runs sample documents through a heap that evicts
nothing, samples every layer's attention at every step, and records per
layer and per KV head the mean entropy (nats) and the mass on the top 1% and
5% of keys, and per KV head its retrieval score (mlx_kv.retrieval: how
often it attends to the token being copied). `mlx-kv profile` saves it
beside the model (in the user's cache for hub models and the bundled one);
`HeapConfig(allocation="entropy")` reads the entropies, allocation="retrieval"
the retrieval scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from mlx_kv.config import HeapConfig
from mlx_kv.generate import decode, prefill
from mlx_kv.heap.prompt_cache import make_heap_cache, set_attention_sampling
from mlx_kv.hook import heap_hook

PROFILE_NAME = "mlx_kv_profile.json"


def profile_model(model: Any, tokenizer: Any, *, prompts: int = 4, tokens: int = 1024, steps: int = 24,
                  seed: int = 0) -> dict:
    from mlx_kv.retrieval import retrieval_scores
    from mlx_kv.tasks import TASKS, format_prompt, make_sample

    rng = random.Random(seed)
    per_layer: list[dict[str, list]] = [{"entropy": [], "top1": [], "top5": []} for _ in model.layers]
    with heap_hook(model):
        for i in range(prompts):
            sample = make_sample(TASKS[i % len(TASKS)], tokens, tokenizer, depth=rng.random(), seed=seed + i)
            ids = list(tokenizer.encode(format_prompt(tokenizer, sample), add_special_tokens=False))
            cache = make_heap_cache(model, HeapConfig(budget=len(ids) + steps + 8, policy="h2o"))
            set_attention_sampling(cache, every=1)
            logits, _ = prefill(model, cache, ids)
            for _ in decode(model, cache, logits, max_tokens=steps):
                for index, layer in enumerate(cache):
                    for key in per_layer[index]:
                        per_layer[index][key].append(np.array(layer.attention_stats[key]))
    retrieval = retrieval_scores(model, tokenizer, prompts=prompts, tokens=min(tokens, 512), seed=seed)
    layers = []
    for stats, copying in zip(per_layer, retrieval):
        heads = {key: np.stack(values).mean(axis=0) for key, values in stats.items()}
        layers.append({"entropy": float(heads["entropy"].mean()), "top1": float(heads["top1"].mean()),
                       "top5": float(heads["top5"].mean()),
                       "heads": {key: [round(float(v), 5) for v in value] for key, value in heads.items()},
                       "retrieval": [round(float(v), 5) for v in copying]})
    return {"version": 2, "prompts": prompts, "tokens": tokens, "steps": steps, "seed": seed, "layers": layers}


def profile_path(model_path: Path) -> Path:
    """Where `mlx-kv profile` saves a model's profile: beside a model folder of
    the user's own (writable, not a hub download), else in the user's cache:
    for hub models and for the model mlx-kv ships, so that profiling never
    writes into a checkout or an installed package."""
    resolved = model_path.resolve()
    if os.access(model_path, os.W_OK) and "huggingface" not in str(resolved) and not _is_shipped(resolved):
        return model_path / PROFILE_NAME
    from mlx_kv.paths import cache_dir

    cache = cache_dir() / "profiles"
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]  # hash() changes per process
    return cache / f"{resolved.name}-{digest}.json"


def find_profile(model_path: Path) -> Path | None:
    """The profile to read: the one `mlx-kv profile` saved, else one that ships
    beside the model (mlx-kv-tiny's)."""
    for path in (profile_path(model_path), model_path / PROFILE_NAME):
        if path.is_file():
            return path
    return None


def _is_shipped(path: Path) -> bool:
    from mlx_kv.models import BUNDLED_MODEL

    return path == BUNDLED_MODEL.resolve()


def save_profile(profile: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile, indent=1))
    os.replace(tmp, path)


def load_profile(path: str | Path) -> dict:
    try:
        profile = json.loads(Path(path).read_text())
        entropies = [float(layer["entropy"]) for layer in profile["layers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"profile: cannot read {path} ({exc})") from None
    if not all(np.isfinite(entropies)):
        raise ValueError(f"profile: {path} holds non-finite entropies")
    return profile


def retrieval_rows(profile: dict) -> list[list[float]] | None:
    """A profile's retrieval scores per layer (KV heads), or None if it has
    none (written before `mlx-kv profile` measured them)."""
    rows = [layer.get("retrieval") for layer in profile["layers"]]
    return rows if all(isinstance(row, list) for row in rows) else None


def retrieval_profile(model_path: Path) -> Path | None:
    """The model's profile if it holds retrieval scores (allocation="retrieval"
    can read it); None without one, or with one from before those scores."""
    found = find_profile(model_path)
    if found is None:
        return None
    try:
        return found if retrieval_rows(load_profile(found)) is not None else None
    except ValueError:
        return None


def profile_and_save(model_path: Path, weights: str = "auto", **settings: Any) -> tuple[dict, Path, str]:
    """Load the model, profile it and save the profile where find_profile
    looks: (profile, where it was saved, the model's display name)."""
    from mlx_kv.models import load_model

    model, tokenizer, name = load_model(str(model_path), weights=weights)
    profile = profile_model(model, tokenizer, **settings)
    target = profile_path(model_path)
    save_profile(profile, target)
    return profile, target, name
