"""ELF64 file layouts (System V gABI, "ELF-64 Object File Format" and the gABI's chapters 4
"Object Files" and 5 "Program Loading"; AArch64 values from the Arm ELF for the Arm 64-bit
Architecture, AAELF64). Little-endian forms only: an AArch64 Linux executable is ELFDATA2LSB.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

# e_ident (gABI 4 "ELF Identification")
ELFMAG = b"\x7fELF"
EI_CLASS, EI_DATA, EI_VERSION, EI_OSABI, EI_NIDENT = 4, 5, 6, 7, 16
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1

# Elf64_Ehdr: e_ident[16], e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
# e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
PN_XNUM = 0xFFFF  # e_phnum escape: the real count is in section 0's sh_info


class ElfType(IntEnum):
    """e_type."""

    ET_NONE = 0
    ET_REL = 1
    ET_EXEC = 2
    ET_DYN = 3
    ET_CORE = 4


EM_AARCH64 = 183  # e_machine (AAELF64 §5.1)


class PType(IntEnum):
    """p_type: the segment kinds a loader acts on (gABI 5 "Program Header")."""

    PT_NULL = 0
    PT_LOAD = 1
    PT_DYNAMIC = 2
    PT_INTERP = 3
    PT_NOTE = 4
    PT_SHLIB = 5
    PT_PHDR = 6
    PT_TLS = 7
    PT_GNU_EH_FRAME = 0x6474E550
    PT_GNU_STACK = 0x6474E551
    PT_GNU_RELRO = 0x6474E552
    PT_GNU_PROPERTY = 0x6474E553


class PFlags(IntFlag):
    """p_flags."""

    PF_X = 1
    PF_W = 2
    PF_R = 4
