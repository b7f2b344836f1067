"""The host's side of the RMI: typed calls through the monitor (a failing status raises
RmiCallError, and the host may watch the calls it makes), the host kernel's allocator of
non-secure DRAM granules, and the address ranges the host keeps its knowledge of a realm in."""

from __future__ import annotations

from collections.abc import Callable

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiStatus, index_of, status_of
from unirealm.machine.board import Machine


class RmiCallError(Exception):
    def __init__(self, fid: int, status: RmiStatus, index: int) -> None:
        name = RmiFid(fid).name if fid in RmiFid._value2member_map_ else hex(fid)
        super().__init__(f"RMI_{name} failed: {status.name} (index {index})")
        self.fid = fid
        self.status = status
        self.index = index


class HostPages:
    """The host kernel's allocator of non-secure DRAM granules."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.mem = machine.ns_memory()
        self._next = machine.memory.base
        self._free: list[int] = []

    def alloc(self) -> int:
        if self._free:
            return self._free.pop()
        return self.alloc_contiguous(1)

    def alloc_contiguous(self, count: int) -> int:
        base = self._next
        if base + count * GRANULE_SIZE > self.machine.memory.top:
            raise MemoryError("host out of memory")
        self._next += count * GRANULE_SIZE
        return base

    def free(self, pa: int) -> None:
        self.mem.zero(pa, GRANULE_SIZE)
        self._free.append(pa)


_SUCCESS = int(RmiStatus.SUCCESS)


class RmiClient:
    """Typed RMI calls through the monitor; a failing status raises RmiCallError."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._smc = machine.host_smc
        # FID -> what the host wants to learn from each such call it makes (arguments, results)
        self.watch: dict[int, Callable[[tuple[int, ...], list[int]], None]] = {}

    def call(self, fid: RmiFid, *args: int) -> list[int]:
        out = self._smc(fid, *args)
        watch = self.watch.get(fid)
        if watch is not None:
            watch(args, out)
        if out[0] & 0xFF != _SUCCESS:
            raise RmiCallError(fid, status_of(out[0]), index_of(out[0]))
        return out

    def try_call(self, fid: RmiFid, *args: int) -> list[int]:
        out = self._smc(fid, *args)
        watch = self.watch.get(fid)
        if watch is not None:
            watch(args, out)
        return out


class Ranges:
    """Disjoint [lo, hi) address ranges, sorted."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def add(self, lo: int, hi: int) -> None:
        if lo >= hi:
            return
        kept = []
        for a, b in self.spans:
            if b < lo or a > hi:
                kept.append((a, b))
            else:  # overlapping or touching: merged into the new one
                lo, hi = min(lo, a), max(hi, b)
        kept.append((lo, hi))
        self.spans = sorted(kept)

    def remove(self, lo: int, hi: int) -> None:
        if not self.spans:
            return
        kept = []
        for a, b in self.spans:
            if b <= lo or a >= hi:
                kept.append((a, b))
                continue
            if a < lo:
                kept.append((a, lo))
            if hi < b:
                kept.append((hi, b))
        self.spans = kept

    def covers(self, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self.spans)
