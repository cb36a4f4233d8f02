"""Replaying a chunk so that KVzip-style policies can score it (mlx_kv.policies.kvzip).

After a chunk is prefilled, the model reads "<the chunk>\\n\\nRepeat the
previous context exactly." as if the user had asked it, and then the chunk
again as its own answer (teacher-forced): the prompt and wording follow
KVzip's, as kvpress's KVzipPress applies it. The replay's queries attend to
the heap like any others, and each layer records the most attention a
replaying query paid each slot; then the replay's tokens are trimmed away
(`HeapKVCache.end_replay`), so the heap, its positions and what the model
reads next are exactly as if no replay had happened. A later chunk's replay
names where the previous chunk stopped ("..., starting with" its last
tokens), as KVzip's chunked scoring does.

Cost: one more forward pass over each chunk (plus the prompt): about twice
the prefill. A `fraction` < 1 replays that share of the chunk's tokens,
evenly spaced (every other one at 0.5), and costs that share. Spaced, not
the chunk's first part: a repeating query also attends where the copied
text goes next, so a skipped token can still be scored by its neighbour's
query, where a cut-off tail would get no score at all; whether that keeps
the accuracy is measured in the README's retention table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlx_kv.chat_format import ChatFormat

FIRST = "\n\nRepeat the previous context exactly."
LATER = "\n\nRepeat the part of the previous context exactly, starting with"
TAIL = 8  # tokens of the previous chunk that a later replay starts from
SPAN = 512  # tokens replayed at a time: a small model loses its place repeating much more


@dataclass(frozen=True)
class Replay:
    first: tuple[int, ...]  # the prompt before the first chunk's replay
    later: tuple[int, ...]  # ... before a later chunk's, followed by the previous chunk's tail
    suffix: tuple[int, ...]  # the end of the user turn and the assistant's header (the template's)
    span: int = SPAN

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, span: int = SPAN) -> "Replay":
        fmt = ChatFormat.probe(tokenizer)
        marker = "\u2063"
        rendered = fmt.render(tokenizer, [{"role": "user", "content": marker}], add_generation_prompt=True)
        suffix = rendered.split(marker, 1)[1]
        encode = lambda text: tuple(tokenizer.encode(text, add_special_tokens=False)) if text else ()
        return cls(encode(FIRST), encode(LATER), encode(suffix), span)

    def ids(self, chunk: list[int], previous: list[int] | None, fraction: float = 1.0) -> list[int]:
        """The tokens that replay `chunk` (after `previous`, the chunk before it, if any)."""
        head = list(self.first) if not previous else list(self.later) + list(previous[-TAIL:])
        return head + list(self.suffix) + evenly_spaced(chunk, fraction)


def evenly_spaced(tokens: list[int], fraction: float) -> list[int]:
    """`fraction` of `tokens`, spread evenly, in order, from the first one on
    (at 0.5: the 1st, 3rd, 5th, ...)."""
    if fraction >= 1.0:
        return list(tokens)
    picked = np.floor(np.arange(int(np.ceil(len(tokens) * fraction))) / fraction).astype(int)
    return [tokens[i] for i in picked[picked < len(tokens)]]
