"""A conversation as Markdown (``/export``), plain text anyone can read or paste.

Why a pure function: the export is the transcript the engine holds, turned
into headings and text, with no terminal involved, so it is tested as text.
Documents are long; each goes into a collapsed ``<details>`` block (GitHub
and most Markdown viewers fold it) with its size and what the heap still
keeps of it at export time.
"""

from __future__ import annotations

import time

from mlx_kv.events import MemoryMap


def conversation_markdown(name: str, transcript: list[dict], model: str, settings: dict,
                          memory: MemoryMap | None = None, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(now if now is not None else time.time()))
    kept = {}
    if memory is not None:
        for span in memory.spans:
            kept.setdefault(span.turn, []).append(span)
    facts = [f"model {model}", f"policy {settings.get('policy') or 'default'}",
             f"budget {settings.get('budget') or 'default'}", f"overflow {settings.get('overflow') or 'heap'}",
             f"exported {stamp}"]
    out = [f"# {name}", "", "*" + " · ".join(facts) + "*", ""]
    if settings.get("system"):
        out += ["## System prompt", "", str(settings["system"]), ""]
    for index, turn in enumerate(transcript):
        role, content = turn.get("role"), str(turn.get("content", ""))
        spans = kept.get(index, [])
        tokens = sum(s.length for s in spans)
        cost = f" · {tokens:,} tokens" if tokens else ""
        if role == "user":
            out += [f"## You{cost}", "", content, ""]
        elif role == "assistant":
            out += [f"## {model}{cost}", "", content or "*(no reply)*", ""]
        elif role == "system":
            out += ["## System", "", content, ""]
        elif role == "document":
            source = turn.get("source") or "document"
            partial = " (partly read: loading was stopped)" if turn.get("partial") else ""
            held = ""
            if spans and tokens:
                share = sum(s.kept * s.length for s in spans) / tokens
                held = f"; the heap kept {share:.0%} of it at export"
            out += [f"## Document: {source}{partial}", "",
                    f"<details><summary>{len(content):,} characters{cost}{held}</summary>", "",
                    _fenced(content), "", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def _fenced(text: str) -> str:
    """A code fence longer than any backtick run inside, so the document cannot close it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"
