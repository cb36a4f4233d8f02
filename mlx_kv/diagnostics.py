"""Reading the heap: where attention lands, and which tokens are pillars.

A pillar is a kept token that many (layer, KV head) pairs rank among their
most attended tokens: the tokens "almost every later query attends to".
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def pillar_positions(layer_scores: list[tuple[np.ndarray, np.ndarray]], *, sinks: int = 0,
                     recent_from: int | None = None, top_fraction: float = 0.05, limit: int = 8) -> list[tuple[int, int]]:
    """(position, votes) of the tokens most often in a head's top fraction.

    layer_scores: per layer, (positions, scores) of shape (H, slots); dead
    slots have position -1. Sinks and the young window (positions from
    `recent_from` on) are left out: they draw attention by construction.
    """
    votes: Counter[int] = Counter()
    for positions, scores in layer_scores:
        for pos_row, score_row in zip(positions, scores):
            alive = (pos_row >= sinks) & np.isfinite(score_row)
            if recent_from is not None:
                alive &= pos_row < recent_from
            if not alive.any():
                continue
            pos, sc = pos_row[alive], score_row[alive]
            k = max(1, int(round(len(pos) * top_fraction)))
            top = pos[np.argpartition(-sc, k - 1)[:k]] if k < len(pos) else pos
            votes.update(int(p) for p in top)
    return sorted(votes.items(), key=lambda item: (-item[1], item[0]))[:limit]


def entropy(weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of attention distributions along `axis`."""
    p = np.clip(weights, 1e-30, None)
    return -(weights * np.log(p)).sum(axis=axis)


def top_share(weights: np.ndarray, fraction: float, axis: int = -1) -> np.ndarray:
    """Share of attention mass on the top `fraction` of keys (sparsity)."""
    n = weights.shape[axis]
    k = max(1, int(np.ceil(n * fraction)))
    part = -np.partition(-weights, k - 1, axis=axis)
    return np.take(part, np.arange(k), axis=axis).sum(axis=axis)


def layer_report(cache: list) -> list[dict]:
    """Per layer: sampled attention entropy and sparsity, tiers and heap activity."""
    rows = []
    for index, layer in enumerate(cache):
        stats = getattr(layer, "attention_stats", {}) or {}
        row = {"layer": index, "kept": layer.live, "budget": layer.budget, **layer.tier_counts(),
               "evictions": layer.evictions, "promotions": layer.promotions, "compactions": layer.compactions,
               "recalls": getattr(layer, "recalls", 0)}
        for key in ("entropy", "top1", "top5"):
            row[key] = float(np.array(stats[key]).mean()) if key in stats else None
        rows.append(row)
    return rows


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(p || q) in nats between two next-token distributions given as logits."""
    p = p_logits - p_logits.max()
    q = q_logits - q_logits.max()
    log_p = p - np.log(np.exp(p).sum())
    log_q = q - np.log(np.exp(q).sum())
    return float((np.exp(log_p) * (log_p - log_q)).sum())
