"""virtio-net (device id 1, virtio 1.1 §5.1) on the modern virtio-mmio transport, as
kvmtool's virtio/net.c with its user-mode network.

- Config space (§5.1.4): the guest's MAC, then `status` (VIRTIO_NET_S_LINK_UP).
- Features: VIRTIO_NET_F_MAC (5); the transport adds VERSION_1 (32) and, for a realm,
  forces ACCESS_PLATFORM (33). No checksum offload, no GSO, no mergeable RX buffers: every
  frame travels whole, with its 12-byte virtio_net_hdr_v1 (§5.1.6, `num_buffers` set to 1
  by the device) in front.
- Queue 0 receives, queue 1 transmits (§5.1.2). TX chains are taken at QueueNotify, their
  header dropped and the frame handed to `sink`. Frames from the network wait in a bounded
  queue and are written into the driver's posted RX buffers whenever the driver touches the
  device (any register access or a notify) and whenever the VMM calls `deliver` (at every
  WFI/REC exit it sees): there is no interrupt controller, the driver polls the used ring.

A frame longer than the posted buffer is dropped (counted in `rx_dropped`), the buffer is
kept. A chain the device cannot trust is refused exactly as the transport refuses it:
DEVICE_NEEDS_RESET, and the queue stops until the driver resets the device.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable

from unirealm.arch.net import (
    ETH_FRAME_MAX,
    ETH_HLEN,
    VIRTIO_NET_HDR_SIZE,
    VIRTIO_NET_RX_QUEUE,
    VIRTIO_NET_TX_QUEUE,
    VirtioNetFeature,
    VirtioNetHdr,
    mac_bytes,
    virtio_net_config,
)
from unirealm.arch.virtio import (
    VirtioDeviceId,
    VirtioInterrupt,
    VirtioStatus,
    avail_ring_entry,
    feature,
    used_ring_entry,
)

from .virtio_mmio import ChainError, DmaError, MemoryView, VirtioMmioDevice, Virtqueue

log = logging.getLogger("unirealm.net")

VIRTIO_NET_F_MAC = VirtioNetFeature.MAC
RX_QUEUE, TX_QUEUE = VIRTIO_NET_RX_QUEUE, VIRTIO_NET_TX_QUEUE
QUEUE_NUM_MAX = 256  # kvmtool's VIRTIO_NET_QUEUE_SIZE
ETH_MAX_FRAME = ETH_FRAME_MAX + 4  # room for one VLAN tag
RX_BACKLOG = 512  # frames waiting for RX buffers; more are dropped, as a full NIC ring drops


parse_mac = mac_bytes
RX_HEADER = VirtioNetHdr(num_buffers=1).pack()  # before every received frame: no flags, no GSO


class VirtioNet:
    """The virtio-net device type: MAC in config space, an RX and a TX queue."""

    device_id = VirtioDeviceId.NET
    features = feature(VIRTIO_NET_F_MAC)
    num_queues = 2
    queue_num_max = QUEUE_NUM_MAX

    def __init__(self, mac: bytes, sink: Callable[[bytes], None] | None = None) -> None:
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self.mac = bytes(mac)
        self.sink = sink
        self.tx_frames = 0
        self.tx_dropped = 0

    def config(self) -> bytes:
        return virtio_net_config(self.mac)

    def handle(self, queue: int, request: bytes, capacity: int) -> bytes:
        """One TX chain: virtio_net_hdr_v1 then the frame. Nothing is written back."""
        if queue != TX_QUEUE:
            return b""
        frame = request[VIRTIO_NET_HDR_SIZE:]
        if len(request) < VIRTIO_NET_HDR_SIZE or not ETH_HLEN <= len(frame) <= ETH_MAX_FRAME:
            self.tx_dropped += 1
            return b""
        self.tx_frames += 1
        if self.sink is not None:
            try:
                self.sink(frame)
            except Exception as exc:  # the network must not take the device down
                log.warning("net: packet sink failed: %s: %s", type(exc).__name__, exc)
                self.tx_dropped += 1
        return b""


class VirtioNetDevice(VirtioMmioDevice):
    """The transport for a `VirtioNet`: RX buffers are held until frames arrive."""

    backend: VirtioNet

    def __init__(self, backend: VirtioNet, access_platform: bool = False, name: str = "virtio-net",
                 memory: MemoryView | None = None, on_error: Callable[[str], None] | None = None) -> None:
        self.rx_pending: deque[bytes] = deque()
        self.rx_frames = 0
        self.rx_dropped = 0
        super().__init__(backend, access_platform=access_platform, name=name, memory=memory, on_error=on_error)

    @property
    def mac(self) -> bytes:
        return self.backend.mac

    # --- the network side ---------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """A frame from the network for the guest; written into an RX buffer at the next
        `deliver`. Dropped when the driver has not set the device up or the backlog is full."""
        if not self.status & VirtioStatus.DRIVER_OK or len(self.rx_pending) >= RX_BACKLOG:
            self.rx_dropped += 1
            return
        self.rx_pending.append(bytes(frame))

    def deliver(self) -> int:
        """Move waiting frames into posted RX buffers; returns how many were delivered."""
        if not self.rx_pending:
            return 0
        q = self.queues[RX_QUEUE]
        if (self.status & VirtioStatus.DEVICE_NEEDS_RESET or not self.status & VirtioStatus.DRIVER_OK
                or not q.ready):
            return 0
        if self.memory is None:
            self.fail("no guest memory view")
            return 0
        mem = self.memory
        done = 0
        try:
            avail_idx = self._u16(mem, q.avail + 2)
            pending = (avail_idx - q.last_avail) & 0xFFFF
            if pending > q.num:
                raise ChainError(f"available index moved by {pending} on a queue of {q.num}")
            while pending and self.rx_pending:
                head = self._u16(mem, q.avail + avail_ring_entry(q.last_avail % q.num))
                chain = self._walk(mem, q, head)
                if chain.readable:
                    raise ChainError("device-readable descriptor in a receive chain")
                frame = self.rx_pending.popleft()
                data = RX_HEADER + frame
                if len(data) > chain.capacity:
                    self.rx_dropped += 1  # too long for the buffer: the frame goes, the buffer stays
                    continue
                off = 0
                for addr, n in chain.writable:
                    if off >= len(data):
                        break
                    piece = data[off : off + n]
                    mem.write(addr, piece)
                    off += len(piece)
                self._push_used(mem, q, head, len(data))
                pending -= 1
                done += 1
                self.rx_frames += 1
        except (DmaError, ChainError) as exc:
            self.fail(str(exc))
        return done

    def _push_used(self, mem: MemoryView, q: Virtqueue, head: int, length: int) -> None:
        mem.write(q.used + used_ring_entry(q.used_idx % q.num), struct.pack("<II", head, length))
        q.used_idx = (q.used_idx + 1) & 0xFFFF
        mem.write(q.used + 2, struct.pack("<H", q.used_idx))
        q.last_avail = (q.last_avail + 1) & 0xFFFF
        self.raise_interrupt(VirtioInterrupt.USED_BUFFER)

    # --- the transport's hooks ------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self.rx_pending.clear()

    def notify(self, index: int) -> None:
        if index == RX_QUEUE:
            self.deliver()  # new buffers: fill them with whatever is waiting
        else:
            super().notify(index)

    def mmio_read(self, offset: int, size: int) -> int:
        self.deliver()  # a polling driver sees frames as soon as it looks
        return super().mmio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        super().mmio_write(offset, size, value)
        self.deliver()
