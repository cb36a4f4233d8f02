"""The slash-command parser: one line of input in, one plain value out.

Why separate from the app: parsing is pure, so it is fuzzed (it must never
raise, whatever is typed) and tested without a terminal.  The app only
dispatches what comes out.

``parse(line)`` returns one of:
  ChatText(text)        an ordinary message for the model ("//x" sends "/x")
  Command(name, arg)    a recognised command with a checked argument
  ParseError(message)   a one-line, user-facing explanation
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from mlx_kv.sizes import parse_budget


@dataclass(frozen=True)
class ChatText:
    text: str


@dataclass(frozen=True)
class Command:
    name: str  # without the slash
    arg: str | int | None = None


@dataclass(frozen=True)
class ParseError:
    message: str


@dataclass(frozen=True)
class Spec:
    usage: str
    help: str
    arg: str  # "none" | "required" | "optional"


COMMANDS: dict[str, Spec] = {
    "load": Spec("/load FILE", "read a document into the session (progress bar; Esc stops)", "required"),
    "budget": Spec("/budget B", "set the KV heap budget: tokens per layer (8192), a size (2GB, 512MiB) or auto", "required"),
    "policy": Spec("/policy P", "set the eviction policy (h2o, snapkv, tova, streaming, random, ...)", "required"),
    "system": Spec("/system TEXT", "set the system prompt", "required"),
    "save": Spec("/save NAME", "save transcript, settings and heap snapshot", "required"),
    "resume": Spec("/resume [NAME]", "restore a saved session (no NAME: list saved sessions)", "optional"),
    "clear": Spec("/clear", "forget the conversation and empty the heap", "none"),
    "stats": Spec("/stats", "print heap, memory and throughput numbers", "none"),
    "help": Spec("/help", "show this list", "none"),
    "quit": Spec("/quit", "leave the app", "none"),
}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
POLICY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_SHOWN = 40


def _short(text: str) -> str:
    """A printable, one-line, bounded rendering of user input for error messages."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _one_line(message: str) -> str:
    return " ".join(message.split())


def help_lines() -> list[str]:
    """One line per command, for /help."""
    width = max(len(s.usage) for s in COMMANDS.values())
    return [f"{s.usage.ljust(width)}  {s.help}" for s in COMMANDS.values()]


def parse(line: str) -> ChatText | Command | ParseError:
    """Parse one line of input.  Never raises."""
    try:
        return _parse(line)
    except Exception as e:  # noqa: BLE001 - the parser's promise is "never raises"
        return ParseError(_one_line(f"could not read that command ({type(e).__name__})"))


def _parse(line: str) -> ChatText | Command | ParseError:
    if not isinstance(line, str):
        return ParseError("input must be text")
    stripped = line.strip()
    if not stripped.startswith("/"):
        return ChatText(line.strip("\n"))
    if stripped.startswith("//"):
        return ChatText(stripped[1:])
    # any whitespace (space, tab, newline) separates the command from its argument
    parts = stripped[1:].split(None, 1)
    head = parts[0] if parts else ""
    rest = parts[1].strip() if len(parts) > 1 else ""
    name = head.lower()
    if not name:
        return ParseError("empty command: type /help for the list")
    spec = COMMANDS.get(name)
    if spec is None:
        close = [c for c in COMMANDS if c.startswith(name[:2])] if len(name) >= 2 else []
        hint = f" (did you mean /{close[0]}?)" if len(close) == 1 else ""
        return ParseError(f"unknown command /{_short(head)}{hint}: type /help for the list")
    if spec.arg == "none":
        if rest:
            return ParseError(f"/{name} takes no argument")
        return Command(name)
    if not rest:
        if spec.arg == "optional":
            return Command(name)
        return ParseError(f"missing argument: usage {spec.usage}")
    checker = _CHECKS.get(name)
    return checker(name, rest) if checker else Command(name, rest)


def _check_load(name: str, rest: str) -> Command | ParseError:
    path = rest
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'":
        path = path[1:-1]
    if "\n" in path or "\x00" in path or not path.strip():
        return ParseError("/load needs one file path: usage /load FILE")
    return Command(name, os.path.expanduser(path))


def _check_budget(name: str, rest: str) -> Command | ParseError:
    try:
        return Command(name, parse_budget(rest))
    except ValueError as exc:
        return ParseError(_one_line(str(exc)))


def _check_policy(name: str, rest: str) -> Command | ParseError:
    if not POLICY_RE.match(rest):
        return ParseError(f"bad policy name {_short(rest)!r}: one word such as h2o or streaming")
    return Command(name, rest.lower())


def _check_name(name: str, rest: str) -> Command | ParseError:
    if not NAME_RE.match(rest):
        return ParseError(
            f"bad session name {_short(rest)!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return Command(name, rest)


_CHECKS = {
    "load": _check_load,
    "budget": _check_budget,
    "policy": _check_policy,
    "save": _check_name,
    "resume": _check_name,
}
