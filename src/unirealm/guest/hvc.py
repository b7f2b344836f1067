"""hvc0: the virtio-console driver (virtio 1.2 §5.3, port 0 only: no MULTIPORT), the app's
stdio when the VMM offers one (`unirealm run --console virtio`).

- Output: a burst is copied into the transmit buffers of the DMA pool (in a realm: shared
  pages, reached through their unprotected alias) as up to TX_SLOTS chains of TX_CHUNK
  bytes, posted together with one QueueNotify: 1 MiB is a few exits, not one per byte.
- Input: RX_SLOTS receive buffers stay posted; a used entry is copied out of shared memory
  (bounced) before its bytes are handed on, and the buffer is reposted. The device polls
  the available ring and says so with VIRTQ_USED_F_NO_NOTIFY; without that flag the driver
  notifies. A used entry of length 0 is the VMM's end of input (host/devices/virtio_console.py).
- Interrupts: the device's SPI brings input (its handler harvests the receive ring); the
  transmit queue keeps VIRTQ_AVAIL_F_NO_INTERRUPT set, since the device consumes a burst
  inside its notify, and clears it only to wait for a burst it has not taken yet.
- Shared memory is hostile: the used index may move only by buffers in flight, a used id
  must name a buffer in flight, and a length must fit the buffer. Anything else disables
  the console (output dropped, input at its end) with one line on the kernel log: never a
  hang, never a read past the buffer.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from ..arch.virtio import (
    VIRTIO_CONSOLE_RX_QUEUE,
    VIRTIO_CONSOLE_TX_QUEUE,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtioMmio,
    VirtqDescFlags,
    avail_ring_entry,
    pack_desc,
    used_ring_entry,
)
from .virtio import POLL_LIMIT, DmaPool, VirtioError, VirtioMmioTransport

if TYPE_CHECKING:
    from .interfaces import Kernel

TX_SLOTS, TX_CHUNK = 4, 64 << 10
RX_SLOTS, RX_CHUNK = 4, 16 << 10


class _Ring:
    """One queue's rings in the pool and the driver's view of them."""

    def __init__(self, t: VirtioMmioTransport, pool: DmaPool, index: int, slots: int) -> None:
        self.index = index
        self.num, self.desc, self.avail, self.used = t.setup_queue(index, pool, slots)
        if self.num < slots:
            raise VirtioError(f"queue {index} holds {self.num} buffers, {slots} needed")
        self.avail_idx = 0
        self.used_idx = 0
        self.in_flight: set[int] = set()


class VirtioConsole:
    def __init__(self, kernel: Kernel, transport: VirtioMmioTransport) -> None:
        self.kernel = kernel
        self.t = transport
        self.cpu = kernel.cpu
        transport.negotiate(0)
        size = 2 * GRANULE_SIZE + TX_SLOTS * TX_CHUNK + RX_SLOTS * RX_CHUNK
        self.pool = pool = DmaPool(kernel, -(-size // GRANULE_SIZE))
        self.rx = _Ring(transport, pool, VIRTIO_CONSOLE_RX_QUEUE, RX_SLOTS)
        self.tx = _Ring(transport, pool, VIRTIO_CONSOLE_TX_QUEUE, TX_SLOTS)
        self.rx_bufs = [pool.alloc(RX_CHUNK, 64) for _ in range(RX_SLOTS)]
        self.tx_bufs = [pool.alloc(TX_CHUNK, 64) for _ in range(TX_SLOTS)]
        self.rx_lens = [RX_CHUNK] * RX_SLOTS
        self.tx_lens = [0] * TX_SLOTS  # a used length may not exceed the bytes posted
        transport.enable_queue(VIRTIO_CONSOLE_RX_QUEUE)
        transport.enable_queue(VIRTIO_CONSOLE_TX_QUEUE)
        transport.driver_ok()
        self.broken = False
        self.eof = False
        self._input = bytearray()
        self.exits = 0  # notifications sent (each one exit to the VMM)
        for slot in range(RX_SLOTS):
            pool.write(self.rx.desc + 16 * slot,
                       pack_desc(pool.dma_base + self.rx_bufs[slot], RX_CHUNK, VirtqDescFlags.WRITE, 0))
            self._post(self.rx, slot)
        self._publish(self.rx)
        self._suppress_tx(transport.interrupt_driven)
        transport.enable_interrupts(lambda status: self._receive())

    def _suppress_tx(self, on: bool) -> None:
        self.pool.write(self.tx.avail, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT if on else 0))

    # --- rings ----------------------------------------------------------------------------
    def _post(self, ring: _Ring, head: int) -> None:
        self.pool.write(ring.avail + avail_ring_entry(ring.avail_idx % ring.num), struct.pack("<H", head))
        ring.avail_idx = (ring.avail_idx + 1) & 0xFFFF
        ring.in_flight.add(head)

    def _publish(self, ring: _Ring, force: bool = False) -> None:
        """Make posted buffers visible; notify unless the device said it needs no notice."""
        self.pool.write(ring.avail + 2, struct.pack("<H", ring.avail_idx))
        flags = struct.unpack("<H", self.pool.read(ring.used, 2))[0]
        if force or not flags & VIRTQ_USED_F_NO_NOTIFY:
            self.t.w(VirtioMmio.QUEUE_NOTIFY, ring.index)
            self.exits += 1

    def _refuse(self, why: str) -> None:
        self.broken = True
        self.kernel.log(f"hvc0: {why}; console disabled", error=True)

    def _harvest(self, ring: _Ring, capacity: list[int]) -> list[tuple[int, int]]:
        """The new used entries (id, len), each checked; [] (and the console disabled) on a
        device that breaks the rules."""
        used_idx = struct.unpack("<H", self.pool.read(ring.used + 2, 2))[0]
        moved = (used_idx - ring.used_idx) & 0xFFFF
        if not moved:
            return []
        if moved > len(ring.in_flight):
            self._refuse(f"used index moved by {moved} with {len(ring.in_flight)} buffers in flight")
            return []
        raw = [self.pool.read(ring.used + used_ring_entry((ring.used_idx + i) % ring.num), 8) for i in range(moved)]
        out = []
        for elem in raw:
            uid, length = struct.unpack("<II", elem)
            if uid not in ring.in_flight:
                self._refuse(f"used entry names descriptor {uid}, not a buffer in flight")
                return []
            if length > capacity[uid]:
                self._refuse(f"used length {length} is larger than the {capacity[uid]}-byte buffer")
                return []
            ring.in_flight.discard(uid)
            out.append((uid, length))
        ring.used_idx = used_idx
        return out

    # --- output ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        view = memoryview(data)
        pool, tx = self.pool, self.tx
        done = 0
        while done < len(view) and not self.broken:
            posted = 0
            for slot in range(TX_SLOTS):
                chunk = view[done : done + TX_CHUNK]
                if not chunk:
                    break
                pool.write(self.tx_bufs[slot], chunk)  # bounce in
                pool.write(tx.desc + 16 * slot, pack_desc(pool.dma_base + self.tx_bufs[slot], len(chunk), 0, 0))
                self.tx_lens[slot] = len(chunk)
                self._post(tx, slot)
                done += len(chunk)
                posted += 1
            self._publish(tx, force=True)
            self._wait_tx(posted)

    def _wait_tx(self, posted: int) -> None:
        """Until every posted chain is used: the device consumes them inside the notify, so
        this normally reads the used ring once."""
        waiting = False
        try:
            for spin in range(POLL_LIMIT):
                self._harvest(self.tx, self.tx_lens)
                if self.broken or not self.tx.in_flight:
                    return
                if spin and self.t.needs_reset:
                    self._refuse("the device reported DEVICE_NEEDS_RESET")
                    return
                if self.t.interrupt_driven and not waiting:
                    waiting = True  # the transmit interrupt on, then look again before waiting
                    self._suppress_tx(False)
                    continue
                self.t.wait(None)
            self._refuse(f"no answer for {posted} transmit buffers")
        finally:
            if waiting:
                self._suppress_tx(True)

    # --- input ----------------------------------------------------------------------------
    def _receive(self) -> None:
        if self.broken:
            return
        entries = self._harvest(self.rx, self.rx_lens)
        for uid, length in entries:
            if length == 0:
                self.eof = True
            else:
                self._input += self.pool.read(self.rx_bufs[uid], length)  # bounce out
            self._post(self.rx, uid)
        if entries:
            self._publish(self.rx)

    def input_state(self) -> tuple[bool, bool]:
        """(bytes ready, at end of input)."""
        self._receive()
        return bool(self._input), (self.eof or self.broken) and not self._input

    def touch(self) -> None:
        """Device activity while idle: the VMM delivers waiting input at any register access."""
        if not self.broken and self.t.r(VirtioMmio.INTERRUPT_STATUS):
            self.t.w(VirtioMmio.INTERRUPT_ACK, 3)
        self._receive()

    def read(self, limit: int, block: bool = True) -> bytes:
        """Up to `limit` bytes; empty only at end of input or when not blocking."""
        self._receive()
        while block and not self._input and not self.eof and not self.broken:
            self.t.wait(None)
            self.touch()
        out = bytes(self._input[:limit])
        del self._input[:limit]
        return out
