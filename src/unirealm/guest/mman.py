"""The memory subsystem's syscalls (mm/mmap.c, mprotect.c, mremap.c, madvise.c): their
argument checks in Linux's order; the address space they change is guest/addrspace.py's."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .addrspace import page_up
from .sysctx import (
    SyscallContext,
)
from .systable import SyscallSet
from .vfs import (
    RegFile,
)

if TYPE_CHECKING:
    pass

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 1, 2, 0x10, 0x20, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MADV_DONTNEED, MADV_FREE = 4, 8

calls = SyscallSet("memory")


class Mman(SyscallContext):
    @calls("brk")
    def sys_brk(self, addr: int, *_: int) -> int:
        return self.p.mm.set_brk(addr)

    @calls("mmap")
    def sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        if length == 0 or offset & 0xFFF or not flags & 3:  # neither MAP_SHARED nor MAP_PRIVATE
            return -errno.EINVAL
        if length > 1 << 48:  # more than the address space (TASK_SIZE)
            return -errno.ENOMEM
        data = None
        name = "anon"
        shared_file = None
        if not flags & MAP_ANONYMOUS:
            f = self.file(fd)
            if not isinstance(f, RegFile):
                return -errno.ENODEV
            if not f.readable or (flags & 3 == MAP_SHARED and prot & 2 and not f.writable):
                return -errno.EACCES
            name = f.path
            if flags & 3 == MAP_SHARED:
                shared_file = f.inode  # the file's own pages, coherent with read and write
            else:
                data = f.inode.data
        size = page_up(length)
        if prot & 2 and (flags & 3 != MAP_SHARED or shared_file is None) and not self.p.mm.may_commit(size):
            return -errno.ENOMEM
        fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
        if fixed and addr & 0xFFF:
            return -errno.EINVAL
        if flags & MAP_FIXED_NOREPLACE and \
                any(v.start < addr + size and v.end > addr for v in self.p.mm.vmas):
            return -errno.EEXIST  # mmap(2): the range is (partly) mapped already
        start = self.p.mm.map_region(addr if fixed else 0, size, prot & 7, name, data, offset, shared_file)
        return start

    @calls("munmap")
    def sys_munmap(self, addr: int, length: int, *_: int) -> int:
        if addr & 0xFFF or length == 0:
            return -errno.EINVAL
        self.p.mm.unmap(addr, addr + page_up(length))
        return 0

    @calls("mprotect")
    def sys_mprotect(self, addr: int, length: int, prot: int, *_: int) -> int:
        # do_mprotect_pkey's checks in order; this CPU has neither BTI nor MTE
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
        if grows == PROT_GROWSDOWN | PROT_GROWSUP or addr & 0xFFF:
            return -errno.EINVAL
        if not length:
            return 0
        end = (addr + page_up(length)) & (2**64 - 1)
        if end <= addr:
            return -errno.ENOMEM
        if prot & ~0xF:  # PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM
            return -errno.EINVAL
        return self.p.mm.protect(addr, end, prot & 7)

    @calls("madvise")
    def sys_madvise(self, addr: int, length: int, advice: int, *_: int) -> int:
        if advice in (MADV_DONTNEED, MADV_FREE):
            self.p.mm.discard(addr, addr + page_up(length))
        return 0

    @calls("mremap")
    def sys_mremap(self, old: int, old_size: int, new_size: int, flags: int, new_addr: int, *_: int) -> int:
        if old & 0xFFF or new_size == 0:
            return -errno.EINVAL
        if new_size > 1 << 48 or not self.p.mm.may_commit(page_up(new_size) - page_up(old_size)):
            return -errno.ENOMEM
        return self.p.mm.remap(old, page_up(old_size), page_up(new_size), bool(flags & MREMAP_MAYMOVE),
                            new_addr if flags & MREMAP_FIXED else None)

    @calls("msync")
    def sys_msync(self, addr: int, length: int, *_: int) -> int:
        self.p.mm.sync_shared()
        return 0

    @calls("mlock", "munlock")
    def sys_mlock(self, *_: int) -> int:
        return 0
