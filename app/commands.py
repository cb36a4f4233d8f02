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
    "new": Spec("/new", "start a new conversation (the current one is saved)", "none"),
    "conversations": Spec("/conversations", "list saved conversations: open, rename, delete (F3)", "none"),
    "rename": Spec("/rename NAME", "rename the current conversation", "required"),
    "save": Spec("/save NAME", "save now under NAME (conversations also save themselves after each change)", "required"),
    "resume": Spec("/resume [NAME]", "open a saved conversation (no NAME: list them here)", "optional"),
    "model": Spec("/model [M]", "pick a model (F4), or switch to M: a name, .gguf file, folder or hub id", "optional"),
    "system": Spec("/system [TEXT]", "set this conversation's system prompt (no TEXT: edit it)", "optional"),
    "overflow": Spec("/overflow MODE", "when the heap is full: heap (evict by policy), stop (refuse), rolling (window)", "required"),
    "budget": Spec("/budget B", "set the KV heap budget: tokens per layer (8192), a size (2GB, 512MiB) or auto", "required"),
    "policy": Spec("/policy P", "set the eviction policy (h2o, snapkv, tova, streaming, random, ...)", "required"),
    "temperature": Spec("/temperature T", "sampling temperature for this conversation (0 = greedy, up to 2)", "required"),
    "remembers": Spec("/remembers", "what the model still remembers of each document and message (F5)", "none"),
    "drift": Spec("/drift MODE", "live drift against a full-cache shadow: on, off, auto, or now (one sample)", "required"),
    "regenerate": Spec("/regenerate", "answer the last message again (Ctrl+R)", "none"),
    "copy": Spec("/copy [code]", "copy the last reply, or its last code block (or click a reply or a code block)", "optional"),
    "export": Spec("/export [FILE]", "write the conversation as Markdown (default: the data folder's exports/)", "optional"),
    "clear": Spec("/clear", "forget this conversation's messages and empty the heap", "none"),
    "stats": Spec("/stats", "print heap, memory and throughput numbers", "none"),
    "help": Spec("/help", "show this list (F1: every key too)", "none"),
    "quit": Spec("/quit", "leave the app (the conversation is saved)", "none"),
}
OVERFLOW_MODES = ("heap", "stop", "rolling")
DRIFT_MODES = ("on", "off", "auto", "now")

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


def _check_choice(choices: tuple[str, ...]):
    def check(name: str, rest: str) -> Command | ParseError:
        word = rest.lower()
        if word not in choices:
            return ParseError(f"/{name} takes one of {', '.join(choices)}, not {_short(rest)!r}")
        return Command(name, word)

    return check


def _check_temperature(name: str, rest: str) -> Command | ParseError:
    try:
        value = float(rest)
    except ValueError:
        return ParseError(f"/temperature needs a number from 0 to 2, not {_short(rest)!r}")
    if not 0.0 <= value <= 2.0:
        return ParseError(f"/temperature needs a number from 0 to 2, not {_short(rest)!r}")
    return Command(name, value)


def _check_copy(name: str, rest: str) -> Command | ParseError:
    if rest.lower() != "code":
        return ParseError("/copy takes nothing (the last reply) or 'code' (its last code block)")
    return Command(name, "code")


def _check_model(name: str, rest: str) -> Command | ParseError:
    spec = rest
    if len(spec) >= 2 and spec[0] == spec[-1] and spec[0] in "\"'":
        spec = spec[1:-1]
    if "\n" in spec or "\x00" in spec or not spec.strip():
        return ParseError("/model needs one model: a name, a .gguf file, a folder or a hub id (org/name)")
    return Command(name, os.path.expanduser(spec) if spec.startswith("~") else spec)


def _check_name(name: str, rest: str) -> Command | ParseError:
    if not NAME_RE.match(rest):
        return ParseError(
            f"bad session name {_short(rest)!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return Command(name, rest)


_CHECKS = {
    "load": _check_load,
    "export": _check_load,
    "budget": _check_budget,
    "policy": _check_policy,
    "save": _check_name,
    "resume": _check_name,
    "rename": _check_name,
    "overflow": _check_choice(OVERFLOW_MODES),
    "drift": _check_choice(DRIFT_MODES),
    "temperature": _check_temperature,
    "copy": _check_copy,
    "model": _check_model,
}
