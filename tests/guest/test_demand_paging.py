"""Demand paging of private memory: a fault backs the unbacked pages of its aligned
FAULT_AROUND block (zeroed, or copies of the file) on contiguous guest RAM, never a page
outside the faulting VMA (so never across a protection boundary, which splits VMAs), never
over a page already backed, and a page given back (munmap, MADV_DONTNEED) faults again."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.guest.addrspace import FAULT_AROUND, PROT_READ, PROT_WRITE, AddressSpace
from unirealm.guest.mm import PageAllocator

PAGE = GRANULE_SIZE
RAM, RAM_PAGES = 0x8000_0000, 256
BASE = 0x10_0000_0000  # a FAULT_AROUND-aligned VA
RW, R = PROT_READ | PROT_WRITE, PROT_READ


class FakeCpu:
    """Guest RAM as a bytearray, full of a pattern a missing zero-fill would leave behind."""

    def __init__(self) -> None:
        self.ram = bytearray(b"\xa5" * (RAM_PAGES * PAGE))

    def zero(self, ipa: int, size: int) -> None:
        self.write(ipa, bytes(size))

    def write(self, ipa: int, data: bytes) -> None:
        assert ipa >= RAM and ipa + len(data) <= RAM + len(self.ram)
        self.ram[ipa - RAM : ipa - RAM + len(data)] = data

    def read(self, ipa: int, size: int) -> bytes:
        return bytes(self.ram[ipa - RAM : ipa - RAM + size])


class FakeSpace:
    """The kernel's page table as El0Space keeps it."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[int, int]] = {}
        self.on_fault = None

    def map(self, va: int, ipa: int, size: int, prot: int) -> None:
        for off in range(0, size, PAGE):
            self.pages[va + off] = (ipa + off, prot)

    def unmap(self, va: int, size: int) -> None:
        for off in range(0, size, PAGE):
            self.pages.pop(va + off, None)

    def protect(self, va: int, size: int, prot: int) -> None:
        for off in range(0, size, PAGE):
            if va + off in self.pages:
                self.pages[va + off] = (self.pages[va + off][0], prot)

    def flush_code(self, va: int, size: int) -> None:
        pass


class FakeKernel:
    def __init__(self) -> None:
        self.cpu = FakeCpu()
        self.pages = PageAllocator()
        self.pages.add(RAM, RAM + RAM_PAGES * PAGE)
        self.logged: list[str] = []

    def log(self, text: str, error: bool = False, level: int | None = None) -> None:
        self.logged.append(text)


@pytest.fixture
def mm() -> AddressSpace:
    return AddressSpace(FakeKernel(), FakeSpace(), lambda: "1 (test)")  # type: ignore[arg-type]


def backed(mm: AddressSpace) -> list[int]:
    """The backed pages, as page numbers from BASE; each also in the CPU's page table."""
    assert set(mm.owned) == set(mm.space.pages)
    return sorted((va - BASE) // PAGE for va in mm.owned)


def test_an_anonymous_fault_backs_its_aligned_block_zeroed_on_contiguous_ram(mm: AddressSpace) -> None:
    mm.add_vma(BASE, BASE + 4 * FAULT_AROUND * PAGE, RW, "anon")
    assert mm.demand_page(BASE + (FAULT_AROUND + 5) * PAGE)
    assert backed(mm) == list(range(FAULT_AROUND, 2 * FAULT_AROUND))
    first = mm.owned[BASE + FAULT_AROUND * PAGE]
    for i in range(FAULT_AROUND):
        va = BASE + (FAULT_AROUND + i) * PAGE
        assert mm.owned[va] == first + i * PAGE  # one run of guest RAM: one CPU region
        assert mm.space.pages[va] == (first + i * PAGE, RW)
        assert mm.kernel.cpu.read(mm.owned[va], PAGE) == bytes(PAGE)
    assert not mm.demand_page(BASE + (FAULT_AROUND + 7) * PAGE)  # backed already: not a demand fault


def test_fault_around_stays_inside_the_vma_and_its_protection(mm: AddressSpace) -> None:
    # one mapping whose middle is made read-only: three VMAs inside one fault-around block
    mm.add_vma(BASE + 2 * PAGE, BASE + 12 * PAGE, RW, "anon")
    assert mm.protect(BASE + 5 * PAGE, BASE + 8 * PAGE, R) == 0
    assert mm.demand_page(BASE + 9 * PAGE)
    assert backed(mm) == [8, 9, 10, 11]
    assert mm.demand_page(BASE + 6 * PAGE)
    assert backed(mm) == [5, 6, 7, 8, 9, 10, 11]
    assert {mm.space.pages[BASE + n * PAGE][1] for n in (5, 6, 7)} == {R}
    assert {mm.space.pages[BASE + n * PAGE][1] for n in (8, 9, 10, 11)} == {RW}
    assert not mm.demand_page(BASE + 1 * PAGE)  # below the mapping: no VMA, nothing backed
    assert not mm.demand_page(BASE + 12 * PAGE)
    assert backed(mm) == [5, 6, 7, 8, 9, 10, 11]


def test_fault_around_never_replaces_a_page_already_backed(mm: AddressSpace) -> None:
    mm.add_vma(BASE, BASE + FAULT_AROUND * PAGE, RW, "anon")
    assert mm.demand_page(BASE)
    keep = mm.owned[BASE + 2 * PAGE]
    mm.write(BASE + 2 * PAGE, b"kept")
    mm.discard(BASE + 4 * PAGE, BASE + 8 * PAGE)  # MADV_DONTNEED of four pages
    assert backed(mm) == [0, 1, 2, 3, *range(8, FAULT_AROUND)]
    mm.write(BASE + 5 * PAGE, b"x")  # a kernel access backs the one page it touches
    mm.discard(BASE + 5 * PAGE, BASE + 6 * PAGE)
    assert mm.demand_page(BASE + 6 * PAGE)  # the hole refills, and only the hole
    assert backed(mm) == list(range(FAULT_AROUND))
    assert mm.owned[BASE + 2 * PAGE] == keep
    assert mm.read(BASE + 2 * PAGE, 4) == b"kept"
    assert mm.read(BASE + 5 * PAGE, 1) == b"\0"  # given back pages come back zeroed


def test_a_touched_then_unmapped_page_faults_again(mm: AddressSpace) -> None:
    mm.add_vma(BASE, BASE + FAULT_AROUND * PAGE, RW, "anon")
    assert mm.demand_page(BASE + 3 * PAGE)
    mm.write(BASE + 3 * PAGE, b"old")
    free_before = mm.kernel.pages.free_bytes
    mm.unmap(BASE, BASE + FAULT_AROUND * PAGE)
    assert mm.kernel.pages.free_bytes == free_before + FAULT_AROUND * PAGE  # every page of the block back
    assert backed(mm) == []
    assert not mm.demand_page(BASE + 3 * PAGE)  # no VMA: the access faults (SIGSEGV)
    mm.map_region(BASE, FAULT_AROUND * PAGE, RW, "anon")
    assert mm.demand_page(BASE + 3 * PAGE)
    assert mm.read(BASE + 3 * PAGE, 3) == bytes(3)


def test_without_a_contiguous_block_the_fault_still_backs_its_page() -> None:
    kernel = FakeKernel()
    kernel.pages = PageAllocator()
    for n in range(0, 8, 2):  # four free pages, none next to another
        kernel.pages.add(RAM + n * PAGE, RAM + (n + 1) * PAGE)
    mm = AddressSpace(kernel, FakeSpace(), lambda: "1 (test)")  # type: ignore[arg-type]
    mm.add_vma(BASE, BASE + FAULT_AROUND * PAGE, RW, "anon")
    assert mm.demand_page(BASE + 9 * PAGE)
    assert backed(mm) == [9]


def test_a_private_file_mapping_brings_the_file_pages_around_the_fault(mm: AddressSpace) -> None:
    data = bytes(range(256)) * (3 * PAGE // 256) + b"tail"
    mm.add_vma(BASE, BASE + 4 * PAGE, R, "file", data=data, data_va=BASE)
    assert mm.demand_page(BASE + PAGE)
    assert backed(mm) == [0, 1, 2, 3]
    assert mm.read(BASE, 3 * PAGE + 4) == data
    assert mm.read(BASE + 3 * PAGE + 4, PAGE - 4) == bytes(PAGE - 4)  # past the file's end: zeroes
