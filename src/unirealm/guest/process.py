"""A Linux process on the unikernel: ELF loading (static and PT_INTERP), the initial stack,
demand-paged memory (zero-fill or file-backed), the file system view, and the EL0 run loop
that hands each SVC to the syscall layer.

App memory is guest RAM from the kernel's page allocator (protected in a realm), mapped
into the CPU's EL0 address space by pointer, never copied.
"""

from __future__ import annotations

import errno
import functools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unicorn import arm64_const as a64

from ..arch.elf import EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_AARCH64, ElfType, PFlags, PType
from ..arch.image import PAYLOAD_APP_DIR, PAYLOAD_VDSO
from ..arch.memory import GRANULE_SIZE
from .elf import ElfError, ElfFile, read_elf
from .mm import OutOfMemory
from .pagecache import PageStore, Store
from .sched import NSEC, Blocked, ProcessExit, Scheduler, Thread
from .syscalls import Syscalls
from .vfs import (
    O_RDWR,
    Clock,
    ConsoleFile,
    DevInode,
    DirInode,
    FsError,
    Inode,
    LinkInode,
    NullFile,
    RandomFile,
    RegInode,
    Vfs,
    ZeroFile,
)

if TYPE_CHECKING:
    from .interfaces import Kernel

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
STACK_TOP = 0x0000_FFFF_FFFF_0000
STACK_SIZE = 8 << 20
MMAP_BASE = 0x0000_FFFF_8000_0000
MMAP_TOP = STACK_TOP - STACK_SIZE - (1 << 20)
MMAP_LOW = 1 << 32
VVAR_BASE = MMAP_TOP + 0x10000  # the vDSO's data page, then the vDSO, in the gap below the stack
VDSO_BASE = VVAR_BASE + GRANULE_SIZE
VVAR_MULT_SHIFT = 24  # guest/asm/vdso.S: ns = (ticks * mult) >> 24
INTERP_BASE = 0x0000_FFFF_7000_0000
PIE_BASE = 0x0000_AAAA_0000_0000
TRAMPOLINE_VA = 0x1000
FAULT_AROUND = 16  # pages a file-backed demand fault backs at once (the aligned block around it)
ROOTFS_DIR = "rootfs/"
ROOTFS_META = "rootfs.json"
SYSCALL_REGS = [a64.UC_ARM64_REG_X8, *(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(6))]
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND, CLONE_VFORK = 0x100, 0x200, 0x400, 0x800, 0x4000
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS, CLONE_PARENT_SETTID = 0x10000, 0x40000, 0x80000, 0x100000
CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x200000, 0x1000000
# what a forked child inherits beyond memory (and an exec clears)
FORK_REGS = [*(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)), a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30,
             a64.UC_ARM64_REG_NZCV, a64.UC_ARM64_REG_TPIDR_EL0, a64.UC_ARM64_REG_FPCR, a64.UC_ARM64_REG_FPSR,
             *(getattr(a64, f"UC_ARM64_REG_Q{i}") for i in range(32))]
FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 0, 1, 3, 4, 9, 10
FUTEX_CLOCK_REALTIME = 256
# A72 (the EL0 CPU model): FP, ASIMD, AES, PMULL, SHA1, SHA2, CRC32. No LSE atomics.
HWCAP = 0xFB

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_SYSINFO_EHDR, AT_MINSIGSTKSZ = 23, 25, 26, 31, 33, 51


class ExecError(Exception):
    """The program cannot be loaded (not an AArch64 ELF, truncated, ...)."""


@dataclass
class Vma:
    start: int
    end: int
    prot: int
    name: str
    data: bytes | None = None  # file contents backing this range (private copy on fault)
    data_va: int = 0  # the VA where data[0] lives
    shared: RegInode | None = None  # the RegInode a MAP_SHARED file mapping writes back to


def page_down(x: int) -> int:
    return x & ~(GRANULE_SIZE - 1)


def page_up(x: int) -> int:
    return (x + GRANULE_SIZE - 1) & ~(GRANULE_SIZE - 1)


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


class Process:
    def __init__(self, kernel: Kernel, elf_bytes: bytes, argv: list[str], exe_path: str,
                 envp: list[str] | None = None, vfs: Vfs | None = None, sched: Scheduler | None = None) -> None:
        self.kernel = kernel
        self.cpu = kernel.cpu
        self.argv = argv
        self.envp = envp if envp is not None else ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/", "TERM=dumb"]
        self.exe_path = exe_path
        self.vfs = vfs if vfs is not None else Vfs()
        self.space = self.cpu.el0_space()
        self.uc = self.space.uc
        self.space.on_fault = self.demand_page
        self.vmas: list[Vma] = []
        self.owned: dict[int, int] = {}  # va page -> ipa page this process owns
        self.borrowed: set[int] = set()  # the va pages in `owned` that are page-cache pages (MAP_SHARED)
        self.brk_start = 0
        self.brk = 0
        self.sched = sched if sched is not None else Scheduler(kernel)
        self.threads: list[Thread] = []
        self.pid = self.sched.new_thread(self).tid
        self.sched.processes.append(self)
        self.sigactions: dict[int, bytes] = {}
        self.start_ns = self.cpu.cntvct() * 1_000_000_000 // self.cpu.cntfrq
        self.trampoline_ipa: int | None = None
        self.released = False
        self.exit_status: int | None = None  # set when it ends: a zombie until wait4 reaps it
        self.execed = False  # a vfork parent waits for this (or the exit)
        self.parent: Process | None = None
        self.children: list[Process] = []
        self.syscalls = Syscalls(self)
        if "nofastsvc" not in getattr(kernel, "options", {}):  # kernel option: every SVC leaves run()
            self.space.on_svc = self.sched.fast_svc
        self.mount_system()
        self.entry, self.auxv_info = self.load(elf_bytes)

    # --- file system ----------------------------------------------------------------------
    def mount_system(self) -> None:
        vfs, kernel = self.vfs, self.kernel
        tty = "tty" in getattr(kernel, "options", {})
        rndr = self.cpu.rndr
        dev = vfs.makedirs("dev")
        for name, rdev, factory in (
            ("null", 0x103, lambda f, p: NullFile(None, f, p)),
            ("zero", 0x105, lambda f, p: ZeroFile(None, f, p)),
            ("random", 0x108, lambda f, p: RandomFile(rndr, f, p)),
            ("urandom", 0x109, lambda f, p: RandomFile(rndr, f, p)),
            ("tty", 0x500, lambda f, p: ConsoleFile(kernel, f, p, True)),
            ("console", 0x501, lambda f, p: ConsoleFile(kernel, f, p, True)),
            ("ttyS0", 0x440, lambda f, p: ConsoleFile(kernel, f, p, True)),
        ):
            dev.add(name, DevInode(rdev, factory))
        dev.add("stdin", LinkInode("/proc/self/fd/0"))
        dev.add("stdout", LinkInode("/proc/self/fd/1"))
        dev.add("stderr", LinkInode("/proc/self/fd/2"))
        dev.add("fd", LinkInode("/proc/self/fd"))
        dev.add("shm", DirInode(0o1777))
        proc = vfs.makedirs("proc")
        self_dir = DirInode(0o555, dynamic=self._proc_self)
        proc.add("self", self_dir)
        proc.add(str(self.pid), self_dir)
        proc.add("cpuinfo", RegInode(mode=0o444, gen=self._cpuinfo))
        proc.add("meminfo", RegInode(mode=0o444, gen=self._meminfo))
        proc.add("stat", RegInode(mode=0o444, gen=lambda: b"cpu  0 0 0 0 0 0 0 0 0 0\nbtime 0\n"))
        sysd = vfs.makedirs("sys/devices/system/cpu")
        sysd.add("online", RegInode(b"0\n", 0o444))
        sysd.add("possible", RegInode(b"0\n", 0o444))
        etc = vfs.makedirs("etc")
        for name, text in (("passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("group", b"root:x:0:\n"),
                           ("hostname", b"unirealm\n")):
            if etc.get(name) is None:
                etc.add(name, RegInode(text))
        # the console: fds 0, 1, 2 (a terminal only with the kernel option `tty`)
        for fd in range(3):
            self.syscalls.install(ConsoleFile(kernel, O_RDWR, "/dev/console", tty), lowest=fd)

    def _proc_self(self) -> dict[str, Inode]:
        current = self.sched.current
        if current is not None and current.proc is not self and isinstance(current.proc, Process):
            return current.proc._proc_self()
        fd_dir = DirInode(0o500, dynamic=lambda: {
            str(fd): LinkInode(e.file.path) for fd, e in sorted(self.syscalls.fds.items())})
        return {
            "exe": LinkInode(self.exe_path),
            "cwd": LinkInode(self.syscalls.cwd),
            "fd": fd_dir,
            "maps": RegInode(mode=0o444, gen=self._maps),
            "cmdline": RegInode(mode=0o444, gen=lambda: b"".join(a.encode() + b"\0" for a in self.argv)),
            "environ": RegInode(mode=0o444, gen=lambda: b"".join(a.encode() + b"\0" for a in self.envp)),
            "stat": RegInode(mode=0o444, gen=lambda: f"{self.pid} (app) R 0 1 1 0 -1\n".encode()),
            "status": RegInode(mode=0o444, gen=lambda: f"Name:\tapp\nPid:\t{self.pid}\nThreads:\t"
                                                     f"{len(self.threads)}\n".encode()),
        }

    def _maps(self) -> bytes:
        lines = []
        for v in sorted(self.vmas, key=lambda v: v.start):
            if v.end <= v.start:
                continue
            perms = ("r" if v.prot & 1 else "-") + ("w" if v.prot & 2 else "-") + ("x" if v.prot & 4 else "-")
            perms += "s" if v.shared is not None else "p"
            name = {"anon": "", "heap": "[heap]", "stack": "[stack]", "elf": self.exe_path}.get(v.name, v.name)
            off = max(0, v.start - v.data_va) if v.data is not None else 0
            lines.append(f"{v.start:08x}-{v.end:08x} {perms} {off:08x} 00:00 0{' ' * 19}{name}".rstrip())
        return ("\n".join(lines) + "\n").encode()

    def _cpuinfo(self) -> bytes:
        return (b"processor\t: 0\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\n"
                b"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
                b"CPU revision\t: 3\n\n")

    def _meminfo(self) -> bytes:
        total = self.kernel.pages.total >> 10
        free = self.kernel.pages.free_bytes >> 10
        return (f"MemTotal:       {total:8d} kB\nMemFree:        {free:8d} kB\n"
                f"MemAvailable:   {free:8d} kB\n").encode()

    # --- memory ---------------------------------------------------------------------------
    def add_vma(self, start: int, end: int, prot: int, name: str, data: bytes | None = None, data_va: int = 0,
                shared: RegInode | None = None) -> Vma:
        v = Vma(start, end, prot, name, data, data_va, shared)
        self.vmas.append(v)
        return v

    def find_vma(self, addr: int) -> Vma | None:
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def populate(self, va: int, prot: int, vma: Vma | None = None, ipa: int | None = None) -> int:
        """Back one page with guest RAM (zeroed, or a copy of the file page), at `ipa` if
        given (allocated by the caller); returns its IPA. With no RAM left the process is
        killed, as Linux's OOM killer does. A MAP_SHARED file page is the file's own
        page-cache page (MemoryError past the end of the file)."""
        if vma is not None and vma.shared is not None:
            return self._map_shared(va, prot, vma)
        if ipa is None:
            try:
                ipa = self.kernel.pages.alloc(1)
            except OutOfMemory:
                self.kernel.log(f"Out of memory: killed process {self.pid} ({self.argv[0]})", error=True)
                raise ProcessExit(128 + 9) from None
        content = self._page_content(vma, va) if vma is not None and vma.data is not None else None
        if content is None:
            self.cpu.zero(ipa, GRANULE_SIZE)
        else:
            self.cpu.write(ipa, content)
        self.owned[va] = ipa
        self.space.map(va, ipa, GRANULE_SIZE, prot)
        if prot & PROT_EXEC:
            self.space.flush_code(va, GRANULE_SIZE)
        return ipa

    def _map_shared(self, va: int, prot: int, vma: Vma) -> int:
        off = va - vma.data_va
        shared = vma.shared
        assert shared is not None
        if off < 0 or off >= page_up(shared.size()):
            raise MemoryError(f"SIGBUS at {va:#x}: past the end of {vma.name}")
        try:
            ipa = shared.map_page(off // GRANULE_SIZE)
        except FsError:
            self.kernel.log(f"Out of memory: killed process {self.pid} ({self.argv[0]})", error=True)
            raise ProcessExit(128 + 9) from None
        self.owned[va] = ipa
        self.borrowed.add(va)
        self.space.map(va, ipa, GRANULE_SIZE, prot)
        if prot & PROT_EXEC:
            self.space.flush_code(va, GRANULE_SIZE)
        return ipa

    def _free(self, va: int, ipa: int) -> None:
        """A page this process no longer maps: back to the allocator, or one reference less
        on a page-cache page."""
        if va in self.borrowed:
            self.borrowed.discard(va)
            Store.get().unref(ipa)
        else:
            self.kernel.pages.release(ipa)

    @staticmethod
    def _page_content(vma: Vma, va: int) -> bytes:
        data = vma.data
        assert data is not None
        rel = va - vma.data_va
        lo, hi = max(rel, 0), min(rel + GRANULE_SIZE, len(data))
        if hi <= lo:
            return bytes(GRANULE_SIZE)
        return bytes(lo - rel) + data[lo:hi] + bytes(GRANULE_SIZE - (hi - rel))

    def demand_page(self, page: int) -> bool:
        """EL0 touched an unbacked page: back it if a VMA covers it (called from the CPU).
        A file-backed page comes with the unbacked pages of its VMA around it in its
        FAULT_AROUND block, on contiguous guest RAM (so the CPU maps them as one region);
        anonymous memory is backed a page at a time, as Linux does."""
        if page in self.owned:
            return False
        vma = self.find_vma(page)
        if vma is None or not vma.prot or not self.kernel.pages.free:
            return False  # no RAM: the fault ends in fault(), outside the CPU's hook
        # fault-around: a private file page brings its neighbours in the same block along
        block = (FAULT_AROUND if vma.data is not None and vma.shared is None else 1) * GRANULE_SIZE
        lo = hi = page
        while lo - GRANULE_SIZE >= max(vma.start, page & -block) and lo - GRANULE_SIZE not in self.owned:
            lo -= GRANULE_SIZE
        while hi + GRANULE_SIZE < min(vma.end, (page & -block) + block) and hi + GRANULE_SIZE not in self.owned:
            hi += GRANULE_SIZE
        if hi > lo:
            try:
                ipa = self.kernel.pages.alloc((hi - lo) // GRANULE_SIZE + 1)
            except OutOfMemory:
                pass
            else:
                for va in range(lo, hi + GRANULE_SIZE, GRANULE_SIZE):
                    self.populate(va, vma.prot, vma, ipa + va - lo)
                return True
        try:
            self.populate(page, vma.prot, vma)
        except MemoryError:
            return False
        return True

    def owned_in(self, start: int, end: int) -> list[int]:
        """The backed pages of [start, end), in order, in time proportional to the smaller of
        the range and the pages this process has (an app may name the whole address space)."""
        if (end - start) // GRANULE_SIZE <= len(self.owned):
            return [va for va in range(page_down(start), end, GRANULE_SIZE) if va in self.owned]
        return sorted(va for va in self.owned if start <= va < end)

    def discard(self, start: int, end: int) -> None:
        """Drop the pages (MADV_DONTNEED): the next touch sees zeroes or the file again."""
        for va in self.owned_in(start, end):
            ipa = self.owned.pop(va, None)
            if ipa is not None:
                self.space.unmap(va, GRANULE_SIZE)
                self._free(va, ipa)

    def unmap(self, start: int, end: int) -> None:
        self._write_back(start, end)
        self.discard(start, end)
        kept: list[Vma] = []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                kept.append(v)
                continue
            if v.start < start:
                kept.append(Vma(v.start, start, v.prot, v.name, v.data, v.data_va, v.shared))
            if end < v.end:
                kept.append(Vma(end, v.end, v.prot, v.name, v.data, v.data_va, v.shared))
        self.vmas = kept

    def _write_back(self, start: int, end: int) -> None:
        """msync: shared file pages to where their file lives (a 9p file's server)."""
        for v in self.vmas:
            if v.shared is not None and v.end > start and v.start < end and v.prot & PROT_WRITE:
                try:
                    v.shared.sync_pages()
                except FsError as exc:  # as Linux's writeback: munmap and exit still succeed
                    self.kernel.log(f"{v.name}: writing shared pages back failed: {exc}", error=True)

    def sync_shared(self) -> None:
        self._write_back(0, 1 << 64)

    def protect(self, start: int, end: int, prot: int) -> int:
        """mprotect: 0, or -ENOMEM where [start, end) is not all mapped (as Linux, the
        mapped part before the first hole changes)."""
        covered = start
        for v in sorted((v for v in self.vmas if v.end > start and v.start < end and v.end > v.start),
                        key=lambda v: v.start):
            if v.start > covered:
                break
            covered = v.end
        stop = min(covered, end)
        result = 0 if stop == end else -errno.ENOMEM
        if stop <= start:
            return result
        end = stop
        for v in list(self.vmas):
            if v.end <= start or v.start >= end:
                continue
            self.vmas.remove(v)
            if v.start < start:
                self.vmas.append(Vma(v.start, start, v.prot, v.name, v.data, v.data_va, v.shared))
            self.vmas.append(Vma(max(v.start, start), min(v.end, end), prot, v.name, v.data, v.data_va, v.shared))
            if end < v.end:
                self.vmas.append(Vma(end, v.end, v.prot, v.name, v.data, v.data_va, v.shared))
        for va in self.owned_in(start, end):
            self.space.protect(va, GRANULE_SIZE, prot)
            if prot & PROT_EXEC:
                self.space.flush_code(va, GRANULE_SIZE)
        return result

    def find_free(self, size: int, top: int = MMAP_TOP, bottom: int = MMAP_BASE) -> int:
        """The highest gap of `size` bytes below `top` (top-down, as Linux's mmap); what
        does not fit above MMAP_BASE goes lower, above the first 4 GiB."""
        try:
            return self._find_free(size, top, bottom)
        except FsError:
            if bottom != MMAP_BASE:
                raise
            return self._find_free(size, top, MMAP_LOW)

    def _find_free(self, size: int, top: int, bottom: int) -> int:
        spans = sorted((v.start, v.end) for v in self.vmas if v.end > bottom and v.start < top)
        hi = top
        for s, e in reversed(spans):
            if e <= hi and hi - e >= size:
                return hi - size
            hi = min(hi, s)
        if hi - bottom >= size:
            return hi - size
        raise FsError(errno.ENOMEM)

    def map_region(self, addr: int, size: int, prot: int, name: str, data: bytes | None = None,
                   offset: int = 0, shared: RegInode | None = None) -> int:
        if addr:
            self.unmap(addr, addr + size)
            start = addr
        else:
            start = self.find_free(size)
        self.add_vma(start, start + size, prot, name, data, start - offset, shared)
        return start

    def remap(self, old: int, old_size: int, new_size: int, may_move: bool, fixed: int | None) -> int:
        vma = self.find_vma(old)
        if vma is None:
            return -errno.EFAULT
        if new_size <= old_size and fixed is None:
            self.unmap(old + new_size, old + old_size)
            return old
        end = old + old_size
        grows_in_place = fixed is None and not any(v.start < end + new_size - old_size and v.end > end
                                                    for v in self.vmas)
        if grows_in_place and (end + new_size - old_size <= MMAP_TOP or old < MMAP_BASE):
            self.add_vma(end, old + new_size, vma.prot, vma.name, vma.data, vma.data_va, vma.shared)
            return old
        if not may_move:
            return -errno.ENOMEM
        new = fixed if fixed is not None else self.find_free(new_size)
        if fixed is not None:
            self.unmap(new, new + new_size)
        moved = [v for v in self.vmas if v.start < end and v.end > old]
        for va in self.owned_in(old, end):
            ipa = self.owned.pop(va, None)
            if ipa is not None:
                v = self.find_vma(va)
                self.space.unmap(va, GRANULE_SIZE)
                self.owned[new + va - old] = ipa
                if va in self.borrowed:
                    self.borrowed.discard(va)
                    self.borrowed.add(new + va - old)
                self.space.map(new + va - old, ipa, GRANULE_SIZE, v.prot if v else vma.prot)
        self.vmas = [v for v in self.vmas if v not in moved]
        for v in moved:
            s, e = max(v.start, old), min(v.end, end)
            self.add_vma(new + s - old, new + e - old, v.prot, v.name, v.data, v.data_va + new - old, v.shared)
        if new_size > old_size:
            self.add_vma(new + old_size, new + new_size, vma.prot, vma.name, vma.data, vma.data_va + new - old,
                         vma.shared)
        return new

    def may_commit(self, size: int) -> bool:
        """Linux's heuristic overcommit (OVERCOMMIT_GUESS): one writable private mapping may
        not be larger than all of RAM."""
        return size <= self.kernel.pages.total

    def set_brk(self, addr: int) -> int:
        if addr and addr >= self.brk_start:
            old_top, new_top = page_up(self.brk), page_up(addr)
            if not self.may_commit(new_top - old_top):
                return self.brk
            if new_top > old_top and any(v.start < new_top and v.end > old_top for v in self.vmas):
                return self.brk
            if new_top < old_top:
                self.unmap(new_top, old_top)
            for v in self.vmas:
                if v.name == "heap":
                    v.end = max(new_top, v.start)
                    break
            else:
                self.add_vma(self.brk_start, new_top, PROT_READ | PROT_WRITE, "heap")
            self.brk = addr
        return self.brk

    def user_prot(self, va: int) -> int:
        """The protection a user address has now: its page table entry's, or its VMA's."""
        page = page_down(va)
        if page in self.owned:
            entry = self.space.pages.get(page)
            return entry[1] if entry is not None else 0
        vma = self.find_vma(va)
        return vma.prot if vma is not None else 0

    def va_to_ipa(self, va: int, write: bool = False) -> int:
        """The IPA behind a user address for a kernel access (copy_from_user/copy_to_user):
        MemoryError (EFAULT) unless it is mapped with the access's permission, as Linux's
        uaccess takes the permission fault EL0 would (a store needs PROT_WRITE; any mapping
        but PROT_NONE may be read)."""
        prot = self.user_prot(va)
        if not prot or (write and not prot & PROT_WRITE):
            raise MemoryError(f"EFAULT at {va:#x}")
        page = page_down(va)
        ipa = self.owned.get(page)
        if ipa is None:
            ipa = self.populate(page, prot, self.find_vma(va))
        return ipa + (va - page)

    def accessible(self, va: int, size: int, write: bool) -> int:
        """How many bytes from `va` (up to `size`) a kernel access reaches before the first
        page it would fault on: where Linux's partial copies stop."""
        done = 0
        while done < size:
            prot = self.user_prot(va + done)
            if not prot or (write and not prot & PROT_WRITE):
                break
            done += min(size - done, GRANULE_SIZE - ((va + done) & (GRANULE_SIZE - 1)))
        return done

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
        elf = parse_elf(data, self.exe_path)
        name = elf.interp
        idata = b""
        if name is not None:
            try:
                idata = self.vfs.read_file(name)
            except FsError:
                raise ExecError(f"{self.exe_path}: interpreter {name} not found in the image") from None
        base = PIE_BASE if elf.e_type == ElfType.ET_DYN else 0
        entry, phdr, end = self.load_segments(elf, data, base, self.exe_path)
        self.brk_start = self.brk = end
        self.add_vma(self.brk_start, self.brk_start, PROT_READ | PROT_WRITE, "heap")
        info = {"phdr": phdr, "phnum": elf.e_phnum, "phent": elf.e_phentsize, "base": 0, "entry": entry}
        start = entry
        if name is not None:
            ielf = parse_elf(idata, name)
            if ielf.of_type(PType.PT_INTERP):
                raise ExecError(f"{name}: the interpreter itself asks for an interpreter")
            ibase = INTERP_BASE if ielf.e_type == ElfType.ET_DYN else 0
            start, _, _ = self.load_segments(ielf, idata, ibase, name)
            info["base"] = ibase
        return start, info

    def load_segments(self, elf: ElfFile, data: bytes, base: int, what: str) -> tuple[int, int, int]:
        loads = elf.of_type(PType.PT_LOAD)
        if not loads:
            raise ExecError(f"{what}: no loadable segments")
        phdr = next((base + s.p_vaddr for s in elf.of_type(PType.PT_PHDR)), 0)
        end = 0
        for seg in loads:
            vaddr, memsz, filesz, offset = base + seg.p_vaddr, seg.p_memsz, seg.p_filesz, seg.p_offset
            if filesz > memsz or offset + filesz > len(data):
                raise ExecError(f"{what}: malformed ELF: segment extends past the file")
            if vaddr + memsz >= 1 << 48:
                raise ExecError(f"{what}: malformed ELF: segment outside the address space")
            flags = seg.p_flags
            prot = (PROT_READ if flags & PFlags.PF_R else 0) | (PROT_WRITE if flags & PFlags.PF_W else 0)
            prot |= PROT_EXEC if flags & PFlags.PF_X else 0
            start, stop = page_down(vaddr), page_up(vaddr + memsz)
            self.unmap(start, stop)
            # as the kernel maps it: the file from the page holding p_offset, zero past p_filesz
            lead = vaddr - start
            self.add_vma(start, stop, prot, what, bytes(data[max(0, offset - lead) : offset + filesz]), start)
            if not phdr and offset <= elf.e_phoff < offset + filesz:
                phdr = vaddr + elf.e_phoff - offset
            end = max(end, stop)
        return base + elf.e_entry, phdr, end

    def map_vdso(self) -> int:
        """Map the image's vDSO after its data page (vvar): clock_gettime and gettimeofday
        then read the architected counter at EL0 instead of trapping. Returns its address
        for AT_SYSINFO_EHDR, or 0 when the image carries none."""
        try:
            vdso = self.cpu.read_image_file(PAYLOAD_VDSO)
        except KeyError:
            return 0
        mult = (1_000_000_000 << VVAR_MULT_SHIFT) // self.cpu.cntfrq
        vvar = struct.pack("<QQq", mult, 0, self.kernel.realtime_offset_ns).ljust(GRANULE_SIZE, b"\0")
        self.unmap(VVAR_BASE, VDSO_BASE + page_up(len(vdso)))
        self.add_vma(VVAR_BASE, VDSO_BASE, PROT_READ, "[vvar]", vvar, VVAR_BASE)
        self.add_vma(VDSO_BASE, VDSO_BASE + page_up(len(vdso)), PROT_READ | PROT_EXEC, "[vdso]", vdso, VDSO_BASE)
        return VDSO_BASE

    def setup_stack(self) -> int:
        self.add_vma(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE, "stack")
        sp = STACK_TOP
        vdso = self.map_vdso()

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
        info = self.auxv_info
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
        words = [len(self.argv), *argv_ptrs, 0, *envp_ptrs, 0]
        for k, v in auxv:
            words += [k, v]
        sp = (sp - 8 * len(words)) & ~0xF
        self.write(sp, struct.pack(f"<{len(words)}Q", *words))
        return sp

    # --- registers ------------------------------------------------------------------------
    def syscall_args(self) -> list[int]:
        return list(self.uc.reg_read_batch(SYSCALL_REGS))

    def set_result(self, value: int) -> None:
        self.space.set_x0(value)

    # --- threads and waiting --------------------------------------------------------------
    @property
    def current(self) -> Thread:
        t = self.sched.current
        assert t is not None
        return t

    def exit_thread(self, status: int) -> int | None:
        """`exit`: the calling thread ends; the last one ends the process."""
        t = self.current
        if len(self.threads) <= 1:
            raise ProcessExit(status)
        self.thread_gone(t)
        self.sched.kill(t)
        return None

    def thread_gone(self, t: Thread) -> None:
        """CLONE_CHILD_CLEARTID: zero the TID word and wake its waiter (pthread_join)."""
        if t.clear_tid:
            try:
                self.write(t.clear_tid, bytes(4))
            except MemoryError:
                return
            self.sched.futex_wake((self, t.clear_tid), 1)

    def yield_thread(self) -> int:
        self.sched.yield_current()
        return 0

    def clone(self, flags: int, stack: int, ptid: int, tls: int, ctid: int) -> int | None:
        if not flags & CLONE_VM or not flags & CLONE_THREAD:
            return self.fork(flags, stack, ptid, tls, ctid)
        if not flags & CLONE_SIGHAND:
            return -errno.EINVAL
        parent = self.current
        t = self.sched.new_thread(self)
        ctx = self.space.save_context()  # the parent's registers, PC just after its svc
        ctx.reg_write(a64.UC_ARM64_REG_X0, 0)
        if stack:
            ctx.reg_write(a64.UC_ARM64_REG_SP, stack)
        if flags & CLONE_SETTLS:
            ctx.reg_write(a64.UC_ARM64_REG_TPIDR_EL0, tls)
        t.ctx = ctx
        t.sigmask = parent.sigmask
        tid = t.tid.to_bytes(4, "little")
        if flags & CLONE_PARENT_SETTID:
            self.write(ptid, tid)
        if flags & CLONE_CHILD_SETTID:
            self.write(ctid, tid)
        if flags & CLONE_CHILD_CLEARTID:
            t.clear_tid = ctid
        self.sched.start(t)
        return t.tid

    def fork(self, flags: int, stack: int, ptid: int, tls: int, ctid: int) -> int | None:
        """A new process with a copy of this one's memory, fds and registers (fork, and
        vfork, whose parent waits until the child execs or exits)."""
        if flags & (CLONE_THREAD | CLONE_SIGHAND) or (flags & CLONE_VM and not flags & CLONE_VFORK):
            if not self.syscalls.warned_clone:
                self.syscalls.warned_clone = True
                self.kernel.log(f"clone with flags {flags:#x} is not supported (ENOSYS)")
            return -errno.ENOSYS
        if self.kernel.pages.free_bytes < (len(self.owned) + 1) * GRANULE_SIZE:
            return -errno.ENOMEM  # the copy would not fit
        child = Process.__new__(Process)
        child.kernel, child.cpu, child.vfs, child.sched = self.kernel, self.cpu, self.vfs, self.sched
        child.argv, child.envp, child.exe_path = list(self.argv), list(self.envp), self.exe_path
        child.space = self.cpu.el0_space()
        child.uc = child.space.uc
        child.space.on_fault = child.demand_page
        child.space.on_svc = self.space.on_svc
        child.vmas = [Vma(v.start, v.end, v.prot, v.name, v.data, v.data_va, v.shared) for v in self.vmas]
        child.owned = {}
        child.borrowed = set()
        child.brk_start, child.brk = self.brk_start, self.brk
        child.threads = []
        child.sigactions = dict(self.sigactions)
        child.start_ns = self.start_ns
        child.trampoline_ipa = None
        child.released = False
        child.exit_status = None
        child.execed = False
        child.parent = self
        child.children = []
        child.entry, child.auxv_info = self.entry, self.auxv_info
        t = self.sched.new_thread(child)
        child.pid = t.tid
        self.sched.processes.append(child)
        self.children.append(child)
        # memory: every page this process has, copied (no copy-on-write)
        for va, ipa in self.owned.items():
            if va in self.borrowed:  # a shared mapping stays shared
                new = Store.get().ref(ipa)
                child.borrowed.add(va)
            else:
                new = self.kernel.pages.alloc(1)
                self.cpu.write(new, self.cpu.read(ipa, GRANULE_SIZE))
            child.owned[va] = new
            child.space.map(va, new, GRANULE_SIZE, self.space.pages[va][1] if va in self.space.pages else 0)
        # files
        child.syscalls = Syscalls(child)
        for fd, entry in self.syscalls.fds.items():
            entry.file.refs += 1
            child.syscalls.fds[fd] = type(entry)(entry.file, entry.cloexec)
        child.syscalls.cwd, child.syscalls.umask = self.syscalls.cwd, self.syscalls.umask
        child.syscalls.warned, child.syscalls.warned_clone = self.syscalls.warned, self.syscalls.warned_clone
        # registers: the parent's, returning 0 from the svc, entered at EL0 through the trampoline
        parent = self.current
        regs = {r: self.uc.reg_read(r) for r in FORK_REGS}
        regs[a64.UC_ARM64_REG_X0] = 0
        sp = stack or self.uc.reg_read(a64.UC_ARM64_REG_SP)
        if flags & CLONE_SETTLS:
            regs[a64.UC_ARM64_REG_TPIDR_EL0] = tls
        for r, v in regs.items():
            child.uc.reg_write(r, v)
        child.entry = self.uc.reg_read(a64.UC_ARM64_REG_PC)
        child.space.set_reg("pc", child.enter_el0(sp))
        child.entry = self.entry
        t.ctx = child.space.save_context()
        t.sigmask = parent.sigmask
        tid = t.tid.to_bytes(4, "little")
        if flags & CLONE_PARENT_SETTID:
            self.write(ptid, tid)
        if flags & CLONE_CHILD_SETTID:
            child.write(ctid, tid)
        if flags & CLONE_CHILD_CLEARTID:
            t.clear_tid = ctid
        self.sched.start(t)
        if flags & CLONE_VFORK:
            self.sched.park_until(parent, lambda: child.execed or child.exit_status is not None, child.pid,
                                  f"vfork child {child.pid}")
            return None
        return child.pid

    def execve(self, path: str, argv: list[str], envp: list[str]) -> int | None:
        """Replace this process's program (its threads, memory, close-on-exec fds)."""
        node, canon = self.vfs.walk(path, self.syscalls.cwd)
        if isinstance(node, DirInode):
            return -errno.EACCES
        if not isinstance(node, RegInode):
            return -errno.EACCES
        if not node.mode & 0o111:
            return -errno.EACCES
        data = bytes(node.data)
        try:
            parse_elf(data, canon)
        except ExecError:
            return -errno.ENOEXEC
        # the point of no return
        me = self.current
        for t in list(self.threads):
            if t is not me:
                self.sched.kill(t)
        self.sync_shared()
        for va in sorted(self.owned):
            self.space.unmap(va, GRANULE_SIZE)
            self._free(va, self.owned[va])
        self.owned.clear()
        self.vmas = []
        for fd in [fd for fd, e in self.syscalls.fds.items() if e.cloexec]:
            self.syscalls.close_fd(fd)
        self.sigactions.clear()
        self.argv, self.envp, self.exe_path = argv, envp, canon
        try:
            self.entry, self.auxv_info = self.load(data)
        except ExecError as exc:
            self.kernel.log(str(exc), error=True)
            raise ProcessExit(127) from None
        sp = self.setup_stack()
        for r in FORK_REGS:
            self.uc.reg_write(r, 0)
        self.uc.reg_write(a64.UC_ARM64_REG_SP, sp)
        self.uc.reg_write(a64.UC_ARM64_REG_PC, self.entry)
        me.clear_tid = 0
        me.robust_list = (0, 0)
        self.execed = True
        return None

    def futex(self, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int | None:
        cmd = op & 0x7F  # without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
        key = (self, uaddr)
        if uaddr & 3:
            return -errno.EINVAL
        if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
            bitset = 0xFFFFFFFF if cmd == FUTEX_WAIT else val3 & 0xFFFFFFFF
            if not bitset:
                return -errno.EINVAL
            if int.from_bytes(self.read(uaddr, 4), "little") != val & 0xFFFFFFFF:
                return -errno.EAGAIN
            deadline = None
            if timeout:
                sec, nsec = struct.unpack("<qq", self.read(timeout, 16))
                if sec < 0 or not 0 <= nsec < NSEC:
                    return -errno.EINVAL
                now = self.sched.now_ns()
                if cmd == FUTEX_WAIT:  # relative
                    deadline = now + sec * NSEC + nsec
                elif op & FUTEX_CLOCK_REALTIME:  # absolute CLOCK_REALTIME
                    deadline = sec * NSEC + nsec - self.kernel.realtime_offset_ns
                else:  # absolute CLOCK_MONOTONIC
                    deadline = sec * NSEC + nsec
                if deadline <= now:
                    return -errno.ETIMEDOUT
            self.sched.futex_wait(self.current, key, bitset, deadline)
            return None  # x0 arrives with the wake-up (0) or the timeout (-ETIMEDOUT)
        if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
            bitset = 0xFFFFFFFF if cmd == FUTEX_WAKE else val3 & 0xFFFFFFFF
            if not bitset:
                return -errno.EINVAL
            return self.sched.futex_wake(key, val & 0x7FFFFFFF, bitset)
        if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
            if uaddr2 & 3:
                return -errno.EINVAL
            if cmd == FUTEX_CMP_REQUEUE and int.from_bytes(self.read(uaddr, 4), "little") != val3 & 0xFFFFFFFF:
                return -errno.EAGAIN
            return self.sched.futex_requeue(key, (self, uaddr2), val & 0x7FFFFFFF, timeout & 0x7FFFFFFF)
        return -errno.ENOSYS

    def idle(self) -> None:
        self.sched.idle(True)

    def wait(self, ready: Callable[[], bool], timeout_ns: int | None, console: bool, what: str = "waiting") -> bool:
        """Wait until `ready()`; False once the timeout passes. A lone thread waits in place;
        otherwise the thread is parked and its syscall restarts when `ready()` holds (with the
        same absolute deadline)."""
        t = self.current
        now = self.sched.now_ns()
        if t.restart is not None:
            deadline, t.restart = t.restart[0], None
        else:
            deadline = None if timeout_ns is None else now + timeout_ns
        if ready():
            return True
        if deadline is not None and now >= deadline:
            return False
        if not self.sched.alone():
            raise Blocked(ready, deadline, console, what)
        while True:
            if deadline is None and not console:
                return False  # nothing could ever make it ready
            self.idle()
            if ready():
                return True
            if deadline is not None and self.sched.now_ns() >= deadline:
                return False

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

    def fault(self, reason: str, pc: int, detail: int) -> None:
        """EL0 stopped on something other than a syscall: page it in, or end the process."""
        if reason == "fault":
            vma = self.find_vma(detail)
            page = page_down(detail)
            if vma is not None and page not in self.owned and vma.prot:
                try:
                    self.populate(page, vma.prot, vma)  # demand paging
                except MemoryError as exc:
                    self.kernel.log(f"{self.argv[0]}: bus error: {exc} (pc {pc:#x})")
                    raise ProcessExit(128 + 7) from None
                return
            self.kernel.log(f"{self.argv[0]}: segmentation fault at {detail:#x} (pc {pc:#x})")
            raise ProcessExit(128 + 11)
        self.kernel.log(f"{self.argv[0]}: illegal instruction at pc {pc:#x}")
        raise ProcessExit(128 + 4)

    def exit(self, status: int) -> None:
        """The whole process ends (exit_group, the last thread's exit, a fatal fault)."""
        for t in list(self.threads):
            self.sched.kill(t)
        self.exit_status = status
        self.release()

    def run(self) -> int:
        sp = self.setup_stack()
        pc = self.enter_el0(sp)
        sched = self.sched
        try:
            return sched.run(self, pc)
        finally:
            for p in list(sched.processes):
                p.release()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for fd in list(self.syscalls.fds):
            self.syscalls.close_fd(fd)
        self.sync_shared()
        self.space.close()
        for va, ipa in self.owned.items():
            self._free(va, ipa)
        self.owned.clear()
        if self.trampoline_ipa is not None:
            self.kernel.pages.release(self.trampoline_ipa)
            self.trampoline_ipa = None


# --- booting an app ---------------------------------------------------------------------
def build_vfs(kernel: Kernel) -> tuple[Vfs, str | None]:
    """The root file system: the image's rootfs/ and app/ files, then the initrd on top.
    Returns the VFS and the app's path inside it (None without an app)."""
    cpu = kernel.cpu
    Clock.now_ns = staticmethod(kernel.realtime_ns)
    Store.current = PageStore(kernel.pages, cpu)  # file contents live in the realm's RAM
    vfs = Vfs()
    from .tsm import mount_tsm

    mount_tsm(kernel, vfs)
    names = cpu.image_files()
    meta: dict[str, Any] = {}
    if ROOTFS_META in names:
        meta = json.loads(cpu.read_image_file(ROOTFS_META))
    modes = meta.get("modes", {})
    for name in names:
        if name.endswith("/"):
            continue
        if name.startswith(ROOTFS_DIR):
            path = "/" + name[len(ROOTFS_DIR) :]
        elif name.startswith(PAYLOAD_APP_DIR):
            path = "/" + name[len(PAYLOAD_APP_DIR) :]
        else:
            continue
        mode = modes.get(path, 0o755 if name.startswith(PAYLOAD_APP_DIR) else 0o644)
        vfs.install(path, RegInode(mode=mode, loader=functools.partial(cpu.read_image_file, name)))
    for path, target in sorted(meta.get("links", {}).items()):
        vfs.install(path, LinkInode(target))
    app = meta.get("app")
    if app is None:
        apps = [n for n in names if n.startswith(PAYLOAD_APP_DIR) and not n.endswith("/")]
        app = "/" + apps[0][len(PAYLOAD_APP_DIR) :] if apps else None
    if kernel.info.initrd:
        from .cpio import load_cpio, read_initrd

        start, end = kernel.info.initrd
        count = load_cpio(vfs, read_initrd(cpu, start, end))
        kernel.log(f"initrd: {count} entries unpacked into /")
    if any(d.compatible == "virtio,mmio" for d in kernel.info.devices):
        from .p9 import mount_all

        mount_all(kernel, vfs)  # 9p shares go over any initrd content at their paths
    return vfs, app


def split_cmdline(text: str) -> list[tuple[str, bool]]:
    """Words of a command line, as (word, quoted): "double" or 'single' quotes group words
    with spaces and are removed; nothing else is special."""
    words: list[tuple[str, bool]] = []
    word: list[str] = []
    quote = ""
    quoted = started = False
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                word.append(ch)
        elif ch in "\"'":
            quote, quoted, started = ch, True, True
        elif ch.isspace():
            if started:
                words.append(("".join(word), quoted))
            word, quoted, started = [], False, False
        else:
            word.append(ch)
            started = True
    if started:
        words.append(("".join(word), quoted))
    return words


def app_argv(kernel: Kernel) -> list[str]:
    """The app's arguments: the words after the command line's first `--`, with quoting
    (`-- sh -c "ls /data | wc -l"`)."""
    words = split_cmdline(kernel.info.bootargs)
    for i, (word, quoted) in enumerate(words):
        if word == "--" and not quoted:
            return [w for w, _ in words[i + 1 :]]
    return list(kernel.argv)


def run_app(kernel: Kernel) -> int:
    from ..arch.cpio import CpioError

    try:
        vfs, app = build_vfs(kernel)
    except CpioError as exc:
        kernel.log(f"initrd: {exc}", error=True)
        return 1
    if app is None:
        kernel.log("no application in the image")
        return 0
    try:
        data = vfs.read_file(app)
        process = Process(kernel, data, [app, *app_argv(kernel)], exe_path=app, vfs=vfs)
    except (ExecError, FsError) as exc:
        msg = f"cannot execute {app}: {exc}" if isinstance(exc, FsError) else str(exc)
        kernel.log(msg, error=True)
        return 126
    status = process.run()
    kernel.log(f"{app.rsplit('/', 1)[-1]} exited with status {status}")
    return status

