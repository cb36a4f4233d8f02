"""mlx-kv-tiny's chat format (models/mlx-kv-tiny): the Jinja template its
tokenizer carries, and the same rendering in plain Python.

Why here and not in the tasks: the format belongs to the bundled model; the
training script writes CHAT_TEMPLATE into the model's tokenizer_config.json
and renders its training data with render_chat, the tests check the two
agree, and format_prompt falls back to render_chat for tokenizers without a
template.
"""

from __future__ import annotations

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
