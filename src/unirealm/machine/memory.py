"""Physical memory and the granule protection table (GPT).

All physical memory is one memfd (lazily committed by the host OS), mapped shared once in
the monitor's process; a realm process (machine/kernelproc.py) maps the granules it may
reach from the same file at their offsets (`fd`, `offset`), and nothing else. Every 4 KiB
granule has a PAS in the GPT. Software reaches memory only through a world's accessor,
which raises GranuleProtectionFault on a granule whose PAS that world may not access —
the check real RME hardware makes on every access. Only the root world (the EL3 monitor)
changes a granule's PAS, and a change drops every vCPU mapping of that granule, as the
GPT TLB invalidation (TLBI PAALL) that follows a GPT update would.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import weakref
from collections.abc import Callable, Iterator

from unirealm.arch.memory import ACCESSIBLE_PAS, GRANULE_MASK, GRANULE_SHIFT, GRANULE_SIZE, Pas, World

_U64 = struct.Struct("<Q")
_ZERO_GRANULE = bytes(GRANULE_SIZE)
_ROOT = World.ROOT
DRAM_BASE = 0x8_8000_0000  # the machine's DRAM bank; PAs are never equal to guest IPAs
DEFAULT_DRAM_SIZE = 4 << 30


class GranuleProtectionFault(Exception):
    """An access to a granule whose PAS the accessing world may not reach."""

    def __init__(self, pa: int, world: World, pas: Pas | None) -> None:
        where = "outside physical memory" if pas is None else f"in the {pas.name} PAS"
        super().__init__(f"granule protection fault: {world.name} access to PA {pa:#x} {where}")
        self.pa = pa
        self.world = world
        self.pas = pas


class PhysicalMemory:
    """The machine's DRAM and its granule protection table."""

    def __init__(self, size: int = DEFAULT_DRAM_SIZE, base: int = DRAM_BASE) -> None:
        if size <= 0 or size & GRANULE_MASK or base & GRANULE_MASK:
            raise ValueError("physical memory base and size must be granule aligned")
        self.base = base
        self.size = size
        # The backing file: a child process maps single granules of it at their offsets.
        self.fd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, size)
        self._mem = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # Pin the buffer: vCPUs map it by raw pointer, so it must never move or close.
        self._anchor = ctypes.c_char.from_buffer(self._mem)
        self._host_base = ctypes.addressof(self._anchor)
        self._view = memoryview(self._mem).toreadonly()  # for reads in place (hashing)
        # Aligned 64-bit words (RTT entries) in place, in the host's order: little-endian, as
        # the descriptors are (the hosts unirealm runs on, x86_64 and AArch64, all are).
        assert sys.byteorder == "little"
        self._u64 = memoryview(self._mem).cast("Q")
        self._gpt = bytearray(size >> GRANULE_SHIFT)  # Pas per granule; all NON_SECURE at reset
        self._pas_listeners: list[Callable[[int], None]] = []

    # --- geometry ---------------------------------------------------------------------
    @property
    def top(self) -> int:
        return self.base + self.size

    def contains(self, pa: int, size: int = 1) -> bool:
        return self.base <= pa and pa + size <= self.top and size >= 0

    def offset(self, pa: int) -> int:
        """The offset of PA `pa` in the backing file `fd`."""
        if not self.contains(pa):
            raise GranuleProtectionFault(pa, World.ROOT, None)
        return pa - self.base

    def granules(self) -> Iterator[int]:
        return (self.base + (i << GRANULE_SHIFT) for i in range(len(self._gpt)))

    # --- the granule protection table -------------------------------------------------
    def pas(self, pa: int) -> Pas:
        if not self.contains(pa):
            raise GranuleProtectionFault(pa, World.ROOT, None)
        return Pas(self._gpt[(pa - self.base) >> GRANULE_SHIFT])

    def set_pas(self, world: World, pa: int, pas: Pas) -> None:
        """Change a granule's PAS. Only the root world may (the GPT lives in root memory)."""
        if world != _ROOT:
            raise GranuleProtectionFault(pa, world, Pas.ROOT)
        off = pa - self.base
        if pa & GRANULE_MASK or not 0 <= off < self.size:
            raise ValueError(f"PA {pa:#x} is not a granule of this machine")
        self._gpt[off >> GRANULE_SHIFT] = pas
        for listener in self._pas_listeners:
            listener(pa)

    def on_pas_change(self, listener: Callable[[int], None]) -> None:
        """Register a callback run after any granule changes PAS (mapping invalidation)."""
        self._pas_listeners.append(listener)

    def remove_pas_listener(self, listener: Callable[[int], None]) -> None:
        if listener in self._pas_listeners:
            self._pas_listeners.remove(listener)

    def check(self, world: World, pa: int, size: int) -> None:
        off = pa - self.base
        if size > 0 and off >= 0 and off + size <= self.size:  # the common case, checked inline
            first, last = off >> GRANULE_SHIFT, (off + size - 1) >> GRANULE_SHIFT
            if first == last and self._gpt[first] in ACCESSIBLE_PAS[world]:
                return
        if size <= 0:
            if not self.contains(pa, 0):
                raise GranuleProtectionFault(pa, world, None)
            return
        if not self.contains(pa, size):
            raise GranuleProtectionFault(pa, world, None)
        allowed = ACCESSIBLE_PAS[world]
        first = (pa - self.base) >> GRANULE_SHIFT
        last = (pa + size - 1 - self.base) >> GRANULE_SHIFT
        for i in range(first, last + 1):
            if self._gpt[i] not in allowed:
                raise GranuleProtectionFault(self.base + (i << GRANULE_SHIFT), world, Pas(self._gpt[i]))

    def accessor(self, world: World) -> MemoryAccessor:
        return MemoryAccessor(self, world)

    def host_pointer(self, world: World, pa: int, size: int) -> int:
        """Raw host address of [pa, pa+size) for mapping into a vCPU, after the GPT check."""
        self.check(world, pa, size)
        return self._host_base + (pa - self.base)

    # raw access for MemoryAccessor only
    def _slice(self, pa: int, size: int) -> slice:
        off = pa - self.base
        return slice(off, off + size)


class MemoryAccessor:
    """One world's view of physical memory: every access is checked against the GPT.

    The hot accesses (a granule or less, the common case) check inline: offset in range,
    one granule, its PAS in this world's reach; anything else takes PhysicalMemory.check,
    which raises the fault or accepts an access that spans granules."""

    def __init__(self, memory: PhysicalMemory, world: World) -> None:
        self.memory = memory
        self.world = world
        self._allowed = ACCESSIBLE_PAS[world]
        self._gpt = memory._gpt
        self._mem = memory._mem
        self._u64 = memory._u64
        self._view = memory._view
        self._base = memory.base
        self._size = memory.size

    def _offset(self, pa: int, size: int) -> int:
        """The offset of [pa, pa+size) in the mapping, after the GPT check."""
        off = pa - self._base
        if (
            off < 0
            or off + size > self._size
            or size <= 0
            or off >> GRANULE_SHIFT != (off + size - 1) >> GRANULE_SHIFT
            or self._gpt[off >> GRANULE_SHIFT] not in self._allowed
        ):
            self.memory.check(self.world, pa, size)
        return off

    def read(self, pa: int, size: int) -> bytes:
        off = self._offset(pa, size)
        return self._mem[off : off + size]

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        off = self._offset(pa, size)
        self._mem[off : off + size] = data

    def view(self, pa: int, size: int) -> memoryview:
        """A read-only view of [pa, pa+size), GPT-checked now: to hash memory in place.
        Hold it only for the access at hand (a later PAS change is not seen by it)."""
        off = self._offset(pa, size)
        return self._view[off : off + size]

    def copy(self, dst: int, src: int, size: int) -> None:
        """memmove within this world's reach: [src, src+size) to [dst, dst+size), no copy in Python."""
        self._mem.move(self._offset(dst, size), self._offset(src, size), size)

    def copy_view(self, dst: int, src: int, size: int) -> memoryview:
        """`copy`, then a read-only view of the copy (`view(dst, size)`): what was copied, to
        hash in place — never the source, which its owner may change meanwhile."""
        off, src_off = dst - self._base, src - self._base
        gpt, allowed = self._gpt, self._allowed  # _offset inline, for both: DATA_CREATE's copy
        if (
            size != GRANULE_SIZE
            or off & GRANULE_MASK
            or src_off & GRANULE_MASK
            or not 0 <= off < self._size
            or not 0 <= src_off < self._size
            or gpt[off >> GRANULE_SHIFT] not in allowed
            or gpt[src_off >> GRANULE_SHIFT] not in allowed
        ):
            off, src_off = self._offset(dst, size), self._offset(src, size)
        self._mem.move(off, src_off, size)
        return self._view[off : off + size]

    def words(self) -> tuple[memoryview, bytearray, frozenset[Pas], int]:
        """For a caller that reads and writes 64-bit words at granule-aligned tables it
        checks itself (the RMM's walks): memory as 64-bit words, the GPT, the PASes this
        world may reach, the base PA. Word i is at PA base + 8 * i and lies in granule
        (8 * i) >> GRANULE_SHIFT of the GPT; an access to a granule whose PAS is not in the
        set must go through read_u64/write_u64 (which raise the fault)."""
        return self._u64, self._gpt, self._allowed, self._base

    def read_u64(self, pa: int) -> int:
        off = pa - self._base
        if off & 7 or off < 0 or off + 8 > self._size or self._gpt[off >> GRANULE_SHIFT] not in self._allowed:
            self.memory.check(self.world, pa, 8)  # an aligned u64 lies in one granule
            value: int = _U64.unpack_from(self._mem, off)[0]
            return value
        return self._u64[off >> 3]

    def write_u64(self, pa: int, value: int) -> None:
        off = pa - self._base
        if off & 7 or off < 0 or off + 8 > self._size or self._gpt[off >> GRANULE_SHIFT] not in self._allowed:
            self.memory.check(self.world, pa, 8)
            _U64.pack_into(self._mem, off, value & 0xFFFF_FFFF_FFFF_FFFF)
            return
        self._u64[off >> 3] = value & 0xFFFF_FFFF_FFFF_FFFF

    def zero(self, pa: int, size: int) -> None:
        if size == GRANULE_SIZE:
            off = pa - self._base  # _offset inline for one whole granule: every scrub
            if off & GRANULE_MASK or not 0 <= off < self._size or self._gpt[off >> GRANULE_SHIFT] not in self._allowed:
                off = self._offset(pa, size)
            self._mem[off : off + size] = _ZERO_GRANULE
        else:
            self.write(pa, bytes(size))

    def is_zero(self, pa: int, size: int) -> bool:
        return self.read(pa, size).count(0) == size
