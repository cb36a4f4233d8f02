"""Budgets and sizes as people type them: the one reader behind the CLI, the
TUI, the fake engine and HeapConfig, so `2G` means the same thing everywhere.

A budget is one of:

- **tokens per layer** (per KV head): a whole number, optionally ending in
  `tok` or `tokens`: `8192`, `8_192`, `8,192`, `4096tok`;
- **a size** for the whole heap: a number and a unit, read case-insensitively,
  with or without a space. A unit without `i` is decimal, one with `i` is
  binary, and the trailing `b` is optional, so a letter alone means the
  decimal unit (`G` is GB, not GiB):

  | unit | bytes |
  |---|---|
  | `b` | 1 |
  | `k`, `kb` / `ki`, `kib` | 10^3 / 2^10 |
  | `m`, `mb` / `mi`, `mib` | 10^6 / 2^20 |
  | `g`, `gb` / `gi`, `gib` | 10^9 / 2^30 |
  | `t`, `tb` / `ti`, `tib` | 10^12 / 2^40 |

  `2G` = `2GB` = 2,000,000,000 bytes, `512m` = 512,000,000, `1.5 GiB` =
  1,610,612,736;
- **`auto`**: half the memory available once the weights are loaded, minus
  512 MiB (`mlx-kv budget` prints the arithmetic).

Percentages (`50%`) are refused: a share of what (the machine, the free
memory, the current budget) is a guess either way, and `auto` already is
"half the available memory".

Every mistake is a `ValueError` with one line that names the field.  In
Python, `HeapConfig(budget=...)` takes an int for tokens and a string for a
size or `auto`; a bare number in a *string* there is bytes (`parse_bytes`).
"""

from __future__ import annotations

import re

SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgt", start=1):
    SIZE_UNITS[_prefix] = SIZE_UNITS[_prefix + "b"] = 10 ** (3 * _power)
    SIZE_UNITS[_prefix + "i"] = SIZE_UNITS[_prefix + "ib"] = 2 ** (10 * _power)
TOKEN_UNITS = ("", "tok", "token", "tokens")

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_SIZE_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)
_BUDGET_RE = re.compile(rf"^(?P<num>{_NUMBER})\s*(?P<unit>[a-z]*|%)$", re.IGNORECASE)
_SHOWN = 40


def parse_bytes(text: str, field_name: str = "budget") -> int:
    """Bytes in a size such as "2GB", "512 MiB", "2G" or "1000" (a bare number is bytes)."""
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not match or match.group("unit").lower() not in SIZE_UNITS:
        raise ValueError(
            f"{field_name}: cannot read {_shown(text)!r} as a size; use e.g. 2GB, 512MiB or 1000000"
        )
    value = float(match.group("num")) * SIZE_UNITS[match.group("unit").lower()]
    if value <= 0:
        raise ValueError(f"{field_name}: size must be positive, got {_shown(text)!r}")
    return int(value)


def parse_budget(value: int | str, field_name: str = "budget") -> int | str:
    """Tokens per layer (int), a size string HeapConfig reads, or "auto".

    Sizes keep the unit as typed ("1.5 GiB" -> "1.5GiB") so messages echo
    what the user wrote; separators and spaces are dropped.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{field_name}: expected tokens (int) or a size string, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{field_name}: must be positive, got {value}")
        return value
    text = value.strip()
    if text.lower() == "auto":
        return "auto"
    match = _BUDGET_RE.match(text.replace("_", "").replace(",", ""))
    unit = match.group("unit").lower() if match else None
    if unit == "%":
        raise ValueError(
            f"{field_name}: {_shown(text)!r} is a percentage, which is not a budget; use auto "
            "(half the available memory) or a size such as 2GB"
        )
    if match is None or (unit not in TOKEN_UNITS and unit not in SIZE_UNITS):
        raise ValueError(
            f"{field_name}: cannot read {_shown(text)!r} as a budget; use tokens per layer (8192), "
            "a size (2GB, 512MiB) or auto"
        )
    number = match.group("num")
    if float(number) <= 0:
        raise ValueError(f"{field_name}: must be positive, got {_shown(text)!r}")
    if unit in TOKEN_UNITS:
        if not number.lstrip("+").isdigit():
            raise ValueError(f"{field_name}: a token count must be a whole number, got {_shown(text)!r}")
        return int(number)
    return f"{number.lstrip('+')}{match.group('unit')}"


def _shown(text: object) -> str:
    """User input as it may appear in a one-line message: printable and bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
