"""A process's address space: its VMAs, the pages backing them (demand-paged: zero-fill,
a private copy of a file page, or a MAP_SHARED file's own page-cache page), mmap/munmap/
mprotect/mremap/brk on them, and the kernel's copies to and from user memory (uaccess).

App memory is guest RAM from the kernel's page allocator (protected in a realm), mapped
into the CPU's EL0 address space by pointer, never copied.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from .mm import OutOfMemory
from .pagecache import Store
from .sched import ProcessExit
from .uapi import SIGKILL
from .vfs import FsError, RegInode

if TYPE_CHECKING:
    from .interfaces import Cpu, El0Space, Kernel

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
STACK_TOP = 0x0000_FFFF_FFFF_0000
STACK_SIZE = 8 << 20
MMAP_BASE = 0x0000_FFFF_8000_0000
MMAP_TOP = STACK_TOP - STACK_SIZE - (1 << 20)
MMAP_LOW = 1 << 32
FAULT_AROUND = 16  # pages a private demand fault backs at once (the aligned block around it)


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


class AddressSpace:
    def __init__(self, kernel: Kernel, space: El0Space, owner: Callable[[], str]) -> None:
        self.kernel = kernel
        self.cpu: Cpu = kernel.cpu
        self.space = space
        self.space.on_fault = self.demand_page
        self.owner = owner  # "pid (name)" for the OOM killer's message
        self.vmas: list[Vma] = []
        self.owned: dict[int, int] = {}  # va page -> ipa page this process owns
        self.borrowed: set[int] = set()  # the va pages in `owned` that are page-cache pages (MAP_SHARED)
        self.brk_start = 0
        self.brk = 0

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
                self.kernel.log(f"Out of memory: killed process {self.owner()}", error=True)
                raise ProcessExit.killed(SIGKILL) from None
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
            self.kernel.log(f"Out of memory: killed process {self.owner()}", error=True)
            raise ProcessExit.killed(SIGKILL) from None
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
        A private page comes with the unbacked pages of its VMA around it in its
        FAULT_AROUND block (zeroed, or copies of the file), on contiguous guest RAM, so the
        CPU maps them as one region and the next touches do not fault; a MAP_SHARED file
        page is backed alone. A VMA has one protection, so a block never spans two."""
        if page in self.owned:
            return False
        vma = self.find_vma(page)
        if vma is None or not vma.prot or not self.kernel.pages.free:
            return False  # no RAM: the fault ends in fault(), outside the CPU's hook
        block = (FAULT_AROUND if vma.shared is None else 1) * GRANULE_SIZE
        lo = hi = page
        while lo - GRANULE_SIZE >= max(vma.start, page & -block) and lo - GRANULE_SIZE not in self.owned:
            lo -= GRANULE_SIZE
        while hi + GRANULE_SIZE < min(vma.end, (page & -block) + block) and hi + GRANULE_SIZE not in self.owned:
            hi += GRANULE_SIZE
        if hi > lo:
            count = (hi - lo) // GRANULE_SIZE + 1
            try:
                ipa = self.kernel.pages.alloc(count)
            except OutOfMemory:
                pass
            else:
                if vma.data is None:  # anonymous: zeroed and mapped as one run
                    self.cpu.zero(ipa, count * GRANULE_SIZE)
                    for i in range(count):
                        self.owned[lo + i * GRANULE_SIZE] = ipa + i * GRANULE_SIZE
                    self.space.map(lo, ipa, count * GRANULE_SIZE, vma.prot)
                    if vma.prot & PROT_EXEC:
                        self.space.flush_code(lo, count * GRANULE_SIZE)
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

    # --- fork, exec, exit -----------------------------------------------------------------
    def fork(self, space: El0Space, owner: Callable[[], str]) -> AddressSpace:
        """A copy of this address space on `space`: the same VMAs and brk, every page copied
        (no copy-on-write) except MAP_SHARED pages, which stay shared."""
        child = AddressSpace(self.kernel, space, owner)
        child.vmas = [replace(v) for v in self.vmas]
        child.brk_start, child.brk = self.brk_start, self.brk
        for va, ipa in self.owned.items():
            if va in self.borrowed:  # a shared mapping stays shared
                new = Store.get().ref(ipa)
                child.borrowed.add(va)
            else:
                new = self.kernel.pages.alloc(1)
                self.cpu.write(new, self.cpu.read(ipa, GRANULE_SIZE))
            child.owned[va] = new
            space.map(va, new, GRANULE_SIZE, self.space.pages[va][1] if va in self.space.pages else 0)
        return child

    def clear(self) -> None:
        """execve: every mapping goes (shared pages written back first)."""
        self.sync_shared()
        for va in sorted(self.owned):
            self.space.unmap(va, GRANULE_SIZE)
            self._free(va, self.owned[va])
        self.owned.clear()
        self.vmas = []

    def release(self) -> None:
        """The process is gone: its pages back to the allocator (shared ones written back)."""
        self.sync_shared()
        self.space.close()
        for va, ipa in self.owned.items():
            self._free(va, ipa)
        self.owned.clear()
