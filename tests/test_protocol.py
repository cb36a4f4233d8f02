"""The real Session and the fake engine implement mlx_kv.protocol.ChatSession,
signatures included (names, order, kinds, defaults and types), so the UI's
engine thread can code against the protocol and the fake cannot drift."""

from __future__ import annotations

import inspect
import typing

import pytest

from app.fake_engine import POLICIES as FAKE_POLICIES
from app.fake_engine import FakeSession
from mlx_kv.engine import Session
from mlx_kv.protocol import PROTOCOL_METHODS, ChatSession

CONSTRUCTORS = ("load", "restore")


def test_the_protocol_lists_every_method_the_worker_uses():
    assert set(PROTOCOL_METHODS) == {
        "load", "restore", "chat", "ingest", "set_budget", "set_policy", "set_system", "clear", "save",
        "heap_stats", "throughput", "mlx_memory", "drift", "observe_system", "regenerate", "set_overflow",
        "memory_map"}


def _mismatches(impl: type, name: str) -> list[str]:
    want_fn, have_fn = getattr(ChatSession, name), getattr(impl, name, None)
    if have_fn is None:
        return [f"{name}: missing"]
    if isinstance(inspect.getattr_static(ChatSession, name), classmethod) != isinstance(
            inspect.getattr_static(impl, name), classmethod):
        return [f"{name}: classmethod on one side only"]
    want, have = inspect.signature(want_fn), inspect.signature(have_fn)
    want_hints, have_hints = typing.get_type_hints(want_fn), typing.get_type_hints(have_fn)
    problems = []
    have_params = list(have.parameters.values())
    for i, p in enumerate(want.parameters.values()):
        if p.kind is p.VAR_KEYWORD:
            if not any(q.kind is q.VAR_KEYWORD for q in have_params):
                problems.append(f"{name}: no **{p.name}")
            continue
        q = have_params[i] if i < len(have_params) else None
        if q is None or (q.name, q.kind, q.default) != (p.name, p.kind, p.default):
            problems.append(f"{name}: parameter {i} is {q}, the protocol has {p}")
        elif p.name in want_hints and want_hints[p.name] != have_hints.get(q.name):
            problems.append(f"{name}({p.name}): {have_hints.get(q.name)} != {want_hints[p.name]}")
    named = {p.name for p in want.parameters.values()}
    for q in have_params:
        if q.name not in named and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD) and q.default is q.empty:
            problems.append(f"{name}: extra required parameter {q.name}")
    returns = have_hints.get("return")
    if name in CONSTRUCTORS:
        if returns is not impl:
            problems.append(f"{name}: returns {returns}, not {impl.__name__}")
    elif returns != want_hints.get("return"):
        problems.append(f"{name}: returns {returns}, the protocol {want_hints.get('return')}")
    return problems


@pytest.mark.parametrize("impl", [Session, FakeSession], ids=["Session", "FakeSession"])
def test_signatures_match_the_protocol(impl):
    problems = [p for name in PROTOCOL_METHODS for p in _mismatches(impl, name)]
    assert not problems, "\n".join(problems)


def test_a_drifted_double_is_caught():
    class Drifted(FakeSession):
        def chat(self, message, max_tokens=256, cancel=None):  # no temperature, another default
            yield ""

    assert len(_mismatches(Drifted, "chat")) >= 2


def test_instances_are_chat_sessions(tiny_model_dir):
    for session in (Session.load(str(tiny_model_dir), budget=96, window=16), FakeSession.load()):
        assert isinstance(session, ChatSession)
        assert isinstance(session.model_name, str) and session.transcript == []


def test_the_fake_knows_the_real_policy_names():
    from mlx_kv.engine import SESSION_POLICY
    from mlx_kv.policies import POLICIES

    assert set(FAKE_POLICIES) == set(POLICIES)
    assert FakeSession.load().policy == SESSION_POLICY
