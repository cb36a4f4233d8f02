"""Errors meant for the person at the keyboard.

A `UserError` carries one clear line (what was wrong and, where possible, what
to do instead).  The CLI prints it and exits non-zero; the TUI shows it as a
line in the chat.  Anything that is *not* a `UserError` is a bug and is logged
with its traceback instead of being shown as if it were the user's fault.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        # Keep the promise of "one line" even when a caller formats a
        # multi-line string (e.g. an OS error message with a newline).
        line = " ".join(str(message).split())
        super().__init__(line)

    @property
    def message(self) -> str:
        return str(self)


class DiskFull(UserError):
    """A write that found no room; the message says where and what is free."""
