"""The prompt a model sees for a sample: the document, then the question."""

from __future__ import annotations

from typing import Any

from mlx_kv.tasks.scoring import Sample
from mlx_kv.tiny_chat import render_chat


def format_prompt(tokenizer: Any, sample: Sample, include_question: bool = True) -> str:
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
