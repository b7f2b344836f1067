"""What the virtio device tests share: a flat PA-addressed memory standing in for the
machine's memory accessors."""

from __future__ import annotations

import struct

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


class RingDriver(ScriptedDriver):
    """A scripted driver of several split virtqueues (virtio 1.2 §2.7), every ring offset
    taken from the spec's layouts rather than the device's helpers: a descriptor is 16 bytes
    (le64 addr, le32 len, le16 flags, le16 next); the available ring is le16 flags, le16 idx,
    le16 ring[num], le16 used_event; the used ring is le16 flags, le16 idx, {le32 id, le32
    len}[num], le16 avail_event. `rings` maps a queue to its (desc, avail, used) addresses."""

    def __init__(self, bus: MmioBus, addr: int, view, rings: dict[int, tuple[int, int, int]], num: int) -> None:
        super().__init__(bus, addr)
        self.view, self.rings, self.num = view, rings, num
        self.avail_idx = dict.fromkeys(rings, 0)
        self.used_seen = dict.fromkeys(rings, 0)

    def setup(self, accept: int | None = None, queues: list[int] | None = None) -> None:
        """Negotiate `accept` (every offered feature but EVENT_IDX, bit 29, by default), set
        up `queues` (all by default) and set DRIVER_OK."""
        assert self.negotiate(self.features() & ~(1 << 29) if accept is None else accept)
        for q in self.rings if queues is None else queues:
            desc, avail, used = self.rings[q]
            self.view.write(avail, bytes(6 + 2 * self.num))
            self.view.write(used, bytes(6 + 8 * self.num))
            self.queue(q, desc, avail, used)
            assert self.r(VirtioMmio.QUEUE_READY) == 1
            self.avail_idx[q] = self.used_seen[q] = 0
        self.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK
               | VirtioStatus.DRIVER_OK)

    def queue(self, q: int, desc: int, avail: int, used: int) -> None:
        """Program queue `q`'s size and ring addresses and set QueueReady."""
        self.w(VirtioMmio.QUEUE_SEL, q)
        self.w(VirtioMmio.QUEUE_NUM, self.num)
        for reg, where in ((VirtioMmio.QUEUE_DESC_LOW, desc), (VirtioMmio.QUEUE_DRIVER_LOW, avail),
                           (VirtioMmio.QUEUE_DEVICE_LOW, used)):
            self.w(reg, where & 0xFFFF_FFFF)
            self.w(reg + 4, where >> 32)
        self.w(VirtioMmio.QUEUE_READY, 1)

    def desc(self, q: int, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        self.view.write(self.rings[q][0] + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def chain(self, q: int, first: int, bufs: list[tuple[int, int, bool]]) -> None:
        """Descriptors first, first+1, ... linked with NEXT; each buffer (addr, len, writable)."""
        for k, (addr, length, writable) in enumerate(bufs):
            last = k == len(bufs) - 1
            self.desc(q, first + k, addr, length, (0 if last else 1) | (2 if writable else 0), 0 if last else first + k + 1)

    def post(self, q: int, head: int, notify: bool = True) -> None:
        avail = self.rings[q][1]
        self.view.write(avail + 4 + 2 * (self.avail_idx[q] % self.num), struct.pack("<H", head))
        self.avail_idx[q] = (self.avail_idx[q] + 1) & 0xFFFF
        self.view.write(avail + 2, struct.pack("<H", self.avail_idx[q]))
        if notify:
            self.w(VirtioMmio.QUEUE_NOTIFY, q)

    def used_idx(self, q: int) -> int:
        return int(struct.unpack("<H", self.view.read(self.rings[q][2] + 2, 2))[0])

    def used_flags(self, q: int) -> int:
        return int(struct.unpack("<H", self.view.read(self.rings[q][2], 2))[0])

    def avail_event(self, q: int) -> int:
        return int(struct.unpack("<H", self.view.read(self.rings[q][2] + 4 + 8 * self.num, 2))[0])

    def set_used_event(self, q: int, value: int) -> None:
        self.view.write(self.rings[q][1] + 4 + 2 * self.num, struct.pack("<H", value & 0xFFFF))

    def used(self, q: int) -> list[tuple[int, int]]:
        """The used entries (id, len) written since the last look."""
        used, out = self.rings[q][2], []
        idx = self.used_idx(q)
        while self.used_seen[q] != idx:
            out.append(struct.unpack("<II", self.view.read(used + 4 + 8 * (self.used_seen[q] % self.num), 8)))
            self.used_seen[q] = (self.used_seen[q] + 1) & 0xFFFF
        return out

    @property
    def needs_reset(self) -> bool:
        return bool(self.r(VirtioMmio.STATUS) & VirtioStatus.DEVICE_NEEDS_RESET)


def ring_driver(device, name: str, addr: int, view, rings: dict[int, tuple[int, int, int]],
                num: int) -> RingDriver:
    """`device` alone on a bus at `addr`, and a RingDriver for it writing through `view`."""
    bus = MmioBus()
    bus.register(addr, 0x200, device, name)
    return RingDriver(bus, addr, view, rings, num)
