"""Filler prose and documents built of it, with sentences placed at chosen depths."""

from __future__ import annotations

import random
from typing import Any, Callable

from mlx_kv.tasks.vocabulary import ADJECTIVES, ADVERBS, CONNECTIVES, NOUNS, PLACES, TIMES, VERBS

_FILLER_TEMPLATES = (
    "The {adj} {n1} {v} the {n2} {time} .",
    "A {adj} {n1} {v} a {adj2} {n2} near {place} .",
    "{Conn} the {n1} {adv} {v} the {adj} {n2} .",
    "Nobody {v} the {n1} in {place} {time} .",
    "The {n1} from {place} was {adj} , {conn} the {n2} was {adj2} .",
    "Every {n1} {v} one {n2} , {conn} the {n3} stayed {adj} .",
    "In {place} the {adj} {n1} {adv} {v} the {n2} .",
    "My {n1} {v} the {adj} {n2} and the {n3} {time} .",
    "The {n1} was {adv} {adj} {time} .",
    "They {v} the {n1} , the {n2} and the {adj} {n3} .",
    "When the {n1} {v} the {n2} , the {n3} {adv} {v2} the {n4} .",
    "The {adj} {n1} of {place} is {adj2} and {adj3} .",
    "She {adv} {v} a {adj} {n1} for the {n2} .",
    "He {v} the {n1} because the {n2} was {adj} .",
    "A {n1} and a {n2} {v} {place} {time} .",
    "There was a {adj} {n1} beside the {adj2} {n2} .",
)


def filler_sentence(rng: random.Random) -> str:
    t = rng.choice(_FILLER_TEMPLATES)
    conn = rng.choice(CONNECTIVES)
    fields = {
        "adj": rng.choice(ADJECTIVES),
        "adj2": rng.choice(ADJECTIVES),
        "adj3": rng.choice(ADJECTIVES),
        "n1": rng.choice(NOUNS),
        "n2": rng.choice(NOUNS),
        "n3": rng.choice(NOUNS),
        "n4": rng.choice(NOUNS),
        "v": rng.choice(VERBS),
        "v2": rng.choice(VERBS),
        "adv": rng.choice(ADVERBS),
        "place": rng.choice(PLACES),
        "time": rng.choice(TIMES),
        "conn": conn,
        "Conn": conn.capitalize(),
    }
    return t.format(**fields)


def filler_text(n_words: int, rng: random.Random | int) -> str:
    """About ``n_words`` words of varied filler prose (whole sentences)."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    out: list[str] = []
    count = 0
    while count < n_words:
        s = filler_sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


def count_tokens(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text)
    if hasattr(ids, "ids"):  # a raw `tokenizers.Tokenizer`
        ids = ids.ids
    return len(ids)


def build_document(
    tokenizer: Any,
    n_tokens: int,
    rng: random.Random,
    inserts: list[tuple[float, str]],
    filler: Callable[[], str] | None = None,
) -> str:
    """Filler of about ``n_tokens`` tokens with ``inserts`` (depth, sentence)
    placed at their depths (fractions of the document, in tokens). ``filler``
    gives the next sentence (real prose, mlx_kv.haystack); by default the
    sentences are generated."""
    insert_tokens = sum(count_tokens(tokenizer, " " + s) for _, s in inserts)
    budget = max(n_tokens - insert_tokens, 0)
    # sentences with their token counts (tokens are close to additive at spaces)
    sents: list[str] = []
    lens: list[int] = []
    total = 0
    while total < budget:
        s = filler() if filler is not None else filler_sentence(rng)
        k = count_tokens(tokenizer, " " + s)
        sents.append(s)
        lens.append(k)
        total += k
    # drop the last sentence if that lands closer to the budget
    if sents and total - budget > lens[-1] / 2:
        total -= lens.pop()
        sents.pop()
    prefix = [0]
    for k in lens:
        prefix.append(prefix[-1] + k)
    total_tokens = prefix[-1] + insert_tokens
    # place inserts in order of depth; an insert at depth d starts after the
    # sentence boundary whose token offset (counting earlier inserts) is nearest.
    order = sorted(range(len(inserts)), key=lambda i: inserts[i][0])
    placed: dict[int, list[str]] = {}
    inserted_before = 0
    last_j = 0
    for i in order:
        d, s = inserts[i]
        target = min(max(d, 0.0), 1.0) * total_tokens - inserted_before
        # nearest boundary j with prefix[j] ~ target
        j = min(range(last_j, len(prefix)), key=lambda j: abs(prefix[j] - target))
        last_j = j
        placed.setdefault(j, []).append(s)
        inserted_before += count_tokens(tokenizer, " " + s)
    parts: list[str] = []
    for j in range(len(sents) + 1):
        parts.extend(placed.get(j, []))
        if j < len(sents):
            parts.append(sents[j])
    return " ".join(parts)


def spread(rng: random.Random, k: int, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    return [rng.uniform(lo, hi) for _ in range(k)]
