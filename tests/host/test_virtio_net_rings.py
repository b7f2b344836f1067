"""virtio-net (virtio 1.2 §5.1) through its registers and split virtqueues, descriptor chains
built in guest memory by the test: the feature bits (§5.1.3), config space (§5.1.4), the
frame sizes a transmit chain may carry (an Ethernet header up to a VLAN-tagged 1518-byte
frame, behind the 12-byte virtio_net_hdr of §5.1.6), receive used lengths and headers,
the backlog bound, notification suppression on both queues (§2.7.7, §2.7.10) and polling."""

from __future__ import annotations

import struct

import pytest

from unirealm.arch.virtio import VirtioMmio
from unirealm.host.devices import virtio_net
from unirealm.host.devices.virtio_mmio import RamView
from unirealm.host.devices.virtio_net import VirtioNet, VirtioNetDevice

from .virtio_support import FlatMemory, RingDriver, ring_driver

RAM_BASE, RAM_SIZE = 0x4000_0000, 0x20_0000
HOST_PA = 0x90_0000_0000
MMIO = 0x0A00_0200
CONFIG = 0x100
NUM = 8
RX, TX = 0, 1  # §5.1.2: receiveq1, transmitq1
RINGS = {RX: (RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000),
         TX: (RAM_BASE + 0x5000, RAM_BASE + 0x6000, RAM_BASE + 0x7000)}
BUF = RAM_BASE + 0x10000
HDR = 12  # §5.1.6 struct virtio_net_hdr with VERSION_1
NEXT, WRITE = 1, 2
USED_BUFFER, CONFIG_CHANGE = 1, 2
VERSION_1, EVENT_IDX, NET_F_MAC = 1 << 32, 1 << 29, 1 << 5
USED_F_NO_NOTIFY = 1
MAC = bytes.fromhex("02aabbccddee")
ETHER = bytes.fromhex("ffffffffffff") + MAC + b"\x08\x00"  # 14 bytes: dst, src, IPv4


def buf(n: int) -> int:
    return BUF + 0x1000 * n


def make(sink=None):
    sent: list[bytes] = []
    view = RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE)
    dev = VirtioNetDevice(VirtioNet(MAC, sent.append if sink is None else sink), memory=view)
    return ring_driver(dev, "virtio-net", MMIO, view, RINGS, NUM), dev, sent


@pytest.fixture
def net():
    return make()


def transmit(drv: RingDriver, frame: bytes, head: int = 0, header: bytes = bytes(HDR), notify: bool = True) -> None:
    """The header and the frame in two readable descriptors, as Linux sends them."""
    drv.view.write(buf(head), header)
    drv.view.write(buf(head) + 0x800, frame)
    drv.chain(TX, head, [(buf(head), len(header), False), (buf(head) + 0x800, len(frame), False)])
    drv.post(TX, head, notify)


def post_rx(drv: RingDriver, heads, size: int = 0x1000, notify: bool = True) -> None:
    for head in heads:
        drv.desc(RX, head, buf(head), size, WRITE)
        drv.post(RX, head, notify)


def test_identity_features_and_config(net):
    drv, dev, _ = net
    assert drv.r(VirtioMmio.DEVICE_ID) == 1
    assert drv.features() == VERSION_1 | EVENT_IDX | NET_F_MAC
    assert bytes(drv.r(CONFIG + i, 1) for i in range(8)) == MAC + b"\x01\x00"  # mac[6], status LINK_UP
    assert dev.mac == MAC
    sizes = []
    for q in range(3):
        drv.w(VirtioMmio.QUEUE_SEL, q)
        sizes.append(drv.r(VirtioMmio.QUEUE_NUM_MAX))
    assert sizes == [256, 256, 0]  # one queue pair, no control queue
    assert dev.name == "virtio-net"
    with pytest.raises(ValueError, match="MAC address is 6 bytes"):
        VirtioNet(MAC[:5])
    quiet = VirtioNetDevice(VirtioNet(MAC), event_idx=False)
    assert quiet.device_features == VERSION_1 | NET_F_MAC


def test_transmit_frame_sizes(net):
    drv, dev, sent = net
    drv.setup()
    vlan_max = ETHER + bytes(1518 - 14)
    sizes = [ETHER, ETHER[:13], vlan_max, vlan_max + b"!", ETHER + bytes(46)]
    for head, frame in enumerate(sizes):
        transmit(drv, frame, head)
    assert sent == [ETHER, vlan_max, ETHER + bytes(46)]  # 13 bytes and 1519 bytes are not frames
    assert drv.used(TX) == [(h, 0) for h in range(5)]  # every chain is returned, nothing written
    assert dev.backend.tx_frames == 3 and dev.backend.tx_dropped == 2
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == USED_BUFFER and not drv.needs_reset


def test_transmit_header_alone_or_cut_short_is_dropped(net):
    drv, dev, sent = net
    drv.setup()
    drv.view.write(buf(0), bytes(HDR))
    drv.desc(TX, 0, buf(0), 5)  # less than a header
    drv.post(TX, 0)
    drv.desc(TX, 1, buf(0), HDR)  # a header and no frame
    drv.post(TX, 1)
    assert sent == [] and dev.backend.tx_dropped == 2 and dev.backend.tx_frames == 0
    assert drv.used(TX) == [(0, 0), (1, 0)]


def test_the_header_is_stripped_whatever_it_says(net):
    drv, _, sent = net
    drv.setup()
    transmit(drv, ETHER + b"payload", header=b"\x01" * HDR)
    assert sent == [ETHER + b"payload"]


def test_a_failing_sink_counts_a_drop_and_keeps_the_device_up():
    def sink(frame: bytes) -> None:
        raise OSError("network down")

    drv, dev, _ = make(sink)
    drv.setup()
    transmit(drv, ETHER)
    transmit(drv, ETHER, 2)
    assert dev.backend.tx_frames == 2 and dev.backend.tx_dropped == 2
    assert drv.used(TX) == [(0, 0), (2, 0)] and not drv.needs_reset and not dev.errors


def test_backend_ignores_the_receive_queue_and_works_without_a_sink():
    backend = VirtioNet(MAC)
    assert backend.handle(RX, bytes(HDR) + ETHER, 0) == b""
    assert backend.tx_frames == 0 and backend.tx_dropped == 0
    assert backend.handle(TX, bytes(HDR) + ETHER, 0) == b""
    assert backend.handle(TX, bytes(HDR), 100) == b""  # dropped: still nothing to answer
    assert backend.tx_frames == 1 and backend.tx_dropped == 1


def test_receive_writes_header_and_frame_and_used_length(net):
    drv, dev, _ = net
    drv.setup()
    frame = ETHER + bytes(range(100))
    dev.receive(frame)
    drv.chain(RX, 2, [(buf(2), HDR, True), (buf(3), 0x1000, True)])
    drv.post(RX, 2)
    assert drv.used(RX) == [(2, HDR + len(frame))]
    # §5.1.6.4: flags 0, gso_type NONE, no checksum fields, num_buffers 1
    assert drv.view.read(buf(2), HDR) == bytes(10) + b"\x01\x00"
    assert drv.view.read(buf(3), len(frame)) == frame
    assert dev.rx_frames == 1 and dev.rx_dropped == 0
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == USED_BUFFER


def test_receive_buffer_exactly_large_enough_is_used(net):
    drv, dev, _ = net
    drv.setup()
    post_rx(drv, [0], size=HDR + len(ETHER))
    dev.receive(ETHER + b"x")  # one byte too long: dropped, the buffer kept
    dev.receive(ETHER)
    assert dev.deliver() == 1  # the dropped frame is not counted as delivered
    assert drv.used(RX) == [(0, HDR + len(ETHER))]
    assert dev.rx_dropped == 1 and dev.rx_frames == 1
    dev.receive(bytes(2000))
    post_rx(drv, [1], size=100, notify=False)
    assert dev.deliver() == 0 and drv.used(RX) == [] and dev.rx_dropped == 2


def test_backlog_is_bounded():
    drv, dev, _ = make()
    drv.setup()
    for i in range(virtio_net.RX_BACKLOG + 3):
        dev.receive(ETHER + i.to_bytes(2, "big"))
    assert len(dev.rx_pending) == virtio_net.RX_BACKLOG == 512 and dev.rx_dropped == 3
    post_rx(drv, range(NUM))
    got = drv.used(RX)
    assert [h for h, _ in got] == list(range(NUM)) and dev.rx_frames == NUM
    assert drv.view.read(buf(7) + HDR, 16) == ETHER + (7).to_bytes(2, "big")  # in arrival order


def test_receive_ring_flags_follow_the_backlog(net):
    drv, dev, _ = net
    drv.setup()
    assert drv.used_flags(RX) == USED_F_NO_NOTIFY  # nothing waits: the device polls the ring
    assert drv.used_flags(TX) == 0
    dev.receive(ETHER)
    dev.deliver()
    assert drv.used_flags(RX) == 0  # a frame waits for a buffer: the driver must notify
    post_rx(drv, [0])
    assert drv.used(RX) == [(0, HDR + len(ETHER))]
    assert drv.used_flags(RX) == USED_F_NO_NOTIFY
    assert dev.deliver() == 0  # nothing waits, nothing to say


def test_event_idx_receive_avail_event(net):
    drv, dev, _ = net
    drv.setup(accept=VERSION_1 | NET_F_MAC | EVENT_IDX)
    post_rx(drv, [0, 1], notify=False)
    dev.receive(ETHER)
    dev.deliver()
    assert drv.used(RX) == [(0, HDR + len(ETHER))]
    assert drv.avail_event(RX) == 1  # nothing waits: one behind the driver's next entry (2)
    for _ in range(2):
        dev.receive(ETHER)
    dev.deliver()
    assert drv.avail_event(RX) == 2  # a frame waits: the driver's next entry is wanted
    post_rx(drv, [2])
    assert len(drv.used(RX)) == 2 and drv.avail_event(RX) == 2
    assert drv.used_flags(RX) == 0


def test_event_idx_used_event_suppresses_interrupts(net):
    drv, _, sent = net
    drv.setup(accept=VERSION_1 | NET_F_MAC | EVENT_IDX)
    drv.set_used_event(TX, 1)  # interrupt when used entry 1 is written (§2.7.7.2)
    transmit(drv, ETHER, 0)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 0
    transmit(drv, ETHER, 1)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == USED_BUFFER and len(sent) == 2


def test_event_idx_tx_polling_with_a_two_entry_ring():
    drv, dev, sent = make()
    drv.num = 2
    drv.setup(accept=VERSION_1 | NET_F_MAC | EVENT_IDX)
    transmit(drv, ETHER, 0)
    assert drv.avail_event(TX) == 1  # half the ring is one entry: the next one
    transmit(drv, ETHER, 0, notify=False)
    assert dev.poll_transmit() == 1 and len(sent) == 2


@pytest.mark.parametrize("state", ["not-ready", "needs-reset", "no-memory"])
def test_poll_transmit_only_looks_at_a_working_queue(net, state: str):
    drv, dev, sent = net
    accept = VERSION_1 | NET_F_MAC | EVENT_IDX
    if state == "not-ready":
        drv.setup(accept=accept, queues=[RX])
    else:
        drv.setup(accept=accept)
    if state == "needs-reset":
        dev.fail("test")
    elif state == "no-memory":
        dev.memory = None
    drv.view.write(RINGS[TX][1] + 2, struct.pack("<H", 1))  # one chain waits, unnotified
    assert dev.poll_transmit() == 0 and sent == []


def test_poll_transmit_refuses_an_unreadable_ring(net):
    drv, dev, _ = net
    drv.setup(accept=VERSION_1 | NET_F_MAC | EVENT_IDX)
    dev.queues[TX].avail = RAM_BASE + RAM_SIZE  # as if the driver's ring had gone
    assert dev.poll_transmit() == 0
    assert drv.needs_reset and drv.r(VirtioMmio.INTERRUPT_STATUS) & CONFIG_CHANGE
    assert len(dev.errors) == 1 and "outside guest RAM" in dev.errors[0]


def test_after_a_reset_frames_are_dropped_and_notifications_asked_for_again(net):
    drv, dev, _ = net
    drv.setup()
    drv.w(VirtioMmio.STATUS, 0)
    dev.receive(ETHER)  # no DRIVER_OK: dropped
    assert not dev.rx_pending and dev.rx_dropped == 1
    drv.setup()
    assert drv.used_flags(RX) == USED_F_NO_NOTIFY  # written afresh in the new ring


@pytest.mark.parametrize("case", ["readable", "readable-after-writable", "head-out-of-range", "loop"])
def test_hostile_receive_chains(net, case: str):
    drv, dev, _ = net
    drv.setup()
    dev.receive(ETHER)
    head = 0
    if case == "readable":
        drv.desc(RX, 0, buf(0), 0x1000)
    elif case == "readable-after-writable":
        drv.chain(RX, 0, [(buf(0), 0x800, True), (buf(1), 0x800, False)])
    elif case == "head-out-of-range":
        head = 0xFFFF
    else:
        drv.chain(RX, 0, [(buf(0), 0x800, True), (buf(1), 0x800, True)])
        drv.desc(RX, 1, buf(1), 0x800, WRITE | NEXT, 0)
    drv.post(RX, head)
    assert drv.needs_reset and len(dev.errors) == 1 and drv.used(RX) == []
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == CONFIG_CHANGE
    assert dev.rx_frames == 0


def test_a_used_ring_outside_memory_is_refused_and_reported():
    """The receive ring's flags are written at the first look after DRIVER_OK: a used ring
    outside guest RAM then puts the device in NEEDS_RESET, and the VMM's on_error hears why."""
    reported: list[str] = []
    view = RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE)
    dev = VirtioNetDevice(VirtioNet(MAC), memory=view, on_error=reported.append)
    drv = ring_driver(dev, "virtio-net", MMIO, view, RINGS, NUM)
    assert drv.negotiate(VERSION_1 | NET_F_MAC)
    drv.queue(RX, RINGS[RX][0], RINGS[RX][1], RAM_BASE + RAM_SIZE)
    drv.w(VirtioMmio.STATUS, 0xF)
    assert drv.needs_reset
    assert len(dev.errors) == 1 and "outside guest RAM" in dev.errors[0] and reported == dev.errors
