"""The CLI's help and defaults say what the library does."""

from __future__ import annotations

import pytest

from mlx_kv.cli import build_parser
from mlx_kv.commands.options import POLICY_NAMES
from mlx_kv.config import HeapConfig
from mlx_kv.errors import UserError


def run(argv: list[str]) -> int:
    """A command in this process, without main()'s OpenBLAS re-exec."""
    args = build_parser().parse_args(argv)
    return args.run(args)


def test_policy_help_names_every_policy(capsys):
    from mlx_kv.policies import POLICIES

    assert set(POLICY_NAMES) == set(POLICIES)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(POLICY_NAMES) + " (default kvzip," in help_text


def test_bench_speed_compacts_like_the_config_by_default():
    args = build_parser().parse_args(["bench", "speed"])
    assert args.compact_thresholds == [HeapConfig().compact_threshold] == [0.0]


def test_a_cold_tier_with_a_compaction_threshold_is_refused_before_a_model_loads():
    with pytest.raises(ValueError, match="^compact_threshold: the cold tier"):
        HeapConfig(cold_bits=4, compact_threshold=0.5)
    with pytest.raises(UserError, match="h2o\\+q4.*compact_threshold=0"):
        run(["bench", "speed", "--model", "/no/such/model", "--policies", "h2o,h2o+q4",
             "--compact-thresholds", "0.5,0"])


def test_budget_explains_what_a_session_gets(tiny_model_dir, capsys):
    from mlx_kv.engine import Session

    assert run(["budget", "--model", str(tiny_model_dir), "--budget", "100KB", "--window", "16"]) == 0
    out = capsys.readouterr().out
    session = Session.load(str(tiny_model_dir), budget="100KB", window=16)
    per_token = session.heap_stats().budget_bytes // sum(layer.budget for layer in session.cache)
    assert f"heap, cache positions: {per_token} bytes per kept token per layer" in out
    assert f"budget 100KB: {session.cache[0].budget} tokens per layer, {session.heap_stats().budget_bytes / 2**20:.1f} MiB" in out
    assert "three" not in out and "float32 accumulated score, times seen and dead-slot bias, the RoPE shift" in out
