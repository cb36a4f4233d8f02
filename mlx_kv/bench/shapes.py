"""Random-weight models with real models' shapes, for timing without downloads."""

from __future__ import annotations

from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.2-1B config.json
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True,
        max_position_embeddings=131072,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    ),
}


def random_model(spec: str) -> tuple[Any, str]:
    """`random:NAME[:layers=N]` -> (model, description)."""
    from mlx_kv.architectures import random_model as build

    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    if name not in SHAPES:
        raise ValueError(f"model: unknown random shape {name!r}; choose one of {', '.join(SHAPES)}")
    config = dict(SHAPES[name])
    for option in parts[2:]:
        key, _, value = option.partition("=")
        if key != "layers" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"model: bad option {option!r}; use layers=N")
        config["num_hidden_layers"] = int(value)
    model = build(config, seed=0)
    return model, f"random-weight {name} shape, {config['num_hidden_layers']} layers, fp32"


def bench_model(spec: str | None, weights: str = "auto") -> tuple[Any, str, Any]:
    """(model, description, tokenizer) for a benchmark's --model: `random:NAME[...]`
    (no tokenizer: None), a name, GGUF file, folder or hub id, or None for the
    default model."""
    if spec and spec.startswith("random:"):
        return (*random_model(spec), None)
    from mlx_kv.models import load_model

    model, tokenizer, name = load_model(spec, weights=weights)
    return model, name, tokenizer
