"""Invalid settings are refused with a message that names the field."""

import pytest

from mlx_kv import HeapConfig, parse_bytes


@pytest.mark.parametrize("kwargs, field", [
    (dict(budget=0), "budget"),
    (dict(budget=-5), "budget"),
    (dict(budget=10, sinks=4, window=64), "budget"),
    (dict(budget="lots"), "budget"),
    (dict(budget="-2GB"), "budget"),
    (dict(budget=1.5), "budget"),
    (dict(sinks=-1), "sinks"),
    (dict(window=-3), "window"),
    (dict(tenured=-1), "tenured"),
    (dict(promote_after=0), "promote_after"),
    (dict(major_every=0), "major_every"),
    (dict(collect_batch=0), "collect_batch"),
    (dict(policy="lru"), "policy"),
    (dict(policy="snapkv", policy_args={"window": 0}), "policy_args"),
    (dict(policy="h2o", policy_args={"bogus": 1}), "policy_args"),
    (dict(compact_threshold=1.5), "compact_threshold"),
    (dict(positions="relative"), "positions"),
    (dict(rank_noise=-0.1), "rank_noise"),
    (dict(cold_bits=4, compact_threshold=0.5), "compact_threshold"),
])
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        HeapConfig(**kwargs)


@pytest.mark.parametrize("text, expected", [
    ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 gb", 1.5e9), ("1000", 1000), ("64kib", 65536),
])
def test_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


def test_byte_budget_becomes_tokens_per_layer():
    from conftest import build_model
    from mlx_kv.budget import kv_geometry, tokens_per_layer

    model = build_model("llama")
    geometry = kv_geometry(model)
    assert (geometry.n_layers, geometry.n_kv_heads, geometry.head_dim, geometry.itemsize) == (2, 2, 16, 4)
    total = 1000 * geometry.n_layers * geometry.heap_bytes_per_token_layer
    assert tokens_per_layer(HeapConfig(budget=f"{total}B"), model) == [1000, 1000]
    with pytest.raises(ValueError, match="^budget"):
        tokens_per_layer(HeapConfig(budget="1KB"), model)
