"""Conversations rendered in templates with real templates' rules."""

import pytest

from mlx_kv.chat_format import ChatFormat

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Mistral's rules: no system role, user/assistant strictly alternate, or it raises.
STRICT = ("{{ bos_token }}{% for m in messages %}"
          "{% if m['role'] == 'system' %}{{ raise_exception('system role not supported') }}{% endif %}"
          "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}</s>{% endif %}"
          "{% endfor %}")
# A template that drops system turns without a word.
DROPS_SYSTEM = ("{% for m in messages %}{% if m['role'] != 'system' %}<{{ m['role'] }}>{{ m['content'] }}"
                "</{{ m['role'] }}>{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
# Llama 3: any role name becomes a header.
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def tokenizer_with(template, **init):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", chat_template=template, **init)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "document", "content": "The code is 48213.", "source": "notes.md"},
    {"role": "user", "content": "What is the code?"},
]


@pytest.mark.parametrize("template", [CHATML, STRICT, DROPS_SYSTEM, LLAMA3])
def test_a_document_and_a_question_render_in_every_template(template):
    tok = tokenizer_with(template)
    fmt = ChatFormat.probe(tok)
    text = fmt.render(tok, CONVERSATION, add_generation_prompt=True)
    for piece in ("Be brief.", "The code is 48213.", "What is the code?"):
        assert piece in text
    assert "document" not in text  # never a role named "document"


def test_strict_template_merges_users_and_folds_the_system_prompt():
    tok = tokenizer_with(STRICT)
    fmt = ChatFormat.probe(tok)
    assert not fmt.system_role and not fmt.consecutive_users
    messages = fmt.normalise(CONVERSATION)
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert content == "Be brief.\n\nThe code is 48213.\n\nWhat is the code?"


def test_silently_dropped_system_is_folded_not_lost():
    tok = tokenizer_with(DROPS_SYSTEM)
    fmt = ChatFormat.probe(tok)
    assert not fmt.system_role and fmt.consecutive_users
    assert "Be brief." in fmt.render(tok, CONVERSATION, add_generation_prompt=True)


def test_permissive_template_keeps_turns_as_they_are():
    fmt = ChatFormat.probe(tokenizer_with(CHATML))
    assert fmt.system_role and fmt.consecutive_users
    assert [m["role"] for m in fmt.normalise(CONVERSATION)] == ["system", "user", "user"]


@pytest.mark.parametrize("template", [CHATML, STRICT, DROPS_SYSTEM, LLAMA3])
def test_stable_prefix_is_not_rewritten_by_the_question(template):
    tok = tokenizer_with(template)
    fmt = ChatFormat.probe(tok)
    before_question = CONVERSATION[:2]
    prefix = fmt.stable_prefix(tok, before_question)
    assert "The code is 48213." in prefix
    assert fmt.render(tok, CONVERSATION, add_generation_prompt=True).startswith(prefix)
    after = CONVERSATION + [{"role": "assistant", "content": "48213."}, {"role": "user", "content": "Sure?"}]
    assert fmt.render(tok, after, add_generation_prompt=True).startswith(prefix)


def test_a_model_can_declare_its_own_document_role():
    tok = tokenizer_with(CHATML, mlx_kv_document_role="document")
    fmt = ChatFormat.probe(tok)
    assert fmt.document_role == "document"
    assert fmt.normalise(CONVERSATION)[1] == {"role": "document", "content": "The code is 48213."}


def test_the_bundled_model_keeps_the_document_role_it_was_trained_with():
    import mlx_lm

    from mlx_kv.models import BUNDLED_MODEL

    _, tok = mlx_lm.load(str(BUNDLED_MODEL))
    assert ChatFormat.probe(tok).document_role == "document"


def test_no_template_falls_back_to_labelled_turns():
    class Bare:
        chat_template = None

    fmt = ChatFormat.probe(Bare())
    text = fmt.render(Bare(), CONVERSATION, add_generation_prompt=True)
    assert text.startswith("System: Be brief.\n\nUser: ") and text.endswith("Assistant:")
