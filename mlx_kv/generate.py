"""Running a model over its cache: one chunked prefill and one decode loop.

Everything that feeds tokens (the Session, the benchmarks, profiling,
scripts) goes through these two, as mlx-lm's generators all go through
generate_step, so every driver gives information-aware policies their
signals in the same way: surprisal and entropy per prefill chunk, and per
decoded token.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Sequence

import mlx.core as mx

from mlx_kv.heap.prompt_cache import (feed_token_info, over_budget, rebalance, tokens_seen, wants_information,
                                     wants_replay)
from mlx_kv.information import token_information
from mlx_kv.replay import TAIL

Sampler = Callable[[mx.array], int]


def greedy(logits: mx.array) -> int:
    return int(mx.argmax(logits).item())


def make_sampler(temperature: float) -> Sampler:
    if temperature <= 0:
        return greedy
    return lambda logits: int(mx.random.categorical(logits / temperature).item())


def prefill(model: Any, cache: list, tokens: list[int], *, chunk: int = 512, previous: mx.array | None = None,
            on_chunk: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
            replay: Any = None, history: Sequence[int] | None = None) -> tuple[mx.array | None, int]:
    """Feed tokens in chunks; information-aware policies get their signals,
    and with `replay` (a mlx_kv.replay.Replay) policies that score by
    reconstruction get each chunk replayed before the heap collects. Given
    `history` (every token the heap consumed before these), a replay waits
    until a heap must evict (replay_when_needed): one that stays within its
    budget never pays for it.

    Returns the last logits and how many tokens were consumed (fewer than
    len(tokens) only when `should_stop` said so). `on_chunk(consumed)` runs
    after each chunk, once the heap holds its budget again. `previous` are
    the logits that predicted the first token (its surprisal).
    """
    informed = wants_information(cache)
    replaying = replay is not None and wants_replay(cache)
    if replaying:
        for layer in cache:
            layer.expect_replay()
    fed = [*history, *tokens] if replaying and history is not None else None
    if replaying and fed is None and unreplayed_from(cache) is not None:
        raise ValueError("prefill: this heap owes replays a prefill put off; pass the tokens it consumed (history)")
    if fed is not None and len(history) != tokens_seen(cache):
        raise ValueError(f"prefill: history holds {len(history)} tokens, the heap has consumed {tokens_seen(cache)}")
    done, last, before = 0, previous, None
    while done < len(tokens):
        if should_stop is not None and should_stop():
            break
        piece = tokens[done:done + chunk]
        start = tokens_seen(cache)
        if informed:  # surprisal needs every position's logits
            out = model(mx.array(piece)[None], cache=cache)[0]
            if start is not None:
                feed_token_info(cache, start, *token_information(out, piece, last))
            last = out[-1]
        else:  # the vocabulary projection of the last position only (a fifth of a small model's prefill)
            last = logits(model, body(model, piece, cache)[:, -1:])[0, -1]
        if fed is not None:
            replay_when_needed(model, cache, replay, fed, start)  # (fed up to what the heap has seen)
        elif replaying:
            replay_chunk(model, cache, replay, piece, before)
            before = piece
        mx.eval(last, [c.state for c in cache])
        done += len(piece)
        if on_chunk is not None:
            on_chunk(done)
    return last, done


def body(model: Any, tokens: list[int], cache: list) -> mx.array:
    """The model's last hidden states (before the vocabulary projection), for
    mlx-lm's decoder families (llama, mistral, qwen2, qwen3: a `.model` body)."""
    return model.model(mx.array(tokens)[None], cache)


def logits(model: Any, hidden: mx.array) -> mx.array:
    """The vocabulary projection of `hidden`, tied to the embedding or not, as mlx-lm's models apply it."""
    if getattr(model.args, "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        return model.model.embed_tokens.as_linear(hidden)
    return model.lm_head(hidden)


def replay_chunk(model: Any, cache: list, replay: Any, piece: list[int], before: list[int] | None) -> None:
    """Replay the chunk just fed, `replay.span` tokens at a time (see
    mlx_kv.replay); the heap is left as it was, plus the scores."""
    _replay_span(model, cache, replay, tokens_seen(cache) - len(piece), piece, before)
    _collect_replayed(cache)


def replay_when_needed(model: Any, cache: list, replay: Any, fed: Sequence[int], first: int) -> None:
    """The tokens from position `first` on just landed: owe their replay, and
    pay what is owed if a heap holds more than its budget. `fed`: every token
    the heap consumed, in position order (more is ignored)."""
    for layer in cache:
        if layer.unreplayed_from is None:
            layer.unreplayed_from = first
    settle_replays(model, cache, replay, fed)


def settle_replays(model: Any, cache: list, replay: Any, fed: Sequence[int], room: int = 0) -> bool:
    """Pay the owed replays (pay_replays) if a heap holds, or after `room`
    more tokens would hold, more than its budget: a collection must not rank
    tokens no replay has scored. Returns whether it replayed."""
    if unreplayed_from(cache) is None or not over_budget(cache, room):
        return False
    return pay_replays(model, cache, replay, fed)


def pay_replays(model: Any, cache: list, replay: Any, fed: Sequence[int]) -> bool:
    """Replay the tokens whose replay was put off (replay_when_needed), from
    the first owed position to the end of `fed` (every token the heap
    consumed, in position order; a reply being decoded may have fed more:
    those wait for their own replay), then collect what waited for it."""
    start = unreplayed_from(cache)
    if start is None:
        return False
    stop = min(len(fed), tokens_seen(cache))
    for first in range(start, stop, replay.span):
        piece = list(fed[first:min(first + replay.span, stop)])
        _replay_span(model, cache, replay, first, piece, list(fed[max(0, first - TAIL):first]) or None)
    for layer in cache:
        layer.unreplayed_from = None
    _collect_replayed(cache)
    return True


def unreplayed_from(cache: list) -> int | None:
    """The first position whose replay is owed (every layer owes the same); None: nothing owed."""
    return getattr(cache[0], "unreplayed_from", None) if cache else None


def _replay_span(model: Any, cache: list, replay: Any, first: int, piece: list[int], before: list[int] | None) -> None:
    """Replay the tokens `piece` at positions first.., `replay.span` at a time;
    layers above the policy's replayed depth inherit the token-level score."""
    depth = getattr(cache[0].policy, "layers", 0) or len(cache)
    fraction = getattr(cache[0].policy, "fraction", 1.0)
    replayed, inheriting = cache[:depth], cache[depth:]
    for start in range(0, len(piece), replay.span):
        span = piece[start:start + replay.span]
        for layer in replayed:
            layer.begin_replay(first + start, first + start + len(span))
        try:
            ids = replay.ids(span, before, fraction)
            if inheriting:
                mx.eval(lower_layers(model, mx.array(ids)[None], replayed))
            else:
                mx.eval(body(model, ids, cache))  # no vocabulary projection: nothing reads it
        finally:
            for layer in replayed:
                layer.end_replay()
        before = span
    if inheriting:
        end = first + len(piece)
        scores = mx.stack([layer.replay_scores(first, end) for layer in replayed]).max(axis=0)
        for layer in inheriting:
            layer.inherit_replay_scores(first, end, scores)


def _collect_replayed(cache: list) -> None:
    """The collections that waited for the replay scores."""
    if cache[0].adaptive and over_budget(cache):
        rebalance(cache)
    for layer in cache:
        layer.collect_pending()


def lower_layers(model: Any, ids: mx.array, cache: list) -> mx.array:
    """The hidden states after the first len(cache) layers (the heap builds each
    layer's mask itself, so none is passed)."""
    h = model.model.embed_tokens(ids)
    for layer, c in zip(model.model.layers, cache):
        h = layer(h, None, cache=c)
    return h


def decode(model: Any, cache: list, logits: mx.array, *, max_tokens: int, sampler: Sampler = greedy,
           stop_tokens: Collection[int] = (), should_stop: Callable[[], bool] | None = None,
           replay: Any = None, history: Sequence[int] | None = None) -> Iterator[tuple[int, mx.array]]:
    """Sample from `logits`, feed the token, repeat: yields each token with
    the logits after it. A token is fed before it is yielded, so a caller
    that stops consuming leaves nothing sampled that the cache has not seen;
    a stop token ends the loop unfed. With `replay` and `history` (every
    token consumed before), replays a prefill put off are paid before the
    first token that would make a heap evict."""
    informed = wants_information(cache)
    owed = list(history) if replay is not None and history is not None and unreplayed_from(cache) is not None else None
    for _ in range(max_tokens):
        if should_stop is not None and should_stop():
            break
        token = sampler(logits)
        if token in stop_tokens:
            break
        if owed is not None and settle_replays(model, cache, replay, owed, room=1):
            owed = None
        previous = logits
        logits = model(mx.array([[token]]), cache=cache)[0, -1]
        if informed:
            feed_token_info(cache, tokens_seen(cache) - 1, *token_information(logits[None], [token], previous))
        mx.async_eval(logits)
        yield token, logits
