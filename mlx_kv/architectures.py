"""Model classes for a config, through mlx-lm's public per-architecture modules.

Why not `mlx_lm.utils._get_classes`: it is private. Each architecture mlx-lm
supports is a public module `mlx_lm.models.<type>` with a `Model` and a
`ModelArgs` (`ModelArgs.from_dict(config)`), which is all a random-weight
model needs. mlx-lm runs Mistral configs through its Llama module, as here.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_FOR = {"mistral": "llama"}  # mlx-lm's MODEL_REMAPPING for the types mlx-kv supports


def model_classes(model_type: str) -> tuple[type, type]:
    """(Model, ModelArgs) for a config's `model_type`."""
    try:
        module = importlib.import_module(f"mlx_lm.models.{_MODULE_FOR.get(model_type, model_type)}")
    except ImportError:
        raise ValueError(f"model: mlx-lm has no architecture {model_type!r}") from None
    return module.Model, module.ModelArgs


def random_model(config: dict[str, Any], seed: int = 0) -> Any:
    """A model with `config`'s shape and seeded random weights, evaluated."""
    import mlx.core as mx

    model_cls, args_cls = model_classes(config["model_type"])
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    mx.eval(model.parameters())
    return model
