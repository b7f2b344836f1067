"""The ELF loader's segment checks at their boundaries (guest/loader.py, as binfmt_elf):
a PT_LOAD may end exactly at the end of the file and at 2^48 (Linux's vaddr + memsz <= TASK_SIZE),
not one byte further;
PIE programs are checked where they are loaded (PIE_BASE + p_vaddr)."""

from __future__ import annotations

import struct

import pytest

from unirealm.guest import syscalls as sc
from unirealm.guest.elf import ProgramHeader
from unirealm.guest.loader import PIE_BASE, VA_LIMIT, ExecError, check_segment
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process

from .test_syscall_fuzz import make_kernel

CODE = struct.pack("<II", 0xD4000001, 0x14000000)  # svc #0; b .


def seg(offset: int = 0, vaddr: int = 0x400000, filesz: int = 0x100, memsz: int = 0x100) -> ProgramHeader:
    return ProgramHeader(1, 5, offset, vaddr, vaddr, filesz, memsz, 0x1000)


@pytest.mark.parametrize(("s", "base", "size", "ok"), [
    (seg(offset=0x100, filesz=0x100), 0, 0x200, True),  # ends exactly at the end of the file
    (seg(offset=0x100, filesz=0x101, memsz=0x101), 0, 0x200, False),  # one byte past it
    (seg(offset=0x200, filesz=0), 0, 0x200, True),  # no file part, at the end of the file
    (seg(filesz=0x100, memsz=0x100), 0, 0x100, True),
    (seg(filesz=0x101, memsz=0x100), 0, 0x200, False),  # more file than memory
    (seg(vaddr=VA_LIMIT - 0x101, memsz=0x100), 0, 0x200, True),  # last byte at 2^48 - 2
    (seg(vaddr=VA_LIMIT - 0x100, memsz=0x100), 0, 0x200, True),  # ends at 2^48: its last byte is 2^48 - 1
    (seg(vaddr=VA_LIMIT - 0xFF, memsz=0x100), 0, 0x200, False),  # one byte past 2^48
    (seg(vaddr=VA_LIMIT - PIE_BASE - 0x80, memsz=0x100), PIE_BASE, 0x200, False),  # past 2^48 only with the PIE base
    (seg(vaddr=0x1000, memsz=0x100), PIE_BASE, 0x200, True),
])
def test_segment_bounds(s: ProgramHeader, base: int, size: int, ok: bool) -> None:
    if ok:
        check_segment(s, base, size, "prog")
    else:
        with pytest.raises(ExecError, match="malformed ELF: segment"):
            check_segment(s, base, size, "prog")


def static_elf(filesz_extra: int = 0, vaddr: int = 0x400000, e_type: int = 2) -> bytes:
    """One R+X PT_LOAD covering the whole file (headers and code), p_filesz grown by `filesz_extra`."""
    size = 0x78 + len(CODE)
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", e_type, 183, 1, vaddr + 0x78, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, vaddr, vaddr, size + filesz_extra, size + filesz_extra, 0x1000)
    return ehdr + phdr + CODE


def spawn(elf: bytes) -> Process:
    kernel = make_kernel()
    try:
        return Process.spawn(kernel, elf, ["/app"], "/app", sc.Syscalls)
    finally:
        Store.current = None


def test_a_program_ending_at_the_end_of_its_file_loads() -> None:
    p = spawn(static_elf())
    assert p.state.entry == 0x400078
    vma = p.mm.find_vma(0x400000)
    assert vma is not None and vma.data is not None and vma.data.endswith(CODE)


@pytest.mark.parametrize(("elf", "message"), [
    (static_elf(filesz_extra=1), "segment extends past the file"),
    (static_elf(vaddr=VA_LIMIT - 0x40), "segment outside the address space"),
    (static_elf(vaddr=VA_LIMIT - PIE_BASE - 0x40, e_type=3), "segment outside the address space"),
])
def test_malformed_segments_are_refused_before_anything_is_mapped(elf: bytes, message: str) -> None:
    with pytest.raises(ExecError, match=message):
        spawn(elf)
