"""virtio-console (virtio 1.2 §5.3) on the virtio-mmio transport, driven directly through its
registers and split virtqueues (§2.7) by a scripted driver whose descriptor chains the test
builds in guest memory: config space (§5.3.4), features (§5.3.3, no MULTIPORT: §5.3.6.2's
control queues do not exist), transmitq output and used entries of length 0, receiveq input,
used-buffer and configuration-change interrupts (§4.2.2), and chains the device refuses."""

from __future__ import annotations

import struct

import pytest

from unirealm.arch.virtio import VirtioMmio
from unirealm.host.devices.virtio_console import VirtioConsole, VirtioConsoleDevice
from unirealm.host.devices.virtio_mmio import RamView
from unirealm.host.hostile import Hostile

from .virtio_support import FlatMemory, RingDriver, ring_driver

RAM_BASE, RAM_SIZE = 0x4000_0000, 0x10_0000
HOST_PA = 0x90_0000_0000
MMIO = 0x0A00_0000
CONFIG = 0x100  # §4.2.2: the device-specific configuration space
NUM = 8
RX, TX = 0, 1  # §5.3.2: receiveq(port0), transmitq(port0)
RINGS = {RX: (RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000),
         TX: (RAM_BASE + 0x5000, RAM_BASE + 0x6000, RAM_BASE + 0x7000)}
BUF = RAM_BASE + 0x10000  # buffers: 4 KiB apart from here
NEXT, WRITE, INDIRECT = 1, 2, 4  # §2.7.5 descriptor flags
USED_BUFFER, CONFIG_CHANGE = 1, 2  # §4.2.2 InterruptStatus bits
NEEDS_RESET = 0x40  # §2.1 DEVICE_NEEDS_RESET
VERSION_1, EVENT_IDX = 1 << 32, 1 << 29
USED_F_NO_NOTIFY, AVAIL_F_NO_INTERRUPT = 1, 1


def buf(n: int) -> int:
    return BUF + 0x1000 * n


def make(event_idx: bool = True, memory: bool = True, **backend: int):
    out: list[bytes] = []
    view = RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE)
    dev = VirtioConsoleDevice(VirtioConsole(out.append, **backend), memory=view if memory else None,
                              event_idx=event_idx)
    return ring_driver(dev, "virtio-console", MMIO, view, RINGS, NUM), dev, out


@pytest.fixture
def con():
    return make()


def config_bytes(drv: RingDriver, size: int = 12) -> bytes:
    return bytes(drv.r(CONFIG + i, 1) for i in range(size))


def test_identity_config_space_and_queues(con):
    drv, dev, _ = con
    assert drv.r(VirtioMmio.MAGIC_VALUE) == 0x74726976 and drv.r(VirtioMmio.VERSION) == 2
    assert drv.r(VirtioMmio.DEVICE_ID) == 3
    # §5.3.4: le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr
    assert config_bytes(drv) == struct.pack("<HHII", 80, 24, 1, 0)
    assert drv.r(CONFIG + 4, 4) == 1 and drv.r(CONFIG + 2, 2) == 24
    assert drv.r(CONFIG + 12, 4) == 0  # past the structure
    sizes = []
    for q in range(3):
        drv.w(VirtioMmio.QUEUE_SEL, q)
        sizes.append(drv.r(VirtioMmio.QUEUE_NUM_MAX))
    assert sizes == [128, 128, 0]  # without MULTIPORT: port 0's two queues only
    assert dev.name == "virtio-console"


def test_other_sizes_appear_in_config_space():
    drv, _, _ = make(cols=132, rows=50)
    assert config_bytes(drv, 4) == struct.pack("<HH", 132, 50)


def test_features_offer_no_console_bits_and_refuse_them(con):
    drv, _, _ = con
    assert drv.features() == VERSION_1 | EVENT_IDX
    for bit in (0, 1, 2):  # F_SIZE, F_MULTIPORT, F_EMERG_WRITE: not offered, so not accepted
        assert not drv.negotiate(VERSION_1 | 1 << bit)
    assert not drv.negotiate(0)  # a modern device requires VERSION_1
    assert drv.negotiate(VERSION_1)
    assert make(event_idx=False)[0].features() == VERSION_1


def test_transmit_chain_is_one_write_and_used_length_zero(con):
    drv, dev, out = con
    drv.setup()
    drv.view.write(buf(0), b"hello, ")
    drv.view.write(buf(1), b"world\n")
    drv.view.write(buf(2), b"\xee" * 16)
    drv.chain(TX, 2, [(buf(0), 7, False), (buf(1), 6, False), (buf(2), 16, True)])
    drv.post(TX, 2)
    assert out == [b"hello, world\n"]  # both readable buffers, in one write
    assert drv.used(TX) == [(2, 0)]  # §2.7.8: nothing was written into the chain
    assert drv.view.read(buf(2), 16) == b"\xee" * 16
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == USED_BUFFER
    drv.w(VirtioMmio.INTERRUPT_ACK, USED_BUFFER)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 0
    drv.view.write(buf(3), b"more")
    drv.desc(TX, 5, buf(3), 4)
    drv.post(TX, 5)
    assert out == [b"hello, world\n", b"more"] and drv.used(TX) == [(5, 0)]
    assert dev.backend.tx_bytes == 17
    assert dev.rx_bytes == 0 and not drv.needs_reset


def test_an_empty_transmit_chain_writes_nothing(con):
    drv, dev, out = con
    drv.setup()
    drv.desc(TX, 0, buf(0), 0)
    drv.post(TX, 0)
    assert out == [] and drv.used(TX) == [(0, 0)] and dev.backend.tx_bytes == 0


def test_the_backend_writes_only_transmitq_and_never_answers():
    out: list[bytes] = []
    backend = VirtioConsole(out.append)
    assert backend.handle(RX, b"abc", 100) == b""
    assert out == [] and backend.tx_bytes == 0
    assert backend.handle(TX, b"abc", 100) == b""
    assert out == [b"abc"] and backend.tx_bytes == 3
    silent = VirtioConsole()
    assert silent.handle(TX, b"dropped", 0) == b"" and silent.tx_bytes == 7


def test_avail_no_interrupt_suppresses_the_used_buffer_interrupt(con):
    drv, _, out = con
    drv.setup()
    drv.view.write(RINGS[TX][1], struct.pack("<H", AVAIL_F_NO_INTERRUPT))
    drv.view.write(buf(0), b"q")
    drv.desc(TX, 0, buf(0), 1)
    drv.post(TX, 0)
    assert out == [b"q"] and drv.used(TX) == [(0, 0)]
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 0


def test_input_waits_for_a_receive_buffer_and_fills_it(con):
    drv, dev, _ = con
    drv.setup()
    dev.feed(b"typed")
    dev.feed(b" text")
    assert dev.pending_input == 10 and dev.has_input()
    drv.desc(RX, 3, buf(0), 64, WRITE)
    drv.post(RX, 3)
    assert drv.used(RX) == [(3, 10)]  # §2.7.8: the bytes written
    assert drv.view.read(buf(0), 10) == b"typed text"
    assert dev.pending_input == 0 and not dev.has_input() and dev.rx_bytes == 10
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == USED_BUFFER


def test_input_spreads_over_a_chain_and_over_buffers(con):
    drv, dev, _ = con
    drv.setup()
    data = bytes(range(256)) * 2
    dev.feed(data)
    drv.chain(RX, 0, [(buf(0), 100, True), (buf(1), 150, True)])
    drv.desc(RX, 4, buf(2), 400, WRITE)
    drv.post(RX, 0, notify=False)
    drv.post(RX, 4, notify=False)
    assert dev.deliver() == 2  # the VMM's hook at a WFI exit
    assert drv.used(RX) == [(0, 250), (4, 262)]
    assert drv.view.read(buf(0), 100) + drv.view.read(buf(1), 150) == data[:250]
    assert drv.view.read(buf(2), 262) == data[250:]
    assert dev.rx_bytes == 512
    dev.feed(b"late")
    assert dev.deliver() == 0 and dev.pending_input == 4  # no buffer: it waits, never dropped


def test_any_register_access_delivers_input(con):
    drv, dev, _ = con
    drv.setup()
    drv.desc(RX, 0, buf(0), 8, WRITE)
    drv.post(RX, 0, notify=False)
    dev.feed(b"x")
    assert drv.used(RX) == []
    drv.r(VirtioMmio.INTERRUPT_STATUS)
    assert drv.used(RX) == [(0, 1)]


def test_end_of_input_is_one_empty_buffer(con):
    drv, dev, _ = con
    drv.setup()
    dev.feed(b"last")
    dev.set_eof()
    assert dev.eof
    dev.feed(b"")  # nothing: accepted
    with pytest.raises(ValueError, match="virtio-console: input after end of input"):
        dev.feed(b"more")
    for head in (0, 1, 2):
        drv.desc(RX, head, buf(head), 64, WRITE)
        drv.post(RX, head, notify=False)
    assert dev.deliver() == 2
    assert drv.used(RX) == [(0, 4), (1, 0)]  # the bytes, then an empty buffer: end of input
    assert not dev.has_input() and dev.deliver() == 0 and drv.used(RX) == []  # said once only
    # a reset driver learns of it again
    drv.setup()
    drv.desc(RX, 0, buf(0), 64, WRITE)
    drv.post(RX, 0)
    assert drv.used(RX) == [(0, 0)]


def test_no_input_no_end_leaves_buffers_posted(con):
    drv, dev, _ = con
    drv.setup()
    assert dev.eof is False and dev.has_input() is False  # bools, as typed
    drv.desc(RX, 0, buf(0), 64, WRITE)
    drv.post(RX, 0)
    assert dev.deliver() == 0 and drv.used(RX) == []


def test_receive_queue_asks_for_no_notifications(con):
    """§2.7.10: without EVENT_IDX the device sets VIRTQ_USED_F_NO_NOTIFY in the receive
    queue's used ring (it polls that ring); the transmit queue's flags are left alone."""
    drv, dev, _ = con
    drv.setup()
    assert drv.used_flags(RX) == USED_F_NO_NOTIFY
    assert drv.used_flags(TX) == 0
    drv.setup()  # after a reset the new ring is flagged again
    assert drv.used_flags(RX) == USED_F_NO_NOTIFY
    assert not dev.errors


def test_receive_queue_avail_event_stays_one_behind(con):
    """With EVENT_IDX the ring flags are not used: avail_event lies one entry behind the
    next the driver writes, so (vring_need_event) the driver never notifies."""
    drv, dev, _ = con
    drv.setup(accept=VERSION_1 | EVENT_IDX)
    assert dev.event_idx
    assert drv.used_flags(RX) == 0
    assert drv.avail_event(RX) == 0xFFFF
    dev.feed(b"abc")
    for head in (0, 1):
        drv.desc(RX, head, buf(head), 2, WRITE)
        drv.post(RX, head, notify=False)
    assert dev.deliver() == 2 and drv.used(RX) == [(0, 2), (1, 1)]
    assert drv.avail_event(RX) == 1


def test_a_used_ring_outside_memory_is_refused_at_queue_ready(con):
    drv, dev, _ = con
    assert drv.negotiate(VERSION_1)
    drv.queue(RX, RINGS[RX][0], RINGS[RX][1], RAM_BASE + RAM_SIZE)
    assert drv.needs_reset and len(dev.errors) == 1 and "outside guest RAM" in dev.errors[0]
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) & CONFIG_CHANGE


def test_without_memory_nothing_is_touched_until_input():
    drv, dev, _ = make(memory=False)
    drv.setup()  # the receive queue's flags cannot be written: no error for that
    assert not drv.needs_reset and not dev.errors
    dev.feed(b"x")
    dev.deliver()
    assert drv.needs_reset and dev.errors == ["no guest memory view"]


def test_hostile_used_entries_and_noted_replies():
    """`--hostile used-bogus,toctou`: the receive queue's used entry is the attack's, and the
    bytes written into a receive buffer are noted for the later overwrite."""
    drv, dev, _ = make()
    dev.hostile = Hostile(frozenset({"toctou"}))
    drv.setup()
    dev.feed(b"abcd")
    drv.desc(RX, 1, buf(0), 16, WRITE)
    drv.post(RX, 1)
    assert drv.used(RX) == [(1, 4)]  # the honest entry: this attack leaves the ring alone
    assert len(dev.hostile.written) == 1 and dev.hostile.written[0][1:] == (buf(0), 4)
    dev.hostile = Hostile(frozenset({"used-bogus"}))
    seen = set()
    for _ in range(8):
        dev.feed(b"abcd")
        drv.desc(RX, 1, buf(0), 16, WRITE)
        drv.post(RX, 1)
        ((uid, ulen),) = drv.used(RX)
        assert (uid >= NUM and ulen == 4) or (uid == 1 and ulen > 16)  # past the queue, or past the buffer
        seen.add(uid == 1)
    assert seen == {True, False}


# --- chains the device refuses (§2.7.5: DEVICE_NEEDS_RESET, never an exception) ---------------
@pytest.mark.parametrize("case", ["head-out-of-range", "next-out-of-range", "loop", "too-long", "outside-ram",
                                  "readable-after-writable", "indirect", "avail-jump"])
def test_hostile_transmit_chains_are_refused(con, case: str):
    drv, dev, out = con
    drv.setup()
    head = 0
    if case == "head-out-of-range":
        head = NUM
    elif case == "next-out-of-range":
        drv.desc(TX, 0, buf(0), 4, NEXT, NUM + 1)
    elif case == "loop":
        drv.desc(TX, 0, buf(0), 4, NEXT, 1)
        drv.desc(TX, 1, buf(1), 4, NEXT, 0)
    elif case == "too-long":
        drv.desc(TX, 0, buf(0), (16 << 20) + 1)
    elif case == "outside-ram":
        drv.desc(TX, 0, RAM_BASE + RAM_SIZE - 2, 4)
    elif case == "readable-after-writable":
        drv.chain(TX, 0, [(buf(0), 4, True), (buf(1), 4, False)])
    elif case == "indirect":
        drv.desc(TX, 0, buf(0), 16, INDIRECT)
    if case == "avail-jump":
        drv.view.write(RINGS[TX][1] + 2, struct.pack("<H", NUM + 1))
        drv.w(VirtioMmio.QUEUE_NOTIFY, TX)
    else:
        drv.post(TX, head)
    assert drv.needs_reset and len(dev.errors) == 1
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == CONFIG_CHANGE
    assert out == [] and drv.used(TX) == []
    # stopped until the driver resets the device; then it works again
    drv.view.write(buf(5), b"ok")
    drv.desc(TX, 3, buf(5), 2)
    drv.post(TX, 3)
    assert out == []
    drv.setup()
    assert not drv.needs_reset
    drv.desc(TX, 3, buf(5), 2)
    drv.post(TX, 3)
    assert out == [b"ok"] and drv.used(TX) == [(3, 0)]


@pytest.mark.parametrize("case", ["readable", "readable-after-writable", "loop", "outside-ram"])
def test_hostile_receive_chains_are_refused(con, case: str):
    drv, dev, _ = con
    drv.setup()
    dev.feed(b"secret")
    if case == "readable":
        drv.desc(RX, 0, buf(0), 64)
    elif case == "readable-after-writable":
        drv.chain(RX, 0, [(buf(0), 4, True), (buf(1), 4, False)])
    elif case == "loop":
        drv.desc(RX, 0, buf(0), 4, WRITE | NEXT, 0)
    else:
        drv.desc(RX, 0, RAM_BASE - 0x1000, 64, WRITE)
    drv.post(RX, 0)
    assert drv.needs_reset and len(dev.errors) == 1
    assert drv.used(RX) == [] and dev.pending_input == 6 and dev.rx_bytes == 0
    assert b"secret" not in drv.view.read(buf(0), 64)


def test_a_receive_chain_with_no_room_is_refused_while_input_waits(con):
    """A zero-length receive buffer cannot carry waiting input; returned with used length 0 it
    would read as the end of input (and the real end would never be said). It is refused."""
    drv, dev, _ = con
    drv.setup()
    dev.feed(b"abc")
    drv.desc(RX, 0, buf(0), 0, WRITE)
    drv.post(RX, 0)
    assert drv.used(RX) == [] and drv.needs_reset
    assert dev.errors == ["receive chain with no room for the waiting input"]
    drv.setup()  # a reset driver with real buffers gets the input, then the end of input
    dev.set_eof()
    for head in (0, 1):
        drv.desc(RX, head, buf(head), 16, WRITE)
        drv.post(RX, head, notify=False)
    assert dev.deliver() == 2 and drv.used(RX) == [(0, 3), (1, 0)]


def test_at_the_end_of_input_a_chain_with_no_room_says_so(con):
    drv, dev, _ = con
    drv.setup()
    dev.set_eof()
    drv.desc(RX, 0, buf(0), 0, WRITE)
    drv.post(RX, 0)
    assert drv.used(RX) == [(0, 0)] and not drv.needs_reset and not dev.has_input()
