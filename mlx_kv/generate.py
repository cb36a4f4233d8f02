"""Running a model over its cache: one chunked prefill and one decode loop.

Everything that feeds tokens (the Session, the benchmarks, profiling,
scripts) goes through these two, as mlx-lm's generators all go through
generate_step, so every driver gives information-aware policies their
signals in the same way: surprisal and entropy per prefill chunk, and per
decoded token.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator

import mlx.core as mx

from mlx_kv.heap.prompt_cache import feed_token_info, tokens_seen, wants_information
from mlx_kv.information import token_information

Sampler = Callable[[mx.array], int]


def greedy(logits: mx.array) -> int:
    return int(mx.argmax(logits).item())


def make_sampler(temperature: float) -> Sampler:
    if temperature <= 0:
        return greedy
    return lambda logits: int(mx.random.categorical(logits / temperature).item())


def prefill(model: Any, cache: list, tokens: list[int], *, chunk: int = 512, previous: mx.array | None = None,
            on_chunk: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
            ) -> tuple[mx.array | None, int]:
    """Feed tokens in chunks; information-aware policies get their signals.

    Returns the last logits and how many tokens were consumed (fewer than
    len(tokens) only when `should_stop` said so). `on_chunk(consumed)` runs
    after each chunk, once the heap holds its budget again. `previous` are
    the logits that predicted the first token (its surprisal).
    """
    informed = wants_information(cache)
    done, last = 0, previous
    while done < len(tokens):
        if should_stop is not None and should_stop():
            break
        piece = tokens[done:done + chunk]
        start = tokens_seen(cache)
        out = model(mx.array(piece)[None], cache=cache)[0]
        if informed and start is not None:
            feed_token_info(cache, start, *token_information(out, piece, last))
        last = out[-1]
        mx.eval(last, [c.state for c in cache])
        done += len(piece)
        if on_chunk is not None:
            on_chunk(done)
    return last, done


def decode(model: Any, cache: list, logits: mx.array, *, max_tokens: int, sampler: Sampler = greedy,
           stop_tokens: Collection[int] = (), should_stop: Callable[[], bool] | None = None,
           ) -> Iterator[tuple[int, mx.array]]:
    """Sample from `logits`, feed the token, repeat: yields each token with
    the logits after it. A token is fed before it is yielded, so a caller
    that stops consuming leaves nothing sampled that the cache has not seen;
    a stop token ends the loop unfed."""
    informed = wants_information(cache)
    for _ in range(max_tokens):
        if should_stop is not None and should_stop():
            break
        token = sampler(logits)
        if token in stop_tokens:
            break
        previous = logits
        logits = model(mx.array([[token]]), cache=cache)[0, -1]
        if informed:
            feed_token_info(cache, tokens_seen(cache) - 1, *token_information(logits[None], [token], previous))
        mx.async_eval(logits)
        yield token, logits
