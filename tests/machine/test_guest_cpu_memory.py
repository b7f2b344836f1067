"""The Python kernel's memory accesses (machine/pykernel.py GuestCpu.read/write): each page
an access touches is resolved through the engine (stage 2, the GPT) on its own, an access
inside one page once, one of nothing not at all; the bytes come back whole and as bytes."""

from __future__ import annotations

from typing import Any, cast

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.machine.pykernel import GuestCpu, KernelCore

BASE = 0x8000_0000


class PageAccessor:
    """Memory as a bytearray, handing out bytearrays (as a slice of one does)."""

    def __init__(self, size: int) -> None:
        self.mem = bytearray(range(256)) * (size // 256)

    def read(self, pa: int, size: int) -> bytearray:
        assert pa // GRANULE_SIZE == (pa + size - 1) // GRANULE_SIZE, "an access crossed a page"
        return self.mem[pa : pa + size]

    def write(self, pa: int, data: Any) -> None:
        n = len(bytes(data))
        assert pa // GRANULE_SIZE == (pa + n - 1) // GRANULE_SIZE, "an access crossed a page"
        self.mem[pa : pa + n] = bytes(data)


class Engine:
    cpu_model = "a72"

    def __init__(self) -> None:
        self.acc = PageAccessor(4 * GRANULE_SIZE)
        self.resolved: list[tuple[int, bool]] = []

    def resolve(self, ipa: int, write: bool) -> tuple[PageAccessor, int]:
        self.resolved.append((ipa, write))
        return self.acc, ipa - BASE


@pytest.fixture
def cpu() -> tuple[GuestCpu, Engine]:
    engine = Engine()
    return GuestCpu(cast(KernelCore, engine)), engine


def test_a_read_inside_one_page_resolves_it_once_and_gives_bytes(cpu: tuple[GuestCpu, Engine]) -> None:
    guest, engine = cpu
    got = guest.read(BASE + 0x10, 4)
    assert got == bytes([0x10, 0x11, 0x12, 0x13]) and type(got) is bytes
    assert engine.resolved == [(BASE + 0x10, False)]
    got = guest.read(BASE + GRANULE_SIZE - 4, 4)  # ends at the page's last byte
    assert got == bytes([0xFC, 0xFD, 0xFE, 0xFF]) and engine.resolved[-1] == (BASE + GRANULE_SIZE - 4, False)


def test_a_read_across_pages_resolves_each(cpu: tuple[GuestCpu, Engine]) -> None:
    guest, engine = cpu
    got = guest.read(BASE + GRANULE_SIZE - 2, GRANULE_SIZE + 4)
    assert got == bytes(engine.acc.mem[GRANULE_SIZE - 2 : 2 * GRANULE_SIZE + 2]) and type(got) is bytes
    assert engine.resolved == [(BASE + GRANULE_SIZE - 2, False), (BASE + GRANULE_SIZE, False),
                               (BASE + 2 * GRANULE_SIZE, False)]


def test_nothing_read_or_written_resolves_nothing(cpu: tuple[GuestCpu, Engine]) -> None:
    guest, engine = cpu
    assert guest.read(BASE, 0) == b""
    guest.write(BASE, b"")
    guest.write(BASE, bytearray())
    assert engine.resolved == []


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_writes_inside_and_across_pages(cpu: tuple[GuestCpu, Engine], kind: type) -> None:
    guest, engine = cpu
    guest.write(BASE + 8, kind(b"abcd"))
    assert engine.acc.mem[8:12] == b"abcd" and engine.resolved == [(BASE + 8, True)]
    engine.resolved.clear()
    data = bytes(range(7)) * 1000
    guest.write(BASE + GRANULE_SIZE - 3, kind(data))
    assert engine.acc.mem[GRANULE_SIZE - 3 : GRANULE_SIZE - 3 + len(data)] == data
    assert [ipa for ipa, _ in engine.resolved] == [BASE + GRANULE_SIZE - 3, BASE + GRANULE_SIZE,
                                                    BASE + 2 * GRANULE_SIZE]
    assert all(write for _, write in engine.resolved)
