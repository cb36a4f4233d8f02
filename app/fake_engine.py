"""A scripted stand-in for ``mlx_kv.engine.Session``, without MLX.

Why it lives in the package: the Pilot tests, the screenshot script and UI
work on a machine without a model all need the same engine double.  It
implements ``mlx_kv.protocol.ChatSession`` like the real session (checked by
tests/test_protocol.py), reads budgets with the library's reader, knows the
library's policy names and runs the library's memory guard.  Its numbers are
made up but shaped like a real heap: sinks, a young window, intermediate and
tenured tiers, evictions once the budget is full, per-layer budgets, pillars.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mlx_kv.errors import UserError
from mlx_kv.guard import MemoryGuard
from mlx_kv.events import HeapStats, IngestProgress, IngestResult, LayerUsage, Pillar, Throughput
from mlx_kv.sizes import parse_budget, parse_bytes

# mlx_kv.policies.POLICIES, named here because importing it loads MLX (tests/test_protocol.py keeps them equal)
POLICIES = ("h2o", "kvzip", "random", "snapkv", "streaming", "surprise", "tova")
DEFAULT_POLICY = "h2o"
BYTES_PER_TOKEN = 4096  # a tiny model: 2 layers x 2 KV heads x 64 dims x fp32 x K,V x 2
DEFAULT_REPLY = (
    "The document says the **special magic number** is `7421`. "
    "It appears once, near the middle:\n\n"
    "- the heap kept it as a *pillar* token\n"
    "- the recent window held the question\n\n"
    "Anything else?"
)


DEFAULT_BUDGET_TOKENS = 4096  # what None and "auto" give: the fake has no memory to measure
SINKS, WINDOW = 4, 64


def budget_tokens(budget: int | str | None) -> int:
    """Tokens for a budget, read by the library's one budget reader (mlx_kv.sizes)."""
    try:
        value = DEFAULT_BUDGET_TOKENS if budget is None else parse_budget(budget)
        tokens = value if isinstance(value, int) else (
            DEFAULT_BUDGET_TOKENS if value == "auto" else parse_bytes(value) // BYTES_PER_TOKEN)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if tokens < SINKS + WINDOW + 1:
        raise UserError(f"budget: {tokens} tokens per layer is smaller than sinks + window + 1 = {SINKS + WINDOW + 1}")
    return tokens


@dataclass
class FakeLayer:
    """What the memory guard reads of one heap layer."""

    budget: int
    sinks: int = SINKS
    window: int = WINDOW


def _check_policy(name: str) -> None:
    if name not in POLICIES:
        raise UserError(f"policy: unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


class FakeSession:
    """Implements mlx_kv.protocol.ChatSession with timers instead of a model.

    Class attributes tune it for tests: ``piece_delay`` (seconds per generated
    piece), ``reply`` (the text to stream), ``ingest_delay`` (per chunk),
    ``ingest_chunk`` (tokens per progress report), ``layers``.
    """

    piece_delay = 0.0
    reply = DEFAULT_REPLY
    ingest_delay = 0.0
    ingest_chunk = 512
    layers = 8
    sinks_n = SINKS
    window = WINDOW

    def __init__(self, model: str | None, budget_tokens: int, policy: str) -> None:
        self.model_name = model or "bundled: tiny-llama-2L"
        self.budget_tokens = budget_tokens
        self.policy = policy
        self.system = ""
        self.transcript: list[dict] = []
        self.tokens_seen = 0
        self.evictions = 0
        self.promotions = 0
        self.compactions = 0
        self.words: list[str] = []
        self._prefill_tps = 0.0
        self._decode_tps = 0.0
        self._peak = 0
        self._guard: MemoryGuard | None = None

    # -- construction -------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
             progress: Callable[[str], None] | None = None, weights: str = "auto", **heap: Any) -> "FakeSession":
        """Like Session.load; `heap` options are accepted and ignored."""
        if model is not None and model not in ("bundled",) and not os.path.isdir(model) and "/" not in model:
            raise UserError(f"model {model!r} is neither a local folder nor a hub id (org/name)")
        if model is not None and model.startswith("missing/"):
            raise UserError(f"hub id {model!r} not found (or offline and not cached)")
        if policy is not None:
            _check_policy(policy)
        return cls(model, budget_tokens(budget), policy or DEFAULT_POLICY)

    @classmethod
    def restore(cls, path: str, progress: Callable[[str], None] | None = None) -> "FakeSession":
        try:
            data = json.loads(Path(path + ".json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot restore the heap snapshot: {e}") from e
        s = cls(data["model"], data["budget_tokens"], data["policy"])
        s.__dict__.update({k: v for k, v in data.items() if k in ("system", "transcript", "tokens_seen", "evictions", "words")})
        return s

    def save(self, path: str) -> None:
        data = {
            "model": self.model_name,
            "budget_tokens": self.budget_tokens,
            "policy": self.policy,
            "system": self.system,
            "transcript": self.transcript,
            "tokens_seen": self.tokens_seen,
            "evictions": self.evictions,
            "words": self.words[-2000:],
        }
        Path(path + ".json").write_text(json.dumps(data))

    # -- the interface --------------------------------------------------------------

    def chat(self, message: str, max_tokens: int = 512, cancel: threading.Event | None = None,
             temperature: float = 0.0) -> Iterator[str]:
        self.transcript.append({"role": "user", "content": message})
        self._see(message.split())
        pieces = re.findall(r"\S+\s*|\s+", self.reply)[:max_tokens]
        out: list[str] = []
        start = time.monotonic()
        try:
            for piece in pieces:
                if cancel is not None and cancel.is_set():
                    break
                if self.piece_delay:
                    time.sleep(self.piece_delay)
                out.append(piece)
                self._see([piece.strip() or "·"])
                elapsed = time.monotonic() - start
                self._decode_tps = len(out) / elapsed if elapsed > 0 else 0.0
                yield piece
        finally:
            # like the real engine: what was generated stays in the transcript
            self.transcript.append({"role": "assistant", "content": "".join(out)})

    def ingest(
        self,
        source: str,
        progress: Callable[[IngestProgress], None] | None = None,
        errors: str = "strict",
        cancel: threading.Event | None = None,
    ) -> IngestResult:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"no such file: {source}")
        raw = path.read_bytes()
        if not raw.strip():
            raise UserError(f"{source} is empty")
        if b"\x00" in raw[:4096]:
            raise UserError(f"{source} looks binary; /load reads text documents")
        try:
            text = raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as e:
            raise UserError(f"{source} is not UTF-8 text (byte {e.start})") from e
        words = text.split()
        total = max(1, len(words))
        start = time.monotonic()
        done = 0
        while done < total:
            if cancel is not None and cancel.is_set():
                break
            if self.ingest_delay:
                time.sleep(self.ingest_delay)
            step = min(self.ingest_chunk, total - done)
            self._see(words[done : done + step])
            done += step
            elapsed = max(time.monotonic() - start, 1e-6)
            tps = done / elapsed
            self._prefill_tps = tps
            if progress is not None:
                progress(IngestProgress(done, total, tps, (total - done) / tps if tps else 0.0))
        return IngestResult(done, time.monotonic() - start, source)

    def heap_stats(self) -> HeapStats:
        kept = min(self.tokens_seen, self.budget_tokens)
        sinks = min(self.sinks_n, kept)
        young = min(self.window, kept - sinks)
        rest = kept - sinks - young
        tenured = rest // 4
        intermediate = rest - tenured
        per_layer = self.budget_tokens // self.layers
        shape = [1.4, 1.2, 1.0, 0.8, 0.7, 0.8, 1.0, 1.1][: self.layers]
        layers = [
            LayerUsage(
                kept=min(int(kept / self.layers * w), int(per_layer * w)),
                budget=int(per_layer * w),
                nbytes=min(int(kept / self.layers * w), int(per_layer * w)) * BYTES_PER_TOKEN // self.layers,
            )
            for w in shape
        ]
        pillars = []
        n = len(self.words)
        if n > sinks + young:
            for i, frac in enumerate((0.5, 0.12, 0.77, 0.31, 0.9, 0.05)):
                pos = sinks + int(frac * (n - sinks - young))
                pillars.append(Pillar(position=self.tokens_seen - n + pos, text=self.words[pos], score=round(0.9 - 0.12 * i, 2)))
        return HeapStats(
            policy=self.policy,
            budget_tokens=self.budget_tokens,
            budget_bytes=self.budget_tokens * BYTES_PER_TOKEN,
            nbytes=kept * BYTES_PER_TOKEN,
            tokens_seen=self.tokens_seen,
            tokens_kept=kept,
            sinks=sinks,
            young=young,
            intermediate=intermediate,
            tenured=tenured,
            evictions=self.evictions,
            promotions=self.promotions,
            compactions=self.compactions,
            layers=layers,
            pillars=pillars,
        )

    def throughput(self) -> Throughput:
        return Throughput(prefill_tps=self._prefill_tps, decode_tps=self._decode_tps)

    def mlx_memory(self) -> dict[str, int]:
        active = 48_000_000 + min(self.tokens_seen, self.budget_tokens) * BYTES_PER_TOKEN
        self._peak = max(self._peak, active)
        return {"active": active, "peak": self._peak, "cache": 16_000_000}

    def drift(self, window: int = 1024) -> dict[str, float]:
        kept = min(self.tokens_seen, self.budget_tokens)
        return {"kl": 0.0 if kept == self.tokens_seen else 0.05, "top1_agree": 1.0,
                "tokens": min(window, self.tokens_seen), "seconds": 0.0, "exact": self.tokens_seen <= window}

    def set_budget(self, budget: int | str) -> None:
        self.budget_tokens = budget_tokens(budget)
        self._guard = None

    def set_policy(self, name: str) -> None:
        _check_policy(name)
        self.policy = name

    def set_system(self, text: str) -> None:
        self.system = text

    def clear(self) -> None:
        self.transcript.clear()
        self.tokens_seen = self.evictions = self.promotions = self.compactions = 0
        self.words.clear()
        self._guard = None

    # -- the memory guard: the library's, over stand-in layers ------------------------

    def observe_system(self, sample: Any) -> str | None:
        if self._guard is None:
            self._guard = MemoryGuard(self)
        event = self._guard.observe(sample)
        return str(event) if event is not None else None

    @property
    def cache(self) -> list[FakeLayer]:
        return [FakeLayer(self.budget_tokens) for _ in range(self.layers)]

    def set_layer_budgets(self, budgets: list[int]) -> None:
        self.budget_tokens = budgets[0]

    # -- helpers ----------------------------------------------------------------------

    def _see(self, words: list[str]) -> None:
        before = self.tokens_seen
        self.tokens_seen += len(words)
        self.words.extend(words)
        if len(self.words) > 50_000:
            del self.words[: len(self.words) - 50_000]
        over = self.tokens_seen - self.budget_tokens
        if over > 0:
            self.evictions += min(over, self.tokens_seen - before)
            self.promotions = self.evictions // 20
            self.compactions = self.evictions // max(1, self.budget_tokens // 2)
