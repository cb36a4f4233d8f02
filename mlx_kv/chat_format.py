"""A conversation rendered in the model's own chat template.

Real templates disagree on what they accept: Llama 3 renders any role name
as a header (so an unknown "document" role reaches the model as gibberish),
Mistral's raises unless user and assistant alternate, some have no system
role. The session keeps its transcript in its own terms (system prompt,
documents, user and assistant turns) and this module turns it into what the
template accepts, probed once per tokenizer:
- a document becomes a user turn holding its text (only a model that declares a document
  role, `"mlx_kv_document_role": "document"` in its tokenizer_config.json as
  mlx-kv-tiny does, gets its own role);
- consecutive user turns merge where the template demands alternation;
- a system prompt folds into the first user turn where the template has no
  system role (or drops it silently).

Incremental prefill needs text that will not change once more is said:
`stable_prefix` is what every continuation of the conversation with a user
turn shares, so a document can be fed before anyone asks about it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

_MARK = "\u2063{}\u2063"  # invisible separators: markers no template rewrites


@dataclass(frozen=True)
class ChatFormat:
    has_template: bool
    system_role: bool
    consecutive_users: bool
    document_role: str | None = None

    @classmethod
    def probe(cls, tokenizer: Any) -> "ChatFormat":
        if not getattr(tokenizer, "chat_template", None):
            return cls(has_template=False, system_role=True, consecutive_users=True)
        kwargs = getattr(tokenizer, "init_kwargs", None) or {}
        document_role = kwargs.get("mlx_kv_document_role") if isinstance(kwargs, dict) else None
        a, b = _MARK.format("a"), _MARK.format("b")
        system = _renders(tokenizer, [{"role": "system", "content": a}, {"role": "user", "content": b}], (a, b))
        users = _renders(tokenizer, [{"role": "user", "content": a}, {"role": "user", "content": b}], (a, b))
        return cls(True, system, users, document_role if isinstance(document_role, str) else None)

    def normalise(self, messages: list[dict]) -> list[dict]:
        """Messages the template accepts, in its roles, nothing dropped."""
        out: list[dict] = []
        system = []
        for m in messages:
            role, content = m["role"], m["content"]
            if role == "document":
                if self.document_role:
                    out.append({"role": self.document_role, "content": content})
                    continue
                role = "user"  # the text as it is: progress and token counts are the document's own
            if role == "system" and not self.system_role:
                system.append(content)
                continue
            if role == "user" and out and out[-1]["role"] == "user" and not self.consecutive_users:
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + content}
                continue
            out.append({"role": role, "content": content})
        if system:
            first = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
            text = "\n\n".join(system)
            if first is None:
                out.insert(0, {"role": "user", "content": text})
            else:
                out[first] = {"role": "user", "content": text + "\n\n" + out[first]["content"]}
        return out

    def render(self, tokenizer: Any, messages: list[dict], add_generation_prompt: bool) -> str:
        messages = self.normalise(messages)
        if not self.has_template:
            return _plain(messages, add_generation_prompt)
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    def stable_prefix(self, tokenizer: Any, messages: list[dict]) -> str:
        """The text any conversation that goes on from `messages` with a user
        turn starts with (what may be fed now without being rewritten later)."""
        a = self.render(tokenizer, messages + [{"role": "user", "content": "\u2062"}], False)
        b = self.render(tokenizer, messages + [{"role": "user", "content": "\u2064"}], False)
        return os.path.commonprefix([a, b])


def _renders(tokenizer: Any, messages: list[dict], markers: tuple[str, ...]) -> bool:
    """Whether the template renders these messages, keeping every marker."""
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    except Exception:  # templates reject with their own exceptions (jinja's TemplateError, ValueError, ...)
        return False
    return all(m in text for m in markers)


def _plain(messages: list[dict], add_generation_prompt: bool) -> str:
    """For a model without a template: labelled turns, as base models read dialogue."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    text = "".join(f"{names.get(m['role'], m['role'].title())}: {m['content']}\n\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")
