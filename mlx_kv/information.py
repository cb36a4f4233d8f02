"""Information signals per token: surprisal and prediction entropy.

Seed 003: attention is a biased "keep" signal; surprising tokens and
high-entropy forking points carry more of what matters. Both come from the
model's own next-token distributions during prefill, which the heap never
sees, so whoever runs the model computes them here and hands them to the
caches (mlx_kv.generate does, for every driver).

surprisal(x_i) = -log p(x_i | x_<i): how unexpected the token was.
entropy(x_i)   = H(p(. | x_<=i)): how open the continuation is after it.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def token_information(logits: mx.array, tokens: list[int], previous: mx.array | None) -> tuple[np.ndarray, np.ndarray]:
    """(surprisal, entropy) for each token of a chunk; logits (S, V) are the
    model's outputs at the chunk's positions, `previous` those just before it."""
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    entropy = -(mx.exp(logprobs) * logprobs).sum(axis=-1)
    ids = mx.array(tokens)
    surprisal = -mx.take_along_axis(logprobs[:-1], ids[1:, None], axis=-1)[:, 0]
    if previous is not None:
        first = -(previous - mx.logsumexp(previous))[ids[0]]
    else:
        first = mx.array(float("nan"))
    surprisal = mx.concatenate([first.reshape(1), surprisal])
    return np.array(surprisal.astype(mx.float32)), np.array(entropy.astype(mx.float32))
