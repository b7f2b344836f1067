"""How machine/vcpu_stops.py finds Unicorn's `no_exit_request` flag, run afresh (the place is
kept once found per process: each test here clears it first, so that the search itself runs).

The facts checked come from Unicorn's API and behaviour, not from the search: a write of
UC_CTL_CONTEXT_MODE changes one int of the engine; with the flag set, a stop requested while
`ldr x9, [x9]` maps its page lands at the next block, the load made once; without it, the
stop lands back at the load (which has loaded)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest
from unicorn.unicorn_const import (
    UC_CTL_CONTEXT_CPU,
    UC_CTL_CONTEXT_MEMORY,
    UC_CTL_CONTEXT_MODE,
    UC_CTL_IO_WRITE,
)

from unirealm.machine import vcpu_stops
from unirealm.machine.vcpu_stops import (
    SCAN_BYTES,
    UnicornStopError,
    _context_content_offset,
    _Flag,
    _lands_after_the_block,
    engine_address,
    no_exit_request_offset,
    scratch_engine,
)


@pytest.fixture
def fresh_search(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_Flag, "offset", None)
    yield


def int_at(uc: object, offset: int) -> int:
    return ctypes.c_int.from_address(engine_address(uc) + offset).value  # type: ignore[arg-type]


def test_the_context_mode_offset_is_where_the_mode_written_shows(fresh_search: None) -> None:
    uc = scratch_engine()
    offset = _context_content_offset(uc)
    assert 0 <= offset < SCAN_BYTES and offset % 4 == 0
    for mode in (UC_CTL_CONTEXT_MEMORY, UC_CTL_CONTEXT_CPU | UC_CTL_CONTEXT_MEMORY, UC_CTL_CONTEXT_CPU):
        uc.ctl(UC_CTL_CONTEXT_MODE, UC_CTL_IO_WRITE, ctypes.c_int(mode))
        assert int_at(uc, offset) == mode
    # The search leaves the engine in the CPU-only mode.
    other = scratch_engine()
    _context_content_offset(other)
    assert int_at(other, offset) == UC_CTL_CONTEXT_CPU


def test_the_flag_found_is_clear_in_a_new_engine_and_makes_stops_land_after_the_block(fresh_search: None) -> None:
    offset = no_exit_request_offset()
    assert _Flag.offset == offset
    assert ctypes.string_at(engine_address(scratch_engine()) + offset, 1) == b"\0"
    assert _lands_after_the_block(offset)
    assert no_exit_request_offset() == offset  # kept


def test_without_the_flag_the_probe_sees_the_stop_land_back_at_the_load(fresh_search: None,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe's flag write goes to a byte outside the engine: the engine runs as built.
    elsewhere = ctypes.create_string_buffer(8)
    monkeypatch.setattr(vcpu_stops, "engine_address", lambda uc: ctypes.addressof(elsewhere))
    assert not _lands_after_the_block(0)
    assert elsewhere.raw[0] == 1


def test_a_build_whose_probe_fails_is_refused_with_one_line(fresh_search: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcpu_stops, "_lands_after_the_block", lambda offset: False)
    with pytest.raises(UnicornStopError, match=r"^this Unicorn build cannot be made to stop between instructions only$"):
        no_exit_request_offset()
    assert _Flag.offset is None


def test_stop_at_block_boundaries_sets_the_flag_of_that_engine(fresh_search: None) -> None:
    uc = scratch_engine()
    vcpu_stops.stop_at_block_boundaries(uc)
    assert ctypes.string_at(engine_address(uc) + no_exit_request_offset(), 1) == b"\x01"
