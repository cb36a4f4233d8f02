"""The slash-command parser: every command, every bad argument, and fuzzing (it never raises)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.commands import COMMANDS, ChatText, Command, ParseError, help_lines, parse


@pytest.mark.parametrize(
    "line,expected",
    [
        ("hello there", ChatText("hello there")),
        ("  multi\nline  ", ChatText("  multi\nline  ")),
        ("//etc/passwd is a path", ChatText("/etc/passwd is a path")),
        ("/load notes.txt", Command("load", "notes.txt")),
        ('/load "my notes.txt"', Command("load", "my notes.txt")),
        ("/LOAD a b.txt", Command("load", "a b.txt")),
        ("/budget 2GB", Command("budget", "2GB")),
        ("/budget 512MiB", Command("budget", "512MiB")),
        ("/budget 1.5 GiB", Command("budget", "1.5GiB")),
        ("/budget 8192", Command("budget", 8192)),
        ("/budget 8_192", Command("budget", 8192)),
        ("/budget 4096tok", Command("budget", 4096)),
        ("/budget 2G", Command("budget", "2G")),
        ("/budget 512m", Command("budget", "512m")),
        ("/budget auto", Command("budget", "auto")),
        ("/policy H2O", Command("policy", "h2o")),
        ("/policy streaming", Command("policy", "streaming")),
        ("/system You are terse.", Command("system", "You are terse.")),
        ("/save long-run_1", Command("save", "long-run_1")),
        ("/resume long-run_1", Command("resume", "long-run_1")),
        ("/resume", Command("resume", None)),
        ("/clear", Command("clear")),
        ("/stats", Command("stats")),
        ("/help", Command("help")),
        ("  /help  ", Command("help")),
        ("/quit", Command("quit")),
        ("/system", Command("system")),
        ("/new", Command("new")),
        ("/rename my-chat", Command("rename", "my-chat")),
        ("/overflow STOP", Command("overflow", "stop")),
        ("/overflow rolling", Command("overflow", "rolling")),
        ("/drift now", Command("drift", "now")),
        ("/temperature 0.7", Command("temperature", 0.7)),
        ("/copy", Command("copy")),
        ("/copy code", Command("copy", "code")),
        ("/export", Command("export")),
        ("/export notes.md", Command("export", "notes.md")),
        ("/model", Command("model")),
        ("/model mlx-community/Llama-3.2-1B-Instruct-4bit", Command("model", "mlx-community/Llama-3.2-1B-Instruct-4bit")),
        ("/model mlx-kv-tiny", Command("model", "mlx-kv-tiny")),
        ("/regenerate", Command("regenerate")),
        ("/remembers", Command("remembers")),
        ("/conversations", Command("conversations")),
    ],
)
def test_parse_good(line, expected):
    assert parse(line) == expected


def test_load_expands_home():
    assert parse("/load ~/doc.txt") == Command("load", os.path.expanduser("~/doc.txt"))


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("/frobnicate", "unknown command /frobnicate"),
        ("/", "empty command"),
        ("/load", "usage /load FILE"),
        ("/budget", "usage /budget B"),
        ("/budget lots", "cannot read 'lots' as a budget"),
        ("/budget -5", "must be positive"),
        ("/budget 0", "must be positive"),
        ("/budget 0GB", "must be positive"),
        ("/budget 1.5", "whole number"),
        ("/budget 50%", "percentage"),
        ("/budget 150%", "percentage"),
        ("/budget 5i", "cannot read '5i'"),
        ("/policy", "usage /policy P"),
        ("/policy two words", "bad policy"),
        ("/policy ../../x", "bad policy"),
        ("/overflow", "usage /overflow MODE"),
        ("/overflow lru", "/overflow takes one of heap, stop, rolling"),
        ("/drift maybe", "/drift takes one of on, off, auto, now"),
        ("/temperature hot", "needs a number from 0 to 2"),
        ("/temperature 3", "needs a number from 0 to 2"),
        ("/copy everything", "/copy takes nothing"),
        ("/rename ../x", "bad session name"),
        ("/new now", "takes no argument"),
        ("/save", "usage /save NAME"),
        ("/save ../escape", "bad session name"),
        ("/save .hidden", "bad session name"),
        ("/save " + "x" * 65, "bad session name"),
        ("/clear now", "takes no argument"),
        ("/help me", "takes no argument"),
    ],
)
def test_parse_errors_are_one_clear_line(line, fragment):
    result = parse(line)
    assert isinstance(result, ParseError), result
    assert fragment in result.message
    assert "\n" not in result.message


def test_unknown_command_suggests_a_close_one():
    assert "did you mean /load" in parse("/loa x").message


def test_error_messages_bound_and_sanitise_user_text():
    result = parse("/" + "\x1b[31m" + "z" * 500)
    assert isinstance(result, ParseError)
    assert "\x1b" not in result.message
    assert len(result.message) < 120


def test_help_lists_every_command():
    text = "\n".join(help_lines())
    for name in COMMANDS:
        assert f"/{name}" in text


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_fuzz_never_raises(line):
    result = parse(line)
    assert isinstance(result, (ChatText, Command, ParseError))
    if isinstance(result, ParseError):
        assert "\n" not in result.message and result.message


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(COMMANDS) + ["x", "Load", "BUDGET", ""]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80),
)
def test_fuzz_commands_with_arbitrary_arguments(name, arg):
    result = parse(f"/{name} {arg}")
    assert isinstance(result, (Command, ParseError))
    if isinstance(result, Command):
        assert result.name in COMMANDS
        if result.name == "budget":
            assert (isinstance(result.arg, int) and result.arg > 0) or isinstance(result.arg, str)
        if result.name in ("save", "resume", "rename") and result.arg is not None:
            assert "/" not in result.arg and not result.arg.startswith(".")
    else:
        assert "\n" not in result.message


def test_non_string_input_is_an_error_not_an_exception():
    assert isinstance(parse(None), ParseError)  # type: ignore[arg-type]
