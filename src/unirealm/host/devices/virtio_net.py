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

With VIRTIO_F_EVENT_IDX the TX queue's avail_event asks for a notification only once half
the ring waits; the VMM calls `poll_transmit` at every exit it handles, which takes the
chains posted meanwhile. The RX queue's avail_event (instead of VIRTQ_USED_F_NO_NOTIFY)
names the driver's next entry while frames wait for buffers, and lies one behind it
otherwise.

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
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtioDeviceId,
    feature,
)

from .virtio_mmio import Chain, DmaError, MemoryView, ReceivingDevice, Virtqueue

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


class VirtioNetDevice(ReceivingDevice):
    """The transport for a `VirtioNet`: RX buffers are held until frames arrive."""

    backend: VirtioNet
    receive_queue = RX_QUEUE

    def __init__(self, backend: VirtioNet, access_platform: bool = False, name: str = "virtio-net",
                 memory: MemoryView | None = None, on_error: Callable[[str], None] | None = None,
                 event_idx: bool = True) -> None:
        self.rx_pending: deque[bytes] = deque()
        self.rx_notify_wanted = True  # the used ring's flags start at 0: notifications wanted
        self.rx_frames = 0
        self.rx_dropped = 0
        super().__init__(backend, access_platform=access_platform, name=name, memory=memory, on_error=on_error,
                         event_idx=event_idx)

    @property
    def mac(self) -> bytes:
        return self.backend.mac

    # --- the network side ---------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """A frame from the network for the guest; written into an RX buffer at the next
        `deliver`. Dropped when the driver has not set the device up or the backlog is full."""
        if not self.status & STATUS_DRIVER_OK or len(self.rx_pending) >= RX_BACKLOG:
            self.rx_dropped += 1
            return
        self.rx_pending.append(bytes(frame))

    def has_input(self) -> bool:
        return bool(self.rx_pending)

    def deliver(self) -> int:
        """Move waiting frames into posted RX buffers; returns how many were delivered.
        The RX used ring's VIRTQ_USED_F_NO_NOTIFY tells the driver whether it must notify
        after posting buffers: only while frames wait for buffers (virtio 1.2 §2.7.10). The
        device reads the available ring at every delivery anyway, and every path that adds
        to the backlog ends in a delivery."""
        if not self.rx_pending and not self.rx_notify_wanted:
            return 0
        done = super().deliver()
        want = bool(self.rx_pending)
        if (want != self.rx_notify_wanted or (done and self.event_idx)) and \
                (ready := self._receive_queue(RX_QUEUE)) is not None:
            q, mem = ready
            try:
                if self.event_idx:
                    # avail_event: the driver's next entry while frames wait, else one behind it
                    # (moved on at every delivery, so the driver does not reach it)
                    after = self._u16(mem, q.avail + 2)
                    self._set_avail_event(mem, q, after if want else after - 1)
                else:
                    mem.write(q.used, struct.pack("<H", 0 if want else VIRTQ_USED_F_NO_NOTIFY))
            except DmaError as exc:
                self.fail(str(exc))
                return done
            self.rx_notify_wanted = want
        return done

    def avail_event_for(self, index: int, q: Virtqueue) -> int:
        """TX with VIRTIO_F_EVENT_IDX: a notification only once half the ring waits; the VMM
        has the device look at the ring at every exit it sees (`poll_transmit`), so a frame
        waits no longer than the vCPU runs without an exit (its time slice at most)."""
        if index == TX_QUEUE:
            return q.last_avail + max(q.num // 2, 1) - 1
        return q.last_avail

    def poll_transmit(self) -> int:
        """Take the TX chains the driver posted without a notify (VIRTIO_F_EVENT_IDX only:
        without it every chain is notified). Returns how many there were."""
        q = self.queues[TX_QUEUE]
        mem = self.memory
        if (not self.event_idx or not q.ready or mem is None or not self.status & STATUS_DRIVER_OK
                or self.status & STATUS_DEVICE_NEEDS_RESET):
            return 0  # (as a notify would be ignored: the rings may not be readable yet)
        try:
            waiting = (self._u16(mem, q.avail + 2) - q.last_avail) & 0xFFFF
        except DmaError as exc:
            self.fail(str(exc))
            return 0
        if waiting:
            self.notify(TX_QUEUE)
        return waiting

    def fill(self, mem: MemoryView, q: Virtqueue, chain: Chain) -> int:
        """One waiting frame, behind its header, into one RX chain."""
        data = RX_HEADER + self.rx_pending.popleft()
        if len(data) > chain.capacity:
            self.rx_dropped += 1  # too long for the buffer: the frame goes, the buffer stays
            return 0
        self._scatter(mem, chain, data, note=False)
        self._push_used(mem, q, chain.head, len(data))
        self.rx_frames += 1
        return 1

    # --- the transport's hooks ------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self.rx_pending.clear()
        self.rx_notify_wanted = True
