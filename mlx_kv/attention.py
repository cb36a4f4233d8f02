"""Attention that also tells the heap where it went (mlx_kv.hook routes the
model's attention here through `HeapKVCache.attend`).

`grouped_attention` computes attention explicitly, in blocks of queries so
prefill never materialises chunk x context weights, and returns the weights
summed per key for the policies. It works per KV head: the query heads of a
GQA group are folded together, keys and values are never repeated.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np


class Attended(NamedTuple):
    output: mx.array  # (1, Hq, S, Dv)
    weights: mx.array | None  # (H, L): weights summed over the group's query heads and the score rows
    count: mx.array | None  # (H, L): how many (query head, score row) pairs could see each key
    last_row: mx.array | None  # (H, G, L): the last query's weights, when asked for (diagnostics)


def grouped_attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    *,
    first_query_slot: int | None,
    dead_bias: mx.array | None = None,
    score_rows: tuple[int, int] = (0, 0),
    block: int = 256,
    keep_last_row: bool = False,
) -> Attended:
    """Softmax attention of queries (1, Hq, S, D) over keys (1, H, L, D).

    first_query_slot: the slot of the first query when the S queries occupy
        consecutive slots and must be causal among themselves; None when every
        query sees every live key (a single decode token).
    dead_bias: (H, L) additive bias, -inf on evicted slots.
    score_rows: the half-open range of query rows whose weights are summed.

    Returns the output, the weights summed over the group's query heads and
    the score rows, and how many (head, query) pairs could see each key (the
    last two are None for an empty range); with keep_last_row, also the last
    query's weights, for diagnostics.
    """
    B, n_q, S, D = queries.shape
    H, L = keys.shape[1], keys.shape[2]
    G = n_q // H
    # Fold the group's query heads into the row axis: (B, H, G*S, D) against
    # (B, H, L, D) needs no broadcast copy of the keys.
    q = (queries * scale).reshape(B, H, G, S, D)
    k_t = keys.swapaxes(-1, -2)
    bias = None if dead_bias is None else dead_bias[None, :, None, :]
    cols = mx.arange(L)
    a, b = score_rows
    outs, weight_sum, last_row = [], None, None
    for r0 in range(0, S, block):
        r1 = min(S, r0 + block)
        rows = r1 - r0
        s = (q[:, :, :, r0:r1, :].reshape(B, H, G * rows, D) @ k_t).astype(mx.float32)
        if first_query_slot is not None and S > 1:
            slots = first_query_slot + mx.arange(r0, r1)
            visible = mx.tile(cols[None, :] <= slots[:, None], (G, 1))
            s = mx.where(visible, s, -mx.inf)
        if bias is not None:
            s = s + bias
        w = mx.softmax(s, axis=-1, precise=True)
        outs.append((w.astype(values.dtype) @ values).reshape(B, H, G, rows, -1))
        w = w.reshape(B, H, G, rows, L)
        if keep_last_row and r1 == S:
            last_row = w[0, :, :, -1, :]
        lo, hi = max(a, r0), min(b, r1)
        if lo < hi:
            part = w[:, :, :, lo - r0 : hi - r0, :].sum(axis=(2, 3))[0]
            weight_sum = part if weight_sum is None else weight_sum + part
    out = outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=3)
    out = out.reshape(B, n_q, S, -1)
    if weight_sum is None:
        return Attended(out, None, None, last_row)
    if first_query_slot is None or S == 1:
        count = mx.full((H, L), float(G * (b - a)))
    else:
        visible = mx.clip(first_query_slot + b - cols, 0, b - a).astype(mx.float32)
        count = mx.broadcast_to(visible[None] * G, (H, L))
    return Attended(out, weight_sum, count, last_row)


def last_query_weights(queries: mx.array, keys: mx.array, scale: float, dead_bias: mx.array | None = None) -> mx.array:
    """(H, G, L) the last query's attention over keys (1, H, L, D): the
    dashboard's sample for a call the fused kernel served (the last query
    is the newest token, so it sees every live key)."""
    return _grouped_softmax(queries[:, :, -1:, :], keys, scale, dead_bias)[0]


def _grouped_softmax(queries: mx.array, keys: mx.array, scale: float, dead_bias: mx.array | None) -> mx.array:
    """(B, H, G, L) one query per query head (B, Hq, 1, D) over keys (B, H, L, D), GQA-grouped."""
    B, n_q, _, D = queries.shape
    H = keys.shape[1]
    s = ((queries * scale).reshape(B, H, n_q // H, D) @ keys.swapaxes(-1, -2)).astype(mx.float32)
    if dead_bias is not None:
        s = s + dead_bias[None, :, None, :]
    return mx.softmax(s, axis=-1, precise=True)


def packed_cold_attention(
    queries: mx.array,
    cold_keys: tuple[mx.array, mx.array, mx.array],
    cold_values: tuple[mx.array, mx.array, mx.array],
    hot_keys: mx.array,
    hot_values: mx.array,
    scale: float,
    *,
    bits: int,
    group_size: int,
    dead_bias: mx.array | None = None,
    scored: bool = False,
    keep_last_row: bool = False,
    cold_queries: mx.array | None = None,
) -> Attended:
    """One decode token's attention over the cold tier's packed rows followed
    by the hot slots, multiplying the packed words directly
    (`mx.quantized_matmul`, as mlx-lm's QuantizedKVCache does) instead of
    dequantizing the tier into temporaries at every step: the tier is read
    at its stored width, which is the point of storing it so.

    cold_keys / cold_values: (words, scales, biases), each (1, H, n_cold, *).
    hot_keys / hot_values: (1, H, n_hot, D); dead_bias: (H, n_cold + n_hot).
    With `scored`, the weights summed over the group's query heads (and
    the count of heads that saw each key), as grouped_attention returns them.
    `cold_queries`: the queries the packed keys are scored with, if not
    `queries` (positions="cache" rotates them instead of the keys).
    """
    B, n_q, S, D = queries.shape
    H = hot_keys.shape[1]
    G = n_q // H
    q = (queries * scale).reshape(B, H, G * S, D)
    q_cold = q if cold_queries is None else (cold_queries * scale).reshape(B, H, G * S, D)
    quantized = dict(group_size=group_size, bits=bits)
    s = mx.concatenate([mx.quantized_matmul(q_cold, *cold_keys, transpose=True, **quantized),
                        q @ hot_keys.swapaxes(-1, -2)], axis=-1).astype(mx.float32)
    if dead_bias is not None:
        s = s + dead_bias[None, :, None, :]
    w = mx.softmax(s, axis=-1, precise=True)
    n_cold = cold_keys[0].shape[2]
    wv = w.astype(hot_values.dtype)
    out = (mx.quantized_matmul(wv[..., :n_cold], *cold_values, transpose=False, **quantized)
           + wv[..., n_cold:] @ hot_values).reshape(B, n_q, S, -1)
    L = w.shape[-1]
    last_row = w.reshape(H, G, S, L)[:, :, -1, :] if keep_last_row else None
    if not scored:
        return Attended(out, None, None, last_row)
    weights = w.reshape(B, H, G * S, L).sum(axis=2)[0]
    return Attended(out, weights, mx.full((H, L), float(G * S)), last_row)


def replay_attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, dead_bias: mx.array | None,
                     domain_bias: mx.array, *, first_query_slot: int, block: int = 256) -> tuple[mx.array, mx.array]:
    """A replay's output (over every live key, as masked_attention's) and
    its KVzip score (the most weight any query of a key's GQA group pays it,
    the softmax taken over `domain_bias`'s keys only) from one
    softmax: on a CPU the exponentials are most of attention's cost, and
    the score's softmax over a subset of the keys is the same exponentials
    renormalised. Keys hidden by `dead_bias` but in the domain score 0."""
    B, n_q, S, D = queries.shape
    H, L = keys.shape[1], keys.shape[2]
    G = n_q // H
    q = (queries * scale).reshape(B, H, G, S, D)
    k_t = keys.swapaxes(-1, -2)
    cols = mx.arange(L)
    live = dead_bias[None, :, None, :] if dead_bias is not None else 0.0
    domain = (domain_bias == 0).astype(mx.float32)[None, :, None, :]
    outs, best = [], None
    for r0 in range(0, S, block):
        r1 = min(S, r0 + block)
        s = (q[:, :, :, r0:r1, :].reshape(B, H, G * (r1 - r0), D) @ k_t).astype(mx.float32)
        visible = mx.tile(cols[None, :] <= first_query_slot + mx.arange(r0, r1)[:, None], (G, 1))
        s = mx.where(visible, s + live, -mx.inf)
        e = mx.exp(s - s.max(axis=-1, keepdims=True))
        out = (e.astype(values.dtype) @ values) / e.sum(axis=-1, keepdims=True).astype(values.dtype)
        outs.append(out.reshape(B, H, G, r1 - r0, -1))
        d = e * domain
        w = (d / mx.maximum(d.sum(axis=-1, keepdims=True), 1e-30)).max(axis=2)[0]
        best = w if best is None else mx.maximum(best, w)
    out = outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=3)
    return out.reshape(B, n_q, S, -1).astype(queries.dtype), best


def masked_attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float,
                     dead_bias: mx.array | None) -> mx.array:
    """MLX's fused attention, for policies that read no weights: evicted
    slots (and, for a chunk, later keys) masked by an additive bias. A
    decode step on the CPU takes the plain matmul-softmax-matmul instead,
    which MLX's CPU backend runs faster than its fused kernel for one query
    (0.5 ms against 0.9 ms for 9 query heads over 2,048 keys here)."""
    n_new = queries.shape[2]
    if n_new == 1 and mx.default_device() == mx.cpu:
        return single_query_attention(queries, keys, values, scale, dead_bias)
    if dead_bias is None:
        mask = "causal" if n_new > 1 else None
    else:
        G = queries.shape[1] // keys.shape[1]
        bias = mx.repeat(dead_bias, G, axis=0)[None, :, None, :]
        if n_new > 1:
            L = keys.shape[2]
            cols = mx.arange(L)
            rows = L - n_new + mx.arange(n_new)
            bias = mx.where(cols[None, :] <= rows[:, None], bias, -mx.inf)
        mask = bias.astype(queries.dtype)
    return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)


def single_query_attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float,
                           dead_bias: mx.array | None) -> mx.array:
    """One query per head (1, Hq, 1, D) over keys (1, H, L, D), GQA, dead slots masked by `dead_bias` (H, L)."""
    # (4-D against the strided slice of the heap's arrays: a 3-D values[0] made decoding 25% slower here)
    w = _grouped_softmax(queries, keys, scale, dead_bias).astype(values.dtype)  # (B, H, G, L)
    return (w @ values).reshape(queries.shape[0], queries.shape[1], 1, -1).astype(queries.dtype)


def query_block(score_block: int, n_query_heads: int, n_keys: int) -> int:
    """Rows of queries per attention block: at most score_block, and few
    enough that one block's weights stay near 16M floats (64 MB) however
    long the context."""
    return max(16, min(score_block, (1 << 24) // max(1, n_query_heads * n_keys)))


def attention_summary(weights: mx.array, live: int) -> dict[str, mx.array]:
    """Entropy (nats) and the mass on the top 1% / 5% of live keys, per KV head,
    averaged over the group's query heads; lazy, read when someone looks."""
    w = weights.astype(mx.float32)
    entropy = -(w * mx.log(mx.maximum(w, 1e-30))).sum(axis=-1).mean(axis=-1)
    ordered = mx.sort(w, axis=-1)[..., ::-1]
    share = {}
    for name, fraction in (("top1", 0.01), ("top5", 0.05)):
        k = max(1, int(np.ceil(live * fraction)))
        share[name] = ordered[..., :k].sum(axis=-1).mean(axis=-1)
    return {"entropy": entropy, "top1": share["top1"], "top5": share["top5"], "keys": mx.array(live)}
