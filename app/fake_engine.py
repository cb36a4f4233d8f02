"""A scripted stand-in for ``mlx_kv.engine.Session``, without MLX.

Why it lives in the package: the Pilot tests, the screenshot script and UI
work on a machine without a model all need the same engine double.  It
implements ``mlx_kv.protocol.ChatSession`` like the real session (checked by
tests/test_protocol.py), reads budgets with the library's reader, knows the
library's policy names, runs the library's memory guard and computes its
memory map with the library's arithmetic (``mlx_kv.memory_map``).  Its
numbers are made up but shaped like a real heap: sinks, a young window,
intermediate and tenured tiers, evictions once the budget is full,
per-layer budgets, pillars, and every (layer, head) pair keeping its own
tokens, ranked by a fixed score per token that the pairs mostly share
(tokens with digits score high, as a needle would).

A "token" is a word with the whitespace after it.
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

import numpy as np

from mlx_kv.errors import UserError
from mlx_kv.events import (DownloadNote, HeapStats, IngestProgress, IngestResult, LayerUsage, MemoryMap, Pillar,
                           Throughput)
from mlx_kv.guard import MemoryGuard
from mlx_kv.memory_map import holder_counts, memory_map
from mlx_kv.sizes import parse_budget, parse_bytes

# mlx_kv.policies.POLICIES, named here because importing it loads MLX (tests/test_protocol.py keeps them equal)
POLICIES = ("expected", "h2o", "keydiff", "kvzip", "random", "snapkv", "streaming", "surprise", "tova", "valuenorm")
DEFAULT_POLICY = "kvzip"  # mlx_kv.engine.SESSION_POLICY
OVERFLOW = ("heap", "stop", "rolling")  # mlx_kv.engine.OVERFLOW
NAMES = ("mlx-kv-tiny", "SmolLM2-135M-Instruct", "bundled")  # model names the fake loads like the library would
BYTES_PER_TOKEN = 4096  # a tiny model: 2 layers x 2 KV heads x 64 dims x fp32 x K,V x 2
DEFAULT_REPLY = (
    "The document says the **special magic number** is `7421`. "
    "It appears once, near the middle:\n\n"
    "- the heap kept it as a *pillar* token\n"
    "- the recent window held the question\n\n"
    "Anything else?"
)
PIECE = re.compile(r"\S+\s*|\s+")


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
    """One heap layer as the memory guard and the memory map read it."""

    budget: int
    sinks: int = SINKS
    window: int = WINDOW
    session: "FakeSession | None" = None
    index: int = 0

    def kept_positions(self) -> list[np.ndarray]:
        return [self.session._kept(self.index, h) for h in range(self.session.heads)]

    def cold_positions(self) -> list[np.ndarray]:
        return [self.session._cold(self.index, h) for h in range(self.session.heads)]

    def spilled_positions(self) -> list[np.ndarray]:
        return [self.session._spilled(self.index, h) for h in range(self.session.heads)]


def _check_policy(name: str) -> None:
    if name not in POLICIES:
        raise UserError(f"policy: unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


class FakeSession:
    """Implements mlx_kv.protocol.ChatSession with timers instead of a model.

    Class attributes tune it for tests: ``piece_delay`` (seconds per generated
    piece), ``reply`` (the text to stream), ``ingest_delay`` (per chunk),
    ``ingest_chunk`` (tokens per progress report), ``download_delay`` (per
    tenth of a hub download), ``layers``, ``heads``.
    """

    piece_delay = 0.0
    reply = DEFAULT_REPLY
    ingest_delay = 0.0
    ingest_chunk = 512
    download_delay = 0.0
    layers = 8
    heads = 2
    sinks_n = SINKS
    window = WINDOW

    def __init__(self, model: str | None, budget_tokens: int, policy: str, options: dict | None = None) -> None:
        self.model_spec = model
        self.model_name = _display_name(model)
        self.budget_tokens = budget_tokens
        self.policy = policy
        self.options = dict(options or {})
        self.system = ""
        self.transcript: list[dict] = []
        self.spans: list[dict] = []
        self.overflow = "heap"
        self._heap_policy: str | None = None
        self.tokens_seen = 0
        self.evictions = 0
        self.promotions = 0
        self.compactions = 0
        self.words: list[str] = []
        self._prefill_tps = 0.0
        self._decode_tps = 0.0
        self._peak = 0
        self._guard: MemoryGuard | None = None
        self._base = np.zeros(0)  # the pairs' shared score per position (see _scores)

    # -- construction -------------------------------------------------------------

    @classmethod
    def load(cls, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
             progress: Callable[[str], None] | None = None, weights: str = "auto", **heap: Any) -> "FakeSession":
        """Like Session.load: names, folders, .gguf files and hub ids (a hub
        id "downloads" in tenths, reported like mlx_kv.models does)."""
        if model is not None and model not in NAMES and not os.path.exists(model):
            if "/" not in model or model.startswith((".", "/", "~")):
                raise UserError(f"model {model!r} is neither a local folder nor a hub id (org/name)")
            if model.startswith("missing/"):
                raise UserError(f"model: hub id {model} was not found (or needs access rights)")
            if progress is not None:
                progress(f"fetching {model} from the Hugging Face hub")
                for tenth in range(11):
                    if cls.download_delay:
                        time.sleep(cls.download_delay)
                    progress(DownloadNote(f"downloading {model}: {10 * tenth}% of 256.0 MiB", model, tenth / 10,
                                          256 << 20))
        if policy is not None:
            _check_policy(policy)
        return cls(model, budget_tokens(budget), policy or DEFAULT_POLICY, heap)

    @classmethod
    def restore(cls, path: str, progress: Callable[[str], None] | None = None) -> "FakeSession":
        try:
            data = json.loads(Path(path + ".json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot restore the heap snapshot: {e}") from e
        s = cls(data["model"], data["budget_tokens"], data["policy"], data.get("options"))
        s.model_name = data.get("model_name", s.model_name)
        s.__dict__.update({k: v for k, v in data.items()
                           if k in ("system", "transcript", "tokens_seen", "evictions", "words", "spans", "overflow")})
        return s

    def save(self, path: str) -> None:
        data = {
            "model": self.model_spec,
            "model_name": self.model_name,
            "budget_tokens": self.budget_tokens,
            "policy": self.policy,
            "options": self.options,
            "system": self.system,
            "transcript": self.transcript,
            "tokens_seen": self.tokens_seen,
            "evictions": self.evictions,
            "words": self.words,
            "spans": self.spans,
            "overflow": self.overflow,
        }
        Path(path + ".json").write_text(json.dumps(data))

    # -- the interface --------------------------------------------------------------

    def chat(self, message: str, max_tokens: int = 512, cancel: threading.Event | None = None,
             temperature: float = 0.0) -> Iterator[str]:
        self.transcript.append({"role": "user", "content": message})
        prompt = PIECE.findall(message + "\n") or ["·"]
        self._check_room(len(prompt) + 1, "this message")
        self._feed(prompt, "user")
        pieces = PIECE.findall(self.reply)[:max_tokens]
        if temperature > 0:  # a different sample: the same words, another order of the last lines
            pieces = pieces[: len(pieces) // 2] + list(reversed(pieces[len(pieces) // 2:]))
        out: list[str] = []
        start = time.monotonic()
        self.transcript.append({"role": "assistant", "content": ""})
        first = self.tokens_seen
        try:
            for piece in pieces:
                if cancel is not None and cancel.is_set():
                    break
                if self.overflow == "stop" and self.tokens_seen >= self.budget_tokens:
                    break
                if self.piece_delay:
                    time.sleep(self.piece_delay)
                out.append(piece)
                self.transcript[-1]["content"] = "".join(out)
                self._see([piece])
                elapsed = time.monotonic() - start
                self._decode_tps = len(out) / elapsed if elapsed > 0 else 0.0
                yield piece
        finally:
            # like the real engine: what was generated stays in the transcript
            self.transcript[-1]["content"] = "".join(out)
            if self.tokens_seen > first:
                self.spans.append({"kind": "assistant", "source": "", "turn": len(self.transcript) - 1,
                                   "start": first, "stop": self.tokens_seen})

    def regenerate(self, max_tokens: int = 512, cancel: threading.Event | None = None,
                   temperature: float = 0.0) -> Iterator[str]:
        if len(self.spans) < 2 or [s["kind"] for s in self.spans[-2:]] != ["user", "assistant"]:
            raise UserError("regenerate: the last turn is not a reply to a message")
        asked = self.spans[-2]
        message = self.transcript[asked["turn"]]["content"]
        del self.transcript[asked["turn"]:]
        del self.spans[-2:]
        del self.words[asked["start"]:]
        self.tokens_seen, self._base = asked["start"], np.zeros(0)
        return self.chat(message, max_tokens=max_tokens, cancel=cancel, temperature=temperature)

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
        words = PIECE.findall(text.lstrip()) or ["·"]
        total = len(words)
        self.transcript.append({"role": "document", "content": text, "source": path.name})
        self._check_room(total, path.name)
        start = time.monotonic()
        span = {"kind": "document", "source": path.name, "turn": len(self.transcript) - 1,
                "start": self.tokens_seen, "stop": self.tokens_seen}
        self.spans.append(span)  # grows as it is read, like the engine's
        done = 0
        try:
            while done < total:
                if cancel is not None and cancel.is_set():
                    break
                if self.ingest_delay:
                    time.sleep(self.ingest_delay)
                step = min(self.ingest_chunk, total - done)
                self._see(words[done: done + step])
                done += step
                span["stop"] = self.tokens_seen
                elapsed = max(time.monotonic() - start, 1e-6)
                tps = done / elapsed
                self._prefill_tps = tps
                if progress is not None:
                    progress(IngestProgress(done, total, tps, (total - done) / tps if tps else 0.0))
        finally:
            if done < total:
                self.transcript[-1].update(content="".join(words[:done]), partial=True)
            if not done:
                self.spans.remove(span)
        return IngestResult(done, time.monotonic() - start, path.name)

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
        cold_bits = self.options.get("cold_bits")
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
            pillars=self._pillars(),
            cold=int(intermediate * 0.6) if cold_bits else 0,
            cold_bits=cold_bits,
        )

    def memory_map(self, detail: tuple[int, ...] = ()) -> MemoryMap:
        return memory_map(self.cache, self.spans, self.tokens_seen, detail,
                          lambda start, stop: self.words[start:stop])

    def throughput(self) -> Throughput:
        return Throughput(prefill_tps=self._prefill_tps, decode_tps=self._decode_tps)

    def mlx_memory(self) -> dict[str, int]:
        active = 48_000_000 + min(self.tokens_seen, self.budget_tokens) * BYTES_PER_TOKEN
        self._peak = max(self._peak, active)
        return {"active": active, "peak": self._peak, "cache": 16_000_000}

    def drift(self, window: int = 1024) -> dict[str, float]:
        kept = min(self.tokens_seen, self.budget_tokens)
        evicted = 1 - kept / self.tokens_seen if self.tokens_seen else 0.0
        return {"kl": round(0.08 * evicted, 4), "top1_agree": 1.0 if evicted < 0.5 else 0.0,
                "tokens": min(window, self.tokens_seen), "seconds": 0.01, "exact": self.tokens_seen <= window}

    def set_budget(self, budget: int | str) -> None:
        self.budget_tokens = budget_tokens(budget)
        self._guard = None

    def set_policy(self, name: str) -> None:
        _check_policy(name)
        self.policy = name
        if self.overflow == "rolling" and name != "streaming":
            self.overflow = "heap"

    def set_overflow(self, mode: str) -> None:
        if mode not in OVERFLOW:
            raise UserError(f"overflow: unknown mode {mode!r}; choose one of {', '.join(OVERFLOW)}")
        if mode == "rolling" and self.overflow != "rolling":
            self._heap_policy = self.policy
            self.set_policy("streaming")
        elif mode != "rolling" and self.overflow == "rolling":
            self.set_policy(self._heap_policy if self._heap_policy not in (None, "streaming") else DEFAULT_POLICY)
        self.overflow = mode

    def set_system(self, text: str) -> None:
        self.system = text

    def clear(self) -> None:
        self.transcript.clear()
        self.spans.clear()
        self.tokens_seen = self.evictions = self.promotions = self.compactions = 0
        self.words.clear()
        self._base = np.zeros(0)
        self._guard = None

    # -- the memory guard: the library's, over stand-in layers ------------------------

    def observe_system(self, sample: Any) -> str | None:
        if self._guard is None:
            self._guard = MemoryGuard(self)
        event = self._guard.observe(sample)
        return str(event) if event is not None else None

    @property
    def cache(self) -> list[FakeLayer]:
        return [FakeLayer(self.budget_tokens, session=self, index=i) for i in range(self.layers)]

    def set_layer_budgets(self, budgets: list[int]) -> None:
        self.budget_tokens = budgets[0]

    # -- the stand-in heap -------------------------------------------------------------

    def _scores(self, pair: int) -> np.ndarray:
        """A fixed score per position (a hash, so a restored session ranks the
        same), mostly shared by the pairs, and high for words with digits; the
        newest tokens first under the streaming policy (a rolling window)."""
        n = self.tokens_seen
        if self.policy == "streaming":
            return np.arange(n, dtype=float)
        if len(self._base) != n:
            digits = np.fromiter((any(c.isdigit() for c in w) for w in self.words[:n]), bool, n)
            self._base = _hash01(np.arange(n), 0) + digits
        return self._base + 0.35 * _hash01(np.arange(n), pair + 1)

    def _kept(self, layer: int, head: int) -> np.ndarray:
        n, budget = self.tokens_seen, self.budget_tokens
        if n <= budget:
            return np.arange(n)
        sinks, window = self.sinks_n, self.window
        middle = np.arange(sinks, n - window)
        room = budget - sinks - window
        scores = self._scores(layer * self.heads + head)[middle]
        chosen = middle[np.argpartition(-scores, room - 1)[:room]] if room < len(middle) else middle
        return np.sort(np.concatenate([np.arange(sinks), chosen, np.arange(n - window, n)]))

    def _cold(self, layer: int, head: int) -> np.ndarray:
        """With cold_bits: the lower-scored 60% of the kept middle is held quantized."""
        if not self.options.get("cold_bits") or self.tokens_seen <= self.budget_tokens:
            return np.zeros(0, int)
        kept = self._kept(layer, head)
        middle = kept[(kept >= self.sinks_n) & (kept < self.tokens_seen - self.window)]
        scores = self._scores(layer * self.heads + head)[middle]
        return np.sort(middle[np.argsort(scores)[: int(len(middle) * 0.6)]])

    def _spilled(self, layer: int, head: int) -> np.ndarray:
        """With a recovery tier: every token the pair evicted is on disk."""
        if not self.options.get("recovery") or self.tokens_seen <= self.budget_tokens:
            return np.zeros(0, int)
        return np.setdiff1d(np.arange(self.tokens_seen), self._kept(layer, head))

    def _pillars(self, n: int = 6) -> list[Pillar]:
        """The kept tokens most pairs keep, best shared score first (sinks and the window left out)."""
        lo, hi = self.sinks_n, self.tokens_seen - self.window
        if hi <= lo or self.tokens_seen <= self.budget_tokens:
            return []
        votes, _, _, pairs = holder_counts(self.cache, lo, hi)
        base = self._scores(0)[lo:hi]
        order = np.lexsort((-base, -votes))[:n]
        top = float(base[order[0]]) or 1.0
        return [Pillar(position=int(lo + i), text=self.words[lo + i].strip(), score=round(float(base[i]) / top, 2))
                for i in order if votes[i]]

    # -- helpers ----------------------------------------------------------------------

    def _check_room(self, needed: int, what: str) -> None:
        if self.overflow != "stop":
            return
        room = self.budget_tokens - self.tokens_seen
        if needed > room:
            self.transcript.pop()
            raise UserError(f"context full (overflow: stop): {what} needs {needed:,} tokens and "
                            f"{max(0, room):,} of the {self.budget_tokens:,}-token budget are left; "
                            "/overflow heap lets the heap evict, /new starts a new conversation")

    def _feed(self, pieces: list[str], kind: str) -> None:
        first = self.tokens_seen
        self._see(pieces)
        self.spans.append({"kind": kind, "source": "", "turn": len(self.transcript) - 1,
                           "start": first, "stop": self.tokens_seen})

    def _see(self, words: list[str]) -> None:
        before = self.tokens_seen
        self.tokens_seen += len(words)
        self.words.extend(words)
        over = self.tokens_seen - self.budget_tokens
        if over > 0:
            self.evictions += min(over, self.tokens_seen - before)
            self.promotions = self.evictions // 20
            self.compactions = self.evictions // max(1, self.budget_tokens // 2)


def _hash01(positions: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic value in [0, 1) per position (Knuth's multiplicative hash)."""
    mixed = (positions.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt * 40503 + 12345)) % np.uint64(1 << 32)
    return ((mixed * np.uint64(2246822519)) % np.uint64(1 << 32)).astype(float) / float(1 << 32)


def _display_name(model: str | None) -> str:
    if model is None:
        return "bundled: tiny-llama-2L"
    return Path(model).name if os.path.exists(model) else model
