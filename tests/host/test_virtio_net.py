"""virtio-net (virtio 1.1 §5.1) on the virtio-mmio transport, driven by a scripted driver with
an RX queue (0) and a TX queue (1) over a plain VM's RamView and a realm's SharedView: config
space, feature negotiation, TX and RX round trips, polling delivery, hostile chains."""

from __future__ import annotations

import struct

import pytest

from unirealm.arch.virtio import (
    VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_CONFIG,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtioMmio,
    VirtioStatus,
    VirtqDescFlags,
    avail_event_offset,
    avail_ring_entry,
    feature,
    pack_desc,
    used_ring_entry,
)
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.virtio_mmio import RamView, SharedView
from unirealm.host.devices.virtio_net import (
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_HDR_SIZE,
    VirtioNet,
    VirtioNetDevice,
    parse_mac,
)

from .virtio_support import FlatMemory, ScriptedDriver

RAM_BASE, RAM_SIZE = 0x8000_0000, 0x10_0000
HOST_PA = 0x88_0000_0000
MMIO = 0x0300_0000
NUM = 8
MAC = parse_mac("02:15:15:15:15:15")
# per queue: descriptor table, avail ring, used ring, buffers (NUM x 2 KiB)
QUEUES = {0: (RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000, RAM_BASE + 0x4000),
          1: (RAM_BASE + 0x9000, RAM_BASE + 0xA000, RAM_BASE + 0xB000, RAM_BASE + 0xC000)}
BUF = 2048
FRAME = bytes.fromhex("ffffffffffff" "021515151515" "0806") + bytes(range(46))


class NetDriver(ScriptedDriver):
    def __init__(self, bus: MmioBus, view, dma_bit: int = 0) -> None:
        super().__init__(bus, MMIO)
        self.view, self.bit = view, dma_bit
        self.avail_idx = {0: 0, 1: 0}
        self.used_seen = {0: 0, 1: 0}

    def setup(self, event_idx: bool = False) -> None:
        """Every feature offered, VIRTIO_F_EVENT_IDX only with `event_idx` (the ring flags)."""
        offered = self.features()
        assert self.negotiate(offered if event_idx else offered & ~feature(VIRTIO_F_EVENT_IDX))
        for q, (desc, avail, used, _) in QUEUES.items():
            self.view.write(avail, bytes(4))
            self.view.write(used, bytes(4))
            self.w(VirtioMmio.QUEUE_SEL, q)
            assert self.r(VirtioMmio.QUEUE_NUM_MAX) >= NUM
            self.w(VirtioMmio.QUEUE_NUM, NUM)
            for reg, addr in ((VirtioMmio.QUEUE_DESC_LOW, desc), (VirtioMmio.QUEUE_DRIVER_LOW, avail),
                              (VirtioMmio.QUEUE_DEVICE_LOW, used)):
                self.w(reg, (addr | self.bit) & 0xFFFF_FFFF)
                self.w(reg + 4, (addr | self.bit) >> 32)
            self.w(VirtioMmio.QUEUE_READY, 1)
            assert self.r(VirtioMmio.QUEUE_READY) == 1
        self.w(VirtioMmio.STATUS, 0xF)
        self.avail_idx = {0: 0, 1: 0}
        self.used_seen = {0: 0, 1: 0}

    def post(self, q: int, head: int, addr: int, length: int, flags: int, notify: bool = True) -> None:
        desc, avail, _, _ = QUEUES[q]
        self.view.write(desc + 16 * head, pack_desc(addr | self.bit, length, flags, 0))
        self.view.write(avail + avail_ring_entry(self.avail_idx[q] % NUM), struct.pack("<H", head))
        self.avail_idx[q] += 1
        self.view.write(avail + 2, struct.pack("<H", self.avail_idx[q] & 0xFFFF))
        if notify:
            self.w(VirtioMmio.QUEUE_NOTIFY, q)

    def post_rx(self, count: int = NUM, notify: bool = True) -> None:
        for i in range(count):
            self.post(0, i, QUEUES[0][3] + i * BUF, BUF, VirtqDescFlags.WRITE, notify)

    def send(self, frame: bytes, slot: int = 0) -> None:
        addr = QUEUES[1][3] + slot * BUF
        self.view.write(addr, bytes(VIRTIO_NET_HDR_SIZE) + frame)
        self.post(1, slot, addr, VIRTIO_NET_HDR_SIZE + len(frame), 0)

    def used(self, q: int) -> list[tuple[int, int]]:
        used = QUEUES[q][2]
        idx = struct.unpack("<H", self.view.read(used + 2, 2))[0]
        out = []
        while self.used_seen[q] != idx:
            out.append(struct.unpack("<II", self.view.read(used + used_ring_entry(self.used_seen[q] % NUM), 8)))
            self.used_seen[q] = (self.used_seen[q] + 1) & 0xFFFF
        return out

    def received(self) -> list[tuple[bytes, bytes]]:
        """(header, frame) for each new used RX entry."""
        out = []
        for head, length in self.used(0):
            raw = self.view.read(QUEUES[0][3] + head * BUF, length)
            out.append((raw[:VIRTIO_NET_HDR_SIZE], raw[VIRTIO_NET_HDR_SIZE:]))
        return out

    @property
    def needs_reset(self) -> bool:
        return bool(self.r(VirtioMmio.STATUS) & VirtioStatus.DEVICE_NEEDS_RESET)


def make(view, realm: bool = False, dma_bit: int = 0):
    sent: list[bytes] = []
    dev = VirtioNetDevice(VirtioNet(MAC, sent.append), access_platform=realm, memory=view)
    bus = MmioBus()
    bus.register(MMIO, 0x200, dev, "virtio-net")
    return NetDriver(bus, view, dma_bit), dev, sent


@pytest.fixture
def plain():
    return make(RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE))


def test_config_space_and_ids(plain):
    drv, _, _ = plain
    assert drv.r(VirtioMmio.MAGIC_VALUE) == 0x74726976
    assert drv.r(VirtioMmio.DEVICE_ID) == 1
    cfg = bytes(drv.r(VIRTIO_MMIO_CONFIG + i, 1) for i in range(6))
    assert cfg == MAC
    assert drv.r(VIRTIO_MMIO_CONFIG + 6, 2) == 1  # VIRTIO_NET_S_LINK_UP
    assert drv.r(VIRTIO_MMIO_CONFIG, 4) == int.from_bytes(MAC[:4], "little")


def test_feature_negotiation(plain):
    drv, _, _ = plain
    offered = drv.features()
    assert offered == feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_F_EVENT_IDX)
    assert not drv.negotiate(feature(VIRTIO_NET_F_MAC))  # VERSION_1 is required
    assert not drv.negotiate(offered | feature(0))  # VIRTIO_NET_F_CSUM was not offered
    assert drv.negotiate(feature(VIRTIO_F_VERSION_1))
    assert drv.negotiate(offered)


def test_realm_forces_access_platform():
    drv, _, _ = make(RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE), realm=True)
    offered = drv.features()
    assert offered & feature(VIRTIO_F_ACCESS_PLATFORM)
    assert not drv.negotiate(offered & ~feature(VIRTIO_F_ACCESS_PLATFORM))
    assert drv.negotiate(offered)


def test_tx_hands_frames_to_the_sink(plain):
    drv, dev, sent = plain
    drv.setup()
    drv.send(FRAME)
    drv.send(FRAME[::-1][:60], slot=1)
    assert sent == [FRAME, FRAME[::-1][:60]]
    assert drv.used(1) == [(0, 0), (1, 0)]
    # too short, too long, or a header alone: dropped, the buffer still returned
    drv.send(b"\x01" * 10, slot=2)
    drv.send(b"\x01" * 4000, slot=3)
    assert sent == [FRAME, FRAME[::-1][:60]] and dev.backend.tx_dropped == 2
    assert [h for h, _ in drv.used(1)] == [2, 3]
    assert not drv.needs_reset


def test_rx_waits_for_buffers_and_is_delivered_on_poll(plain):
    drv, dev, _ = plain
    dev.receive(FRAME)  # before DRIVER_OK: dropped
    assert dev.rx_dropped == 1
    drv.setup()
    dev.receive(FRAME)
    dev.receive(FRAME + b"x")
    assert drv.received() == []  # no buffer posted yet
    drv.post_rx(1)  # the notify fills the one buffer
    got = drv.received()
    assert len(got) == 1 and got[0][1] == FRAME
    hdr = got[0][0]
    assert hdr[:10] == bytes(10) and struct.unpack("<H", hdr[10:])[0] == 1  # num_buffers
    drv.post(0, 1, QUEUES[0][3] + BUF, BUF, VirtqDescFlags.WRITE, notify=False)
    assert drv.received() == []
    drv.r(VirtioMmio.INTERRUPT_STATUS)  # any register access delivers
    assert [f for _, f in drv.received()] == [FRAME + b"x"]
    dev.receive(FRAME[:20])
    assert dev.deliver() == 0  # no buffer left: it waits
    drv.post_rx(1, notify=False)
    assert dev.deliver() == 1  # the VMM's WFI hook
    assert [f for _, f in drv.received()] == [FRAME[:20]]


def test_rx_notifications_wanted_only_while_frames_wait(plain):
    """virtio 1.2 §2.7.10: the RX used ring's VIRTQ_USED_F_NO_NOTIFY is clear exactly while
    frames wait in the backlog for buffers, so the driver notifies only then."""
    drv, dev, _ = plain
    drv.setup()
    used = QUEUES[0][2]

    def flags() -> int:
        return struct.unpack("<H", drv.view.read(used, 2))[0]

    drv.post_rx(1)
    assert flags() == VIRTQ_USED_F_NO_NOTIFY  # nothing waits: buffers are found at delivery
    dev.receive(FRAME)
    dev.receive(FRAME + b"y")
    assert dev.deliver() == 1 and flags() == 0  # one frame waits for a buffer: notify me
    drv.post(0, 1, QUEUES[0][3] + BUF, BUF, VirtqDescFlags.WRITE, notify=True)
    assert len(drv.received()) == 2 and flags() == VIRTQ_USED_F_NO_NOTIFY
    drv.post(0, 2, QUEUES[0][3] + 2 * BUF, BUF, VirtqDescFlags.WRITE, notify=False)
    dev.receive(FRAME)
    assert dev.deliver() == 1  # an unnotified buffer is used all the same
    drv.w(VirtioMmio.STATUS, 0)  # reset: the flag is the driver's again
    assert dev.rx_notify_wanted


def test_rx_frame_larger_than_buffer_is_dropped(plain):
    drv, dev, _ = plain
    drv.setup()
    drv.post(0, 0, QUEUES[0][3], 64, VirtqDescFlags.WRITE, notify=False)
    dev.receive(bytes(100))
    dev.receive(FRAME[:40])
    drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    assert [f for _, f in drv.received()] == [FRAME[:40]]
    assert dev.rx_dropped == 1 and not drv.needs_reset


def test_reset_drops_waiting_frames(plain):
    drv, dev, _ = plain
    drv.setup()
    dev.receive(FRAME)
    drv.w(VirtioMmio.STATUS, 0)
    assert not dev.rx_pending


@pytest.mark.parametrize("case", ["readable-rx", "outside-ram", "bad-head", "avail-jump"])
def test_hostile_rx_chains_refused(plain, case: str):
    drv, dev, sent = plain
    drv.setup()
    dev.receive(FRAME)
    if case == "readable-rx":
        drv.post(0, 0, QUEUES[0][3], BUF, 0)
    elif case == "outside-ram":
        drv.post(0, 0, RAM_BASE + RAM_SIZE - 16, BUF, VirtqDescFlags.WRITE)
    elif case == "bad-head":
        drv.view.write(QUEUES[0][1] + avail_ring_entry(0), struct.pack("<H", NUM + 3))
        drv.view.write(QUEUES[0][1] + 2, struct.pack("<H", 1))
        drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    else:
        drv.view.write(QUEUES[0][1] + 2, struct.pack("<H", 1000))
        drv.w(VirtioMmio.QUEUE_NOTIFY, 0)
    assert drv.needs_reset
    assert dev.errors
    # the device stays stopped until reset, then works again
    dev.receive(FRAME)
    assert dev.deliver() == 0
    drv.setup()
    drv.send(FRAME)
    assert sent == [FRAME]


def test_hostile_tx_chain_refused(plain):
    drv, _dev, sent = plain
    drv.setup()
    drv.post(1, 0, RAM_BASE - 0x1000, 64, 0)
    assert drv.needs_reset and sent == []


def test_realm_shared_view_round_trip():
    """A realm: rings and buffers in shared pages, aliased or canonical DMA addresses; a
    buffer in protected memory puts the device in NEEDS_RESET and is never touched."""
    bit = 1 << 32
    mem = FlatMemory(HOST_PA, RAM_SIZE)
    shared = {}
    pages = [a for q in QUEUES.values() for a in q[:3]]
    pages += [QUEUES[q][3] + off for q in QUEUES for off in range(0, NUM * BUF, 0x1000)]
    for i, page in enumerate(pages):
        shared[page | bit] = HOST_PA + i * 0x1000
    view = SharedView(mem, shared, bit)
    for dma_bit in (bit, 0):
        drv, dev, sent = make(view, realm=True, dma_bit=dma_bit)
        drv.setup()
        drv.send(FRAME)
        assert sent == [FRAME]
        drv.post_rx()
        for i in range(3):
            dev.receive(FRAME + bytes([i]))
        assert dev.deliver() == 3
        assert [f for _, f in drv.received()] == [FRAME + bytes([i]) for i in range(3)]
    for _ in range(NUM - 3):  # use up the buffers still posted
        dev.receive(FRAME)
    assert dev.deliver() == NUM - 3
    drv.post(0, 5, RAM_BASE + 0x40000, BUF, VirtqDescFlags.WRITE, notify=False)  # not shared
    dev.receive(FRAME)
    assert dev.deliver() == 0
    assert drv.needs_reset and "not memory the realm shared" in dev.errors[-1]


# --- the VMM's NIC wiring ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    from unirealm.host.image import build_image

    path = tmp_path_factory.mktemp("img") / "empty.img"
    path.write_bytes(build_image(None))
    return str(path)


def vmm_for(image: str, *argv: str):
    import io

    from unirealm.host.cmdline import parse_run_args
    from unirealm.host.vmm import Vmm

    return Vmm(parse_run_args(["-k", image, *argv]), io.BytesIO(), None, log_output=io.BytesIO())


def test_vmm_nic_wiring_and_refusals(image: str):
    import libfdt

    from unirealm.host.vmm import VmmError

    assert vmm_for(image).nics == []  # no -n: no NIC (see README)
    assert vmm_for(image, "-n", "mode=none").nics == []
    for argv, message in ((["-n", "mode=tap,vhost=1"], "vhost-net"), (["-n", "mode=tap,mq=2"], "one queue pair"),
                          (["-n", "mode=user,fd=3"], "needs mode=tap"), (["-n", "mode=user,trans=pci"], "trans=pci")):
        with pytest.raises(VmmError, match=message):
            vmm_for(image, *argv)
    vmm = vmm_for(image, "-n", "mode=user,guest_mac=02:00:00:00:00:07", "--realm")
    ((dev, nic),) = vmm.nics
    assert dev.mac == bytes.fromhex("020000000007") and nic.mode == "user"
    assert dev.device_features & feature(VIRTIO_F_ACCESS_PLATFORM)
    fdt = libfdt.Fdt(vmm.dtb)
    node = fdt.path_offset("/virtio@3000000")
    assert fdt.getprop(node, "compatible").as_str() == "virtio,mmio"
    assert vmm.bus.read(0x0300_0000 + VirtioMmio.DEVICE_ID, 4).value == 1


def test_vmm_wait_moves_host_traffic_to_the_guest(image: str):
    """A host client on a forwarded port: the VMM's WFI hook polls the network and the SYN
    towards the guest lands in a posted RX buffer."""
    import socket

    from unirealm.arch.net import (
        KVMTOOL_GATEWAY_IP,
        KVMTOOL_GUEST_IP,
        ArpOp,
        TcpFlags,
        arp_frame,
        parse_frame,
    )

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vmm = vmm_for(image, "-n", f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:8123")
    ((dev, _),) = vmm.nics
    view = RamView(FlatMemory(HOST_PA, RAM_SIZE), HOST_PA, RAM_BASE, RAM_SIZE)
    dev.memory = view
    vmm.start_networks()
    try:
        drv = NetDriver(vmm.bus, view)
        drv.setup()
        drv.post_rx()
        # the guest ARPs for its gateway first (the network learns its MAC from that)
        drv.send(arp_frame(ArpOp.REQUEST, dev.mac, KVMTOOL_GUEST_IP, bytes(6), KVMTOOL_GATEWAY_IP))
        assert parse_frame(drv.received()[0][1]).arp.op == ArpOp.REPLY
        client = socket.create_connection(("127.0.0.1", port), timeout=3)
        try:
            got = []
            for _ in range(500):
                vmm.wait()
                got = drv.received()
                if got:
                    break
            assert got, "no frame reached the guest"
            pf = parse_frame(got[0][1])
            assert pf.tcp.flags == TcpFlags.SYN and pf.tcp.dport == 8123
        finally:
            client.close()
    finally:
        vmm.stop_networks()


def _avail_event(drv: NetDriver, q: int) -> int:
    return int(struct.unpack("<H", drv.view.read(QUEUES[q][2] + avail_event_offset(NUM), 2))[0])


def test_event_idx_tx_asks_for_a_notify_per_half_ring_and_is_polled_meanwhile(plain):
    drv, dev, sent = plain
    drv.setup(event_idx=True)
    assert dev.event_idx
    drv.send(FRAME)  # the first entry: avail_event 0 (the zeroed ring) names it
    assert sent == [FRAME] and dev.queues[1].last_avail == 1
    assert _avail_event(drv, 1) == 1 + NUM // 2 - 1  # then only once half the ring waits
    assert dev.poll_transmit() == 0  # nothing waits
    for slot in (1, 2):  # posted without a notify, as the event index allows
        drv.view.write(QUEUES[1][3] + slot * BUF, bytes(VIRTIO_NET_HDR_SIZE) + FRAME)
        drv.post(1, slot, QUEUES[1][3] + slot * BUF, VIRTIO_NET_HDR_SIZE + len(FRAME), 0, notify=False)
    assert len(sent) == 1
    assert dev.poll_transmit() == 2  # the VMM's look at an exit takes them
    assert sent == [FRAME] * 3 and [h for h, _ in drv.used(1)] == [0, 1, 2]
    assert _avail_event(drv, 1) == 3 + NUM // 2 - 1


def test_without_event_idx_nothing_is_polled(plain):
    drv, dev, sent = plain
    drv.setup()
    drv.post(1, 0, QUEUES[1][3], VIRTIO_NET_HDR_SIZE + len(FRAME), 0, notify=False)
    assert dev.poll_transmit() == 0 and sent == []  # a notify is the only way in
    assert _avail_event(drv, 1) == 0  # nor is avail_event written


def test_event_idx_rx_avail_event_wants_buffers_only_while_frames_wait(plain):
    drv, dev, _ = plain
    drv.setup(event_idx=True)
    drv.post_rx(2)
    for _ in range(3):
        dev.receive(FRAME)
    dev.deliver()
    assert len(drv.received()) == 2 and dev.rx_pending
    assert _avail_event(drv, 0) == 2  # a frame waits: the driver's next entry is wanted
    drv.post(0, 0, QUEUES[0][3], BUF, VirtqDescFlags.WRITE, notify=True)
    assert len(drv.received()) == 1 and not dev.rx_pending
    assert _avail_event(drv, 0) == 2  # nothing waits: one behind the driver's next entry (3)
    flags = struct.unpack("<H", drv.view.read(QUEUES[0][2], 2))[0]
    assert flags == 0  # the flags are not used with EVENT_IDX


def test_poll_transmit_waits_for_driver_ok_and_a_bad_ring_is_refused(plain):
    drv, dev, sent = plain
    offered = drv.features()
    assert drv.negotiate(offered)
    drv.w(VirtioMmio.QUEUE_SEL, 1)
    drv.w(VirtioMmio.QUEUE_NUM, NUM)
    for reg, addr in ((VirtioMmio.QUEUE_DESC_LOW, QUEUES[1][0]), (VirtioMmio.QUEUE_DRIVER_LOW, RAM_BASE + RAM_SIZE),
                      (VirtioMmio.QUEUE_DEVICE_LOW, QUEUES[1][2])):
        drv.w(reg, addr & 0xFFFF_FFFF)
        drv.w(reg + 4, addr >> 32)
    drv.w(VirtioMmio.QUEUE_READY, 1)  # an available ring outside guest RAM
    assert dev.poll_transmit() == 0 and not drv.needs_reset  # no DRIVER_OK yet: not looked at
    drv.w(VirtioMmio.STATUS, 0xF)
    assert dev.poll_transmit() == 0 and drv.needs_reset and sent == []  # looked at: refused, not raised


class _FrameArrives:
    """A network whose next poll hands the NIC one frame (as the gateway does when a host
    client's segment arrives)."""

    def __init__(self, device: VirtioNetDevice, frame: bytes) -> None:
        self.device, self.frame, self.polls = device, frame, 0

    def poll(self, timeout: float = 0.0) -> None:
        self.polls += 1
        if self.frame:
            self.device.receive(self.frame)
            self.frame = b""


def test_a_frame_arriving_at_an_interrupt_ack_write_is_not_acknowledged_unseen(image: str):
    """An InterruptACK write may be posted: the PE is already past it, reading the rings,
    when the VMM emulates it. A frame the network hands over at that exit must therefore
    land after the write, its used-buffer notification still set (virtio 1.2 §4.2.2.1);
    landing before it, the write would acknowledge a buffer the driver never saw and the
    guest would sleep until its next timer."""
    from unirealm.arch.virtio import VirtioMmio

    from .virtio_support import RingDriver

    vmm = vmm_for(image, "-n", "mode=user")
    ((dev, _),) = vmm.nics
    base = 0x3000000
    ram, pa = 0x8000_0000, 0x90_0000_0000
    view = RamView(FlatMemory(pa, 0x20000), pa, ram, 0x20000)
    dev.memory = view
    drv = RingDriver(vmm.bus, base, view, {0: (ram + 0x1000, ram + 0x2000, ram + 0x3000),
                                           1: (ram + 0x5000, ram + 0x6000, ram + 0x7000)}, 8)
    drv.setup()
    drv.w(VirtioMmio.STATUS, drv.r(VirtioMmio.STATUS) | 4)  # DRIVER_OK
    drv.desc(0, 0, ram + 0x10000, 0x1000, 2)  # one device-writable RX buffer
    drv.post(0, 0)
    net = _FrameArrives(dev, bytes(60))
    vmm.networks = [net]  # type: ignore[list-item]
    vmm._net_polled = 0.0  # the poll interval has passed
    assert vmm.mmio(base + VirtioMmio.INTERRUPT_ACK, True, 4, 3) == 0
    assert net.polls == 1 and drv.used_idx(0) == 1  # the frame arrived at this exit
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) & 1  # and its notification is still there to see
