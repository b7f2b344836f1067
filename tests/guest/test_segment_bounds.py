"""The loader's PT_LOAD bounds, both sides of each edge, through load_segments (what exec
runs): a segment's file part may end exactly at the end of the file, not one byte past it,
and be no larger than its memory part; the segment may end at 2^48 (its last byte at
2^48 - 1: Linux's vaddr + memsz <= TASK_SIZE), not one byte further."""

from __future__ import annotations

import pytest

from unirealm.arch.elf import ELF64_EHDR, ELF64_PHDR
from unirealm.guest.elf import read_elf
from unirealm.guest.loader import VA_LIMIT, ExecError, load_segments

HEADERS = 64 + 56


class RecordingSpace:
    """The two AddressSpace calls load_segments makes, recorded."""

    def __init__(self) -> None:
        self.vmas: list[tuple[int, int, int, bytes]] = []

    def unmap(self, start: int, stop: int) -> None:
        pass

    def add_vma(self, start: int, end: int, prot: int, name: str, data: bytes | None = None, data_va: int = 0) -> None:
        self.vmas.append((start, end, prot, data or b""))


def program(offset: int, vaddr: int, filesz: int, memsz: int, body: int = 0x100) -> bytes:
    head = ELF64_EHDR.pack(b"\x7fELF\x02\x01\x01".ljust(16, b"\0"), 2, 183, 1, vaddr, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    return head + ELF64_PHDR.pack(1, 5, offset, vaddr, vaddr, filesz, memsz, 0x1000) + bytes(range(256))[:body]


def load(data: bytes) -> RecordingSpace:
    mm = RecordingSpace()
    load_segments(mm, read_elf(data), data, 0, "prog")  # type: ignore[arg-type]
    return mm


def test_file_part_ending_exactly_at_the_end_of_the_file_loads() -> None:
    data = program(HEADERS, 0x400000 + HEADERS, 0x100, 0x100)
    (vma,) = load(data).vmas
    assert vma[3].endswith(data[-0x100:])  # the segment's last file byte is the file's last byte


@pytest.mark.parametrize(("offset", "filesz", "memsz"), [
    (HEADERS, 0x101, 0x101),  # one byte past the end of the file
    (HEADERS + 1, 0x100, 0x100),  # the same through p_offset
    (1 << 40, 0x10, 0x10),  # far past it
    (HEADERS, 0x100, 0xFF),  # more file than memory
])
def test_file_part_past_the_file_is_refused(offset: int, filesz: int, memsz: int) -> None:
    with pytest.raises(ExecError, match="segment extends past the file"):
        load(program(offset, 0x400000 + HEADERS, filesz, memsz))


@pytest.mark.parametrize("end", [VA_LIMIT - 1, VA_LIMIT])
def test_segment_reaching_the_last_byte_below_2_48_loads(end: int) -> None:
    vaddr = VA_LIMIT - 0x2000 + HEADERS
    (vma,) = load(program(HEADERS, vaddr, 0x100, end - vaddr)).vmas  # its last byte at end - 1
    assert vma[1] == VA_LIMIT and VA_LIMIT == 1 << 48


@pytest.mark.parametrize("end", [VA_LIMIT + 1, VA_LIMIT + 0x1000, 1 << 56, 1 << 64])
def test_segment_past_2_48_is_refused(end: int) -> None:
    vaddr = VA_LIMIT - 0x2000 + HEADERS
    with pytest.raises(ExecError, match="segment outside the address space"):
        load(program(HEADERS, vaddr, 0x100, end - vaddr))
