"""One budget syntax: the same reading in the library, the CLI, the TUI and the fake engine."""

from __future__ import annotations

import argparse

import pytest

from app.commands import Command, ParseError, parse
from app.fake_engine import BYTES_PER_TOKEN, budget_tokens
from mlx_kv import HeapConfig
from mlx_kv.commands.options import budget_arg
from mlx_kv.errors import UserError
from mlx_kv.sizes import SIZE_UNITS, parse_budget, parse_bytes

GOOD = [
    # tokens per layer
    ("8192", 8192), ("8_192", 8192), ("8,192", 8192), ("4096tok", 4096), ("4096 tokens", 4096), (512, 512),
    # decimal sizes, with and without the trailing b, any case
    ("2GB", "2GB"), ("2gb", "2gb"), ("2G", "2G"), ("512m", "512m"), ("512 MB", "512MB"), ("3k", "3k"),
    ("1tb", "1tb"), ("1000b", "1000b"), ("1.5 GB", "1.5GB"),
    # binary sizes
    ("512MiB", "512MiB"), ("1.5 GiB", "1.5GiB"), ("2gi", "2gi"), ("64kib", "64kib"), ("1TiB", "1TiB"),
    # auto
    ("auto", "auto"), (" AUTO ", "auto"),
]


@pytest.mark.parametrize("text, expected", GOOD)
def test_every_form_reads_the_same_in_the_library_the_cli_and_the_tui(text, expected):
    assert parse_budget(text) == expected
    if isinstance(text, str):
        assert budget_arg(text) == expected
        assert parse(f"/budget {text}") == Command("budget", expected)


@pytest.mark.parametrize("text, expected", [
    ("2G", 2 * 10**9), ("2GB", 2 * 10**9), ("512m", 512 * 10**6), ("1.5GB", 1_500_000_000), ("3k", 3000),
    ("1tb", 10**12), ("2GiB", 2 * 2**30), ("2gi", 2 * 2**30), ("64kib", 65536), ("1.5GiB", 1_610_612_736),
    ("1000", 1000), ("1000b", 1000),
])
def test_units_without_i_are_decimal_and_with_i_binary(text, expected):
    assert parse_bytes(text) == expected


def test_the_unit_table_is_decimal_without_i_and_binary_with_it():
    for power, prefix in enumerate("kmgt", start=1):
        assert SIZE_UNITS[prefix] == SIZE_UNITS[prefix + "b"] == 1000**power
        assert SIZE_UNITS[prefix + "i"] == SIZE_UNITS[prefix + "ib"] == 1024**power


BAD = [
    ("lots", "cannot read 'lots' as a budget"), ("5i", "cannot read '5i'"), ("2 GB B", "cannot read"),
    ("", "cannot read"), ("0", "must be positive"), ("-5", "must be positive"), ("0GB", "must be positive"),
    ("1.5", "whole number"), ("1.5tok", "whole number"), ("50%", "percentage"), ("150%", "percentage"),
    (0, "must be positive"), (True, "expected tokens"), (1.5, "expected tokens"),
]


@pytest.mark.parametrize("text, fragment", BAD)
def test_a_bad_budget_is_one_line_naming_the_field(text, fragment):
    with pytest.raises(ValueError, match="^budget: ") as error:
        parse_budget(text)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    if isinstance(text, str):
        with pytest.raises(argparse.ArgumentTypeError, match=fragment):
            budget_arg(text)
        if text:
            result = parse(f"/budget {text}")
            assert isinstance(result, ParseError) and fragment in result.message


def test_user_text_in_an_error_is_printable_and_bounded():
    with pytest.raises(ValueError) as error:
        parse_budget("\x1b[31m" + "z" * 500)
    assert "\x1b" not in str(error.value) and len(str(error.value)) < 200


def test_the_fake_engine_reads_budgets_like_the_library():
    assert budget_tokens(8192) == budget_tokens("8192") == budget_tokens("8192tok") == 8192
    assert budget_tokens("2G") == budget_tokens("2GB") == 2 * 10**9 // BYTES_PER_TOKEN
    assert budget_tokens("512MiB") == 512 * 2**20 // BYTES_PER_TOKEN
    assert budget_tokens("auto") == budget_tokens(None)
    with pytest.raises(UserError, match="percentage"):
        budget_tokens("50%")
    with pytest.raises(UserError, match="smaller than sinks \\+ window"):
        budget_tokens(10)


def test_heap_config_reads_the_short_units():
    assert HeapConfig(budget="2G").budget == "2G"
    with pytest.raises(ValueError, match="^budget"):
        HeapConfig(budget="50%")


def test_a_session_reads_every_form(tiny_model_dir):
    from mlx_kv.engine import Session

    session = Session.load(str(tiny_model_dir), budget="96tok", window=16)
    assert session.cache[0].budget == 96
    session.set_budget("80 tokens")
    assert session.cache[0].budget == 80
    session.set_budget("2M")
    assert session.config.budget == "2M"
    with pytest.raises(UserError, match="^budget: .*percentage"):
        session.set_budget("50%")
