"""A task sample and how a reply is scored against it."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    task: str
    context: str
    question: str
    answer: tuple[str, ...]
    depth: float
    seed: int

    def score(self, prediction: str) -> float:
        """Fraction of the expected answer items found in ``prediction``.

        Items are matched as whole words (so ``123`` does not match ``1234``),
        case-insensitively. Single-answer tasks score 1.0 or 0.0.
        """
        words = set(re.findall(r"[A-Za-z0-9]+", prediction.lower()))
        if not self.answer:
            return 1.0
        hits = sum(1 for a in self.answer if a.lower() in words)
        return hits / len(self.answer)
