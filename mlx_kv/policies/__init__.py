"""Scoring policies, one per module, looked up by name."""

from mlx_kv.policies.base import Policy, SlotView
from mlx_kv.policies.expected import ExpectedAttention
from mlx_kv.policies.h2o import H2O
from mlx_kv.policies.keydiff import KeyDiff
from mlx_kv.policies.kvzip import KVzip
from mlx_kv.policies.random import Random
from mlx_kv.policies.snapkv import SnapKV
from mlx_kv.policies.streaming import Streaming
from mlx_kv.policies.surprise import Surprise
from mlx_kv.policies.tova import TOVA
from mlx_kv.policies.valuenorm import ValueNorm

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (H2O, TOVA, SnapKV, Streaming, Random, Surprise, KVzip, KeyDiff, ExpectedAttention, ValueNorm)
}

__all__ = ["POLICIES", "Policy", "SlotView", "H2O", "TOVA", "SnapKV", "Streaming", "Random", "Surprise", "KVzip", "KeyDiff", "ExpectedAttention", "ValueNorm"]
