"""Information signals per token: surprisal and prediction entropy.

Seed 003: attention is a biased "keep" signal; surprising tokens and
high-entropy forking points carry more of what matters. Both come from the
model's own next-token distributions during prefill, which the heap never
sees, so whoever runs the model computes them here and hands them to the
caches (`HeapKVCache.set_token_info`).

surprisal(x_i) = -log p(x_i | x_<i): how unexpected the token was.
entropy(x_i)   = H(p(. | x_<=i)): how open the continuation is after it.
"""

from __future__ import annotations

from typing import Any, Callable

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


def wants_information(cache: list) -> bool:
    return any(getattr(getattr(c, "policy", None), "uses_info", False) for c in cache)


def prefill(model: Any, cache: list, tokens: list[int], *, chunk: int = 512, previous: mx.array | None = None,
            on_chunk: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
            ) -> tuple[mx.array | None, int]:
    """Feed tokens in chunks; information-aware policies get their signals.

    Returns the last logits and how many tokens were consumed (fewer than
    len(tokens) only when `should_stop` said so). `on_chunk(consumed)` runs
    after each chunk, once the heap holds its budget again.
    """
    informed = wants_information(cache)
    done, last = 0, previous
    while done < len(tokens):
        if should_stop is not None and should_stop():
            break
        piece = tokens[done:done + chunk]
        start = cache[0].tokens_seen if hasattr(cache[0], "tokens_seen") else None
        out = model(mx.array(piece)[None], cache=cache)[0]
        if informed and start is not None:
            surprisal, entropy = token_information(out, piece, last)
            for layer in cache:
                layer.set_token_info(start, surprisal, entropy)
        last = out[-1]
        mx.eval(last, [c.state for c in cache])
        done += len(piece)
        if on_chunk is not None:
            on_chunk(done)
    return last, done
