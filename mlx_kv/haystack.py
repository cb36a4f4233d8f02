"""Where a benchmark document's text comes from: generated filler or real prose.

The generated filler (mlx_kv.tasks) is what mlx-kv-tiny was trained on; a
real model reads it as the odd, repetitive text it is, and attention-based
keep signals behave differently on it than on prose (DESIGN.md). So a
document can also be made of real text: any .txt file or folder of them, or
`pydoc`, the Python language reference that ships with every Python
(`pydoc_data.topics`: English technical prose; indented code and grammar
blocks are dropped). A document reads the text in order from a seeded
starting sentence, so it stays coherent prose.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlx_kv.errors import UserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_RULE = re.compile(r"^\s*([*=\-~^#_])\1{2,}\s*$")


@dataclass(frozen=True)
class Prose:
    name: str
    sentences: tuple[str, ...]

    def filler(self, rng: random.Random) -> Callable[[], str]:
        """A source of consecutive sentences from a random starting place."""
        position = rng.randrange(len(self.sentences))

        def next_sentence() -> str:
            nonlocal position
            sentence = self.sentences[position % len(self.sentences)]
            position += 1
            return sentence

        return next_sentence


def split_sentences(text: str) -> list[str]:
    """Paragraphs joined into lines, code and rules dropped, split at sentence ends."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line for line in paragraph.splitlines()
                 if line.strip() and not line.startswith((" ", "\t")) and not _RULE.match(line)]
        flat = " ".join(" ".join(lines).split())
        sentences.extend(s for s in _SENTENCE_END.split(flat) if len(s.split()) >= 3)
    return sentences


def load_haystack(spec: str | None) -> Prose | None:
    """None or "filler": the generated filler; "pydoc"; or a .txt file or folder."""
    if spec in (None, "", "filler"):
        return None
    if spec == "pydoc":
        from pydoc_data.topics import topics

        return _prose("pydoc", "\n\n".join(topics[key] for key in sorted(topics)))
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise UserError(f"haystack: {spec} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"haystack: {spec} is not 'filler', 'pydoc', a .txt file or a folder of them")
    try:
        text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"haystack: cannot read {spec} as UTF-8 text ({exc})") from None
    return _prose(path.name, text)


def _prose(name: str, text: str) -> Prose:
    sentences = split_sentences(text)
    if len(sentences) < 20:
        raise UserError(f"haystack: {name} has only {len(sentences)} sentences; give more text")
    return Prose(name, tuple(sentences))
