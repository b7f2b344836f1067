"""A Linux process on the unikernel: ELF loading, the initial stack, demand-zero memory,
and the EL0 run loop that hands each SVC to the syscall layer.

App memory is guest RAM from the kernel's page allocator (protected in a realm), mapped
into the CPU's EL0 address space by pointer, never copied.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from ..arch.memory import GRANULE_SIZE
from .syscalls import Syscalls

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
STACK_TOP = 0x0000_FFFF_FFFF_0000
STACK_SIZE = 8 << 20
MMAP_BASE = 0x0000_FFFF_8000_0000
PIE_BASE = 0x0000_AAAA_0000_0000
TRAMPOLINE_VA = 0x1000
# A72 (the EL0 CPU model): FP, ASIMD, AES, PMULL, SHA1, SHA2, CRC32. No LSE atomics.
HWCAP = 0xFB

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_MINSIGSTKSZ = 23, 25, 26, 31, 51


class ExecError(Exception):
    """The program cannot be loaded (not an AArch64 ELF, truncated, ...)."""


class ProcessExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Vma:
    start: int
    end: int
    prot: int
    name: str


def page_down(x: int) -> int:
    return x & ~(GRANULE_SIZE - 1)


def page_up(x: int) -> int:
    return (x + GRANULE_SIZE - 1) & ~(GRANULE_SIZE - 1)


class Process:
    def __init__(self, kernel: Any, elf_bytes: bytes, argv: list[str], exe_path: str, envp: list[str] | None = None) -> None:
        self.kernel = kernel
        self.cpu = kernel.cpu
        self.argv = argv
        self.envp = envp if envp is not None else ["PATH=/bin:/usr/bin", "HOME=/", "TERM=dumb"]
        self.exe_path = exe_path
        self.space = self.cpu.el0_space()
        self.vmas: list[Vma] = []
        self.owned: dict[int, int] = {}  # va page -> ipa page this process owns
        self.brk_start = 0
        self.brk = 0
        self.mmap_next = MMAP_BASE
        self.pid = 1
        self.syscalls = Syscalls(self)
        self.entry, self.auxv_info = self.load(elf_bytes)

    # --- memory ---------------------------------------------------------------------------
    def add_vma(self, start: int, end: int, prot: int, name: str) -> None:
        self.vmas.append(Vma(start, end, prot, name))

    def find_vma(self, addr: int) -> Vma | None:
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def populate(self, va: int, prot: int) -> int:
        """Back one page with fresh zeroed guest RAM; returns its IPA."""
        ipa = self.kernel.pages.alloc(1)
        self.cpu.zero(ipa, GRANULE_SIZE)
        self.owned[va] = ipa
        self.space.map(va, ipa, GRANULE_SIZE, prot)
        return ipa

    def unmap(self, start: int, end: int) -> None:
        for va in range(start, end, GRANULE_SIZE):
            ipa = self.owned.pop(va, None)
            if ipa is not None:
                self.space.unmap(va, GRANULE_SIZE)
                self.kernel.pages.release(ipa)
        kept: list[Vma] = []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                kept.append(v)
                continue
            if v.start < start:
                kept.append(Vma(v.start, start, v.prot, v.name))
            if end < v.end:
                kept.append(Vma(end, v.end, v.prot, v.name))
        self.vmas = kept

    def protect(self, start: int, end: int, prot: int) -> None:
        for v in list(self.vmas):
            if v.end <= start or v.start >= end:
                continue
            self.vmas.remove(v)
            if v.start < start:
                self.vmas.append(Vma(v.start, start, v.prot, v.name))
            self.vmas.append(Vma(max(v.start, start), min(v.end, end), prot, v.name))
            if end < v.end:
                self.vmas.append(Vma(end, v.end, v.prot, v.name))
        self.space.protect(start, end - start, prot)

    def va_to_ipa(self, va: int, write: bool = False) -> int:
        page = page_down(va)
        ipa = self.owned.get(page)
        if ipa is None:
            vma = self.find_vma(va)
            if vma is None:
                raise MemoryError(f"EFAULT at {va:#x}")
            ipa = self.populate(page, vma.prot)
        return ipa + (va - page)

    def read(self, va: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            addr = va + len(out)
            take = min(size - len(out), GRANULE_SIZE - (addr & (GRANULE_SIZE - 1)))
            out += self.cpu.read(self.va_to_ipa(addr), take)
        return bytes(out)

    def write(self, va: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            addr = va + done
            take = min(len(data) - done, GRANULE_SIZE - (addr & (GRANULE_SIZE - 1)))
            self.cpu.write(self.va_to_ipa(addr, True), data[done : done + take])
            done += take

    def read_cstring(self, va: int, limit: int = 4096) -> bytes:
        out = bytearray()
        while len(out) < limit:
            chunk = self.read(va + len(out), min(64, GRANULE_SIZE - ((va + len(out)) & (GRANULE_SIZE - 1))))
            nul = chunk.find(b"\0")
            if nul >= 0:
                return bytes(out + chunk[:nul])
            out += chunk
        return bytes(out)

    # --- loading --------------------------------------------------------------------------
    def load(self, data: bytes) -> tuple[int, dict[str, int]]:
        try:
            elf = ELFFile(io.BytesIO(data))
            if elf["e_machine"] != "EM_AARCH64" or elf.elfclass != 64 or not elf.little_endian:
                raise ExecError(f"not an AArch64 ELF ({elf['e_machine']}, {elf.elfclass}-bit)")
            if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
                raise ExecError(f"not an executable ({elf['e_type']})")
            segments = list(elf.iter_segments())
        except ELFError as exc:
            raise ExecError(f"malformed ELF: {exc}") from None
        except (struct.error, ValueError) as exc:
            raise ExecError(f"malformed ELF: {exc}") from None
        if any(s["p_type"] == "PT_INTERP" for s in segments):
            raise ExecError("dynamically linked programs need the interpreter support of a later release")
        base = PIE_BASE if elf["e_type"] == "ET_DYN" else 0
        loads = [s for s in segments if s["p_type"] == "PT_LOAD"]
        if not loads:
            raise ExecError("no loadable segments")
        phdr = 0
        end = 0
        for seg in loads:
            vaddr, memsz, filesz, offset = base + seg["p_vaddr"], seg["p_memsz"], seg["p_filesz"], seg["p_offset"]
            if filesz > memsz or offset + filesz > len(data):
                raise ExecError("malformed ELF: segment extends past the file")
            flags = seg["p_flags"]
            prot = (PROT_READ if flags & P_FLAGS.PF_R else 0) | (PROT_WRITE if flags & P_FLAGS.PF_W else 0)
            prot |= PROT_EXEC if flags & P_FLAGS.PF_X else 0
            start, stop = page_down(vaddr), page_up(vaddr + memsz)
            self.add_vma(start, stop, prot, "elf")
            for va in range(start, stop, GRANULE_SIZE):
                if va not in self.owned:
                    self.populate(va, prot)
            self.write_initial(vaddr, data[offset : offset + filesz])
            if seg["p_offset"] <= elf["e_phoff"] < seg["p_offset"] + filesz:
                phdr = vaddr + elf["e_phoff"] - offset
            end = max(end, stop)
        self.brk_start = self.brk = end
        self.add_vma(self.brk_start, self.brk_start, PROT_READ | PROT_WRITE, "heap")
        self.space.flush_code(0, 1 << 48)
        return base + elf["e_entry"], {"phdr": phdr, "phnum": elf["e_phnum"], "phent": elf["e_phentsize"]}

    def write_initial(self, va: int, data: bytes) -> None:
        self.write(va, data)

    def setup_stack(self) -> int:
        self.add_vma(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE, "stack")
        sp = STACK_TOP

        def push_bytes(b: bytes) -> int:
            nonlocal sp
            sp -= len(b)
            self.write(sp, b)
            return sp

        execfn = push_bytes(self.exe_path.encode() + b"\0")
        platform = push_bytes(b"aarch64\0")
        random = push_bytes(b"".join(self.cpu.rndr().to_bytes(8, "little") for _ in range(2)))
        envp_ptrs = [push_bytes(e.encode() + b"\0") for e in self.envp]
        argv_ptrs = [push_bytes(a.encode() + b"\0") for a in self.argv]
        auxv = [
            (AT_PHDR, self.auxv_info["phdr"]), (AT_PHENT, self.auxv_info["phent"]),
            (AT_PHNUM, self.auxv_info["phnum"]), (AT_PAGESZ, GRANULE_SIZE), (AT_BASE, 0), (AT_FLAGS, 0),
            (AT_ENTRY, self.entry), (AT_UID, 0), (AT_EUID, 0), (AT_GID, 0), (AT_EGID, 0),
            (AT_HWCAP, HWCAP), (AT_HWCAP2, 0), (AT_CLKTCK, 100), (AT_SECURE, 0), (AT_RANDOM, random),
            (AT_PLATFORM, platform), (AT_EXECFN, execfn), (AT_MINSIGSTKSZ, 5120), (AT_NULL, 0),
        ]
        words = [len(self.argv), *argv_ptrs, 0, *envp_ptrs, 0]
        for k, v in auxv:
            words += [k, v]
        sp = (sp - 8 * len(words)) & ~0xF
        self.write(sp, struct.pack(f"<{len(words)}Q", *words))
        return sp

    # --- running --------------------------------------------------------------------------
    def enter_el0(self, sp: int) -> int:
        """Drop to EL0 the way a kernel does: ELR_EL1 = entry, SP_EL0 = sp, SPSR = EL0t, ERET."""
        tramp = self.kernel.pages.alloc(1)
        # msr spsr_el1, xzr ; eret
        self.cpu.write(tramp, struct.pack("<II", 0xD518401F, 0xD69F03E0))
        self.space.map(TRAMPOLINE_VA, tramp, GRANULE_SIZE, PROT_READ | PROT_EXEC)
        self.space.set_reg("elr_el1", self.entry)
        self.space.set_reg("sp_el0", sp)
        self.trampoline_ipa = tramp
        return TRAMPOLINE_VA

    def run(self) -> int:
        sp = self.setup_stack()
        pc = self.enter_el0(sp)
        try:
            while True:
                reason, pc, detail = self.space.run(pc)
                if reason == "svc":
                    self.syscalls.dispatch()
                    continue
                if reason == "fault":
                    vma = self.find_vma(detail)
                    page = page_down(detail)
                    if vma is not None and page not in self.owned and vma.prot:
                        self.populate(page, vma.prot)  # demand-zero page
                        continue
                    self.kernel.log(f"{self.argv[0]}: segmentation fault at {detail:#x} (pc {pc:#x})")
                    return 128 + 11
                if reason == "undef":
                    self.kernel.log(f"{self.argv[0]}: illegal instruction at pc {pc:#x}")
                    return 128 + 4
        except ProcessExit as done:
            return done.status & 0xFF
        finally:
            self.release()

    def release(self) -> None:
        self.space.close()
        for ipa in self.owned.values():
            self.kernel.pages.release(ipa)
        self.owned.clear()
        if getattr(self, "trampoline_ipa", None) is not None:
            self.kernel.pages.release(self.trampoline_ipa)
            self.trampoline_ipa = None
