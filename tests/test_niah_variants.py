"""bench niah's policy names: variants select heap settings, bad ones are clear errors."""

import pytest

from mlx_kv.bench.variants import parse_policy


def test_variants_map_to_heap_settings():
    assert parse_policy("h2o") == ("h2o", {})
    assert parse_policy("h2o+q4") == ("h2o", {"cold_bits": 4})
    assert parse_policy("tova+q8+noise0.05") == ("tova", {"cold_bits": 8, "rank_noise": 0.05})
    assert parse_policy("h2o+q4+cache") == ("h2o", {"cold_bits": 4, "positions": "cache"})
    assert parse_policy("surprise+alpha=1+signal=entropy") == (
        "surprise", {"policy_args": {"alpha": 1.0, "signal": "entropy"}})


@pytest.mark.parametrize("bad", ["h2o+q5", "h2o+noisy", "h2o+"])
def test_unknown_variants_are_value_errors(bad):
    with pytest.raises(ValueError, match="policies"):
        parse_policy(bad)


def test_allocation_variants():
    assert parse_policy("h2o+pyramid") == ("h2o", {"allocation": "pyramid"})
    assert parse_policy("snapkv+entropy+q4") == ("snapkv", {"allocation": "entropy", "cold_bits": 4})


def test_recover_switches_the_recovery_tier_on():
    from mlx_kv.bench.variants import policy_config

    assert parse_policy("snapkv+recover") == ("snapkv", {"recovery": "1GB"})
    assert policy_config("kvzip+adaptive+recover", budget=256).recovery_settings()["max_bytes"] == 10**9


def test_a_variant_and_a_flag_for_the_same_setting_agree_or_are_refused_in_one_line():
    from mlx_kv.bench.variants import policy_config

    assert policy_config("h2o+recover", recovery=None).recovery == "1GB"  # bench stream passes its flag, unset
    assert policy_config("h2o+q4", cold_bits=4).cold_bits == 4
    with pytest.raises(ValueError, match="h2o\\+q4 sets cold_bits to 4 and the command line to 8"):
        policy_config("h2o+q4", cold_bits=8)


def test_the_profile_path_of_a_hub_model_is_the_same_in_every_process():
    import subprocess
    import sys

    code = ("from pathlib import Path; from mlx_kv.profile import profile_path; "
            "print(profile_path(Path('/nowhere/huggingface/hub/models--org--name/snapshots/abc')))")
    paths = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(paths) == 1
