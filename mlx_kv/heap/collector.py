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
