"""The synthetic long-context task generators (mlx_kv.tasks)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mlx_kv import tasks as T

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "mlx-kv-tiny"


class WordTok:
    """A whitespace 'tokenizer': one token per word."""

    def encode(self, s):
        return s.split()


class BundledTok:
    """The bundled model's tokenizer through `tokenizers` only (fast, no MLX)."""

    def __init__(self):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))

    def encode(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids


def _tokenizers():
    toks = [WordTok()]
    if (MODEL_DIR / "tokenizer.json").exists():
        try:
            toks.append(BundledTok())
        except ImportError:
            pass
    return toks


TOKENIZERS = _tokenizers()
NEEDLE_TASKS = ("single_needle", "multi_key", "multi_value", "multi_query", "variable_tracking")


def _first_needle_text(s: T.Sample) -> str:
    if s.task == "variable_tracking":
        return f"VAR {s.answer[0]} ="
    if s.task in ("single_needle", "multi_key", "multi_value", "multi_query"):
        return f" is {s.answer[0]} ."
    raise AssertionError(s.task)


@pytest.mark.parametrize("tok", TOKENIZERS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("task", T.TASKS)
@pytest.mark.parametrize("n_tokens", [300, 2000])
def test_length_close_to_target(tok, task, n_tokens):
    s = T.make_sample(task, n_tokens, tok, depth=0.4, seed=3)
    n = len(tok.encode(s.context))
    assert abs(n - n_tokens) <= max(0.04 * n_tokens, 12), (n, n_tokens)


@pytest.mark.parametrize("tok", TOKENIZERS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("task", NEEDLE_TASKS)
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_needle_at_requested_depth(tok, task, depth):
    n_tokens = 1500
    s = T.make_sample(task, n_tokens, tok, depth=depth, seed=11)
    needle = _first_needle_text(s)
    pos = s.context.find(needle)
    assert pos >= 0, "the (first) needle is in the context"
    # relative token position of the needle's sentence start
    sent_start = pos if s.task == "variable_tracking" else s.context.rfind("The special magic", 0, pos)
    before = len(tok.encode(s.context[:sent_start]))
    total = len(tok.encode(s.context))
    assert abs(before / total - depth) <= 0.03, (before / total, depth)


@pytest.mark.parametrize("task", T.TASKS)
def test_answer_items_in_context(task):
    for seed in range(5):
        s = T.make_sample(task, 600, WordTok(), depth=random.Random(seed).random(), seed=seed)
        words = s.context.split()
        assert s.answer
        for a in s.answer:
            assert a in words
        assert s.question and s.task == task and s.seed == seed


def test_needle_tasks_structure():
    tok = WordTok()
    s = T.make_sample("single_needle", 800, tok, seed=1)
    assert s.context.count("special magic number") == 1
    s = T.make_sample("multi_key", 800, tok, seed=2)
    assert s.context.count("special magic number") >= 2
    key = s.question.split(" for ")[1].rstrip(" ?")
    assert s.context.count(f"for {key} is") == 1
    s = T.make_sample("multi_value", 800, tok, seed=3)
    key = s.question.split(" for ")[1].rstrip(" ?")
    assert s.context.count(f"for {key} is") == len(s.answer) >= 2
    s = T.make_sample("variable_tracking", 800, tok, seed=4)
    value = s.question.split()[-2]
    assert f"VAR {s.answer[0]} = {value} ." in s.context
    for a, b in zip(s.answer, s.answer[1:]):
        assert f"VAR {b} = VAR {a} ." in s.context
    s = T.make_sample("common_words", 800, tok, seed=5)
    words = s.context.split()
    counts = sorted(((words.count(w), w) for w in set(words)), reverse=True)
    assert {w for _, w in counts[: len(s.answer)]} == set(s.answer)
    assert counts[len(s.answer)][0] < counts[len(s.answer) - 1][0]


@pytest.mark.parametrize("task", T.TASKS)
def test_same_seed_same_sample_different_seed_differs(task):
    tok = TOKENIZERS[-1]
    a = T.make_sample(task, 500, tok, depth=0.3, seed=42)
    b = T.make_sample(task, 500, tok, depth=0.3, seed=42)
    c = T.make_sample(task, 500, tok, depth=0.3, seed=43)
    assert a == b
    assert a.context != c.context


def test_filler_is_varied():
    text = T.filler_text(3000, random.Random(0))
    sents = [x.strip() for x in text.split(" .") if x.strip()]
    assert len(sents) > 100
    assert len(set(sents)) > 0.9 * len(sents)
    assert len(set(text.split())) > 150
    assert T.filler_text(200, 7) == T.filler_text(200, 7)
    assert T.filler_text(200, 7) != T.filler_text(200, 8)


def test_score():
    s = T.Sample("single_needle", "ctx", "q", ("123",), 0.5, 0)
    assert s.score("The special magic number for lemon is 123 .") == 1.0
    assert s.score("123") == 1.0
    assert s.score("1234") == 0.0
    assert s.score("The number is 124 .") == 0.0
    assert s.score("") == 0.0
    m = T.Sample("multi_value", "ctx", "q", ("123", "456", "789", "321"), 0.5, 0)
    assert m.score("123 , 456 , 789 , 321") == 1.0
    assert m.score("123 and 789") == 0.5
    assert m.score("nothing") == 0.0
    v = T.Sample("variable_tracking", "ctx", "q", ("QAB", "XEC"), 0.5, 0)
    assert v.score("The variables are qab , XEC .") == 1.0


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="no_such_task"):
        T.make_sample("no_such_task", 100, WordTok())
    with pytest.raises(ValueError):
        T.make_sample("single_needle", 100, WordTok(), depth=1.5)


def test_format_prompt_without_tokenizer_template():
    s = T.make_sample("single_needle", 100, WordTok(), seed=0)
    full = T.format_prompt(WordTok(), s)
    doc_only = T.format_prompt(WordTok(), s, include_question=False)
    assert full.startswith(doc_only)
    assert s.context in doc_only and s.question not in doc_only
    assert full.endswith("<|assistant|>\n") and s.question in full


def test_needle_sentence_is_the_fact_the_needle_tasks_hide():
    assert T.needle_sentence("lemon", "417") == "The special magic number for lemon is 417 ."
    s = T.make_sample("single_needle", 300, WordTok(), depth=0.5, seed=3)
    key = s.question.split(" for ")[1].rstrip(" ?")
    assert T.needle_sentence(key, s.answer[0]) in s.context


def test_the_bundled_models_template_is_tiny_chats():
    import json

    from mlx_kv.tiny_chat import CHAT_TEMPLATE

    assert json.loads((MODEL_DIR / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
