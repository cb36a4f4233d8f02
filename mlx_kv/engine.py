"""Session: the library's one entry point for a conversation.

A Session owns a model, its tokenizer and its heap, and keeps a record of
exactly which text the heap has consumed, so chat turns and documents only
prefill what is new. All MLX work happens on the thread that calls it (MLX
streams are thread-local): the TUI runs one engine thread for it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import numpy as np
from mlx.utils import tree_unflatten

from mlx_kv.budget import kv_geometry
from mlx_kv.chat_format import ChatFormat
from mlx_kv.config import PROFILED, HeapConfig
from mlx_kv.documents import read_document
from mlx_kv.errors import DiskFull, UserError
from mlx_kv.events import HeapStats, IngestProgress, IngestResult, LayerUsage, MemoryMap, Pillar, Throughput
from mlx_kv.generate import decode, make_sampler, pay_replays, prefill, replay_when_needed
from mlx_kv.guard import MemoryGuard
from mlx_kv.heap.headwise import HEAP_LAYERS, HeadwiseKVCache
from mlx_kv.heap.prompt_cache import (counters, load_heap_cache, make_heap_cache, set_budgets, set_policy,
                                      take_notes, tier_totals, tokens_seen, total_bytes, wants_replay)
from mlx_kv.models import load_model
from mlx_kv.policies import POLICIES
from mlx_kv.replay import Replay
from mlx_kv.session_file import read_session_payload, write_session_file
from mlx_kv.sizes import parse_budget
from mlx_kv.storage import is_disk_full, room_note

PREFILL_CHUNK = 512
log = logging.getLogger("mlx_kv.engine")
SESSION_POSITIONS = "cache"  # long chats stay inside the trained positions
OVERFLOW = ("heap", "stop", "rolling")  # what happens at the budget: evict by policy, refuse, keep the newest
# A session's policy when none is asked for: the replay (KVzip's context reconstruction), the
# signal that keeps the most on the model of record (README, "Retention on the real model": a
# fact streamed with 87.5% of its document removed, 30 of 30 times where keydiff, the best signal
# without a second pass, keeps it 20). Its replay reads only its chunk (as accurate, cheaper:
# SESSION_POLICY_ARGS) and waits until the budget binds, so a session within its budget pays
# nothing for it; beyond it, loading costs about twice as long at 2k tokens, as long as
# KVCache's at 8k (`--policy keydiff` loads faster and keeps less).
SESSION_POLICY = "kvzip"
SESSION_POLICY_ARGS = {"kvzip": {"scope": "chunk"}}  # a session's arguments for a policy chosen by name


class Session:
    """A conversation on one model and its heap; implements mlx_kv.protocol.ChatSession."""

    def __init__(self, model: Any, tokenizer: Any, config: HeapConfig, model_name: str,
                 model_spec: str | None = None, cache: list | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.model_name = model_name
        self.model_spec = model_spec
        # (a restored session brings its own: its head plan is saved with it, the profile may be gone)
        self.cache = make_heap_cache(model, config) if cache is None else cache
        self.format = ChatFormat.probe(tokenizer)
        self.replay = Replay.for_tokenizer(tokenizer)  # used by policies that score by reconstruction (kvzip)
        self.transcript: list[dict] = []
        self.system: str | None = None
        self._fed_text = ""
        self._token_ids = array("i")
        self._prefill_tps = 0.0
        self._decode_tps = 0.0
        self._last_logits: mx.array | None = None
        self._guard: MemoryGuard | None = None  # made at the first probe sample
        # Which token positions each turn fed (documents, prompts, replies), for memory_map and regenerate.
        self.spans: list[dict] = []
        self.overflow = "heap"
        self._heap_policy: str | None = None  # the policy to return to when a rolling window ends
        self._turn_logits: mx.array | None = None  # the logits before the last prompt (regenerate)
        self._texts: dict[tuple[int, int], list[str]] = {}  # each span's tokens as text, decoded once
        self._notes: list[str] = []  # the heap's events (a full disk), until observe_system hands them on

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
             progress: Callable[[str], None] | None = None, weights: str = "auto", **heap: Any) -> "Session":
        heap.setdefault("positions", SESSION_POSITIONS)
        policy, source = policy or SESSION_POLICY, model
        heap.setdefault("policy_args", dict(SESSION_POLICY_ARGS.get(policy, {})))
        default_split = "allocation" not in heap
        if default_split or (heap["allocation"] in PROFILED and not heap.get("profile")):
            from mlx_kv.models import resolve_model_path
            from mlx_kv.profile import find_profile

            path = resolve_model_path(model, progress)
            source = str(path)
            if default_split:
                heap.update(_default_split(path, policy))
                if "allocation" not in heap and progress is not None:
                    progress(f"{path.name} has no profile of its KV heads: every head keeps the same count; "
                             f"`mlx-kv profile --model {model or path}` measures it once")
            elif (found := find_profile(path)) is None:
                raise UserError(f"allocation: {heap['allocation']!r} needs a profile; "
                                "run `mlx-kv profile` for this model first")
            else:
                heap["profile"] = str(found)
        config = _heap_config(budget, policy, heap)
        mdl, tok, name = load_model(source, progress, weights=weights)
        try:
            return cls(mdl, tok, config, name, model)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    # --------------------------------------------------------------------- chat
    def chat(self, message: str, max_tokens: int = 512, cancel: threading.Event | None = None,
             temperature: float = 0.0) -> Iterator[str]:
        """Stream the reply to `message`; a set `cancel` stops it, keeping what was said."""
        if not message.strip():
            raise UserError("message: empty message")
        self.transcript.append({"role": "user", "content": message})
        prompt = self._new_text(self._render(add_generation_prompt=True))
        tokens = self._encode(prompt)
        self._check_room(len(tokens) + 1, "this message")
        self._turn_logits = self._last_logits
        self._prefill(tokens, prompt, cancel=None, span=("user", ""))
        reply: list[int] = []
        detok = self.tokenizer.detokenizer
        detok.reset()
        entry = {"role": "assistant", "content": ""}
        self.transcript.append(entry)
        written = self._open_span("assistant", "")
        try:
            for token in self._decode(max_tokens, cancel, temperature):
                written["stop"] = len(self._token_ids)
                reply.append(token)
                detok.add_token(token)
                piece = detok.last_segment
                entry["content"] += piece
                if piece:
                    yield piece
            detok.finalize()
            tail = detok.last_segment
            if tail:
                entry["content"] += tail
                yield tail
        finally:
            self._fed_text += self.tokenizer.decode(reply)
            self._close_span(written)
            if reply and wants_replay(self.cache):  # the reply's tokens are scored like any chunk's
                replay_when_needed(self.model, self.cache, self.replay, self._token_ids,
                                   len(self._token_ids) - len(reply))

    def _decode(self, max_tokens: int, cancel: threading.Event | None, temperature: float) -> Iterator[int]:
        eos = set(getattr(self.tokenizer, "eos_token_ids", None) or [])
        start, n = time.perf_counter(), 0
        should_stop = cancel.is_set if cancel is not None else None
        if self.overflow == "stop":  # a reply ends where the budget does, before anything is evicted
            limit, cancelled = self._limit(), should_stop
            should_stop = lambda: self.tokens_seen >= limit or bool(cancelled and cancelled())  # noqa: E731
        steps = decode(self.model, self.cache, self._last_logits, max_tokens=max_tokens,
                       sampler=make_sampler(temperature), stop_tokens=eos, should_stop=should_stop,
                       replay=self.replay, history=self._token_ids)
        for token, logits in steps:  # fed already: a caller that stops here leaves the record exact
            self._token_ids.append(token)
            n += 1
            self._last_logits = logits
            yield token
        elapsed = time.perf_counter() - start
        if n:
            self._decode_tps = n / elapsed
        self._collect_notes()

    # ---------------------------------------------------------------- documents
    def ingest(self, source: str, progress: Callable[[IngestProgress], None] | None = None,
               errors: str = "strict", cancel: threading.Event | None = None) -> IngestResult:
        """Load a document (a path, or the text itself) into the session."""
        text, name = read_document(source, errors=errors)
        self.transcript.append({"role": "document", "content": text, "source": name})
        # Only what no later turn rewrites: a template may close this turn
        # differently once the question arrives (e.g. merged into it).
        rendered = self._new_text(self.format.stable_prefix(self.tokenizer, self._messages()))
        tokens = self._encode(rendered)
        self._check_room(len(tokens), name)
        start = time.perf_counter()
        consumed_before = len(self._token_ids)
        try:
            done = self._prefill(tokens, rendered, cancel=cancel, progress=progress, span=("document", name))
        finally:
            done = len(self._token_ids) - consumed_before
            if done < len(tokens):
                # Keep the transcript true to the heap: only the part that was read.
                self.transcript[-1]["content"] = self.tokenizer.decode(tokens[:done])
                self.transcript[-1]["partial"] = True
        return IngestResult(tokens=done, seconds=time.perf_counter() - start, source=name)

    # ------------------------------------------------------------------ prefill
    def _prefill(self, tokens: list[int], text: str, cancel: threading.Event | None,
                 progress: Callable[[IngestProgress], None] | None = None, span: tuple[str, str] | None = None) -> int:
        """Feed tokens in chunks; returns how many were consumed (all unless
        cancelled). Whatever stops it (cancel, Ctrl-C, an error), the record of
        what the heap consumed stays exact; `span` (kind, source) records which
        positions this turn took."""
        total = len(tokens)
        start = time.perf_counter()
        before = len(self._token_ids)
        read = self._open_span(*span) if span is not None else None

        def after_chunk(consumed: int) -> None:
            self._token_ids.extend(tokens[len(self._token_ids) - before:consumed])
            if read is not None:
                read["stop"] = len(self._token_ids)
            if progress is not None:
                tps = consumed / max(time.perf_counter() - start, 1e-9)
                progress(IngestProgress(consumed, total, tps, (total - consumed) / tps if tps else 0.0))

        try:
            last, _ = prefill(self.model, self.cache, tokens, chunk=PREFILL_CHUNK, previous=self._last_logits,
                              replay=self.replay, history=self._token_ids,
                              on_chunk=after_chunk,
                              should_stop=(lambda: cancel.is_set()) if cancel is not None else None)
            if last is not None:
                self._last_logits = last
        finally:
            done = len(self._token_ids) - before
            if done:
                self._prefill_tps = done / max(time.perf_counter() - start, 1e-9)
            self._fed_text += text if done == total else self.tokenizer.decode(tokens[:done])
            if read is not None:
                self._close_span(read)
            self._collect_notes()
        return done

    def _open_span(self, kind: str, source: str) -> dict:
        """The positions the newest transcript entry feeds, from here on; it
        grows as tokens are consumed, so a map taken meanwhile sees them."""
        span = {"kind": kind, "source": source, "turn": len(self.transcript) - 1,
                "start": len(self._token_ids), "stop": len(self._token_ids), "fed": len(self._fed_text)}
        self.spans.append(span)
        return span

    def _close_span(self, span: dict) -> None:
        span["stop"] = len(self._token_ids)
        if span["stop"] == span["start"] and span in self.spans:
            self.spans.remove(span)  # nothing was fed

    def _limit(self) -> int:
        """Tokens the smallest layer keeps: past it the heap would evict."""
        return min(layer.budget for layer in self.cache)

    def _check_room(self, needed: int, what: str) -> None:
        """With overflow "stop", refuse input that would make the heap evict
        (the transcript entry just added for it is taken back)."""
        if self.overflow != "stop":
            return
        limit = self._limit()
        room = limit - (self.tokens_seen or 0)
        if needed > room:
            self.transcript.pop()
            raise UserError(f"context full (overflow: stop): {what} needs {needed:,} tokens and "
                            f"{max(0, room):,} of the {limit:,}-token budget are left; "
                            "/overflow heap lets the heap evict, /new starts a new conversation")

    def _collect_notes(self) -> None:
        """The heap's one-line events: logged now (the CLI's stderr), shown by
        the app at its next observe_system call."""
        for note in take_notes(self.cache):
            log.warning(note)
            self._notes.append(note)

    # ---------------------------------------------------------------- rendering
    def _messages(self) -> list[dict]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": m["role"], "content": m["content"]} for m in self.transcript]

    def _render(self, add_generation_prompt: bool) -> str:
        return self.format.render(self.tokenizer, self._messages(), add_generation_prompt)

    def _new_text(self, full: str) -> str:
        """What the heap has not seen yet. If history was rewritten (a
        changed system prompt), only the unseen tail can be fed."""
        fed = self._fed_text
        if full.startswith(fed):
            return full[len(fed):]
        common = os.path.commonprefix([full, fed])
        return full[len(common):]

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        try:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return list(self.tokenizer.encode(text))

    # ----------------------------------------------------------------- controls
    def set_budget(self, budget: int | str) -> None:
        config = _heap_config(budget, self.config.policy, self._heap_kwargs())
        from mlx_kv.budget import tokens_per_layer

        try:
            budgets = tokens_per_layer(config, self.model)
            if self._shrinks(budgets):
                pay_replays(self.model, self.cache, self.replay, self._token_ids)  # (a smaller budget collects now)
            set_budgets(self.cache, budgets)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.config = config
        self._guard = None  # the user's new budget is the one to restore to

    def set_layer_budgets(self, budgets: list[int]) -> None:
        """Per-layer token budgets, applied at once (the memory guard uses this).

        A smaller budget compacts the heap into smaller arrays at once. The
        old ones would stay in MLX's buffer cache, and once freed, in the C
        allocator's arenas: either way still resident and charged to the
        machine (or the container's limit). So the cache is emptied and the
        allocator trimmed (measured on the default
        model, budget 4096 -> 2048: RSS 982 MB before and after without the
        trim, 733 MB with it; scripts/memory_pressure.py)."""
        shrinking = self._shrinks(budgets)
        if shrinking:
            pay_replays(self.model, self.cache, self.replay, self._token_ids)  # (a smaller budget collects now)
        set_budgets(self.cache, budgets)
        if shrinking:
            mx.clear_cache()
            release_freed_memory()

    def _shrinks(self, budgets: list[int]) -> bool:
        """Whether a layer's new budget is below its current one: it collects at
        once, so replays a prefill put off are paid first."""
        return any(new < layer.budget for new, layer in zip(budgets, self.cache))

    def set_policy(self, name: str) -> None:
        if name not in POLICIES:
            raise UserError(f"policy: unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}")
        fields = self._heap_kwargs(keep_policy_args=False)
        fields["policy_args"] = dict(SESSION_POLICY_ARGS.get(name, {}))
        if getattr(self.cache[0], "adaptive", False):
            # A heap that moves its budget by replay scores keeps doing so when a
            # replaying policy comes back; one that does not replay (the rolling
            # window's streaming) leaves the budgets where the last replay put them.
            moved = "headwise" if isinstance(self.cache[0], HeadwiseKVCache) else "adaptive"
            fields["allocation"] = moved if POLICIES[name].replays else "uniform"
        self.config = _heap_config(self.config.budget, name, fields)
        set_policy(self.cache, self.config.make_policy)
        if self.overflow == "rolling" and name != "streaming":
            self.overflow = "heap"  # choosing a policy is choosing the heap

    def set_overflow(self, mode: str) -> None:
        """What happens at the budget: "heap" evicts by the policy, "stop"
        refuses input that would evict, "rolling" keeps the sinks and the
        newest tokens (the streaming policy) until another mode is chosen."""
        if mode not in OVERFLOW:
            raise UserError(f"overflow: unknown mode {mode!r}; choose one of {', '.join(OVERFLOW)}")
        if mode == "rolling" and self.overflow != "rolling":
            self._heap_policy = self.config.policy
            self.set_policy("streaming")
        elif mode != "rolling" and self.overflow == "rolling":
            back = self._heap_policy if self._heap_policy not in (None, "streaming") else SESSION_POLICY
            self.set_policy(back)
        self.overflow = mode

    def memory_map(self, detail: tuple[int, ...] = ()) -> MemoryMap:
        """What the heap keeps of each turn; spans whose index is in `detail` come per token."""
        from mlx_kv.memory_map import memory_map

        return memory_map(self.cache, self.spans, self.tokens_seen or 0, detail, self._span_texts)

    def _span_texts(self, start: int, stop: int) -> list[str]:
        """Each token's text, as the streaming detokenizer splits it (a
        character spread over several byte tokens shows on the last one)."""
        key = (start, stop)
        if key not in self._texts:
            detok = self.tokenizer.detokenizer
            out = []
            for token in self._token_ids[start:stop]:
                detok.add_token(token)
                out.append(detok.last_segment)
            detok.finalize()
            if out:
                out[-1] += detok.last_segment
            self._texts[key] = out
        return self._texts[key]

    def regenerate(self, max_tokens: int = 512, cancel: threading.Event | None = None,
                   temperature: float = 0.0) -> Iterator[str]:
        """Take back the last message and its reply (the heap forgets their
        tokens) and answer the message again. What the heap evicted while
        they were read stays evicted."""
        if len(self.spans) < 2 or [s["kind"] for s in self.spans[-2:]] != ["user", "assistant"]:
            raise UserError("regenerate: the last turn is not a reply to a message")
        asked = self.spans[-2]
        start = asked["start"]
        if any(len(row) and row.max() >= start for layer in self.cache for row in layer.spilled_positions()):
            raise UserError("regenerate: part of the last turn was spilled to disk; ask again instead")
        for layer in self.cache:
            layer.trim(layer.tokens_seen - start)
        del self._token_ids[start:]
        self._fed_text = self._fed_text[:asked["fed"]]
        message = self.transcript[asked["turn"]]["content"]
        del self.transcript[asked["turn"]:]
        del self.spans[-2:]
        self._texts = {k: v for k, v in self._texts.items() if k[1] <= start}
        self._last_logits = self._turn_logits
        return self.chat(message, max_tokens=max_tokens, cancel=cancel, temperature=temperature)

    def set_system(self, text: str) -> None:
        self.system = text.strip() or None

    def clear(self) -> None:
        self.transcript.clear()
        self._fed_text = ""
        self._token_ids = array("i")
        self.spans, self._texts, self._turn_logits = [], {}, None
        self.cache = make_heap_cache(self.model, self.config)
        self._guard = None  # a fresh heap at the user's budget

    def observe_system(self, sample: Any) -> str | None:
        """Feed one probe sample to this session's memory guard (mlx_kv.guard);
        returns the budget change it made and the heap's own events since the
        last call (the recovery tier lost its disk), as one line, or None."""
        if self._guard is None:
            self._guard = MemoryGuard(self)
        event = self._guard.observe(sample)
        lines = ([str(event)] if event is not None else []) + self._notes
        self._notes = []
        return "; ".join(lines) or None

    def _heap_kwargs(self, keep_policy_args: bool = True) -> dict[str, Any]:
        """The current settings but budget and policy; a new policy starts from
        its own defaults, since the old one's arguments may not apply to it."""
        fields = dict(self.config.__dict__)
        fields.pop("budget"), fields.pop("policy")
        if not keep_policy_args:
            fields["policy_args"] = {}
        return fields

    # ------------------------------------------------------------- measurements
    @property
    def tokens_seen(self) -> int:
        return tokens_seen(self.cache)

    def heap_stats(self, n_pillars: int = 8) -> HeapStats:
        per_token = kv_geometry(self.model).heap_bytes_per_token(self.config.positions)
        tiers, totals = tier_totals(self.cache), counters(self.cache)
        n = max(1, len(self.cache))
        return HeapStats(
            policy=self.config.policy,
            # per layer and KV head (every layer sees the same tokens; split budgets differ), averaged
            budget_tokens=totals["budget"] // n,
            budget_bytes=totals["budget"] * per_token,
            nbytes=total_bytes(self.cache),
            tokens_seen=self.tokens_seen,
            tokens_kept=totals["live"] // n,
            sinks=tiers["sinks"] // n, young=tiers["young"] // n,
            intermediate=tiers["intermediate"] // n, tenured=tiers["tenured"] // n,
            evictions=totals["evictions"] // n, promotions=totals["promotions"] // n,
            compactions=totals["compactions"] // n,
            layers=[LayerUsage(kept=layer.live, budget=layer.budget, nbytes=layer.nbytes) for layer in self.cache],
            pillars=self.pillars(n_pillars),
            cold=totals["cold_tokens"] // n,
            cold_bits=self.config.cold_bits,
        )

    def pillars(self, n: int = 8) -> list[Pillar]:
        """Kept tokens that the most (layer, head) pairs rank in their top 5%."""
        from mlx_kv.diagnostics import pillar_positions

        if not self.cache or self.cache[0].live == 0:
            return []
        # a policy that reads attention ranks by it; for one that does not, the heap samples it
        found = pillar_positions([layer.sampled_attention() if self.policy_is_blind() else layer.token_scores()
                                  for layer in self.cache],
                                 sinks=self.config.sinks, recent_from=self.tokens_seen - self.config.window,
                                 top_fraction=0.05, limit=n)
        out = []
        for position, votes in found:
            token = self._token_ids[position] if position < len(self._token_ids) else None
            text = self.tokenizer.decode([token]) if token is not None else "?"
            out.append(Pillar(position=int(position), text=text, score=float(votes)))
        return out

    def drift(self, window: int = 1024) -> dict[str, float]:
        """Shadow sampling: the heap's next-token distribution vs a full cache's.

        A sidecar KVCache re-reads the last `window` tokens (the whole session
        when it is shorter) and predicts the next token; it never touches the
        heap or the transcript. Cost: one prefill of `window` tokens, measured
        and returned as `seconds`.
        """
        from mlx_lm.models.cache import KVCache

        from mlx_kv.diagnostics import kl_divergence

        if self._last_logits is None or not len(self._token_ids):
            return {"kl": float("nan"), "top1_agree": float("nan"), "tokens": 0, "seconds": 0.0, "exact": False}
        start = time.perf_counter()
        ids = self._token_ids[-window:].tolist()
        logits, _ = prefill(self.model, [KVCache() for _ in self.model.layers], ids, chunk=PREFILL_CHUNK)
        heap = np.array(self._last_logits.astype(mx.float32))
        full = np.array(logits.astype(mx.float32))
        return {"kl": kl_divergence(full, heap), "top1_agree": float(np.argmax(full) == np.argmax(heap)),
                "tokens": len(ids), "seconds": time.perf_counter() - start,
                "exact": len(ids) == len(self._token_ids)}

    def policy_is_blind(self) -> bool:
        return self.cache[0].policy.observes == "none"

    def throughput(self) -> Throughput:
        return Throughput(prefill_tps=self._prefill_tps, decode_tps=self._decode_tps)

    def mlx_memory(self) -> dict[str, int]:
        return {"active": mx.get_active_memory(), "peak": mx.get_peak_memory(), "cache": mx.get_cache_memory()}

    # ------------------------------------------------------------ save/restore
    def save(self, path: str) -> None:
        """Heap + transcript + settings in one checksummed file, written atomically."""
        from mlx_lm.models.cache import save_prompt_cache

        meta = {
            "model": self.model_spec or "",
            "model_name": self.model_name,
            "config": json.dumps(self.config.__dict__),
            "transcript": json.dumps(self.transcript),
            "system": self.system or "",
            "fed_text": self._fed_text,
            "token_ids": json.dumps(self._token_ids.tolist()),
            "spans": json.dumps(self.spans),
            "overflow": self.overflow,
            "heap_policy": self._heap_policy or "",
        }
        write_session_file(path, lambda tmp: save_prompt_cache(tmp, self.cache, metadata=meta))

    @classmethod
    def restore(cls, path: str, progress: Callable[[str], None] | None = None,
                model: Any = None, tokenizer: Any = None) -> "Session":
        payload = read_session_payload(path)
        fd, tmp = tempfile.mkstemp(suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    f.write(payload)
                except OSError as exc:  # mx.load reads files: the payload goes through a temporary one
                    folder = os.path.dirname(tmp)
                    if is_disk_full(exc, folder):
                        raise DiskFull(f"session: cannot restore {os.path.basename(path)}: no space left in "
                                       f"{folder}{room_note(folder)} for its temporary copy "
                                       f"({len(payload) / 2**20:.1f} MiB; TMPDIR chooses where)") from None
                    raise
            if model is None:
                meta = _peek_metadata(tmp)
                model, tokenizer, _ = load_model(meta.get("model") or None, progress)
            cache, meta = load_heap_cache(tmp, return_metadata=True, model=model)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"session: {path} could not be read ({type(exc).__name__})") from None
        finally:
            os.unlink(tmp)
        try:
            fields = _saved_fields(meta, cache, model)
            session = cls(model, tokenizer, HeapConfig(**fields["config"]), fields["model_name"],
                          fields["model"] or None, cache)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise UserError(f"session: {path} holds incomplete session data ({_short(exc)})") from None
        session.transcript = fields["transcript"]
        session.system = fields["system"] or None
        session._fed_text = fields["fed_text"]
        session._token_ids = array("i", fields["token_ids"])
        session.spans = fields["spans"]
        session.overflow = fields["overflow"]
        session._heap_policy = fields["heap_policy"]
        session._last_logits = None
        return session


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim);
    False where there is no such call (macOS, musl), which return them by themselves or not at all."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def _saved_fields(meta: Any, cache: list, model: Any) -> dict[str, Any]:
    """A save's metadata, checked whole before any of it is used: a session is
    never built from part of one (a file that passes its checksum was still
    written by someone, and a wrong field would fail much later, mid-chat)."""
    if not isinstance(meta, dict):
        raise ValueError("no session metadata")
    config, transcript, token_ids = (json.loads(meta[key]) for key in ("config", "transcript", "token_ids"))
    if not isinstance(config, dict):
        raise ValueError("config is not a table")
    if not isinstance(transcript, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in transcript):
        raise ValueError("transcript is not a list of turns")
    texts = {key: meta.get(key, "") for key in ("system", "fed_text", "model", "model_name")}
    if not all(isinstance(v, str) for v in texts.values()):
        raise ValueError("a text field is not text")
    vocab = getattr(getattr(model, "args", None), "vocab_size", None) or 2**31
    if not isinstance(token_ids, list) or not all(type(t) is int and 0 <= t < vocab for t in token_ids):
        raise ValueError("token ids are not ids of this model's vocabulary")
    layers = getattr(model, "layers", cache)
    if len(cache) != len(layers) or not all(isinstance(c, HEAP_LAYERS) for c in cache):
        raise ValueError(f"{len(cache)} saved layer caches for a model of {len(layers)} layers")
    if any(c.tokens_seen != len(token_ids) for c in cache):
        raise ValueError("the heap and the record of its tokens disagree")
    spans = json.loads(meta.get("spans", "[]"))  # sessions saved before spans have none
    if not isinstance(spans, list) or not all(
            isinstance(sp, dict) and all(type(sp.get(k)) is int and 0 <= sp[k] <= len(token_ids) for k in ("start", "stop"))
            for sp in spans):
        raise ValueError("spans are not ranges of the saved tokens")
    overflow = meta.get("overflow") or "heap"
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow {overflow!r} is not one of {', '.join(OVERFLOW)}")
    heap_policy = meta.get("heap_policy") or None
    if heap_policy is not None and heap_policy not in POLICIES:
        raise ValueError(f"heap policy {heap_policy!r} is unknown")
    return {"config": config, "transcript": transcript, "token_ids": token_ids, **texts,
            "model_name": texts["model_name"] or "model", "spans": spans, "overflow": overflow,
            "heap_policy": heap_policy}


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _peek_metadata(path: str) -> dict:
    """A saved session's own metadata (which model to load) before the heap is built.

    mlx-lm's only public reader of it is load_prompt_cache, which builds every
    layer's cache, and restoring a heap needs the model first. The file's
    safetensors metadata is the tree [metadata, classes, scalars] that
    save_prompt_cache flattens; it is unflattened here as load_prompt_cache
    does (tests/test_engine.py restores without a model, so a change in
    mlx-lm's layout fails there)."""
    _, flat = mx.load(path, return_metadata=True)
    return tree_unflatten(list(flat.items()))[0]


def _default_split(model_path: Path, policy: str) -> dict[str, Any]:
    """How a session splits its budget unless told: a replaying policy
    between all KV heads by its replay scores (allocation="headwise"), any
    other between the KV heads by their profiled retrieval scores where the
    model's profile has them (streamed on SmolLM2 with half, three quarters
    and seven eighths of a document removed, keydiff keeps a fact 30, 26 and
    22 of 30 times, against 7 and 5 of 10 at half and three quarters with one
    count per layer), else one count for all."""
    from mlx_kv.profile import retrieval_profile

    if getattr(POLICIES.get(policy), "replays", False):
        return {"allocation": "headwise"}
    found = retrieval_profile(model_path)
    return {} if found is None else {"allocation": "retrieval", "profile": str(found)}


def _heap_config(budget: int | str | None, policy: str | None, extra: dict[str, Any]) -> HeapConfig:
    fields = dict(extra)
    if policy is not None:
        fields["policy"] = policy
    try:
        if budget is not None:
            fields["budget"] = parse_budget(budget)  # every form the CLI and the TUI read
        return HeapConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None

