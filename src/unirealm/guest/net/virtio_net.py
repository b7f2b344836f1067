"""virtio-net driver (virtio 1.1 §5.1) on the virtio-mmio transport, for a realm first.

- Features: VERSION_1 (required), VIRTIO_NET_F_MAC (the MAC is read from config space),
  ACCESS_PLATFORM whenever offered (the VMM forces it for realms), VIRTIO_F_EVENT_IDX
  whenever offered (below). Nothing else: no
  checksum offload, no GSO, no mergeable buffers, so every frame travels whole behind its
  12-byte virtio_net_hdr_v1 (§5.1.6).
- Queue 0 receives, queue 1 transmits (§5.1.2). Every ring and every RX/TX buffer lives in
  the shared DMA pool (guest/virtio.py: in a realm converted to shared once and used through
  its unprotected alias); one descriptor per buffer, buffer i is descriptor i.
- RX: all buffers are posted at start. `poll()` reads the used ring, checks every entry (an
  id that is a posted buffer, a length between the header and the buffer size, an index
  that moved by at most the number of posted buffers), copies the frame out of shared memory
  and only then hands it on; the buffer is posted again. A bad entry is dropped and counted,
  and the ring resynchronised; it is never trusted.
- TX: the header and frame are copied into a free buffer, posted, and the queue notified:
  the device takes the chains at the notify's MMIO exit. A sender with a burst to send
  (`send(frame, notify=False)` then `kick()`) posts every frame and notifies once. Completed
  buffers are reclaimed from the used ring when no free one is left (after notifying the
  chains still unannounced, so that the device can complete them).
- RX buffers given back are notified only while the device asks for it (the used ring's
  VIRTQ_USED_F_NO_NOTIFY clear: frames are waiting for buffers); otherwise the device
  finds them at its next delivery, and an MMIO exit is saved.
- Interrupts: the NIC's SPI (an edge, the DT's) is taken for received frames: its handler
  runs the stack's `poll` (guest/net/dhcp.py start_network registers it). The transmit queue
  keeps VIRTQ_AVAIL_F_NO_INTERRUPT set (§2.7.7): its buffers are reclaimed when a send finds
  none free, so a busy transmit queue never interrupts. Sockets still look at the used ring
  when they are read (a load of guest memory, no exit).
- With VIRTIO_F_EVENT_IDX (virtio 1.2 §2.7.10) the flags give way to the event indices:
  a queue is notified only when the device's avail_event names an entry posted since the
  last look (the host's device asks for a TX notification once half the ring waits and
  takes the rest at its next look), except that a send finding no free buffer always
  notifies (a device that suppressed every notification cannot hold the ring). The RX
  used_event is the next entry (an interrupt per delivery batch), the TX used_event stays
  one behind the used index, moved at every reclaim (no TX interrupt). Event indices
  come from shared memory: any value only changes whether an exit is made.
"""

from __future__ import annotations

import struct
from typing import Any

from ...arch.net import (
    ETH_FRAME_MAX,
    ETH_HLEN,
    VIRTIO_NET_HDR_SIZE,
    VIRTIO_NET_RX_QUEUE,
    VIRTIO_NET_TX_QUEUE,
    VirtioNetFeature,
    VirtioNetHdr,
)
from ...arch.virtio import (
    VIRTIO_F_EVENT_IDX,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtioMmio,
    VirtqDescFlags,
    avail_event_offset,
    avail_ring_entry,
    feature,
    need_event,
    pack_desc,
    used_event_offset,
    used_ring_entry,
)
from ..virtio import DmaPool, VirtioError, VirtioMmioTransport

TX_HEADER = VirtioNetHdr().pack()  # no offloads: all zero
BUF_SIZE = 1536  # header + the largest frame (1514), rounded up
RING_SIZE = 32  # RX: the device holds frames beyond these in its backlog
TX_RING_SIZE = 128  # TX: a TCP burst (a 64 KiB window is 45 frames) with room to spare, one notify
POOL_PAGES = 64
POLL_ROUNDS = 8  # looks at the RX used ring per poll (EVENT_IDX: again after used_event moved)


class NetQueue:
    """A split virtqueue whose descriptor i always points at buffer i of BUF_SIZE bytes."""

    def __init__(self, t: VirtioMmioTransport, pool: DmaPool, index: int, writable: bool,
                 size: int = RING_SIZE) -> None:
        self.t, self.pool, self.index = t, pool, index
        self.num, self.desc, self.avail, self.used = t.setup_queue(index, pool, size)
        n = self.num
        self.bufs = pool.alloc(BUF_SIZE * n, 64)
        flags = VirtqDescFlags.WRITE if writable else 0
        for i in range(n):
            pool.write(self.desc + 16 * i, pack_desc(pool.dma_base + self.bufs + BUF_SIZE * i, BUF_SIZE, flags, 0))
        t.enable_queue(index)
        self.avail_idx = 0
        self.used_idx = 0
        self.looked = 0  # the available index at the last notify decision (EVENT_IDX)
        self.posted: set[int] = set()  # buffers the device holds
        self.bad = 0

    def post(self, i: int, length: int | None = None) -> None:
        """Hand buffer i to the device (with `length` bytes for a device-readable buffer)."""
        pool = self.pool
        if length is not None:
            pool.write(self.desc + 16 * i + 8, struct.pack("<I", length))
        pool.write(self.avail + avail_ring_entry(self.avail_idx % self.num), struct.pack("<H", i))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.posted.add(i)

    def publish(self) -> None:
        self.pool.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def notify(self) -> None:
        self.t.w(VirtioMmio.QUEUE_NOTIFY, self.index)

    def notify_wanted(self) -> bool:
        """Whether the device asks to be notified of the entries posted since the last call
        (virtio 1.2 §2.7.10: VIRTQ_USED_F_NO_NOTIFY clear; with VIRTIO_F_EVENT_IDX,
        avail_event among them). A lying device only costs itself frames or exits."""
        if self.t.event_idx:
            old, self.looked = self.looked, self.avail_idx
            event = struct.unpack("<H", self.pool.read(self.used + avail_event_offset(self.num), 2))[0]
            return need_event(event, self.avail_idx, old)
        return not self.pool.read(self.used, 2)[0] & VIRTQ_USED_F_NO_NOTIFY

    def set_used_event(self, index: int) -> None:
        """VIRTIO_F_EVENT_IDX: a used-buffer interrupt when the device writes entry `index`."""
        self.pool.write(self.avail + used_event_offset(self.num), struct.pack("<H", index & 0xFFFF))

    def buffer(self, i: int) -> int:
        return self.bufs + BUF_SIZE * i

    def completed(self) -> list[tuple[int, int]]:
        """(buffer, length) for each new used entry the device may have written; entries
        that cannot be true (unknown or unposted ids, oversized lengths) are dropped."""
        pool = self.pool
        used_idx = struct.unpack("<H", pool.read(self.used + 2, 2))[0]
        moved = (used_idx - self.used_idx) & 0xFFFF
        if moved == 0:
            return []
        if moved > len(self.posted):
            self.bad += 1  # a lying index: take only what could be true
            moved = len(self.posted)
        out = []
        for k in range(moved):
            raw = pool.read(self.used + used_ring_entry((self.used_idx + k) % self.num), 8)
            uid, length = struct.unpack("<II", raw)
            if uid not in self.posted or length > BUF_SIZE:
                self.bad += 1
                continue
            self.posted.discard(uid)
            out.append((uid, length))
        self.used_idx = used_idx
        return out


class VirtioNet:
    """One NIC: `send(frame)` and `poll() -> [frame, ...]`."""

    def __init__(self, kernel: Any, t: VirtioMmioTransport) -> None:
        self.t = t
        self.cpu = t.cpu
        accepted = t.negotiate(feature(VirtioNetFeature.MAC) | feature(VIRTIO_F_EVENT_IDX))
        if accepted & feature(VirtioNetFeature.MAC):
            self.mac = t.config(0, 6)
        else:
            self.mac = bytes([0x02]) + kernel.cpu.rndr().to_bytes(8, "little")[:5]
        self.pool = DmaPool(kernel, POOL_PAGES)
        self.rx = NetQueue(t, self.pool, VIRTIO_NET_RX_QUEUE, writable=True)
        self.tx = NetQueue(t, self.pool, VIRTIO_NET_TX_QUEUE, writable=False, size=TX_RING_SIZE)
        self.tx_free = list(range(self.tx.num))
        if t.event_idx:
            self.tx.set_used_event(self.tx.used_idx - 1)  # (RX: entry 0, the pool's zero)
        else:
            self.pool.write(self.tx.avail, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT))
        self.tx_unannounced = False
        for i in range(self.rx.num):
            self.rx.post(i)
        self.rx.publish()
        t.driver_ok()
        self.rx.notify()
        self.rx.looked = self.rx.avail_idx
        self.rx_frames = self.tx_frames = self.rx_dropped = self.tx_dropped = 0

    @property
    def bad_entries(self) -> int:
        return self.rx.bad + self.tx.bad

    def send(self, frame: bytes, notify: bool = True) -> bool:
        """Post one frame; with `notify` False the device hears of it at the next `kick`."""
        if not ETH_HLEN <= len(frame) <= ETH_FRAME_MAX:
            self.tx_dropped += 1
            return False
        if not self.tx_free:  # reclaim only when needed: the device completes a chain at its notify
            self.kick(force=True)
            self.tx_free.extend(i for i, _ in self.tx.completed())
            if self.t.event_idx:
                self.tx.set_used_event(self.tx.used_idx - 1)
        if not self.tx_free:
            self.tx_dropped += 1  # the device holds every buffer: the frame is lost, as on a full NIC
            return False
        i = self.tx_free.pop()
        data = TX_HEADER + frame
        self.pool.write(self.tx.buffer(i), data)  # bounce in
        self.tx.post(i, len(data))
        self.tx.publish()
        self.tx_frames += 1
        self.tx_unannounced = True
        if notify:
            self.kick()
        return True

    def kick(self, force: bool = False) -> None:
        """Notify the TX queue of the frames posted since the last notify, if the device
        asks for it (`force`: whatever it asks)."""
        if self.tx_unannounced or force:
            self.tx_unannounced = False
            if self.tx.notify_wanted() or force:
                self.tx.notify()

    def poll(self) -> list[bytes]:
        frames: list[bytes] = []
        for _ in range(POLL_ROUNDS):
            done = self.rx.completed()
            for i, length in done:
                if length >= VIRTIO_NET_HDR_SIZE + ETH_HLEN:
                    # bounce out before parsing (the header carries nothing this driver uses)
                    frames.append(self.pool.read(self.rx.buffer(i) + VIRTIO_NET_HDR_SIZE, length - VIRTIO_NET_HDR_SIZE))
                else:
                    self.rx_dropped += 1
                self.rx.post(i)
            if not done:
                break
            self.rx.publish()
            if self.rx.notify_wanted():  # frames wait in the device for these buffers
                self.rx.notify()
            if not self.t.event_idx:
                break
            # an interrupt at the next entry; one the device wrote meanwhile is taken now
            self.rx.set_used_event(self.rx.used_idx)
        self.rx_frames += len(frames)
        return frames


def find_nics(kernel: Any) -> list[VirtioNet]:
    from ...arch.virtio import VirtioDeviceId
    from ..virtio import virtio_devices

    nics = []
    for dev, t, device_id in virtio_devices(kernel):
        if device_id != VirtioDeviceId.NET:
            continue
        try:
            nics.append(VirtioNet(kernel, t))
        except VirtioError as exc:
            kernel.log(f"virtio-net {dev.path}: {exc}", error=True)
    return nics
