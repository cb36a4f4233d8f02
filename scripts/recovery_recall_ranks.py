"""Would the recovery tier find a spilled needle? Rank of the needle's pages.

    python scripts/recovery_recall_ranks.py [--tokens 50000] [--policy h2o] [--layer 1] [--steps 10]

Streams `--tokens` tokens with three needles through the bundled model under
a 1,024-token budget with the recovery tier on (as `mlx-kv bench stream`
does), then, while each needle is asked for, takes the queries of the
question chunk and of the first `--steps` answer tokens at one layer and
ranks every spilled page of each KV head against them three ways: the Quest
upper bound the tier recalls by, the exact best q.k over the page's stored
keys, and the exact score after rotating the keys to the positions they
would take if recalled (positions="cache"). Printed per needle and step:
the best rank among the pages holding a token of the needle sentence
(0 = the page recalled first), and the best score of a kept token beside
the needle's best. A tier that recalls 4 pages per head needs ranks < 4.
"""

from __future__ import annotations

import argparse

import mlx.core as mx
import numpy as np

from mlx_kv.bench import stream as stream_bench
from mlx_kv.config import HeapConfig
from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.models import load_model
from mlx_kv.positions import shift_keys

NEEDLE_TOKENS = 14  # "The special magic number for KEY is VALUE ." and a little slack


def page_scores(layer: HeapKVCache, q: np.ndarray, head: int):
    """Per spilled page of one head: Quest bound, exact best q.k, exact after re-rotation, positions."""
    store = layer.store
    rows, bound = store.upper_bounds(head, q)
    kept = np.sort(layer.slots.positions[head][layer.slots.positions[head] >= 0])
    exact, positions, keys, shifts = [], [], [], []
    with open(store.path, "rb") as f:
        for row in rows:
            k, _, pos, rot = store._read_page(row, f)
            exact.append(float((q @ k.T).max()))
            positions.append(pos)
            keys.append(k)
            shifts.append(int(np.searchsorted(kept, pos.min())) + np.arange(len(pos)) - rot)
    rotated = shift_keys(layer.rope, mx.array(np.concatenate(keys)[None, None]),
                         mx.array(np.concatenate(shifts)[None].astype(np.int32)))
    moved = (q @ np.array(rotated)[0, 0].T).max(axis=0).reshape(len(rows), -1).max(axis=1)
    kept_keys = np.array(layer.slots.full("keys", layer.end)[0, head].astype(mx.float32))
    return np.asarray(bound), np.asarray(exact), moved, positions, float((q @ kept_keys.T).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--policy", default="h2o")
    parser.add_argument("--layer", type=int, default=1, help="the bundled model's recall layer is 1")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    model, tokenizer, _ = load_model(None)
    watched = {"needle": None, "calls": 0}
    records: list[tuple[int, int, list]] = []
    original_attend = HeapKVCache.attend
    original_clone = stream_bench.clone_heap

    def attend(self, queries, keys, values, *, scale, mask=None):
        if watched["needle"] is not None and self is watched["layer"] and watched["calls"] <= args.steps:
            watched["calls"] += 1
            if self.store is not None and self.store.page_count:
                H = self.slots.n_heads
                rows = min(8, queries.shape[2])
                q = np.array(queries[0, :, -rows:, :].astype(mx.float32)).reshape(H, -1, queries.shape[-1])
                records.append((watched["needle"], queries.shape[2], [page_scores(self, q[h], h) for h in range(H)]))
        return original_attend(self, queries, keys, values, scale=scale, mask=mask)

    def clone_heap(cache):
        clones = original_clone(cache)
        watched.update(needle=0 if watched["needle"] is None else watched["needle"] + 1,
                       calls=0, layer=clones[args.layer])
        return clones

    HeapKVCache.attend = attend
    stream_bench.clone_heap = clone_heap
    config = HeapConfig(budget=1024, policy=args.policy, positions="cache", recovery="1GB")
    summary = stream_bench.stream(model, tokenizer, tokens=args.tokens, config=config)
    print(f"{args.tokens:,} tokens, {args.policy}, budget 1024, layer {args.layer}; "
          f"spilled {summary.get('recovery_spilled', 0):,} token-heads")
    for i, needle in enumerate(summary["needles"]):
        print(f"needle at {needle['depth']:.0%} (token {needle['position']:,}): "
              f"{'found' if needle['found'] else 'missed'}: {needle['answer']!r}")
        span = (needle["position"], needle["position"] + NEEDLE_TOKENS)
        for asked, n_new, heads in records:
            if asked != i:
                continue
            cells = []
            for head, (bound, exact, moved, positions, kept_best) in enumerate(heads):
                hit = [j for j, p in enumerate(positions) if np.any((p >= span[0]) & (p < span[1]))]
                if not hit:
                    cells.append(f"head {head}: not spilled")
                    continue
                rank = lambda s: min(int((s > s[j]).sum()) for j in hit)  # noqa: E731
                cells.append(f"head {head}: {len(hit)} pages of {len(bound)}, rank bound {rank(bound)} "
                             f"exact {rank(exact)} re-rotated {rank(moved)}; best q.k needle "
                             f"{max(moved[j] for j in hit):.0f} vs kept {kept_best:.0f}")
            print(f"  {'question' if n_new > 1 else 'answer step'}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
