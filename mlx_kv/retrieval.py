"""Which KV heads copy facts: a retrieval score per (layer, KV head).

Heads differ: a few copy tokens from far back in the context (retrieval
heads, Wu et al. 2024), the rest attend to the first tokens and the recent
ones (DuoAttention, Xiao et al. 2024). A head's score here is how often its
strongest attention lands on the exact token being copied, while the model
repeats a document it has read (teacher-forced, behind the reconstruction
prompt of mlx_kv.replay): when the model reads token j of its copy and is
to write token j + 1, a copying head looks at token j + 1 of the original.
A KV head scores the best of its GQA group's query heads (its keys serve
them all). The documents are the generated filler of mlx_kv.tasks, not the
real prose the retention benchmark reads, so the profile is not fitted to
the benchmark's text.

allocation="retrieval" (mlx_kv.heap.prompt_cache) gives each KV head a
budget in proportion to its score, with a floor, and no replay at run time.
"""

from __future__ import annotations

import random
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache

from mlx_kv.chat_format import ChatFormat
from mlx_kv.hook import heap_hook
from mlx_kv.replay import Replay


class _CopyProbe(KVCache):
    """A plain KVCache whose attention also counts, per query head, the copy
    rows [first, first + n) whose top key is their target (target[r] for row r)."""

    def __init__(self, first: int, targets: np.ndarray) -> None:
        super().__init__()
        self.first, self.targets = first, targets
        self.hits: np.ndarray | None = None

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, *, scale: float, mask: Any = None) -> mx.array:
        out = mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)
        _, n_q, L, D = queries.shape
        n_kv = keys.shape[1]
        start = self.offset - L  # the position of the first query row
        lo, n = self.first - start, len(self.targets)
        if lo < 0 or lo + n > L:
            raise ValueError("retrieval profile: the copy rows must arrive in one forward pass")
        rows = queries[:, :, lo:lo + n].reshape(1, n_kv, n_q // n_kv, n, D)
        scores = (rows * scale) @ keys[:, :, None].swapaxes(-1, -2)  # (1, H, g, n, keys)
        row_pos = mx.arange(n)[:, None] + self.first
        scores = mx.where(mx.arange(keys.shape[2])[None, :] <= row_pos, scores, -mx.inf)
        top = np.array(mx.argmax(scores, axis=-1)).reshape(n_q, n)
        self.hits = (top == self.targets[None, :]).mean(axis=1)
        return out


def copy_prompt(tokenizer: Any, doc: list[int], replay: Replay) -> tuple[list[int], int, np.ndarray]:
    """ids = the user turn holding `doc`, the reconstruction prompt, `doc` again;
    the copy rows' first position and each row's target (the original position
    of the token that row is to write)."""
    fmt = ChatFormat.probe(tokenizer)
    marker = "\u2063"
    rendered = fmt.render(tokenizer, [{"role": "user", "content": marker}], add_generation_prompt=True)
    opening = tokenizer.encode(rendered.split(marker, 1)[0], add_special_tokens=False)
    tail = replay.ids(doc, None)
    ids = list(opening) + list(doc) + tail
    first = len(opening) + len(doc) + len(tail) - len(doc)  # where the copy of doc[0] is read
    targets = len(opening) + 1 + np.arange(len(doc) - 1)
    return ids, first, targets


def retrieval_scores(model: Any, tokenizer: Any, *, prompts: int = 4, tokens: int = 512, seed: int = 0) -> np.ndarray:
    """(layers, KV heads) in [0, 1]: the mean over `prompts` documents of each
    KV head's copy-hit rate (the best query head of its group)."""
    from mlx_kv.tasks import TASKS, make_sample

    replay = Replay.for_tokenizer(tokenizer)
    rng = random.Random(seed)
    totals = None
    with heap_hook(model):
        for i in range(prompts):
            sample = make_sample(TASKS[i % len(TASKS)], tokens, tokenizer, depth=rng.random(), seed=seed + i)
            doc = list(tokenizer.encode(sample.context, add_special_tokens=False))[:tokens]
            ids, first, targets = copy_prompt(tokenizer, doc, replay)
            probes = [_CopyProbe(first, targets) for _ in model.layers]
            mx.eval(model(mx.array(ids)[None], cache=probes))
            hits = np.stack([probe.hits for probe in probes])  # (layers, query heads)
            totals = hits if totals is None else totals + hits
    per_query = totals / prompts
    n_kv = model.args.num_key_value_heads or model.args.num_attention_heads
    return per_query.reshape(per_query.shape[0], n_kv, -1).max(axis=2)
