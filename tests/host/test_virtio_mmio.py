"""The virtio-mmio transport (virtio 1.2 §4.2.2) and its split-virtqueue engine (§2.7), driven
by a scripted driver over plain memory views: registers, feature negotiation, queue set-up,
a 9p request round trip, and hostile descriptor chains refused with DEVICE_NEEDS_RESET."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from unirealm.arch import p9
from unirealm.arch.p9 import P9
from unirealm.arch.virtio import (
    VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_CONFIG,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VirtioMmio,
    VirtioStatus,
    VirtqDescFlags,
    avail_event_offset,
    avail_ring_entry,
    feature,
    need_event,
    pack_desc,
    used_event_offset,
    used_ring_entry,
)
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.virtio_9p import P9Server, Virtio9p
from unirealm.host.devices.virtio_mmio import DmaError, RamView, SharedView, VirtioMmioDevice

from .virtio_support import FlatMemory, ScriptedDriver

RAM_BASE, RAM_SIZE = 0x8000_0000, 0x10_0000
DESC, AVAIL, USED = RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000
OUT, IN = RAM_BASE + 0x4000, RAM_BASE + 0x8000
NUM = 8


class Driver(ScriptedDriver):
    """A scripted virtio-mmio driver at `addr` writing its rings through `view`."""

    def __init__(self, bus: MmioBus, addr: int, view, dma_bit: int = 0) -> None:
        super().__init__(bus, addr)
        self.view, self.bit = view, dma_bit
        self.avail_idx = 0

    def setup(self, accept: int | None = None) -> None:
        assert self.negotiate(self.features() if accept is None else accept)
        self.w(VirtioMmio.QUEUE_SEL, 0)
        assert self.r(VirtioMmio.QUEUE_NUM_MAX) >= NUM
        self.w(VirtioMmio.QUEUE_NUM, NUM)
        for reg, addr in ((VirtioMmio.QUEUE_DESC_LOW, DESC), (VirtioMmio.QUEUE_DRIVER_LOW, AVAIL),
                          (VirtioMmio.QUEUE_DEVICE_LOW, USED)):
            self.w(reg, (addr | self.bit) & 0xFFFF_FFFF)
            self.w(reg + 4, (addr | self.bit) >> 32)
        self.w(VirtioMmio.QUEUE_READY, 1)
        assert self.r(VirtioMmio.QUEUE_READY) == 1
        self.w(VirtioMmio.STATUS, 0xF)

    def desc(self, i: int, addr: int, length: int, flags: int, nxt: int = 0) -> None:
        self.view.write(DESC + 16 * i, pack_desc(addr, length, flags, nxt))

    def post(self, head: int) -> None:
        self.view.write(AVAIL + avail_ring_entry(self.avail_idx % NUM), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.view.write(AVAIL + 2, struct.pack("<H", self.avail_idx))
        self.w(VirtioMmio.QUEUE_NOTIFY, 0)

    def used(self) -> tuple[int, int, int]:
        idx = struct.unpack("<H", self.view.read(USED + 2, 2))[0]
        uid, ulen = struct.unpack("<II", self.view.read(USED + used_ring_entry((idx - 1) % NUM), 8))
        return idx, uid, ulen

    def request(self, msg: bytes, capacity: int = 0x1000) -> bytes:
        self.view.write(OUT, msg)
        self.desc(0, OUT | self.bit, len(msg), VirtqDescFlags.NEXT, 1)
        self.desc(1, IN | self.bit, capacity, VirtqDescFlags.WRITE)
        self.post(0)
        idx, uid, ulen = self.used()
        assert idx == self.avail_idx and uid == 0
        return self.view.read(IN, ulen)

    @property
    def needs_reset(self) -> bool:
        return bool(self.r(VirtioMmio.STATUS) & VirtioStatus.DEVICE_NEEDS_RESET)


@pytest.fixture
def plain(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"contents")
    mem = FlatMemory(0x88_0000_0000, RAM_SIZE)
    view = RamView(mem, 0x88_0000_0000, RAM_BASE, RAM_SIZE)
    dev = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "kvm_9p"), memory=view)
    bus = MmioBus()
    bus.register(0x0300_0000, 0x200, dev, "virtio-9p")
    return Driver(bus, 0x0300_0000, view), dev


def test_registers_and_config(plain):
    drv, _dev = plain
    assert drv.r(VirtioMmio.MAGIC_VALUE) == 0x74726976
    assert drv.r(VirtioMmio.VERSION) == 2
    assert drv.r(VirtioMmio.DEVICE_ID) == 9
    assert drv.r(VirtioMmio.VENDOR_ID) == 0x4D564B4C
    feats = drv.features()
    assert feats & feature(VIRTIO_F_VERSION_1) and feats & 1  # MOUNT_TAG
    assert not feats & feature(VIRTIO_F_ACCESS_PLATFORM)  # only forced for realms
    # config: tag_len le16 then the tag, readable a byte at a time
    tag_len = drv.bus.read(0x0300_0000 + VIRTIO_MMIO_CONFIG, 2).value
    tag = bytes(drv.bus.read(0x0300_0000 + VIRTIO_MMIO_CONFIG + 2 + i, 1).value for i in range(tag_len))
    assert tag == b"kvm_9p"
    drv.w(VirtioMmio.QUEUE_SEL, 1)
    assert drv.r(VirtioMmio.QUEUE_NUM_MAX) == 0  # one queue only


def test_feature_negotiation(plain):
    drv, _dev = plain
    assert not drv.negotiate(0)  # VERSION_1 is required for a modern device
    assert not drv.negotiate(feature(VIRTIO_F_VERSION_1) | feature(40))  # not offered
    assert drv.negotiate(feature(VIRTIO_F_VERSION_1))


def test_queue_setup_rejects_bad_sizes(plain):
    drv, _dev = plain
    drv.negotiate(drv.features())
    drv.w(VirtioMmio.QUEUE_SEL, 0)
    drv.w(VirtioMmio.QUEUE_NUM, 3)  # not a power of two
    drv.w(VirtioMmio.QUEUE_READY, 1)
    assert drv.r(VirtioMmio.QUEUE_READY) == 0
    drv.w(VirtioMmio.QUEUE_NUM, 1024)  # above QueueNumMax
    drv.w(VirtioMmio.QUEUE_READY, 1)
    assert drv.r(VirtioMmio.QUEUE_READY) == 0


def test_request_round_trip(plain):
    drv, dev = plain
    drv.setup()
    reply = drv.request(p9.encode(P9.TVERSION, p9.NOTAG, msize=8192, version="9P2000.L"))
    assert p9.decode(reply) == (P9.RVERSION, p9.NOTAG, {"msize": 8192, "version": "9P2000.L"})
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) & 1
    drv.w(VirtioMmio.INTERRUPT_ACK, 1)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 0
    drv.request(p9.encode(P9.TATTACH, 1, fid=0, afid=p9.NOFID, uname="", aname="", n_uname=0))
    drv.request(p9.encode(P9.TWALK, 2, fid=0, newfid=1, wnames=["f"]))
    drv.request(p9.encode(P9.TLOPEN, 3, fid=1, flags=0))
    # the response spreads over two writable descriptors
    drv.view.write(OUT, p9.encode(P9.TREAD, 4, fid=1, offset=0, count=100))
    drv.desc(0, OUT, 23, VirtqDescFlags.NEXT, 5)
    drv.desc(5, IN, 5, VirtqDescFlags.WRITE | VirtqDescFlags.NEXT, 6)
    drv.desc(6, IN + 0x100, 100, VirtqDescFlags.WRITE)
    drv.post(0)
    idx, uid, ulen = drv.used()
    assert (idx, uid, ulen) == (5, 0, 11 + 8)
    reply = drv.view.read(IN, 5) + drv.view.read(IN + 0x100, ulen - 5)
    assert p9.decode(reply)[2]["data"] == b"contents"
    assert not drv.needs_reset and dev.requests == 5


def test_a_driver_suppresses_used_buffer_interrupts_with_avail_no_interrupt(plain):
    drv, dev = plain
    edges: list[int] = []
    dev.on_interrupt = lambda: edges.append(1)
    drv.setup(drv.features() & ~feature(VIRTIO_F_EVENT_IDX))  # the flags mean something only without EVENT_IDX
    assert not dev.event_idx
    drv.view.write(AVAIL, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT))  # §2.7.7: no interrupt wanted
    drv.request(p9.encode(P9.TVERSION, p9.NOTAG, msize=8192, version="9P2000.L"))
    assert edges == [] and drv.r(VirtioMmio.INTERRUPT_STATUS) == 0  # completed all the same
    drv.view.write(AVAIL, struct.pack("<H", 0))  # wanted again: the next used buffer signals
    drv.request(p9.encode(P9.TATTACH, 1, fid=0, afid=p9.NOFID, uname="", aname="", n_uname=0))
    assert edges == [1] and drv.r(VirtioMmio.INTERRUPT_STATUS) & 1


def test_need_event_is_the_specs_vring_need_event():
    # §2.7.10: an event when the entry named was written by moving idx from old to new
    assert need_event(5, 6, 5) and not need_event(5, 5, 4) and not need_event(6, 6, 5)
    assert need_event(3, 8, 0) and not need_event(8, 8, 0)  # a batch: [old, new)
    assert need_event(0xFFFF, 0, 0xFFFF) and need_event(0xFFFE, 1, 0xFFFD)  # across the wrap
    assert not need_event(0xFFFF, 0xFFFF, 0xFFFE)


def test_event_idx_is_offered_and_negotiated_only_when_the_driver_takes_it(tmp_path: Path):
    mem = FlatMemory(0x88_0000_0000, RAM_SIZE)
    view = RamView(mem, 0x88_0000_0000, RAM_BASE, RAM_SIZE)
    on = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "t"), memory=view)
    off = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "t"), memory=view, event_idx=False)
    bus = MmioBus()
    bus.register(0x0300_0000, 0x200, on, "on")
    bus.register(0x0400_0000, 0x200, off, "off")
    drv_on, drv_off = Driver(bus, 0x0300_0000, view), Driver(bus, 0x0400_0000, view)
    assert drv_on.features() & feature(VIRTIO_F_EVENT_IDX) and not drv_off.features() & feature(VIRTIO_F_EVENT_IDX)
    assert not drv_off.negotiate(drv_off.features() | feature(VIRTIO_F_EVENT_IDX))  # not offered: refused
    assert drv_on.negotiate(feature(VIRTIO_F_VERSION_1)) and not on.event_idx
    assert drv_on.negotiate(feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_F_EVENT_IDX)) and on.event_idx
    drv_on.w(VirtioMmio.STATUS, 0)
    assert not on.event_idx  # a reset forgets it


def _used_event(drv: Driver, value: int) -> None:
    drv.view.write(AVAIL + used_event_offset(NUM), struct.pack("<H", value & 0xFFFF))


def _avail_event(drv: Driver) -> int:
    return int(struct.unpack("<H", drv.view.read(USED + avail_event_offset(NUM), 2))[0])


def _tversion(drv: Driver) -> bytes:
    return drv.request(p9.encode(P9.TVERSION, p9.NOTAG, msize=8192, version="9P2000.L"))


def test_with_event_idx_the_device_interrupts_exactly_at_used_event(plain):
    drv, dev = plain
    edges: list[int] = []
    dev.on_interrupt = lambda: edges.append(1)
    drv.setup()  # every feature offered: EVENT_IDX among them
    assert dev.event_idx
    drv.view.write(AVAIL, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT))  # ignored with EVENT_IDX (§2.7.7.2)
    _used_event(drv, 2)  # an interrupt when the device writes used entry 2, not before
    for expect in ([], [], [1]):
        _tversion(drv)
        assert edges == expect
        assert _avail_event(drv) == drv.avail_idx  # a device that answers at the notify wants the next
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) & 1
    drv.w(VirtioMmio.INTERRUPT_ACK, 1)
    _tversion(drv)  # entry 3: used_event is behind, no interrupt
    assert edges == [1] and drv.r(VirtioMmio.INTERRUPT_STATUS) == 0


def test_used_event_is_honoured_across_the_wrap_at_65535(plain):
    drv, dev = plain
    edges: list[int] = []
    dev.on_interrupt = lambda: edges.append(1)
    drv.setup()
    # Both sides start just below the wrap: the ring indices are free-running le16 values.
    q = dev.queues[0]
    q.last_avail = q.used_idx = drv.avail_idx = 0xFFFE
    drv.view.write(USED + 2, struct.pack("<H", 0xFFFE))
    _used_event(drv, 0xFFFF)
    _tversion(drv)  # writes entry 0xFFFE
    assert edges == [] and q.used_idx == 0xFFFF
    _tversion(drv)  # writes entry 0xFFFF: the event, idx wraps to 0
    assert edges == [1] and q.used_idx == 0 and _avail_event(drv) == 0
    drv.w(VirtioMmio.INTERRUPT_ACK, 1)
    _used_event(drv, 0)
    _tversion(drv)  # entry 0 after the wrap
    assert edges == [1, 1] and q.used_idx == 1 and _avail_event(drv) == 1


HOSTILE_REASONS = {
    "out_of_bounds": f"DMA to [{RAM_BASE + RAM_SIZE:#x}, +0x1) is outside guest RAM", "loop": "descriptor chain from 0 loops",
    "length_overflow": f"descriptor chain from 0 is longer than {16 << 20} bytes", "wraps": "descriptor 0 wraps the address space",
    "head": f"descriptor head {NUM + 3} is outside a queue of {NUM}",
    "next": f"descriptor 0 chains to 200, outside a queue of {NUM}",
    "head_one_past": f"descriptor head {NUM} is outside a queue of {NUM}",
    "next_one_past": f"descriptor 0 chains to {NUM}, outside a queue of {NUM}",
    "indirect": "indirect descriptor (VIRTIO_F_INDIRECT_DESC was not offered)",
    "read_after_write": "device-readable descriptor 1 after a device-writable one",
    "ring_outside": "DMA to [0x1000, +0x80) is outside guest RAM",
    "ring_tail_outside": f"DMA to [{RAM_BASE + RAM_SIZE - 8:#x}, +0x46) is outside guest RAM",  # 6 + 8 * NUM
    "avail_jump": f"available index moved by 500 on a queue of {NUM}",
}


@pytest.mark.parametrize("case", ["out_of_bounds", "loop", "length_overflow", "wraps", "head", "next",
                                  "head_one_past", "next_one_past", "indirect", "read_after_write", "ring_outside", "ring_tail_outside",
                                  "avail_jump"])
def test_hostile_chains_are_refused(plain, case: str):
    drv, dev = plain
    drv.setup()
    msg = p9.encode(P9.TVERSION, 1, msize=8192, version="9P2000.L")
    drv.view.write(OUT, msg)
    head = 0
    if case == "out_of_bounds":
        drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, 1)
        drv.desc(1, RAM_BASE + RAM_SIZE - 8, 64, VirtqDescFlags.WRITE)
    elif case == "loop":
        drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, 1)
        drv.desc(1, IN, 16, VirtqDescFlags.WRITE | VirtqDescFlags.NEXT, 2)
        drv.desc(2, IN + 16, 16, VirtqDescFlags.WRITE | VirtqDescFlags.NEXT, 1)
    elif case == "length_overflow":
        drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, 1)
        drv.desc(1, IN, 0xFFFF_FFFF, VirtqDescFlags.WRITE)
    elif case == "wraps":
        drv.desc(0, 0xFFFF_FFFF_FFFF_FFF0, 0x100, 0)
    elif case == "head":
        head = NUM + 3
    elif case == "next":
        drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, 200)
    elif case in ("head_one_past", "next_one_past"):
        # Descriptor NUM lies just past the table: make it a well-formed request, so that
        # only the index check can refuse it.
        drv.view.write(DESC + 16 * NUM, pack_desc(OUT, len(msg), VirtqDescFlags.NEXT, 1))
        drv.desc(1, IN, 4096, VirtqDescFlags.WRITE)
        if case == "head_one_past":
            head = NUM
        else:
            drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, NUM)
    elif case == "indirect":
        drv.desc(0, OUT, 32, VirtqDescFlags.INDIRECT)
    elif case == "read_after_write":
        drv.desc(0, IN, 64, VirtqDescFlags.WRITE | VirtqDescFlags.NEXT, 1)
        drv.desc(1, OUT, len(msg), 0)
    elif case in ("ring_outside", "ring_tail_outside"):
        # below RAM, or a used ring whose first bytes are RAM and whose tail is not
        desc, used = (0x1000, USED) if case == "ring_outside" else (DESC, RAM_BASE + RAM_SIZE - 8)
        drv.w(VirtioMmio.STATUS, 0)
        drv.negotiate(drv.features())
        drv.w(VirtioMmio.QUEUE_NUM, NUM)
        drv.w(VirtioMmio.QUEUE_DESC_LOW, desc)
        drv.w(VirtioMmio.QUEUE_DRIVER_LOW, AVAIL)
        drv.w(VirtioMmio.QUEUE_DEVICE_LOW, used)
        drv.w(VirtioMmio.QUEUE_READY, 1)
        drv.w(VirtioMmio.STATUS, 0xF)
    if case == "avail_jump":
        drv.view.write(AVAIL + 2, struct.pack("<H", 500))
        drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    else:
        drv.post(head)
    assert drv.needs_reset, case
    assert dev.errors == [HOSTILE_REASONS[case]]
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) & 2  # config change
    assert drv.used()[0] == 0  # nothing completed
    assert dev.requests == 0
    # the queue stays stopped until the driver resets the device; then it works again
    drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    drv.avail_idx = 0
    drv.view.write(AVAIL, bytes(4))
    drv.view.write(USED, bytes(4))
    drv.setup()
    assert not drv.needs_reset
    assert p9.decode(drv.request(msg))[0] == P9.RVERSION


def test_realm_shared_view_only(tmp_path: Path):
    """A realm: only pages in RealmVm.shared are reachable; both the canonical and the
    aliased DMA address work; anything else puts the device in NEEDS_RESET."""
    bit = 1 << 32
    mem = FlatMemory(0x88_0000_0000, RAM_SIZE)
    shared = {}
    for i, page in enumerate((DESC, AVAIL, USED, OUT, IN)):
        shared[page | bit] = 0x88_0000_0000 + i * 0x1000  # the host's NS pages, anywhere
    view = SharedView(mem, shared, bit)
    dev = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "t"), access_platform=True, memory=view)
    bus = MmioBus()
    bus.register(0x0300_0000, 0x200, dev)
    for dma_bit in (bit, 0):
        drv = Driver(bus, 0x0300_0000, view, dma_bit)
        assert drv.features() & feature(VIRTIO_F_ACCESS_PLATFORM)
        assert not drv.negotiate(feature(VIRTIO_F_VERSION_1))  # ACCESS_PLATFORM is required
        view.write(AVAIL, bytes(4))
        view.write(USED, bytes(4))
        drv.setup()
        reply = drv.request(p9.encode(P9.TVERSION, 7, msize=8192, version="9P2000.L"))
        assert p9.decode(reply)[0] == P9.RVERSION
    # a buffer in protected (not shared) memory: refused, never read
    drv.desc(0, OUT, 20, VirtqDescFlags.NEXT, 1)
    drv.desc(1, RAM_BASE + 0x20000, 64, VirtqDescFlags.WRITE)
    drv.post(0)
    assert drv.needs_reset
    assert "not memory the realm shared" in dev.errors[-1]
    with pytest.raises(DmaError):
        view.read(RAM_BASE + 0x20000 | bit, 1)
    with pytest.raises(DmaError):
        view.read(OUT + 0xFFF, 2)  # runs into a page that is not shared


@pytest.mark.parametrize("case", ["head_last", "next_last"])
def test_the_last_descriptor_of_the_queue_is_accepted(plain, case: str):
    """Index NUM - 1 is inside the table (the one-past cases above are its other side)."""
    drv, dev = plain
    drv.setup()
    msg = p9.encode(P9.TVERSION, 1, msize=8192, version="9P2000.L")
    drv.view.write(OUT, msg)
    last = NUM - 1
    if case == "head_last":
        drv.desc(last, OUT, len(msg), VirtqDescFlags.NEXT, 1)
        drv.desc(1, IN, 4096, VirtqDescFlags.WRITE)
    else:
        drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, last)
        drv.desc(last, IN, 4096, VirtqDescFlags.WRITE)
    drv.post(last if case == "head_last" else 0)
    idx, uid, ulen = drv.used()
    assert not drv.needs_reset and (idx, uid) == (1, last if case == "head_last" else 0)
    assert p9.decode(drv.view.read(IN, ulen))[0] == P9.RVERSION and dev.requests == 1


def test_a_full_ring_posted_at_once_is_served(plain):
    """The available index may move by exactly the queue size (every entry posted at once),
    each used entry and the used index written as unsigned little-endian values."""
    drv, dev = plain
    drv.setup()
    msg = p9.encode(P9.TVERSION, 1, msize=8192, version="9P2000.L")
    drv.view.write(OUT, msg)
    drv.desc(0, OUT, len(msg), VirtqDescFlags.NEXT, NUM - 1)
    drv.desc(NUM - 1, IN, 4096, VirtqDescFlags.WRITE)
    for slot in range(NUM):
        drv.view.write(AVAIL + avail_ring_entry(slot), struct.pack("<H", 0))
    drv.view.write(AVAIL + 2, struct.pack("<H", NUM))
    drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    assert not drv.needs_reset and dev.errors == [] and dev.requests == NUM
    assert struct.unpack("<H", drv.view.read(USED + 2, 2))[0] == NUM
    for slot in range(NUM):
        uid, ulen = struct.unpack("<II", drv.view.read(USED + used_ring_entry(slot), 8))
        assert uid == 0 and 0 < ulen <= 4096
