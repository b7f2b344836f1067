"""The guest's request virtqueue (guest/virtio.py RequestQueue, under 9p) against the VMM's
virtio-9p device, with a device that breaks the rules in its used ring: the used index may
move by exactly the one request in flight, the used id must be the head posted, the length
at most the buffer (a length equal to the buffer is fine)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.host.virtio_support import FlatMemory

from unirealm.arch import p9
from unirealm.arch.p9 import P9
from unirealm.arch.virtio import (
    VIRTIO_F_EVENT_IDX,
    VirtioDeviceId,
    VirtioMmio,
    avail_event_offset,
    feature,
    used_event_offset,
    used_ring_entry,
)
from unirealm.guest.virtio import DmaPool, RequestQueue, VirtioError, VirtioMmioTransport
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.virtio_9p import P9Server, Virtio9p
from unirealm.host.devices.virtio_mmio import RamView, VirtioMmioDevice

from .test_console_drivers import RAM_BASE, RAM_SIZE, FakeCpu, FakeKernel

DEV = 0x1200_0000
BUFFER = 8192
TVERSION = p9.encode(P9.TVERSION, p9.NOTAG, msize=BUFFER, version="9P2000.L")


def queue_pair(tmp_path: Path, event_idx: bool = False) -> tuple[RequestQueue, VirtioMmioDevice, RamView]:
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    view = RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE)
    device = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "kvm_9p"), memory=view)
    bus = MmioBus()
    bus.register(DEV, 0x200, device, "virtio-9p")
    transport = VirtioMmioTransport(FakeCpu(bus, ram), DEV)
    assert transport.probe() == VirtioDeviceId.NINEP
    transport.negotiate(feature(VIRTIO_F_EVENT_IDX) if event_idx else 0)
    assert transport.event_idx == event_idx
    queue = RequestQueue(transport, DmaPool(FakeKernel(transport.cpu), 8), 0, BUFFER)  # type: ignore[arg-type]
    transport.driver_ok()
    return queue, device, view


def tamper_after_notify(device: VirtioMmioDevice, view: RamView, uid: int | None = None,
                        length: int | None = None, used_idx: int | None = None) -> None:
    """After the device answers, rewrite its newest used entry (what a hostile VMM may do)."""
    orig = device.notify

    def notify(index: int) -> None:
        orig(index)
        q = device.queues[index]
        slot = q.used + used_ring_entry((q.used_idx - 1) % q.num)
        old_id, old_len = struct.unpack("<II", view.read(slot, 8))
        view.write(slot, struct.pack("<II", old_id if uid is None else uid, old_len if length is None else length))
        if used_idx is not None:
            view.write(q.used + 2, struct.pack("<H", used_idx))
    device.notify = notify  # type: ignore[method-assign]


def test_a_request_round_trips(tmp_path: Path) -> None:
    queue, _, _ = queue_pair(tmp_path)
    for _ in range(3):
        assert p9.decode(queue.request(TVERSION))[0] == P9.RVERSION
    assert not queue.broken and queue.requests == 3


def test_a_length_equal_to_the_buffer_is_accepted(tmp_path: Path) -> None:
    queue, device, view = queue_pair(tmp_path)
    tamper_after_notify(device, view, length=BUFFER)
    assert len(queue.request(TVERSION)) == BUFFER and not queue.broken


@pytest.mark.parametrize(("tamper", "message"), [
    ({"length": BUFFER + 1}, "does not match the request"),
    ({"uid": 1}, "does not match the request"),
    ({"uid": 0xFFFF_FFFF}, "does not match the request"),
    ({"used_idx": 2}, "used index moved from 0 to 2"),
    ({"used_idx": 0xFFFF}, "used index moved from 0 to 65535"),
])
def test_hostile_used_entries_are_refused(tmp_path: Path, tamper: dict[str, int], message: str) -> None:
    queue, device, view = queue_pair(tmp_path)
    tamper_after_notify(device, view, **tamper)
    with pytest.raises(VirtioError, match=message):
        queue.request(TVERSION)
    assert queue.broken


def _notifies(queue: RequestQueue) -> list[int]:
    """Count the queue's QueueNotify writes from now on."""
    seen: list[int] = []
    cpu = queue.t.cpu
    write = cpu.mmio_write

    def counting(addr: int, size: int, value: int) -> None:
        if addr == DEV + VirtioMmio.QUEUE_NOTIFY:
            seen.append(value)
        write(addr, size, value)
    cpu.mmio_write = counting  # type: ignore[method-assign]
    return seen


def test_event_idx_requests_round_trip_across_the_index_wrap(tmp_path: Path) -> None:
    queue, device, view = queue_pair(tmp_path, event_idx=True)
    q = device.queues[0]
    # both sides just below 65535: the free-running le16 indices wrap in the middle
    queue.avail_idx = queue.used_idx = q.last_avail = q.used_idx = 0xFFFD
    view.write(q.used + 2, struct.pack("<H", 0xFFFD))
    view.write(q.used + avail_event_offset(q.num), struct.pack("<H", 0xFFFD))
    notifies = _notifies(queue)
    for _ in range(6):
        assert p9.decode(queue.request(TVERSION))[0] == P9.RVERSION
    assert queue.used_idx == 3 and q.used_idx == 3 and not queue.broken
    assert len(notifies) == 6  # the device asked for every one: avail_event followed
    assert struct.unpack("<H", view.read(q.used + avail_event_offset(q.num), 2))[0] == 3


def test_event_idx_suppresses_interrupts_until_a_request_waits(tmp_path: Path) -> None:
    queue, device, view = queue_pair(tmp_path, event_idx=True)
    edges: list[int] = []
    device.on_interrupt = lambda: edges.append(1)
    queue._suppress(True)
    for _ in range(3):
        queue.request(TVERSION)
    assert edges == []  # used_event one behind: no interrupt while nobody waits
    queue._suppress(False)  # a request that must wait asks for the entry in flight
    assert struct.unpack("<H", view.read(queue.pool.cpu_base + queue.avail + used_event_offset(queue.num), 2))[0] == 3
    queue.request(TVERSION)
    assert edges == [1]


@pytest.mark.parametrize("event", [0, 0x7FFF, 0xFFFF, "moving"])
def test_hostile_avail_event_neither_hangs_nor_loses_a_request(tmp_path: Path, event: int | str) -> None:
    """A device that declines every notification (avail_event never the entry posted), or
    writes a different index at every request: each request is still answered, with one
    notify the driver sends once the answer is not there."""
    queue, device, view = queue_pair(tmp_path, event_idx=True)
    q = device.queues[0]
    values = iter(range(1, 1 << 20, 4099))
    device.avail_event_for = lambda index, vq: (next(values) if event == "moving" else event)  # type: ignore[assignment,method-assign]
    view.write(q.used + avail_event_offset(q.num), struct.pack("<H", 0xFFFF if event == "moving" else event))
    notifies = _notifies(queue)
    for _ in range(5):
        assert p9.decode(queue.request(TVERSION))[0] == P9.RVERSION
    assert not queue.broken and len(notifies) == 5 and queue.t.cpu.wfis == 0  # type: ignore[attr-defined]


def test_config_reads_stay_inside_the_devices_window(tmp_path: Path) -> None:
    """The window the device tree gives (0x200 here) ends the configuration space, which
    starts at 0x100 (virtio 1.2 §4.2.2): its last byte is readable, one past it is not."""
    queue, _, _ = queue_pair(tmp_path)
    t = queue.t
    assert len(t.config(0xFC, 4)) == 4
    for offset, size in ((0xFD, 4), (0x100, 1), (-1, 2), (0, -1)):
        with pytest.raises(VirtioError, match="runs past the device's window"):
            t.config(offset, size)


def test_queue_addresses_above_4_gib_reach_the_device_whole(tmp_path: Path) -> None:
    """A realm's rings sit in the unprotected alias, above 4 GiB for an IPA space of 33 bits
    or more: each 64-bit address goes as its low and high words (QueueDescLow/High, ...)."""
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    device = VirtioMmioDevice(Virtio9p(P9Server(str(tmp_path)), "kvm_9p"), memory=RamView(ram, RAM_BASE, RAM_BASE,
                                                                                           RAM_SIZE))
    bus = MmioBus()
    bus.register(DEV, 0x200, device, "virtio-9p")
    transport = VirtioMmioTransport(FakeCpu(bus, ram), DEV)
    transport.probe()
    transport.negotiate(0)
    pool = DmaPool(FakeKernel(transport.cpu), 8)  # type: ignore[arg-type]
    pool.dma_base = pool.cpu_base | 1 << 33  # a realm's unprotected alias, IPA width 34
    _, desc, avail, used = transport.setup_queue(0, pool, 8)
    q = device.queues[0]
    assert (q.desc, q.avail, q.used) == (pool.dma_base + desc, pool.dma_base + avail, pool.dma_base + used)
