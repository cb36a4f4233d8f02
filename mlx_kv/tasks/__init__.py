"""Seeded RULER-style synthetic long-context tasks (benchmarks, profiling, training the bundled model).

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

Modules: ``vocabulary`` (the words), ``filler`` (filler prose and documents
with sentences placed at depths), ``generators`` (the six tasks and
``make_sample``), ``scoring`` (``Sample`` and its scorer), ``prompt``
(``format_prompt``). mlx-kv-tiny's chat format is ``mlx_kv.tiny_chat``.
Nothing here imports MLX.
"""

from mlx_kv.tasks.filler import build_document, count_tokens, filler_sentence, filler_text
from mlx_kv.tasks.generators import TASKS, answer_text, make_sample, needle_sentence
from mlx_kv.tasks.prompt import format_prompt
from mlx_kv.tasks.scoring import Sample
from mlx_kv.tasks.vocabulary import (ADJECTIVES, ADVERBS, CONNECTIVES, CWE_WORDS, KEYS, NOUNS, PLACES, TIMES,
                                     VALUES, VAR_NAMES, VERBS)

__all__ = [
    "ADJECTIVES", "ADVERBS", "CONNECTIVES", "CWE_WORDS", "KEYS", "NOUNS", "PLACES", "Sample", "TASKS", "TIMES",
    "VALUES", "VAR_NAMES", "VERBS", "answer_text", "build_document", "count_tokens", "filler_sentence",
    "filler_text", "format_prompt", "make_sample", "needle_sentence",
]
