"""Seeded RULER-style synthetic long-context tasks.

Each generator builds a document of about ``n_tokens`` tokens (measured with
the tokenizer it is given) out of varied filler sentences, hides one or more
"needles" in it, and returns a :class:`Sample` holding the document, the
question, the expected answer items and a scorer.

Tasks (after RULER, Hsieh et al. 2024):

``single_needle``      one fact ``The special magic number for KEY is VALUE .``;
                       asked for VALUE.
``multi_key``          the same, plus distractor facts for other keys.
``multi_value``        one key with several values; all of them are asked for.
``multi_query``        several facts; several keys are asked for at once.
``variable_tracking``  a chain ``VAR A = 123 .`` ``VAR B = VAR A .`` ...; asked
                       for every variable that ends up holding 123 (multi-hop).
``common_words``       a word list in which a few words are far more frequent
                       than the rest; asked for the most common ones
                       (aggregation). ``depth`` has no meaning for this task.

Keys, values and variable names are short words, three-digit numbers and
three-letter names so that a small tokenizer keeps each one as one token.
Nothing here imports MLX.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TASKS = (
    "single_needle",
    "multi_key",
    "multi_value",
    "multi_query",
    "variable_tracking",
    "common_words",
)

# --------------------------------------------------------------------------
# vocabularies

NOUNS = (
    "river forest garden window table letter market village mountain island "
    "bridge library teacher farmer doctor painter sailor student mother father "
    "child friend neighbor stranger king queen soldier merchant baker driver "
    "engine machine lamp candle mirror basket bottle blanket carpet chair "
    "kitchen station harbor tower castle temple palace school office factory "
    "road street path valley desert ocean lake meadow field cloud storm rain "
    "snow wind sun moon star morning evening night winter summer autumn spring "
    "story song poem book paper picture map clock key coin ring box bag boat "
    "train plane horse dog cat bird fish tree flower stone shell rope wheel "
    "door wall roof floor bread cheese apple soup tea coffee milk honey salt"
).split()
VERBS = (
    "carried found opened watched painted built followed crossed visited "
    "cleaned repaired counted noticed remembered described planted collected "
    "borrowed delivered measured cooked washed climbed studied finished "
    "started moved lifted pushed pulled touched covered filled emptied sold "
    "bought kept shared showed missed reached left passed closed checked"
).split()
ADJECTIVES = (
    "old new small large quiet busy bright dark warm cold heavy light green "
    "red blue yellow white black wooden silver golden narrow wide tall short "
    "empty full strange simple careful gentle famous ancient distant nearby "
    "tired happy calm brave clever patient rough smooth soft"
).split()
ADVERBS = (
    "slowly quickly quietly carefully often rarely always never suddenly "
    "gently early late soon again together alone nearly almost"
).split()
PLACES = (
    "the north", "the south", "the east", "the west", "the city", "the coast",
    "the hills", "the square", "the port", "the border", "the capital", "the plains",
)
CONNECTIVES = ("then", "later", "meanwhile", "afterwards", "so", "but", "and", "yet")
TIMES = (
    "in the morning", "at night", "before noon", "after dinner", "during the storm",
    "on the first day", "every week", "last year", "in the evening", "at dawn",
)

# keys for the needle tasks (never used in filler)
KEYS = (
    "alpha bravo delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu amber azure beige coral crimson cyan ebony emerald "
    "fuchsia indigo ivory jade khaki lavender lemon lilac magenta maroon mint "
    "navy ochre olive orchid peach plum ruby saffron scarlet sepia teal topaz "
    "violet aspen birch cedar cypress elm fir hazel juniper larch laurel maple "
    "oak pine poplar rowan spruce sycamore walnut willow yew badger beaver "
    "bison camel cobra condor coyote crane falcon ferret gecko heron hyena "
    "ibis jackal koala lemur llama lynx marmot mole moose otter panda parrot "
    "pelican puma quail raven salmon seal shark sloth stork swan tiger toucan "
    "trout turtle viper walrus weasel wolf wombat zebra anchor anvil arrow "
    "banner barrel beacon blade bucket cannon chisel compass crown dagger "
    "drum feather flute funnel hammer harp helmet kettle ladder lantern lever "
    "magnet needle paddle pencil piano prism pulley quill saddle scroll shield "
    "shovel sickle spoon spring sword thimble torch trumpet violin whistle"
).split()
KEYS = tuple(k for k in KEYS if k not in set(NOUNS))

VALUES = tuple(str(v) for v in range(100, 1000))


def _make_var_names() -> tuple[str, ...]:
    rng = random.Random(1234)
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    vowels = "AEIOUY"
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < 160:
        n = rng.choice(letters) + rng.choice(vowels) + rng.choice(letters)
        if n not in seen:
            seen.add(n)
            names.append(n)
    return tuple(names)


VAR_NAMES = _make_var_names()

# words for the common-words list (aggregation)
CWE_WORDS = tuple(sorted(set(NOUNS) | set(ADJECTIVES)))

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


def _filler_sentence(rng: random.Random) -> str:
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


def filler_text(n_words: int, rng) -> str:
    """About ``n_words`` words of varied filler prose (whole sentences)."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    out: list[str] = []
    count = 0
    while count < n_words:
        s = _filler_sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


# --------------------------------------------------------------------------
# samples


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


def _encode_len(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text)
    if hasattr(ids, "ids"):  # a raw `tokenizers.Tokenizer`
        ids = ids.ids
    return len(ids)


def _needle(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value} ."


def _build_document(
    tokenizer,
    n_tokens: int,
    rng: random.Random,
    inserts: list[tuple[float, str]],
    filler=None,
) -> str:
    """Filler of about ``n_tokens`` tokens with ``inserts`` (depth, sentence)
    placed at their depths (fractions of the document, in tokens). ``filler``
    gives the next sentence (real prose, mlx_kv.haystack); by default the
    sentences are generated."""
    insert_tokens = sum(_encode_len(tokenizer, " " + s) for _, s in inserts)
    budget = max(n_tokens - insert_tokens, 0)
    # sentences with their token counts (tokens are close to additive at spaces)
    sents: list[str] = []
    lens: list[int] = []
    total = 0
    while total < budget:
        s = filler() if filler is not None else _filler_sentence(rng)
        k = _encode_len(tokenizer, " " + s)
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
        inserted_before += _encode_len(tokenizer, " " + s)
    parts: list[str] = []
    for j in range(len(sents) + 1):
        parts.extend(placed.get(j, []))
        if j < len(sents):
            parts.append(sents[j])
    return " ".join(parts)


def _spread(rng: random.Random, k: int, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    return [rng.uniform(lo, hi) for _ in range(k)]


def _single_needle(tokenizer, n_tokens, depth, rng, filler=None):
    key = rng.choice(KEYS)
    value = rng.choice(VALUES)
    doc = _build_document(tokenizer, n_tokens, rng, [(depth, _needle(key, value))], filler)
    q = f"What is the special magic number for {key} ?"
    return doc, q, (value,)


def _n_facts(n_tokens: int, rng: random.Random, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _multi_key(tokenizer, n_tokens, depth, rng, filler=None):
    n = _n_facts(n_tokens, rng, 2, 6)
    keys = rng.sample(KEYS, n)
    values = [rng.choice(VALUES) for _ in keys]
    inserts = [(depth, _needle(keys[0], values[0]))]
    inserts += [(d, _needle(k, v)) for d, k, v in zip(_spread(rng, n - 1), keys[1:], values[1:])]
    doc = _build_document(tokenizer, n_tokens, rng, inserts, filler)
    q = f"What is the special magic number for {keys[0]} ?"
    return doc, q, (values[0],)


def _multi_value(tokenizer, n_tokens, depth, rng, filler=None):
    key = rng.choice(KEYS)
    n = rng.randint(2, 4)
    values = rng.sample(VALUES, n)
    depths = [depth] + sorted(_spread(rng, n - 1, depth, 1.0))
    doc = _build_document(
        tokenizer, n_tokens, rng, [(d, _needle(key, v)) for d, v in zip(depths, values)], filler
    )
    q = f"What are all the special magic numbers for {key} ?"
    return doc, q, tuple(values)


def _multi_query(tokenizer, n_tokens, depth, rng, filler=None):
    n = rng.randint(2, 6)
    nq = rng.randint(2, min(n, 4))
    keys = rng.sample(KEYS, n)
    values = [rng.choice(VALUES) for _ in keys]
    depths = [depth] + _spread(rng, n - 1)
    inserts = [(d, _needle(k, v)) for d, k, v in zip(depths, keys, values)]
    doc = _build_document(tokenizer, n_tokens, rng, inserts, filler)
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
    depths = [depth] + sorted(_spread(rng, hops - 1, depth, 1.0))
    d_depths = sorted(_spread(rng, d_hops))
    inserts = list(zip(depths, stmts)) + list(zip(d_depths, d_stmts))
    doc = _build_document(tokenizer, n_tokens, rng, inserts, filler)
    q = f"Find all variables that are assigned the value {value} ."
    return doc, q, tuple(names)


def _common_words(tokenizer, n_tokens, depth, rng, filler=None):
    k = 3
    common = rng.sample(CWE_WORDS, k)
    others = [w for w in CWE_WORDS if w not in common]
    per_word = max(_encode_len(tokenizer, " apple"), 1)
    n_words = max(int(n_tokens / per_word), 4 * k)
    # common words take ~30% of the list, spread evenly; rare words appear once or twice
    n_common = max(int(0.3 * n_words) // k, 3)
    words = [w for w in common for _ in range(n_common)]
    while len(words) < n_words:
        words.append(rng.choice(others))
    rng.shuffle(words)
    # ensure no rare word reaches the common count (it cannot in practice, but be exact)
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    doc = " ".join(words)
    # trim / pad to the token target
    ids_len = _encode_len(tokenizer, doc)
    while ids_len > n_tokens * 1.02 and len(words) > 4 * k:
        drop = max(int((ids_len - n_tokens) / per_word), 1)
        rare_idx = [i for i, w in enumerate(words) if w not in common][-drop:]
        for i in sorted(rare_idx, reverse=True):
            words.pop(i)
        doc = " ".join(words)
        ids_len = _encode_len(tokenizer, doc)
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


def make_sample(task: str, n_tokens: int, tokenizer, depth: float = 0.5, seed: int = 0, haystack=None) -> Sample:
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


# --------------------------------------------------------------------------
# chat format

BOS = "<|bos|>"
EOS = "<|end|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render ``messages`` exactly as :data:`CHAT_TEMPLATE` does (no Jinja needed)."""
    out = []
    for i, m in enumerate(messages):
        if i == 0:
            out.append(BOS)
        out.append(f"<|{m['role']}|>\n{m['content']}{EOS}\n")
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def format_prompt(tokenizer, sample: Sample, include_question: bool = True) -> str:
    """The chat-template text the model sees: the document block, then
    (optionally) the question turn and the assistant prefix."""
    messages = [{"role": "document", "content": sample.context}]
    if include_question:
        messages.append({"role": "user", "content": sample.question})
    apply = getattr(tokenizer, "apply_chat_template", None)
    if apply is not None and getattr(tokenizer, "chat_template", None):
        try:
            return apply(messages, add_generation_prompt=include_question, tokenize=False)
        except Exception:
            pass
    return render_chat(messages, add_generation_prompt=include_question)
