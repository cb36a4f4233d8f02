"""The six seeded task generators and ``make_sample``, which picks one."""

from __future__ import annotations

import random
from typing import Any

from mlx_kv.tasks.filler import build_document, count_tokens, spread
from mlx_kv.tasks.scoring import Sample
from mlx_kv.tasks.vocabulary import CWE_WORDS, KEYS, VALUES, VAR_NAMES

TASKS = (
    "single_needle",
    "multi_key",
    "multi_value",
    "multi_query",
    "variable_tracking",
    "common_words",
)


def needle_sentence(key: str, value: str) -> str:
    """The fact every needle task hides: "The special magic number for KEY is VALUE ."."""
    return f"The special magic number for {key} is {value} ."


def _single_needle(tokenizer, n_tokens, depth, rng, filler=None):
    key = rng.choice(KEYS)
    value = rng.choice(VALUES)
    doc = build_document(tokenizer, n_tokens, rng, [(depth, needle_sentence(key, value))], filler)
    q = f"What is the special magic number for {key} ?"
    return doc, q, (value,)


def _multi_key(tokenizer, n_tokens, depth, rng, filler=None):
    n = rng.randint(2, 6)
    keys = rng.sample(KEYS, n)
    values = [rng.choice(VALUES) for _ in keys]
    inserts = [(depth, needle_sentence(keys[0], values[0]))]
    inserts += [(d, needle_sentence(k, v)) for d, k, v in zip(spread(rng, n - 1), keys[1:], values[1:])]
    doc = build_document(tokenizer, n_tokens, rng, inserts, filler)
    q = f"What is the special magic number for {keys[0]} ?"
    return doc, q, (values[0],)


def _multi_value(tokenizer, n_tokens, depth, rng, filler=None):
    key = rng.choice(KEYS)
    n = rng.randint(2, 4)
    values = rng.sample(VALUES, n)
    depths = [depth] + sorted(spread(rng, n - 1, depth, 1.0))
    doc = build_document(
        tokenizer, n_tokens, rng, [(d, needle_sentence(key, v)) for d, v in zip(depths, values)], filler
    )
    q = f"What are all the special magic numbers for {key} ?"
    return doc, q, tuple(values)


def _multi_query(tokenizer, n_tokens, depth, rng, filler=None):
    n = rng.randint(2, 6)
    nq = rng.randint(2, min(n, 4))
    keys = rng.sample(KEYS, n)
    values = [rng.choice(VALUES) for _ in keys]
    depths = [depth] + spread(rng, n - 1)
    inserts = [(d, needle_sentence(k, v)) for d, k, v in zip(depths, keys, values)]
    doc = build_document(tokenizer, n_tokens, rng, inserts, filler)
    asked = keys[:nq]
    q = "What are the special magic numbers for " + " , ".join(asked[:-1]) + f" and {asked[-1]} ?"
    return doc, q, tuple(values[:nq])


def _variable_tracking(tokenizer, n_tokens, depth, rng, filler=None):
    hops = rng.randint(2, 5)
    names = rng.sample(VAR_NAMES, hops)
    value = rng.choice(VALUES)
    # a distractor chain with another value
    d_hops = rng.randint(1, 3)
    d_names = rng.sample([v for v in VAR_NAMES if v not in names], d_hops)
    d_value = rng.choice([v for v in VALUES if v != value])
    stmts = [f"VAR {names[0]} = {value} ."]
    stmts += [f"VAR {b} = VAR {a} ." for a, b in zip(names, names[1:])]
    d_stmts = [f"VAR {d_names[0]} = {d_value} ."]
    d_stmts += [f"VAR {b} = VAR {a} ." for a, b in zip(d_names, d_names[1:])]
    depths = [depth] + sorted(spread(rng, hops - 1, depth, 1.0))
    d_depths = sorted(spread(rng, d_hops))
    inserts = list(zip(depths, stmts)) + list(zip(d_depths, d_stmts))
    doc = build_document(tokenizer, n_tokens, rng, inserts, filler)
    q = f"Find all variables that are assigned the value {value} ."
    return doc, q, tuple(names)


def _common_words(tokenizer, n_tokens, depth, rng, filler=None):
    k = 3
    common = rng.sample(CWE_WORDS, k)
    others = [w for w in CWE_WORDS if w not in common]
    per_word = max(count_tokens(tokenizer, " apple"), 1)
    n_words = max(int(n_tokens / per_word), 4 * k)
    # common words take ~30% of the list, spread evenly; rare words appear once or twice
    n_common = max(int(0.3 * n_words) // k, 3)
    words = [w for w in common for _ in range(n_common)]
    while len(words) < n_words:
        words.append(rng.choice(others))
    rng.shuffle(words)
    doc = " ".join(words)
    # drop rare words until the list is within 2% of the token target
    ids_len = count_tokens(tokenizer, doc)
    while ids_len > n_tokens * 1.02 and len(words) > 4 * k:
        drop = max(int((ids_len - n_tokens) / per_word), 1)
        rare_idx = [i for i, w in enumerate(words) if w not in common][-drop:]
        for i in sorted(rare_idx, reverse=True):
            words.pop(i)
        doc = " ".join(words)
        ids_len = count_tokens(tokenizer, doc)
    q = f"What are the {k} most common words in the document ?"
    # answer in order of first appearance
    order = sorted(common, key=words.index)
    return doc, q, tuple(order)


_GENERATORS = {
    "single_needle": _single_needle,
    "multi_key": _multi_key,
    "multi_value": _multi_value,
    "multi_query": _multi_query,
    "variable_tracking": _variable_tracking,
    "common_words": _common_words,
}


def make_sample(task: str, n_tokens: int, tokenizer: Any, depth: float = 0.5, seed: int = 0,
                haystack: Any = None) -> Sample:
    """One seeded sample of ``task`` with a document of about ``n_tokens`` tokens.

    ``depth`` in [0, 1] places the (first) needle at that fraction of the
    document. The same (task, n_tokens, depth, seed), tokenizer and haystack
    (None: generated filler; else a mlx_kv.haystack.Prose) give the same sample.
    """
    if task not in _GENERATORS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    rng = random.Random(f"{task}:{seed}")
    filler = haystack.filler(random.Random(f"{task}:{seed}:haystack")) if haystack is not None else None
    doc, q, ans = _GENERATORS[task](tokenizer, int(n_tokens), float(depth), rng, filler)
    return Sample(task=task, context=doc, question=q, answer=tuple(ans), depth=float(depth), seed=seed)


def answer_text(sample: Sample) -> str:
    """The reference reply used for training: the answer items joined by commas."""
    return " , ".join(sample.answer)
