"""virtio-mmio driver (virtio 1.2 §4.2.3 driver initialisation, §2.7 split virtqueues),
written for a realm first.

- Registers are reached through the window's DT address (in a realm already the unprotected
  alias: Kernel.map_devices), one 32-bit load or store per access, so every access is an
  emulatable MMIO exit; the config space is read a byte at a time.
- VERSION_1 is required; ACCESS_PLATFORM is accepted whenever the device offers it (the
  VMM forces it for realms).
- Everything the device may see — the descriptor table, both rings and the request and
  response buffers — lives in one DMA pool. In a realm the pool's pages are converted to
  shared ONCE with RSI_IPA_STATE_SET (RIPAS EMPTY, CHANGE_DESTROYED), then used only through
  their unprotected alias (page | unprotected bit); the first touch of each page faults in
  the host page the VMM maps with RTT_MAP_UNPROTECTED. Payloads are bounced: copied into
  the pool before a descriptor is posted and out of it after the used entry appears.
- DMA addresses given to the device are the aliased ones (GPA | top IPA bit, Linux's
  convention since 6.15); the VMM masks the bit, so canonical addresses would work too.
- Interrupts: each driver registers its device's SPI (edge, the DT's `interrupts`) through
  `VirtioMmioTransport.enable_interrupts`; the handler acknowledges InterruptStatus. A
  request queue keeps VIRTQ_AVAIL_F_NO_INTERRUPT set (§2.7.7): the device answers inside
  the notify's MMIO exit, so an interrupt would only cost an acknowledge and an EOI; only
  when the answer is not there yet does it clear the flag, look again (no lost wake-up),
  and wait for the interrupt (Kernel.wait), setting the flag again after.
- VIRTIO_F_EVENT_IDX (§2.7.10), when a driver asks for it and the device offers it: the
  ring flags give way to the event indices. A request queue keeps used_event one entry
  behind the used index while nobody waits (no interrupt until the index wraps, and it is
  moved at every request) and sets it to the request in flight before it waits; it notifies
  when avail_event names the entry it posted, and, since a request must be answered, also
  when the answer is not there at the first look after the device declined the
  notification (a device that suppressed it wrongly costs one exit, not a hang).
- Shared memory is hostile: the used index may only move by the one request in flight,
  the used id must be the head posted and the length at most the buffer; the response is
  copied out of shared memory before it is parsed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from ..arch.virtio import (
    VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_MAGIC,
    VIRTIO_MMIO_VERSION,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_ALIGN,
    VIRTQ_USED_ALIGN,
    VirtioInterrupt,
    VirtioMmio,
    VirtioStatus,
    VirtqDescFlags,
    avail_event_offset,
    avail_ring_entry,
    avail_ring_size,
    desc_table_size,
    feature,
    need_event,
    pack_desc,
    used_event_offset,
    used_ring_entry,
    used_ring_size,
)

if TYPE_CHECKING:
    from .interfaces import Cpu, DeviceFacts, Kernel
    from .irq import Interrupts

QUEUE_SIZE = 8
POLL_LIMIT = 100_000


class VirtioError(Exception):
    pass


class DmaPool:
    """Pages the device may read and write. `cpu_base` is where the kernel accesses them,
    `dma_base` what the device is told; both are the unprotected alias in a realm."""

    def __init__(self, kernel: Kernel, pages: int) -> None:
        self.cpu = kernel.cpu
        base = kernel.pages.alloc(pages)
        self.size = pages * GRANULE_SIZE
        if kernel.realm is not None:
            # Convert first, then fill: the private contents are destroyed by the change.
            kernel.rsi.set_memory_shared(base, self.size)
            alias = base | kernel.realm.unprotected_bit
            self.cpu_base = self.dma_base = alias
        else:
            self.cpu_base = self.dma_base = base
        for off in range(0, self.size, GRANULE_SIZE):
            self.cpu.zero(self.cpu_base + off, GRANULE_SIZE)
        self._next = 0

    def alloc(self, size: int, align: int = 16) -> int:
        """Offset of `size` bytes inside the pool."""
        off = -(-self._next // align) * align
        if off + size > self.size:
            raise VirtioError("DMA pool exhausted")
        self._next = off + size
        return off

    def read(self, off: int, size: int) -> bytes:
        return self.cpu.read(self.cpu_base + off, size)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        self.cpu.write(self.cpu_base + off, data)


class VirtioMmioTransport:
    def __init__(self, cpu: Cpu, address: int, size: int = 0x200) -> None:
        self.cpu = cpu
        self.address = address
        self.size = size  # the window's size from the device tree: config reads stay inside it
        self.features = 0
        self.intid: int | None = None  # the device's SPI (from the device tree)
        self.interrupts: Interrupts | None = None  # the kernel's, when it takes interrupts
        self.wait: Callable[[int | None], object] = lambda deadline: cpu.wfi()  # Kernel.wait
        self.on_interrupt: Callable[[int], None] | None = None  # gets InterruptStatus

    @property
    def event_idx(self) -> bool:
        """VIRTIO_F_EVENT_IDX negotiated: used_event/avail_event replace the ring flags."""
        return bool(self.features & feature(VIRTIO_F_EVENT_IDX))

    @property
    def interrupt_driven(self) -> bool:
        return self.interrupts is not None and self.intid is not None

    def enable_interrupts(self, handler: Callable[[int], None] | None = None) -> None:
        """Take the device's used-buffer and configuration-change interrupts (its SPI, an
        edge): InterruptStatus is acknowledged, then `handler(status)` runs."""
        self.on_interrupt = handler
        if self.interrupts is not None and self.intid is not None:
            self.interrupts.register(self.intid, self._interrupt, edge=True)
            self._interrupt()  # a status set before the SPI was enabled would hold back every later edge

    def _interrupt(self) -> None:
        # Both causes are acknowledged without reading InterruptStatus first (an exit less
        # per interrupt): a bit that is not set is left alone by the write, and these drivers
        # treat a configuration change as the device failing (DEVICE_NEEDS_RESET, seen when
        # they wait).
        status = VirtioInterrupt.USED_BUFFER | VirtioInterrupt.CONFIG_CHANGE
        self.w(VirtioMmio.INTERRUPT_ACK, status)
        if self.on_interrupt is not None:
            self.on_interrupt(status)

    def r(self, reg: int) -> int:
        return self.cpu.mmio_read(self.address + reg, 4)

    def w(self, reg: int, value: int) -> None:
        self.cpu.mmio_write(self.address + reg, 4, value & 0xFFFF_FFFF)

    def probe(self) -> int:
        """The device id; 0 for an empty slot. VirtioError for a window that is not modern
        virtio-mmio."""
        if self.r(VirtioMmio.MAGIC_VALUE) != VIRTIO_MMIO_MAGIC:
            raise VirtioError("no virtio-mmio magic value")
        if self.r(VirtioMmio.VERSION) != VIRTIO_MMIO_VERSION:
            raise VirtioError("not a modern (version 2) virtio-mmio device")
        return self.r(VirtioMmio.DEVICE_ID)

    def config(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or VIRTIO_MMIO_CONFIG + offset + size > self.size:
            raise VirtioError(f"config read [{offset}, {offset + size}) runs past the device's window")
        return bytes(self.cpu.mmio_read(self.address + VIRTIO_MMIO_CONFIG + offset + i, 1) for i in range(size))

    def negotiate(self, wanted: int) -> int:
        """§3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK."""
        self.w(VirtioMmio.STATUS, 0)
        status = VirtioStatus.ACKNOWLEDGE
        self.w(VirtioMmio.STATUS, status)
        status |= VirtioStatus.DRIVER
        self.w(VirtioMmio.STATUS, status)
        offered = 0
        for sel in (0, 1):
            self.w(VirtioMmio.DEVICE_FEATURES_SEL, sel)
            offered |= self.r(VirtioMmio.DEVICE_FEATURES) << (32 * sel)
        if not offered & feature(VIRTIO_F_VERSION_1):
            self.fail()
            raise VirtioError("the device does not offer VIRTIO_F_VERSION_1")
        accept = offered & (wanted | feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_F_ACCESS_PLATFORM))
        for sel in (0, 1):
            self.w(VirtioMmio.DRIVER_FEATURES_SEL, sel)
            self.w(VirtioMmio.DRIVER_FEATURES, accept >> (32 * sel))
        status |= VirtioStatus.FEATURES_OK
        self.w(VirtioMmio.STATUS, status)
        if not self.r(VirtioMmio.STATUS) & VirtioStatus.FEATURES_OK:
            self.fail()
            raise VirtioError("the device refused the features")
        self.features = accept
        return accept

    def fail(self) -> None:
        self.w(VirtioMmio.STATUS, VirtioStatus.FAILED)

    def driver_ok(self) -> None:
        self.w(VirtioMmio.STATUS, self.r(VirtioMmio.STATUS) | VirtioStatus.DRIVER_OK)

    @property
    def needs_reset(self) -> bool:
        return bool(self.r(VirtioMmio.STATUS) & VirtioStatus.DEVICE_NEEDS_RESET)

    def setup_queue(self, index: int, pool: DmaPool, max_size: int) -> tuple[int, int, int, int]:
        """§4.2.3.2 virtqueue configuration: the rings go in the DMA pool, the device gets
        their DMA addresses. Returns (size, descriptor table, avail ring, used ring) as pool
        offsets."""
        self.w(VirtioMmio.QUEUE_SEL, index)
        if self.r(VirtioMmio.QUEUE_READY):
            raise VirtioError(f"queue {index} is already live")
        num_max = self.r(VirtioMmio.QUEUE_NUM_MAX)
        if num_max == 0:
            raise VirtioError(f"queue {index} does not exist")
        num = min(max_size, num_max)
        desc = pool.alloc(desc_table_size(num), VIRTQ_DESC_ALIGN)
        avail = pool.alloc(avail_ring_size(num), 2)
        used = pool.alloc(used_ring_size(num), VIRTQ_USED_ALIGN)
        self.w(VirtioMmio.QUEUE_NUM, num)
        for reg, off in ((VirtioMmio.QUEUE_DESC_LOW, desc), (VirtioMmio.QUEUE_DRIVER_LOW, avail),
                         (VirtioMmio.QUEUE_DEVICE_LOW, used)):
            addr = pool.dma_base + off
            self.w(reg, addr)
            self.w(reg + 4, addr >> 32)
        return num, desc, avail, used

    def enable_queue(self, index: int) -> None:
        self.w(VirtioMmio.QUEUE_SEL, index)
        self.w(VirtioMmio.QUEUE_READY, 1)
        if not self.r(VirtioMmio.QUEUE_READY):
            raise VirtioError(f"queue {index} was not accepted")


class RequestQueue:
    """One split virtqueue carrying one request at a time: a device-readable buffer and a
    device-writable buffer of `buffer_size` bytes each, both in the DMA pool."""

    def __init__(self, transport: VirtioMmioTransport, pool: DmaPool, index: int, buffer_size: int) -> None:
        self.t = transport
        self.pool = pool
        self.index = index
        self.num, self.desc, self.avail, self.used = transport.setup_queue(index, pool, QUEUE_SIZE)
        self.out_buf = pool.alloc(buffer_size, 64)
        self.in_buf = pool.alloc(buffer_size, 64)
        self.buffer_size = buffer_size
        transport.enable_queue(index)
        self.avail_idx = 0
        self.used_idx = 0
        self.broken = False
        self.requests = 0
        self.waits = 0  # requests that had to wait for the device's interrupt
        self._suppress(transport.interrupt_driven)

    def _suppress(self, on: bool) -> None:
        """No used-buffer interrupt while nobody waits for the device: avail->flags
        VIRTQ_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX used_event one behind the
        used index (flags 0); `on` False asks for one at the request in flight."""
        if self.t.event_idx:
            event = (self.used_idx - 1 if on else self.used_idx) & 0xFFFF
            self.pool.write(self.avail + used_event_offset(self.num), struct.pack("<H", event))
        else:
            self.pool.write(self.avail, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT if on else 0))

    def _notify_wanted(self, old: int, new: int) -> bool:
        """Whether the device asked to hear of the entries [old, new) (always, without
        VIRTIO_F_EVENT_IDX: the device answers at the notify)."""
        if not self.t.event_idx:
            return True
        event = struct.unpack("<H", self.pool.read(self.used + avail_event_offset(self.num), 2))[0]
        return need_event(event, new, old)

    def request(self, out: bytes) -> bytes:
        """Post `out`, notify, wait for the used entry; the reply is a private copy."""
        if self.broken:
            raise VirtioError("the device needs a reset")
        if len(out) > self.buffer_size:
            raise VirtioError("request larger than the bounce buffer")
        pool = self.pool
        pool.write(self.out_buf, out)  # bounce in
        head = self.avail_idx % self.num
        nxt = (head + 1) % self.num
        pool.write(self.desc + 16 * head,
                   pack_desc(pool.dma_base + self.out_buf, len(out), VirtqDescFlags.NEXT, nxt))
        pool.write(self.desc + 16 * nxt,
                   pack_desc(pool.dma_base + self.in_buf, self.buffer_size, VirtqDescFlags.WRITE, 0))
        pool.write(self.avail + avail_ring_entry(self.avail_idx % self.num), struct.pack("<H", head))
        old, self.avail_idx = self.avail_idx, (self.avail_idx + 1) & 0xFFFF
        pool.write(self.avail + 2, struct.pack("<H", self.avail_idx))
        notified = self._notify_wanted(old, self.avail_idx)
        if notified:
            self.t.w(VirtioMmio.QUEUE_NOTIFY, self.index)
        self.requests += 1
        waiting = False
        try:
            for spin in range(POLL_LIMIT):
                used_idx = struct.unpack("<H", pool.read(self.used + 2, 2))[0]
                if used_idx != self.used_idx:
                    break
                if not notified:  # the device declined the notification, yet it owes an answer
                    notified = True
                    self.t.w(VirtioMmio.QUEUE_NOTIFY, self.index)
                    continue
                if spin and self.t.needs_reset:
                    self.broken = True
                    raise VirtioError("the device reported DEVICE_NEEDS_RESET")
                if self.t.interrupt_driven and not waiting:
                    waiting = True  # interrupts on, then look again before waiting
                    self.waits += 1
                    self._suppress(False)
                    continue
                self.t.wait(None)
            else:
                self.broken = True
                raise VirtioError("no answer from the device")
        finally:
            if waiting:
                self._suppress(True)
        if (used_idx - self.used_idx) & 0xFFFF != 1:
            self.broken = True
            raise VirtioError(f"used index moved from {self.used_idx} to {used_idx} for one request")
        elem = pool.read(self.used + used_ring_entry(self.used_idx % self.num), 8)
        self.used_idx = used_idx
        if self.t.event_idx and self.t.interrupt_driven:
            self._suppress(True)  # used_event follows the used index
        uid, length = struct.unpack("<II", elem)
        if uid != head or length > self.buffer_size:
            self.broken = True
            raise VirtioError(f"used entry ({uid}, {length}) does not match the request ({head})")
        reply = pool.read(self.in_buf, length)  # bounce out, before any parsing
        if not self.t.interrupt_driven:  # polled: InterruptStatus is acknowledged here
            self.t.w(VirtioMmio.INTERRUPT_ACK, 1)
        return reply


def virtio_devices(kernel: Kernel) -> list[tuple[DeviceFacts, VirtioMmioTransport, int]]:
    """(DT device, transport, device id) for every virtio,mmio node with a device behind it."""
    found = []
    for dev in kernel.info.devices:
        if dev.compatible != "virtio,mmio":
            continue
        t = VirtioMmioTransport(kernel.cpu, dev.address, dev.size)
        t.intid, t.interrupts, t.wait = dev.irq, kernel.irq, kernel.wait
        try:
            device_id = t.probe()
        except VirtioError as exc:
            kernel.log(f"virtio {dev.path}: {exc}", error=True)
            continue
        if device_id:
            found.append((dev, t, device_id))
    return found
