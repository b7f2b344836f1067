"""Stage-2 entries bit for bit (rmm/s2tte.py): each kind encoded at a page and a block level
against the descriptor written out by hand from the Arm ARM D8.3 layout (type [1:0],
MemAttr [5:2], S2AP [7:6], AF [10], OA [47:12], XN [54], the RMM's NS [55]) and TF-RMM's
invalid-entry layout (HIPAS [4:2], RIPAS [6:5]), decoded back; the host's unprotected
descriptors checked on both sides of each rule."""

from __future__ import annotations

import pytest

from unirealm.arch.rmi import RmiRipas, RttEntryState
from unirealm.rmm.s2tte import (
    UNASSIGNED_NS,
    Entry,
    Kind,
    assigned,
    decode,
    encode,
    host_ns_desc_is_valid,
    readable_desc,
    unassigned,
)


@pytest.fixture(autouse=True)
def _uncached() -> None:
    """decode() memoises: start each test empty, so that every case reaches the decoder."""
    decode.cache_clear()


NS_ATTRS = (0b0001 << 2) | (0b11 << 6)  # Device-nGnRE, read/write
CASES = [
    # (entry, level, descriptor)
    (Entry(Kind.TABLE, pa=0x1234_5000), 1, 0x1234_5003),
    (Entry(Kind.TABLE, pa=0x8000_0000_0000 - 0x1000), 2, 0x7FFF_FFFF_F003),
    (assigned(RmiRipas.RAM, 0x8000_1000), 3, 0x8000_14FF),  # page: WB, RW, AF, 0b11
    (assigned(RmiRipas.RAM, 0x8020_0000), 2, 0x8020_04FD),  # block: 0b01
    (Entry(Kind.ASSIGNED_NS, RmiRipas.EMPTY, 0x9000_0000, NS_ATTRS), 3, 0x00C0_0000_9000_04C7),
    (Entry(Kind.ASSIGNED_NS, RmiRipas.EMPTY, 0x4000_0000, NS_ATTRS), 1, 0x00C0_0000_4000_04C5),
    (UNASSIGNED_NS, 3, 0x8),  # HIPAS 2
    (unassigned(RmiRipas.EMPTY), 3, 0x0),
    (unassigned(RmiRipas.RAM), 2, 0x20),
    (unassigned(RmiRipas.DESTROYED), 3, 0x40),
    (assigned(RmiRipas.EMPTY, 0x8000_2000), 3, 0x8000_2004),  # HIPAS 1, invalid
    (assigned(RmiRipas.DESTROYED, 0x8000_3000), 3, 0x8000_3044),
]


@pytest.mark.parametrize(("entry", "level", "desc"), CASES)
def test_encoding_is_the_architected_layout(entry: Entry, level: int, desc: int) -> None:
    assert encode(entry, level) == desc
    assert decode(desc, level) == entry


def test_output_address_bits_outside_47_12_are_dropped() -> None:
    assert encode(Entry(Kind.TABLE, pa=(1 << 48) | 0x5000 | 0xFFF), 0) == 0x5003
    assert decode((1 << 48) | 0x5003, 1) == Entry(Kind.TABLE, pa=0x5000)
    assert encode(assigned(RmiRipas.EMPTY, (1 << 48) | 0x7000), 3) == 0x7004
    assert decode((1 << 53) | 0x7000_04FF, 3) == assigned(RmiRipas.RAM, 0x7000_0000)


def test_a_page_level_0b11_is_a_page_not_a_table() -> None:
    assert decode(0x8000_14FF, 3).kind == Kind.ASSIGNED
    assert decode(0x8000_14FF, 2).kind == Kind.TABLE


@pytest.mark.parametrize(("desc", "level", "ok"), [
    (0x9000_0000 | NS_ATTRS, 3, True),
    (0x9000_0000 | (0b1111 << 2), 3, True),  # Normal WB, no access
    (0x9000_0000 | NS_ATTRS | (1 << 10), 3, False),  # AF is the RMM's
    (0x9000_0000 | NS_ATTRS | 0b11, 3, False),  # the type bits are the RMM's
    (0x9000_0000 | NS_ATTRS | (1 << 55), 3, False),
    (0x9000_0000 | NS_ATTRS | (1 << 48), 3, False),  # OA beyond 48 bits
    (0x9000_0000 | (0b0100 << 2), 3, False),  # reserved MemAttr
    (0x9000_0000 | (0b0101 << 2), 3, True),
    (0x9020_0000 | NS_ATTRS, 2, True),
    (0x9020_1000 | NS_ATTRS, 2, False),  # a block's OA aligned to 2 MiB
    (0x9010_0000 | NS_ATTRS, 2, False),
    (0x4000_0000, 1, True),
    (0x4020_0000, 1, False),
])
def test_host_unprotected_descriptors(desc: int, level: int, ok: bool) -> None:
    assert host_ns_desc_is_valid(desc, level) is ok


@pytest.mark.parametrize(("entry", "x3", "state", "live"), [
    (Entry(Kind.TABLE, pa=0x1234_5000), 0x1234_5000, RttEntryState.TABLE, True),
    (Entry(Kind.ASSIGNED_NS, RmiRipas.EMPTY, 0x9000_0000, NS_ATTRS), 0x9000_0000 | NS_ATTRS,
     RttEntryState.ASSIGNED, True),
    (assigned(RmiRipas.RAM, 0x8000_1000), 0x8000_1000, RttEntryState.ASSIGNED, True),
    (assigned(RmiRipas.EMPTY, 0x8000_1000), 0x8000_1000, RttEntryState.ASSIGNED, True),
    (assigned(RmiRipas.DESTROYED, 0x8000_1000), 0, RttEntryState.ASSIGNED, True),
    (unassigned(RmiRipas.RAM), 0, RttEntryState.UNASSIGNED, False),
    (UNASSIGNED_NS, 0, RttEntryState.UNASSIGNED, False),
])
def test_read_entry_view(entry: Entry, x3: int, state: RttEntryState, live: bool) -> None:
    assert readable_desc(entry) == x3
    assert entry.state() == state
    assert entry.is_live is live


def test_entry_defaults() -> None:
    assert Entry(Kind.UNASSIGNED) == (Kind.UNASSIGNED, RmiRipas.EMPTY, 0, 0)
    assert unassigned(RmiRipas.RAM) == (Kind.UNASSIGNED, RmiRipas.RAM, 0, 0)
    assert assigned(RmiRipas.RAM, 0x5000) == (Kind.ASSIGNED, RmiRipas.RAM, 0x5000, 0)


def test_an_unassigned_entry_never_encodes_an_address() -> None:
    assert encode(Entry(Kind.UNASSIGNED, RmiRipas.RAM, 0x5000), 3) == 0x20
