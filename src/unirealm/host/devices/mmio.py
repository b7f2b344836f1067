"""The VMM's MMIO bus: emulated devices claim (base, size) windows of guest physical space.

A guest data abort on an emulated address arrives at the VMM as (address, size, is_write, data),
as KVM_EXIT_MMIO does. kvmtool looks the address up in its MMIO tree and calls the owning
device. When no device owns it, a normal VM's access is silently dropped (reads return zero);
for a realm, kvmtool-cca injects a synchronous external abort instead, because a realm must
not be fed made-up data. The bus reports "unclaimed" and leaves that choice to the caller.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

ACCESS_SIZES = (1, 2, 4, 8)


@runtime_checkable
class MmioDevice(Protocol):
    """A device model. Offsets are relative to the start of the device's window."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class MmioError(ValueError):
    """A bad registration or access request; the message is one line."""


class MmioOverlapError(MmioError):
    """A window that overlaps one already registered."""


@dataclass(frozen=True)
class MmioRegion:
    base: int
    size: int
    device: MmioDevice
    name: str

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int, size: int = 1) -> bool:
        return self.base <= addr and addr + size <= self.end


@dataclass(frozen=True)
class MmioAccess:
    """The outcome of one access. `handled` False means no device owns the address: the caller
    injects an external abort (realm) or ignores it (normal VM, reads as `value` 0)."""

    handled: bool
    value: int = 0
    region: MmioRegion | None = None


# (is_write, addr, size, value, handled) -> None; for `--trace mmio`.
MmioTrace = Callable[[bool, int, int, int, bool], None]


class MmioBus:
    def __init__(self, trace: MmioTrace | None = None) -> None:
        self._regions: list[MmioRegion] = []  # sorted by base, non-overlapping
        self._bases: list[int] = []
        self.trace = trace

    def register(self, base: int, size: int, device: MmioDevice, name: str | None = None) -> MmioRegion:
        if size <= 0:
            raise MmioError(f"MMIO window at {base:#x} has no size")
        if base < 0:
            raise MmioError(f"MMIO window base {base:#x} is negative")
        region = MmioRegion(base, size, device, name or type(device).__name__)
        i = bisect.bisect_left(self._bases, base)
        for neighbour in self._regions[max(i - 1, 0) : i + 1]:
            if neighbour.base < region.end and base < neighbour.end:
                raise MmioOverlapError(
                    f"MMIO window {region.name} [{base:#x}, {region.end:#x}) overlaps "
                    f"{neighbour.name} [{neighbour.base:#x}, {neighbour.end:#x})"
                )
        self._regions.insert(i, region)
        self._bases.insert(i, base)
        return region

    def unregister(self, base: int) -> MmioRegion:
        i = bisect.bisect_left(self._bases, base)
        if i == len(self._bases) or self._bases[i] != base:
            raise MmioError(f"no MMIO window starts at {base:#x}")
        del self._bases[i]
        return self._regions.pop(i)

    def find(self, addr: int, size: int = 1) -> MmioRegion | None:
        """The window holding all of [addr, addr + size), or None."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i < 0:
            return None
        region = self._regions[i]
        return region if region.contains(addr, size) else None

    @property
    def regions(self) -> tuple[MmioRegion, ...]:
        return tuple(self._regions)

    def read(self, addr: int, size: int) -> MmioAccess:
        _check_size(size)
        region = self.find(addr, size)
        if region is None:
            result = MmioAccess(False)
        else:
            value = region.device.mmio_read(addr - region.base, size) & _mask(size)
            result = MmioAccess(True, value, region)
        if self.trace is not None:
            self.trace(False, addr, size, result.value, result.handled)
        return result

    def write(self, addr: int, size: int, value: int) -> MmioAccess:
        _check_size(size)
        region = self.find(addr, size)
        value &= _mask(size)
        if region is not None:
            region.device.mmio_write(addr - region.base, size, value)
        if self.trace is not None:
            self.trace(True, addr, size, value, region is not None)
        return MmioAccess(region is not None, value, region)


def _check_size(size: int) -> None:
    if size not in ACCESS_SIZES:
        raise MmioError(f"MMIO access size {size} is not 1, 2, 4 or 8 bytes")


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1
