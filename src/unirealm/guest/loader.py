"""Loading a program into an address space, as Linux's binfmt_elf does: the ELF checks
(an AArch64 ET_EXEC or ET_DYN, every PT_LOAD inside the file and below 2^48), the segments
as file-backed VMAs, PT_INTERP's dynamic loader beside it, the heap, the vDSO and its data
page, and the initial stack (argv, envp, auxv).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..arch.elf import EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_AARCH64, ElfType, PFlags, PType
from ..arch.image import PAYLOAD_VDSO
from ..arch.memory import GRANULE_SIZE
from .addrspace import MMAP_TOP, PROT_EXEC, PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP, page_down, page_up
from .elf import ElfError, ElfFile, ProgramHeader, read_elf
from .vfs import FsError

if TYPE_CHECKING:
    from .addrspace import AddressSpace
    from .vfs import Vfs

VA_LIMIT = 1 << 48  # TASK_SIZE: the 48-bit EL0 address space
VVAR_BASE = MMAP_TOP + 0x10000  # the vDSO's data page, then the vDSO, in the gap below the stack
VDSO_BASE = VVAR_BASE + GRANULE_SIZE
VVAR_MULT_SHIFT = 24  # guest/asm/vdso.S: ns = (ticks * mult) >> 24
INTERP_BASE = 0x0000_FFFF_7000_0000
PIE_BASE = 0x0000_AAAA_0000_0000
# A72 (the EL0 CPU model): FP, ASIMD, AES, PMULL, SHA1, SHA2, CRC32. No LSE atomics.
HWCAP = 0xFB

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_SYSINFO_EHDR, AT_MINSIGSTKSZ = 23, 25, 26, 31, 33, 51

SHT_DYNSYM = 11

AuxvInfo = dict[str, int]  # phdr, phnum, phent, base, entry: what the auxv tells ld.so


class ExecError(Exception):
    """The program cannot be loaded (not an AArch64 ELF, truncated, ...)."""


def parse_elf(data: bytes, what: str) -> ElfFile:
    """The program's ELF headers, if it is an AArch64 executable this loader can run."""
    if data[:4] != b"\x7fELF":
        raise ExecError(f"{what}: not an ELF file")
    if len(data) > EI_DATA and (data[EI_CLASS], data[EI_DATA]) != (ELFCLASS64, ELFDATA2LSB):
        raise ExecError(f"{what}: not an AArch64 ELF (EI_CLASS {data[EI_CLASS]}, EI_DATA {data[EI_DATA]})")
    try:
        elf = read_elf(data)
    except ElfError as exc:
        raise ExecError(f"{what}: malformed ELF: {exc}") from None
    if elf.e_machine != EM_AARCH64:
        raise ExecError(f"{what}: not an AArch64 ELF (e_machine {elf.e_machine})")
    if elf.e_type not in (ElfType.ET_EXEC, ElfType.ET_DYN):
        kind = ElfType(elf.e_type).name if elf.e_type in set(ElfType) else f"e_type {elf.e_type}"
        raise ExecError(f"{what}: not an executable ({kind})")
    return elf


def check_segment(seg: ProgramHeader, base: int, file_size: int, what: str) -> None:
    """A PT_LOAD the loader may map: its file part inside the file (and no larger than its
    memory part), all of it below the top of the 48-bit address space."""
    if seg.p_filesz > seg.p_memsz or seg.p_offset + seg.p_filesz > file_size:
        raise ExecError(f"{what}: malformed ELF: segment extends past the file")
    if base + seg.p_vaddr + seg.p_memsz > VA_LIMIT:  # Linux: vaddr + memsz <= TASK_SIZE
        raise ExecError(f"{what}: malformed ELF: segment outside the address space")


def load_program(mm: AddressSpace, vfs: Vfs, data: bytes, exe_path: str) -> tuple[int, AuxvInfo]:
    """Map the program (and its interpreter): the entry point and what the auxv reports."""
    elf = parse_elf(data, exe_path)
    name = elf.interp
    idata = b""
    if name is not None:
        try:
            idata = vfs.read_file(name)
        except FsError:
            raise ExecError(f"{exe_path}: interpreter {name} not found in the image") from None
    base = PIE_BASE if elf.e_type == ElfType.ET_DYN else 0
    entry, phdr, end = load_segments(mm, elf, data, base, exe_path)
    mm.brk_start = mm.brk = end
    mm.add_vma(mm.brk_start, mm.brk_start, PROT_READ | PROT_WRITE, "heap")
    info = {"phdr": phdr, "phnum": elf.e_phnum, "phent": elf.e_phentsize, "base": 0, "entry": entry}
    start = entry
    if name is not None:
        ielf = parse_elf(idata, name)
        if ielf.of_type(PType.PT_INTERP):
            raise ExecError(f"{name}: the interpreter itself asks for an interpreter")
        ibase = INTERP_BASE if ielf.e_type == ElfType.ET_DYN else 0
        start, _, _ = load_segments(mm, ielf, idata, ibase, name)
        info["base"] = ibase
    return start, info


def load_segments(mm: AddressSpace, elf: ElfFile, data: bytes, base: int, what: str) -> tuple[int, int, int]:
    """The PT_LOAD segments as VMAs: (entry, AT_PHDR, end of the highest segment)."""
    loads = elf.of_type(PType.PT_LOAD)
    if not loads:
        raise ExecError(f"{what}: no loadable segments")
    for seg in loads:
        check_segment(seg, base, len(data), what)
    phdr = next((base + s.p_vaddr for s in elf.of_type(PType.PT_PHDR)), 0)
    end = 0
    for seg in loads:
        vaddr, memsz, filesz, offset = base + seg.p_vaddr, seg.p_memsz, seg.p_filesz, seg.p_offset
        flags = seg.p_flags
        prot = (PROT_READ if flags & PFlags.PF_R else 0) | (PROT_WRITE if flags & PFlags.PF_W else 0)
        prot |= PROT_EXEC if flags & PFlags.PF_X else 0
        start, stop = page_down(vaddr), page_up(vaddr + memsz)
        mm.unmap(start, stop)
        # as the kernel maps it: the file from the page holding p_offset, zero past p_filesz
        lead = vaddr - start
        mm.add_vma(start, stop, prot, what, bytes(data[max(0, offset - lead) : offset + filesz]), start)
        if not phdr and offset <= elf.e_phoff < offset + filesz:
            phdr = vaddr + elf.e_phoff - offset
        end = max(end, stop)
    return base + elf.e_entry, phdr, end


def map_vdso(mm: AddressSpace, realtime_offset_ns: int) -> int:
    """Map the image's vDSO after its data page (vvar): clock_gettime and gettimeofday
    then read the architected counter at EL0 instead of trapping. Returns its address
    for AT_SYSINFO_EHDR, or 0 when the image carries none."""
    cpu = mm.cpu
    try:
        vdso = cpu.read_image_file(PAYLOAD_VDSO)
    except KeyError:
        return 0
    mult = (1_000_000_000 << VVAR_MULT_SHIFT) // cpu.cntfrq
    vvar = struct.pack("<QQq", mult, 0, realtime_offset_ns).ljust(GRANULE_SIZE, b"\0")
    mm.unmap(VVAR_BASE, VDSO_BASE + page_up(len(vdso)))
    mm.add_vma(VVAR_BASE, VDSO_BASE, PROT_READ, "[vvar]", vvar, VVAR_BASE)
    mm.add_vma(VDSO_BASE, VDSO_BASE + page_up(len(vdso)), PROT_READ | PROT_EXEC, "[vdso]", vdso, VDSO_BASE)
    return VDSO_BASE


def vdso_symbol(vdso: bytes, name: str) -> int | None:
    """The address (an offset: the vDSO is linked at 0) of `name` in the vDSO's .dynsym,
    or None."""
    try:
        shoff, = struct.unpack_from("<Q", vdso, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", vdso, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", vdso, shoff + i * shentsize) for i in range(shnum)]
        for sec in sections:
            if sec[1] != SHT_DYNSYM:
                continue
            strtab = sections[sec[6]]
            for off in range(sec[4], sec[4] + sec[5], sec[9] or 24):
                st_name, _, _, _, st_value = struct.unpack_from("<IBBHQ", vdso, off)
                start = strtab[4] + st_name
                if vdso[start : vdso.index(b"\0", start)] == name.encode():
                    return int(st_value)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def setup_stack(mm: AddressSpace, exe_path: str, argv: list[str], envp: list[str], info: AuxvInfo,
                realtime_offset_ns: int) -> int:
    """The stack VMA and the initial stack Linux's ABI promises: argc, argv, envp, auxv."""
    mm.add_vma(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE, "stack")
    sp = STACK_TOP
    vdso = map_vdso(mm, realtime_offset_ns)

    def push_bytes(b: bytes) -> int:
        nonlocal sp
        sp -= len(b)
        mm.write(sp, b)
        return sp

    execfn = push_bytes(exe_path.encode("utf-8", "surrogateescape") + b"\0")  # the bytes execve was given
    platform = push_bytes(b"aarch64\0")
    random = push_bytes(b"".join(mm.cpu.rndr().to_bytes(8, "little") for _ in range(2)))
    envp_ptrs = [push_bytes(e.encode("utf-8", "surrogateescape") + b"\0") for e in envp]
    argv_ptrs = [push_bytes(a.encode("utf-8", "surrogateescape") + b"\0") for a in argv]
    auxv = [
        (AT_PHDR, info["phdr"]), (AT_PHENT, info["phent"]), (AT_PHNUM, info["phnum"]),
        (AT_PAGESZ, GRANULE_SIZE), (AT_BASE, info["base"]), (AT_FLAGS, 0), (AT_ENTRY, info["entry"]),
        (AT_UID, 0), (AT_EUID, 0), (AT_GID, 0), (AT_EGID, 0),
        (AT_HWCAP, HWCAP), (AT_HWCAP2, 0), (AT_CLKTCK, 100), (AT_SECURE, 0), (AT_RANDOM, random),
        (AT_PLATFORM, platform), (AT_EXECFN, execfn), (AT_MINSIGSTKSZ, 5120),
    ]
    if vdso:
        auxv.append((AT_SYSINFO_EHDR, vdso))
    auxv.append((AT_NULL, 0))
    words = [len(argv), *argv_ptrs, 0, *envp_ptrs, 0]
    for k, v in auxv:
        words += [k, v]
    sp = (sp - 8 * len(words)) & ~0xF
    mm.write(sp, struct.pack(f"<{len(words)}Q", *words))
    return sp
