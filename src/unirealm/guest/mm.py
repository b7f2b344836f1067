"""Guest physical memory: the page allocator over the RAM the device tree describes."""

from __future__ import annotations

from ..arch.memory import GRANULE_SIZE


class OutOfMemory(Exception):
    pass


class PageAllocator:
    """First-fit over free IPA ranges; allocations are whole 4 KiB granules."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []  # sorted (base, top)
        self.total = 0

    def add(self, base: int, top: int) -> None:
        base = -(-base // GRANULE_SIZE) * GRANULE_SIZE
        top = top // GRANULE_SIZE * GRANULE_SIZE
        if top > base:
            self.free.append((base, top))
            self.free.sort()
            self.total += top - base

    def reserve(self, base: int, top: int) -> None:
        """Take [base, top) out of the free ranges (kernel image, DTB, initrd)."""
        base = base // GRANULE_SIZE * GRANULE_SIZE
        top = -(-top // GRANULE_SIZE) * GRANULE_SIZE
        out = []
        for lo, hi in self.free:
            if hi <= base or lo >= top:
                out.append((lo, hi))
                continue
            if lo < base:
                out.append((lo, base))
            if top < hi:
                out.append((top, hi))
            self.total -= min(hi, top) - max(lo, base)
        self.free = out

    def alloc(self, pages: int = 1) -> int:
        size = pages * GRANULE_SIZE
        for i, (lo, hi) in enumerate(self.free):
            if hi - lo >= size:
                self.free[i] = (lo + size, hi)
                if lo + size == hi:
                    del self.free[i]
                return lo
        raise OutOfMemory(f"no {pages} contiguous free pages")

    def release(self, base: int, pages: int = 1) -> None:
        self.free.append((base, base + pages * GRANULE_SIZE))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in self.free:
            if merged and merged[-1][1] == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        self.free = merged

    @property
    def free_bytes(self) -> int:
        return sum(hi - lo for lo, hi in self.free)
