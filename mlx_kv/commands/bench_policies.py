"""Policy names and variants (h2o+q4, ...) checked before a benchmark loads a model."""

from __future__ import annotations

from typing import Any

from mlx_kv.errors import UserError


def saved_profile(model: str | None) -> str | None:
    """The saved `mlx-kv profile` of a model, if there is one."""
    from mlx_kv.models import resolve_model_path
    from mlx_kv.profile import find_profile

    try:
        found = find_profile(resolve_model_path(model))
    except UserError:
        return None
    return str(found) if found else None


def check_policies(policies: list[str], model: str | None, *, also: tuple[str, ...] = (),
                   settings: list[dict[str, Any]] | None = None) -> str | None:
    """Refuse an unknown policy or variant, alone or with any of `settings`
    (further HeapConfig fields the benchmark combines it with), before a model
    loads; returns the model's saved profile (for +entropy)."""
    from mlx_kv.bench.variants import VARIANTS, policy_config
    from mlx_kv.policies import POLICIES

    profile = saved_profile(model)
    for policy in (p for p in policies if p not in also):
        name = policy.split("+")[0]
        if name not in POLICIES:
            raise UserError(f"policies: unknown policy {name!r}; choose from {', '.join((*also, *POLICIES))}"
                            f" (variants: {VARIANTS})")
        try:
            for extra in settings or [{}]:
                policy_config(policy, profile, **extra)
        except ValueError as exc:
            raise UserError(f"policies: {policy!r}: {str(exc).removeprefix('policies: ')}") from None
    return profile
