"""virtio-console (device id 3, virtio 1.2 §5.3) on the modern virtio-mmio transport, as
kvmtool's virtio/console.c behind `--console virtio` (the guest's hvc0).

- Config space (§5.3.4): cols 80, rows 24, max_nr_ports 1 (kvmtool's values); no feature
  bits offered (no SIZE, MULTIPORT or EMERG_WRITE), so one port with two queues.
- Queue 1 (transmitq) carries guest output: each chain's device-readable bytes go to
  `output` in one write, at QueueNotify, and the used entry says the bytes were consumed
  (length 0: nothing was written into the chain). A driver posts a whole burst as one
  buffer, so 1 MiB of output is a handful of exits, not one per byte.
- Queue 0 (receiveq) carries guest input: bytes the VMM `feed`s wait in a host buffer and
  are written into the driver's posted buffers whenever the driver touches the device and
  whenever the VMM calls `deliver` (at every WFI/REC exit). The device polls the available
  ring, so it sets VIRTQ_USED_F_NO_NOTIFY in the receive queue's used ring (§2.7.10): the
  driver need not notify when it reposts buffers. With VIRTIO_F_EVENT_IDX it says so with
  avail_event instead, one entry behind the last it consumed (moved on at every fill, so
  the driver never reaches it).
- End of input. virtio-console without MULTIPORT has no way to say a port closed, so this
  device uses one unirealm convention: once input has ended and every byte was delivered,
  one receive buffer is returned with used length 0. A driver that does not know the
  convention sees an empty read, which it must tolerate anyway. So a receive chain with no
  room for a byte is refused while input waits.

A chain the device cannot trust is refused as the transport refuses it: DEVICE_NEEDS_RESET.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from unirealm.arch.virtio import (
    VIRTIO_CONSOLE_CONFIG,
    VIRTIO_CONSOLE_RX_QUEUE,
    VIRTIO_CONSOLE_TX_QUEUE,
    VIRTQ_USED_F_NO_NOTIFY,
    VirtioDeviceId,
)

from .virtio_mmio import Chain, ChainError, DmaError, MemoryView, ReceivingDevice, Virtqueue

log = logging.getLogger("unirealm.console")

QUEUE_NUM_MAX = 128  # kvmtool's VIRTIO_CONSOLE_QUEUE_SIZE
RX_QUEUE, TX_QUEUE = VIRTIO_CONSOLE_RX_QUEUE, VIRTIO_CONSOLE_TX_QUEUE


class VirtioConsole:
    """The virtio-console device type: port 0's output goes to `output`."""

    device_id: int = VirtioDeviceId.CONSOLE
    features = 0
    num_queues = 2
    queue_num_max = QUEUE_NUM_MAX

    def __init__(self, output: Callable[[bytes], object] | None = None, cols: int = 80, rows: int = 24) -> None:
        self.output = output
        self._config = VIRTIO_CONSOLE_CONFIG.pack(cols=cols, rows=rows, max_nr_ports=1, emerg_wr=0)
        self.tx_bytes = 0

    def config(self) -> bytes:
        return self._config

    def handle(self, queue: int, request: bytes, capacity: int) -> bytes:
        """One transmit chain: its bytes are the guest's output. Nothing is written back."""
        if queue == TX_QUEUE and request:
            self.tx_bytes += len(request)
            if self.output is not None:
                self.output(request)
        return b""


class VirtioConsoleDevice(ReceivingDevice):
    """The transport for a `VirtioConsole`: input waits for the driver's receive buffers."""

    backend: VirtioConsole
    receive_queue = RX_QUEUE

    def __init__(self, backend: VirtioConsole, **transport: Any) -> None:
        self._pending = bytearray()
        self._eof = False
        self._eof_sent = False
        self.rx_bytes = 0
        super().__init__(backend, **{"name": "virtio-console", **transport})

    # --- the host side ------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the host's stdin; delivered at the next `deliver`. Never dropped."""
        if self._eof and data:
            raise ValueError(f"{self.name}: input after end of input")
        self._pending += data

    def set_eof(self) -> None:
        self._eof = True

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def pending_input(self) -> int:
        return len(self._pending)

    def has_input(self) -> bool:
        return bool(self._pending) or (self._eof and not self._eof_sent)

    def fill(self, mem: MemoryView, q: Virtqueue, chain: Chain) -> int:
        """As much waiting input as one receive chain holds; at the end, one empty buffer. A
        chain with no room while input waits is refused: its used length 0 would say the
        input ended (and the real end would then never be said)."""
        if self._pending and not chain.capacity:
            raise ChainError("receive chain with no room for the waiting input")
        total = self._scatter(mem, chain, self._pending[: chain.capacity], note=True)
        del self._pending[:total]
        if not total:
            self._eof_sent = True  # the end-of-input convention
        used_id, used_len = chain.head, total
        if self.hostile is not None:
            used_id, used_len = self.hostile.used_entry(q.num, chain.head, total, chain.capacity)
        self._push_used(mem, q, used_id, used_len)
        if self.event_idx:
            self._set_avail_event(mem, q, q.last_avail - 1)
        self.rx_bytes += total
        return 1

    # --- the transport's hooks ------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self._eof_sent = False  # a new driver learns of the end of input afresh
        self._rx_flagged = False

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        super().mmio_write(offset, size, value)
        q = self.queues[RX_QUEUE]
        if q.ready and not self._rx_flagged and self.memory is not None:
            self._rx_flagged = True
            try:  # the receive queue is polled: the driver need not notify it
                if self.event_idx:
                    self._set_avail_event(self.memory, q, q.last_avail - 1)
                else:
                    self.memory.write(q.used, struct.pack("<H", VIRTQ_USED_F_NO_NOTIFY))
            except DmaError as exc:
                self.fail(str(exc))
