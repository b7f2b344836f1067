"""What the virtio device tests share: a flat PA-addressed memory standing in for the
machine's memory accessors."""

from __future__ import annotations

from unirealm.arch.virtio import VirtioMmio, VirtioStatus
from unirealm.host.devices.mmio import MmioBus


class FlatMemory:
    """A host memory object addressed by PA (as machine.memory accessors are)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.buf = bytearray(size)

    def read(self, pa: int, size: int) -> bytes:
        off = pa - self.base
        assert off >= 0 and off + size <= len(self.buf)
        return bytes(self.buf[off : off + size])

    def write(self, pa: int, data: bytes) -> None:
        off = pa - self.base
        assert off >= 0 and off + len(data) <= len(self.buf)
        self.buf[off : off + len(data)] = data


class ScriptedDriver:
    """The register side of a scripted virtio-mmio driver: access and feature negotiation."""

    def __init__(self, bus: MmioBus, addr: int) -> None:
        self.bus, self.addr = bus, addr

    def r(self, reg: int, size: int = 4) -> int:
        return self.bus.read(self.addr + reg, size).value

    def w(self, reg: int, value: int) -> None:
        self.bus.write(self.addr + reg, 4, value)

    def features(self) -> int:
        self.w(VirtioMmio.DEVICE_FEATURES_SEL, 0)
        lo = self.r(VirtioMmio.DEVICE_FEATURES)
        self.w(VirtioMmio.DEVICE_FEATURES_SEL, 1)
        return lo | self.r(VirtioMmio.DEVICE_FEATURES) << 32

    def negotiate(self, accept: int) -> bool:
        self.w(VirtioMmio.STATUS, 0)
        self.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER)
        for sel in (0, 1):
            self.w(VirtioMmio.DRIVER_FEATURES_SEL, sel)
            self.w(VirtioMmio.DRIVER_FEATURES, (accept >> (32 * sel)) & 0xFFFF_FFFF)
        self.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK)
        return bool(self.r(VirtioMmio.STATUS) & VirtioStatus.FEATURES_OK)
