"""A conversation as Markdown: headings per turn, token counts, documents folded and fenced safely."""

from app.export import conversation_markdown
from mlx_kv.events import MemoryMap, SpanMemory

TRANSCRIPT = [
    {"role": "document", "content": "line one\n````\nfence inside", "source": "notes.md", "partial": True},
    {"role": "user", "content": "What is in it?"},
    {"role": "assistant", "content": "A *fence*."},
]


def test_markdown_export():
    memory = MemoryMap(100, 2, 2, (SpanMemory("document", "notes.md", 0, 0, 80, 0.25),
                                   SpanMemory("user", "", 1, 80, 90, 1.0), SpanMemory("assistant", "", 2, 90, 100, 1.0)))
    text = conversation_markdown("harbour", TRANSCRIPT, "SmolLM2", {"system": "be brief", "policy": "h2o",
                                                                    "budget": 2048}, memory, now=0)
    assert text.startswith("# harbour\n\n*model SmolLM2 · policy h2o · budget 2048 · overflow heap · exported ")
    assert "## System prompt\n\nbe brief\n" in text
    assert "## Document: notes.md (partly read: loading was stopped)" in text
    assert "80 tokens; the heap kept 25% of it at export" in text
    assert "`````text\nline one\n````\nfence inside\n`````" in text  # a longer fence than any inside
    assert "## You · 10 tokens\n\nWhat is in it?\n" in text
    assert "## SmolLM2 · 10 tokens\n\nA *fence*.\n" in text
    assert conversation_markdown("x", [], "m", {}).startswith("# x\n")
