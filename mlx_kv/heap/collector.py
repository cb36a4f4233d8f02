"""Deciding who dies, who is promoted and who is tenured: host-side and pure.

A collection works on per-(kv_head, slot) arrays. Sinks and the young window
are never candidates. A minor collection ranks only the intermediate tier
(tokens that left the young window and are not tenured); a major one ranks
the tenured tier too and re-selects it. Every head evicts the same number of
tokens, so all heads keep the same count, but each head picks its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CollectionResult:
    victims: np.ndarray  # (H, n_evict) slot indices
    ranked: int  # candidates ranked, summed over heads
    promoted: int  # intermediate -> tenured, summed over heads
    demoted: int  # tenured -> intermediate at a major collection
    major: bool


def protected_mask(positions: np.ndarray, offset: int, sinks: int, window: int) -> np.ndarray:
    alive = positions >= 0
    return alive & ((positions < sinks) | (positions >= offset - window))


def tier_counts(positions: np.ndarray, tenured: np.ndarray, *, offset: int, sinks: int,
                window: int) -> dict[str, int]:
    """Live tokens per tier, summed over the heads given."""
    alive = positions >= 0
    in_sinks = alive & (positions < sinks)
    young = alive & ~in_sinks & (positions >= offset - window)
    old = alive & ~protected_mask(positions, offset, sinks, window)
    held = old & tenured
    return {"sinks": int(in_sinks.sum()), "young": int(young.sum()),
            "intermediate": int((old & ~held).sum()), "tenured": int(held.sum())}


def collect(
    positions: np.ndarray,
    tenured: np.ndarray,
    survived: np.ndarray,
    scores: np.ndarray,
    *,
    offset: int,
    sinks: int,
    window: int,
    n_evict: int,
    tenured_cap: int,
    promote_after: int,
    major: bool,
) -> CollectionResult:
    """Evict n_evict tokens per head; update `positions`, `tenured`, `survived` in place."""
    alive = positions >= 0
    old = alive & ~protected_mask(positions, offset, sinks, window)
    candidates = old if major else old & ~tenured
    if n_evict > candidates.sum(axis=1).min():
        # The intermediate tier alone cannot pay: rank the tenured tier as well.
        candidates, major = old, True
    n_evict = min(n_evict, int(candidates.sum(axis=1).min()))
    ranked = int(candidates.sum())
    ranking = np.where(candidates, scores, np.inf)
    if n_evict > 0:
        victims = np.argpartition(ranking, n_evict - 1, axis=1)[:, :n_evict]
    else:
        victims = np.zeros((positions.shape[0], 0), dtype=np.int64)
    rows = np.arange(positions.shape[0])[:, None]
    positions[rows, victims] = -1
    tenured[rows, victims] = False
    survived[rows, victims] = 0

    survivors = candidates & (positions >= 0)
    survived[survivors] += 1
    promoted, demoted = _retenure(positions, tenured, survived, scores, offset, sinks, window,
                                  tenured_cap, promote_after, major)
    return CollectionResult(victims, ranked, promoted, demoted, major)


def _retenure(positions, tenured, survived, scores, offset, sinks, window,
              tenured_cap, promote_after, major) -> tuple[int, int]:
    """Fill the tenured tier with the best tokens that survived long enough.

    Minor collections only promote into free tenured room; a major one picks
    the whole tier again, demoting tenured tokens that stopped mattering.
    """
    old = (positions >= 0) & ~protected_mask(positions, offset, sinks, window)
    eligible = old & (survived >= promote_after)
    before = tenured.copy()
    if major:
        pool = eligible | (tenured & old)
        room = np.full(positions.shape[0], tenured_cap)
        tenured[:] = False
    else:
        pool = eligible & ~tenured
        room = tenured_cap - (tenured & old).sum(axis=1)
    for head in range(positions.shape[0]):
        take = int(min(room[head], pool[head].sum()))
        if take <= 0:
            continue
        slots = np.flatnonzero(pool[head])
        best = slots[np.argsort(-scores[head, slots], kind="stable")[:take]]
        tenured[head, best] = True
    promoted = int((tenured & ~before).sum())
    demoted = int((before & ~tenured).sum())
    return promoted, demoted


def compaction_order(positions: np.ndarray, tenured: np.ndarray, *, live: int, cold: bool, offset: int,
                     sinks: int, window: int) -> tuple[np.ndarray, int]:
    """Where each head's live slots go when the layer is compacted: (H, live)
    old slot indices in position order and how many of each head's lead the
    cold tier takes (with a cold tier: the oldest intermediate tokens, the
    same count in every head, first)."""
    alive = positions >= 0
    last = np.iinfo(np.int64).max
    n_cold = 0
    sort_key = np.where(alive, positions, last)
    if cold:
        eligible = alive & ~protected_mask(positions, offset, sinks, window) & ~tenured
        n_cold = int(eligible.sum(axis=1).min()) if len(positions) else 0
        if n_cold:  # each head's oldest eligible tokens
            oldest = np.sort(np.where(eligible, positions, last), axis=1)[:, n_cold - 1: n_cold]
            eligible &= positions <= oldest
        sort_key = np.where(eligible, sort_key - last // 2, sort_key)
    return np.argsort(sort_key, axis=1, kind="stable")[:, :live], n_cold


def noisy(scores: np.ndarray, positions: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Scores scaled to [0, 1] per head, plus Gaussian noise of `sigma`, so
    rank_noise means the same for every policy (and says less about what
    was attended)."""
    alive = positions >= 0
    lo = np.where(alive, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(alive, scores, -np.inf).max(axis=1, keepdims=True)
    return (scores - lo) / np.maximum(hi - lo, 1e-12) + rng.normal(0.0, sigma, scores.shape)
