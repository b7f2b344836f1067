"""The ELF64 reader the loader uses: the file header and the program header table (the
layouts in arch/elf.py), as Linux's binfmt_elf reads them before it maps anything.

It checks what a reader must before trusting an offset: the identification bytes, that
the program header table is whole inside the file with 56-byte entries (at most 64 KiB of
them, Linux's elf_read_phdrs bound), and that PT_INTERP names a NUL-terminated path inside
the file. Everything else (machine, type, segment bounds) is the loader's policy
(guest/loader.py). Malformed input raises ElfError with a one-line reason, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arch.elf import (
    EI_CLASS,
    EI_DATA,
    ELF64_EHDR,
    ELF64_PHDR,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFMAG,
    PType,
)

PHDRS_MAX = 65536  # bytes of program headers Linux reads at most (fs/binfmt_elf.c elf_read_phdrs)
INTERP_MAX = 4096  # PATH_MAX: the longest interpreter path binfmt_elf accepts


class ElfError(ValueError):
    """Not a well-formed ELF64 little-endian file."""


@dataclass(frozen=True)
class ProgramHeader:
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


@dataclass(frozen=True)
class ElfFile:
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int
    segments: tuple[ProgramHeader, ...]
    interp: str | None  # the PT_INTERP path, if the file names an interpreter

    def of_type(self, p_type: int) -> list[ProgramHeader]:
        return [s for s in self.segments if s.p_type == p_type]


def read_elf(data: bytes) -> ElfFile:
    if data[:4] != ELFMAG:
        raise ElfError("not an ELF file")
    if len(data) < ELF64_EHDR.size:
        raise ElfError(f"truncated ELF header ({len(data)} bytes)")
    ident, *fields = ELF64_EHDR.unpack_from(data)
    if ident[EI_CLASS] != ELFCLASS64:
        raise ElfError(f"not a 64-bit ELF (EI_CLASS {ident[EI_CLASS]})")
    if ident[EI_DATA] != ELFDATA2LSB:
        raise ElfError(f"not a little-endian ELF (EI_DATA {ident[EI_DATA]})")
    (e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum,
     e_shentsize, e_shnum, e_shstrndx) = fields
    segments: list[ProgramHeader] = []
    if e_phnum:
        if e_phentsize != ELF64_PHDR.size:
            raise ElfError(f"program header entries of {e_phentsize} bytes, not {ELF64_PHDR.size}")
        size = e_phnum * ELF64_PHDR.size
        if size > PHDRS_MAX:
            raise ElfError(f"{e_phnum} program headers (more than {PHDRS_MAX} bytes)")
        if e_phoff + size > len(data):
            raise ElfError("the program headers extend past the end of the file")
        segments = [ProgramHeader(*ELF64_PHDR.unpack_from(data, e_phoff + i * ELF64_PHDR.size))
                    for i in range(e_phnum)]
    interp = None
    for seg in segments:
        if seg.p_type == PType.PT_INTERP:
            interp = _interp(data, seg)
            break
    return ElfFile(e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
                   e_phnum, e_shentsize, e_shnum, e_shstrndx, tuple(segments), interp)


def _interp(data: bytes, seg: ProgramHeader) -> str:
    """binfmt_elf: the path is p_filesz bytes at p_offset, 2..PATH_MAX long, NUL-terminated."""
    if not 2 <= seg.p_filesz <= INTERP_MAX:
        raise ElfError(f"PT_INTERP of {seg.p_filesz} bytes")
    if seg.p_offset + seg.p_filesz > len(data):
        raise ElfError("PT_INTERP extends past the end of the file")
    raw = data[seg.p_offset : seg.p_offset + seg.p_filesz]
    if raw[-1] != 0:
        raise ElfError("PT_INTERP is not NUL-terminated")
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
