"""The console loglevel the kernel command line sets (guest/loglevel.py), as Linux reads
`quiet`, `debug` and `loglevel=N`: the last one wins, a malformed one changes nothing."""

from __future__ import annotations

import pytest

from unirealm.guest.loglevel import (
    CONSOLE_LOGLEVEL_DEBUG,
    CONSOLE_LOGLEVEL_QUIET,
    LOGLEVEL_ERR,
    LOGLEVEL_INFO,
    console_loglevel,
)


@pytest.mark.parametrize(("options", "level"), [
    ([], CONSOLE_LOGLEVEL_QUIET),
    (["console=ttyS0", "root=/dev/vda", "rw"], CONSOLE_LOGLEVEL_QUIET),
    (["loglevel=7"], 7),
    (["debug"], CONSOLE_LOGLEVEL_DEBUG),
    (["debug", "quiet"], CONSOLE_LOGLEVEL_QUIET),
    (["quiet", "loglevel=8"], 8),
    (["loglevel=7", "debug", "loglevel=0"], 0),
])
def test_the_last_option_sets_the_console_loglevel(options: list[str], level: int) -> None:
    assert console_loglevel(options) == (level, None)


@pytest.mark.parametrize("bad", ["loglevel=", "loglevel=x", "loglevel=-1", "loglevel=16"])
def test_a_malformed_loglevel_is_reported_and_changes_nothing(bad: str) -> None:
    level, problem = console_loglevel(["loglevel=9", bad])
    assert level == 9
    assert problem is not None and repr(bad) in problem


def test_the_default_shows_errors_and_hides_info() -> None:
    level, _ = console_loglevel([])
    assert LOGLEVEL_ERR < level <= LOGLEVEL_INFO
