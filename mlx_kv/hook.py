"""The hook: attention routed through the heap caches that serve a model.

mlx-lm's model modules import `scaled_dot_product_attention` by name, so the
hook replaces that name in the model's own module with a dispatcher: heap
caches get `cache.attend(...)`, every other cache the original function.
The dispatcher carries the function it replaced, so a patched module is its
own record of what to put back; nothing is kept process-wide.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable, Iterator

_NAME = "scaled_dot_product_attention"
_ORIGINAL = "__mlx_kv_original__"


def _dispatch_for(original: Callable) -> Callable:
    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        attend = getattr(cache, "attend", None)
        if attend is not None and sinks is None:
            return attend(queries, keys, values, scale=scale, mask=mask)
        return original(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    setattr(scaled_dot_product_attention, _ORIGINAL, original)
    return scaled_dot_product_attention


def model_module(model: Any) -> ModuleType:
    return sys.modules[type(model).__module__]


def install(model: Any) -> None:
    """Route the model module's attention through heap caches (idempotent)."""
    module = model_module(model)
    current = getattr(module, _NAME, None)
    if current is None:
        arch = getattr(getattr(model, "args", None), "model_type", module.__name__)
        raise ValueError(
            f"architecture {arch!r} computes attention inline; the heap cannot observe it"
        )
    if not hasattr(current, _ORIGINAL):
        setattr(module, _NAME, _dispatch_for(current))


def uninstall(model: Any = None) -> None:
    """Restore the original attention in one model's module, or in every module the hook patched."""
    modules = [model_module(model)] if model is not None else list(sys.modules.values())
    for module in modules:
        original = getattr(vars(module).get(_NAME), _ORIGINAL, None)  # vars: no module __getattr__ runs
        if original is not None:
            setattr(module, _NAME, original)


def is_installed(model: Any) -> bool:
    return hasattr(getattr(model_module(model), _NAME, None), _ORIGINAL)


@contextmanager
def heap_hook(model: Any) -> Iterator[Any]:
    """The hook installed for the block and removed on the way out, however
    it ends; a hook that was already installed (a live Session's) stays."""
    installed_before = is_installed(model)
    install(model)
    try:
        yield model
    finally:
        if not installed_before:
            uninstall(model)
