"""The guest's virtio-net driver (guest/net/virtio_net.py) against the VMM's virtio-net device
(host/devices/virtio_net.py) on its virtio-mmio transport, in process over a RAM view:
the MAC from config space, frames both ways byte-exact and in order through many ring
turns, TX buffers reclaimed, RX notifications only while frames wait, frame size bounds;
and a device that writes used entries that cannot be true (ids not posted, lengths past the
buffer, an index that moves too far): the entries are dropped and counted, never read."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from tests.host.virtio_support import FlatMemory

from unirealm.arch.net import ETH_FRAME_MAX, ETH_HLEN, VIRTIO_NET_HDR_SIZE
from unirealm.arch.virtio import (
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_VERSION_1,
    VirtioDeviceId,
    VirtioMmio,
    VirtioStatus,
    avail_event_offset,
    feature,
    used_event_offset,
    used_ring_entry,
)
from unirealm.guest.net.virtio_net import BUF_SIZE, RING_SIZE, TX_RING_SIZE, VirtioNet, find_nics
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.virtio_mmio import RamView
from unirealm.host.devices.virtio_net import VIRTIO_NET_F_MAC, VirtioNetDevice, parse_mac
from unirealm.host.devices.virtio_net import VirtioNet as NetBackend

from .test_console_drivers import RAM_BASE, RAM_SIZE, FakeCpu, FakeKernel

DEV = 0x1300_0000
MAC = parse_mac("02:15:15:15:15:15")


def frame(n: int, size: int = 60) -> bytes:
    body = bytes((n + i) & 0xFF for i in range(size - ETH_HLEN))
    return MAC + bytes.fromhex("52540012 3456") + b"\x08\x00" + body


class NetCpu(FakeCpu):
    def __init__(self, bus: MmioBus, ram: FlatMemory) -> None:
        super().__init__(bus, ram)
        self.notifies: list[int] = []

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        if addr == DEV + VirtioMmio.QUEUE_NOTIFY:
            self.notifies.append(value)
        super().mmio_write(addr, size, value)

    def rndr(self) -> int:
        return 0x1122_3344_5566_7788


def nic_pair(backend: NetBackend | None = None, event_idx: bool = False,
             ) -> tuple[VirtioNet, VirtioNetDevice, list[bytes], NetCpu, RamView]:
    """The driver against the device; the device offers VIRTIO_F_EVENT_IDX with `event_idx`
    (without it, the ring flags are what the tests see)."""
    sent: list[bytes] = []
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    view = RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE)
    device = VirtioNetDevice(backend or NetBackend(MAC, sent.append), memory=view, event_idx=event_idx)
    bus = MmioBus()
    bus.register(DEV, 0x200, device, "virtio-net")
    cpu = NetCpu(bus, ram)
    kernel = FakeKernel(cpu)
    kernel.cpu = cpu
    from unirealm.guest.virtio import VirtioMmioTransport

    t = VirtioMmioTransport(cpu, DEV)  # type: ignore[arg-type]
    assert t.probe() == VirtioDeviceId.NET
    return VirtioNet(kernel, t), device, sent, cpu, view


def test_mac_and_features_from_the_device() -> None:
    nic, device, _, _, _ = nic_pair()
    assert nic.mac == MAC
    assert nic.t.features == feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC)
    assert device.status & VirtioStatus.DRIVER_OK
    assert nic.rx.num == RING_SIZE and nic.tx.num == TX_RING_SIZE
    assert nic.rx.posted == set(range(RING_SIZE))  # every RX buffer handed over at start


def test_without_the_mac_feature_a_local_random_mac() -> None:
    backend = NetBackend(MAC)
    backend.features = 0  # type: ignore[misc]
    nic, _, _, _, _ = nic_pair(backend)
    assert nic.mac == bytes([0x02, 0x88, 0x77, 0x66, 0x55, 0x44])  # locally administered, unicast


def test_frames_to_the_host_in_order_through_many_ring_turns() -> None:
    nic, device, sent, cpu, _ = nic_pair()
    frames = [frame(i, 60 + i) for i in range(3 * RING_SIZE + 5)]
    for f in frames:
        assert nic.send(f)
    assert sent == frames and nic.tx_frames == len(frames) and nic.tx_dropped == 0
    assert device.backend.tx_frames == len(frames)
    assert cpu.notifies.count(1) == len(frames)  # one notify (one exit) per frame


@pytest.mark.parametrize(("size", "ok"), [(ETH_HLEN - 1, False), (ETH_HLEN, True), (ETH_FRAME_MAX, True),
                                         (ETH_FRAME_MAX + 1, False), (0, False)])
def test_tx_frame_size_bounds(size: int, ok: bool) -> None:
    nic, _, sent, _, _ = nic_pair()
    data = (MAC * 300)[:size]
    assert nic.send(data) is ok
    assert sent == ([data] if ok else [])
    assert nic.tx_dropped == (0 if ok else 1)


def test_a_device_holding_every_tx_buffer_drops_frames_not_the_nic() -> None:
    nic, device, sent, _, _ = nic_pair()
    held = device._process
    device._process = lambda index, q, mem: None if index == 1 else held(index, q, mem)  # type: ignore[method-assign]
    for i in range(TX_RING_SIZE):
        assert nic.send(frame(i))
    assert not nic.send(frame(99)) and nic.tx_dropped == 1
    device._process = held  # type: ignore[method-assign]
    device.notify(1)  # the device takes them all now
    assert nic.send(frame(100))  # completed buffers are reclaimed
    assert len(sent) == TX_RING_SIZE + 1 and nic.bad_entries == 0


def test_frames_from_the_host_in_order_and_buffers_given_back() -> None:
    nic, device, _, cpu, _ = nic_pair()
    got: list[bytes] = []
    frames = [frame(i, 60 + 3 * i) for i in range(3 * RING_SIZE)]
    for start in range(0, len(frames), 10):
        for f in frames[start : start + 10]:
            device.receive(f)
        device.deliver()
        got += nic.poll()
    assert got == frames and nic.rx_frames == len(frames)
    assert nic.rx.posted == set(range(RING_SIZE)) and nic.bad_entries == 0
    assert cpu.notifies.count(0) == 1  # only the start's: no frame ever waited for a buffer
    assert nic.poll() == []


def test_rx_notifies_only_while_frames_wait_for_buffers() -> None:
    nic, device, _, cpu, _ = nic_pair()
    for i in range(RING_SIZE + 3):  # three more than there are buffers
        device.receive(frame(i))
    device.deliver()
    before = cpu.notifies.count(0)
    first = nic.poll()  # buffers back while frames wait: the device asked to be told
    assert len(first) == RING_SIZE and cpu.notifies.count(0) == before + 1
    second = nic.poll()  # the notify delivered the rest
    assert [f[-1] for f in second] == [frame(i)[-1] for i in range(RING_SIZE, RING_SIZE + 3)]
    nic.poll()
    assert cpu.notifies.count(0) == before + 1  # nothing waits now: no more notifies


def last_used(device: VirtioNetDevice, view: RamView, uid: int | None = None, length: int | None = None) -> None:
    q = device.queues[0]
    slot = q.used + used_ring_entry((q.used_idx - 1) % q.num)
    old_id, old_len = struct.unpack("<II", view.read(slot, 8))
    view.write(slot, struct.pack("<II", old_id if uid is None else uid, old_len if length is None else length))


@pytest.mark.parametrize("tamper", [
    lambda d, v: last_used(d, v, uid=RING_SIZE),  # no such buffer
    lambda d, v: last_used(d, v, uid=0xFFFF_FFFF),
    lambda d, v: last_used(d, v, length=BUF_SIZE + 1),  # past the buffer
    lambda d, v: last_used(d, v, length=0xFFFF_FFFF),
])
def test_used_entries_that_cannot_be_true_are_dropped(tamper: Callable[[VirtioNetDevice, RamView], None]) -> None:
    nic, device, _, _, view = nic_pair()
    device.receive(frame(1))
    device.deliver()
    tamper(device, view)
    assert nic.poll() == [] and nic.bad_entries == 1
    device.receive(frame(2))
    device.deliver()
    assert nic.poll() == [frame(2)]  # the ring goes on


def test_an_id_not_posted_twice_is_counted() -> None:
    nic, device, _, _, view = nic_pair()
    device.receive(frame(1))
    device.deliver()
    q = device.queues[0]
    first = struct.unpack("<II", view.read(q.used + used_ring_entry(0), 8))
    device.receive(frame(2))
    device.deliver()
    view.write(q.used + used_ring_entry(1), struct.pack("<II", *first))  # the same buffer again
    assert nic.poll() == [frame(1)] and nic.bad_entries == 1


def test_a_used_index_moved_past_the_posted_buffers_takes_only_those() -> None:
    nic, device, _, _, view = nic_pair()
    device.receive(frame(1))
    device.deliver()
    q = device.queues[0]
    view.write(q.used + 2, struct.pack("<H", (q.used_idx + 1000) & 0xFFFF))
    frames = nic.poll()
    assert frames[0] == frame(1) and nic.rx.bad >= 1
    assert len(frames) <= RING_SIZE


@pytest.mark.parametrize(("length", "kept"), [(VIRTIO_NET_HDR_SIZE + ETH_HLEN - 1, False),
                                              (VIRTIO_NET_HDR_SIZE + ETH_HLEN, True)])
def test_a_runt_is_dropped_and_its_buffer_reposted(length: int, kept: bool) -> None:
    nic, device, _, _, view = nic_pair()
    device.receive(frame(1))
    device.deliver()
    last_used(device, view, length=length)
    got = nic.poll()
    assert got == ([frame(1)[:ETH_HLEN]] if kept else [])
    assert nic.rx_dropped == (0 if kept else 1) and nic.bad_entries == 0
    assert nic.rx.posted == set(range(RING_SIZE))


class Facts:
    def __init__(self, devices: list[object]) -> None:
        self.devices = devices


class Dev:
    compatible = "virtio,mmio"
    irq = None  # no interrupt: the driver polls

    def __init__(self, base: int) -> None:
        self.path, self.base, self.size, self.address = f"/virtio@{base:x}", base, 0x200, base


def test_find_nics_takes_net_devices_only_and_logs_a_failing_one() -> None:
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    bus = MmioBus()
    good = VirtioNetDevice(NetBackend(MAC), memory=RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE))
    legacy = NetBackend(MAC)
    legacy.features = 0  # type: ignore[misc]
    bad = VirtioNetDevice(legacy, memory=RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE))
    bad.device_features = 0  # offers not even VERSION_1
    bus.register(DEV, 0x200, good, "net0")
    bus.register(DEV + 0x200, 0x200, bad, "net1")
    kernel = FakeKernel(NetCpu(bus, ram))
    kernel.info = Facts([Dev(DEV), Dev(DEV + 0x200), Dev(DEV + 0x400)])  # type: ignore[attr-defined]
    nics = find_nics(kernel)
    assert [n.mac for n in nics] == [MAC]
    assert any("virtio-net /virtio@13000200: the device does not offer VIRTIO_F_VERSION_1" in x for x in kernel.logged)


# --- VIRTIO_F_EVENT_IDX (virtio 1.2 §2.7.10) ------------------------------------------------

def test_event_idx_is_taken_when_offered() -> None:
    nic, device, _, _, _ = nic_pair(event_idx=True)
    assert nic.t.features == feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_F_EVENT_IDX)
    assert nic.t.event_idx and device.event_idx
    off, device_off, _, _, _ = nic_pair()
    assert not off.t.event_idx and not device_off.event_idx


def test_event_idx_tx_notifies_once_per_half_ring_and_the_polled_rest_arrives_in_order() -> None:
    nic, device, sent, cpu, _ = nic_pair(event_idx=True)
    frames = [frame(i, 60 + i) for i in range(3 * TX_RING_SIZE + 5)]
    for n, f in enumerate(frames):
        assert nic.send(f)
        if n % 7 == 6:
            device.poll_transmit()  # the VMM's look at an exit
    device.poll_transmit()
    assert sent == frames and nic.tx_dropped == 0 and nic.bad_entries == 0
    assert 1 <= cpu.notifies.count(1) <= len(frames) // 7  # the polls took what was not notified


def test_event_idx_tx_unpolled_device_is_notified_before_the_ring_fills() -> None:
    nic, device, sent, cpu, _ = nic_pair(event_idx=True)
    frames = [frame(i) for i in range(4 * TX_RING_SIZE + 7)]
    for n, f in enumerate(frames):
        assert nic.send(f)  # never dropped: the device asked for a notify at half the ring
        assert n + 1 - len(sent) < TX_RING_SIZE // 2  # no more than that ever waits
    assert nic.tx_dropped == 0 and len(sent) < len(frames)
    assert cpu.notifies.count(1) <= 2 * len(frames) // (TX_RING_SIZE // 2)
    device.poll_transmit()
    assert sent == frames


def test_event_idx_rx_interrupts_once_per_delivery_and_used_event_follows() -> None:
    nic, device, _, cpu, view = nic_pair(event_idx=True)
    edges: list[int] = []
    device.on_interrupt = lambda: edges.append(1)
    rx = nic.rx
    got: list[bytes] = []
    frames = [frame(i) for i in range(3 * RING_SIZE)]
    for start in range(0, len(frames), 5):
        for f in frames[start : start + 5]:
            device.receive(f)
        device.deliver()
        device.interrupt_status = 0  # the handler's acknowledge
        got += nic.poll()
        event = struct.unpack("<H", view.read(rx.pool.dma_base + rx.avail + used_event_offset(rx.num), 2))[0]
        assert event == rx.used_idx  # the next entry
    assert got == frames
    assert len(edges) == -(-len(frames) // 5)  # one per delivery: the first frame of each
    assert cpu.notifies.count(0) == 1  # no frame ever waited for a buffer


@pytest.mark.parametrize("event", [0, 1, 0x7FFF, 0xFFFE, 0xFFFF, "moving"])
def test_hostile_tx_avail_event_neither_hangs_nor_loses_a_frame(event: int | str) -> None:
    """A device that writes any avail_event (fixed, or a different one at every look) and
    never looks at the ring by itself: the driver notifies when the event says so or when it
    has no free buffer, so every frame still goes out and nothing is dropped."""
    nic, device, sent, _, view = nic_pair(event_idx=True)
    tx = nic.tx
    where = tx.pool.dma_base + tx.used + avail_event_offset(tx.num)
    values = iter(range(0, 1 << 20, 7919))
    device.avail_event_for = lambda index, q: (next(values) if event == "moving" else event)  # type: ignore[assignment,method-assign]
    view.write(where, struct.pack("<H", 0 if event == "moving" else event))
    frames = [frame(i) for i in range(3 * TX_RING_SIZE)]
    for f in frames:
        assert nic.send(f)
    nic.kick(force=True)
    assert sent == frames and nic.tx_dropped == 0 and nic.bad_entries == 0


@pytest.mark.parametrize("event", [0, 0x8000, 0xFFFF])
def test_hostile_rx_avail_event_costs_only_frames(event: int) -> None:
    """A device that says it needs no RX notifications while frames wait for buffers (or
    asks for every one): the driver goes on; frames come when the device delivers."""
    nic, device, _, _, view = nic_pair(event_idx=True)
    rx = nic.rx
    for i in range(RING_SIZE + 3):
        device.receive(frame(i))
    device.deliver()
    view.write(rx.pool.dma_base + rx.used + avail_event_offset(rx.num), struct.pack("<H", event))
    first = nic.poll()
    assert first[:RING_SIZE] == [frame(i) for i in range(RING_SIZE)]
    device.deliver()  # the VMM's next look
    rest = first[RING_SIZE:] + nic.poll()
    assert rest == [frame(i) for i in range(RING_SIZE, RING_SIZE + 3)] and nic.bad_entries == 0
