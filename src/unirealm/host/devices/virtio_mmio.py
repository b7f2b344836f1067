"""A modern (version 2) virtio-mmio transport with a split-virtqueue engine (virtio 1.2
§4.2.2 registers, §2.7 split virtqueues; layouts in unirealm.arch.virtio).

The device reaches guest memory only through a *host memory view* the VMM hands it:

- a plain VM: the host's own mapping of the VM's RAM (`RamView`);
- a realm: only the pages the host itself mapped with RTT_MAP_UNPROTECTED (`SharedView`
  over RealmVm.shared). The unprotected bit of a DMA address is masked before translating,
  so both conventions work (canonical GPA, Linux before 6.15; GPA | top IPA bit, Linux since
  "arm64: realm: Use aliased addresses for device DMA to shared buffers"). Realm memory is
  never touched: an address outside the shared pages is refused.

A chain the device cannot trust (out-of-range address, a loop, a length that overflows,
memory that is not shared, a readable buffer after a writable one, an indirect table the
device never offered) puts the device in DEVICE_NEEDS_RESET with a config-change interrupt
pending (§2.1.2): the queue stops until the driver resets the device. Nothing the guest
writes raises out of the MMIO handlers.

VIRTIO_F_EVENT_IDX (§2.7.10) is offered unless the device is made with `event_idx=False`;
once negotiated the ring flags are ignored: a used-buffer notification is sent exactly when
the entry written is the one the driver's used_event names (modulo 2^16), and after taking
a queue's chains the device writes avail_event (`avail_event_for`: the next entry, for a
device that answers at the notify).

Interrupts: there is no GIC model, so nothing is injected. Requests complete synchronously
inside the QueueNotify write (the VMM handles it before the guest runs again); the driver
polls the used ring and InterruptStatus, as a guest with interrupts masked would.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.virtio import (
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK,
    VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_MAGIC,
    VIRTIO_MMIO_VERSION,
    VIRTIO_VENDOR_LKVM,
    VIRTQ_AVAIL_ALIGN,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC,
    VIRTQ_DESC_ALIGN,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_ALIGN,
    VirtioInterrupt,
    VirtioMmio,
    VirtioStatus,
    avail_event_offset,
    avail_ring_entry,
    avail_ring_size,
    desc_table_size,
    feature,
    need_event,
    unpack_desc,
    used_event_offset,
    used_ring_entry,
    used_ring_size,
)

log = logging.getLogger("unirealm.virtio")
MAX_CHAIN_BYTES = 16 << 20  # a request or response larger than this is refused


class DmaError(Exception):
    """A guest address the device may not or cannot access."""


class MemoryView(Protocol):
    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class RamView:
    """A plain VM's RAM [ipa_base, ipa_base + size) at host PA `pa_base` through `mem`."""

    def __init__(self, mem: object, pa_base: int, ipa_base: int, size: int) -> None:
        self.mem = mem
        self.pa_base, self.ipa_base, self.size = pa_base, ipa_base, size

    def _pa(self, addr: int, size: int) -> int:
        if size < 0 or addr < self.ipa_base or addr + size > self.ipa_base + self.size:
            raise DmaError(f"DMA to [{addr:#x}, +{size:#x}) is outside guest RAM")
        return self.pa_base + addr - self.ipa_base

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.mem.read(self._pa(addr, size), size))  # type: ignore[attr-defined]

    def write(self, addr: int, data: bytes) -> None:
        self.mem.write(self._pa(addr, len(data)), data)  # type: ignore[attr-defined]


class SharedView:
    """A realm's shared memory only: unprotected IPA page -> host NS PA (RealmVm.shared),
    the pages the host mapped with RTT_MAP_UNPROTECTED. Addresses may come canonical or
    aliased: the unprotected bit is masked, then set, before the lookup."""

    def __init__(self, mem: object, shared: dict[int, int], unprotected_bit: int) -> None:
        self.mem = mem
        self.shared = shared
        self.bit = unprotected_bit

    def _pieces(self, addr: int, size: int) -> list[tuple[int, int]]:
        if size < 0 or addr < 0 or addr + size > 2 * self.bit:
            raise DmaError(f"DMA to [{addr:#x}, +{size:#x}) is outside the IPA space")
        out = []
        addr = (addr & ~self.bit) | self.bit
        end = addr + size
        while addr < end:
            page = addr & ~(GRANULE_SIZE - 1)
            pa = self.shared.get(page)
            if pa is None:
                raise DmaError(f"DMA to {addr & ~self.bit:#x}: not memory the realm shared")
            take = min(end - addr, page + GRANULE_SIZE - addr)
            out.append((pa + addr - page, take))
            addr += take
        return out

    def _one_page(self, addr: int, size: int) -> int | None:
        """The host PA of an access inside one shared page (the common ring and header
        access), or None: then `_pieces` decides, refusals included."""
        bit = self.bit
        if size <= 0 or addr < 0 or addr + size > 2 * bit:
            return None
        addr |= bit
        off = addr & (GRANULE_SIZE - 1)
        if off + size > GRANULE_SIZE:
            return None
        pa = self.shared.get(addr - off)
        return None if pa is None else pa + off

    def read(self, addr: int, size: int) -> bytes:
        pa = self._one_page(addr, size)
        if pa is not None:
            return bytes(self.mem.read(pa, size))  # type: ignore[attr-defined]
        return b"".join(bytes(self.mem.read(pa, n)) for pa, n in self._pieces(addr, size))  # type: ignore[attr-defined]

    def write(self, addr: int, data: bytes) -> None:
        pa = self._one_page(addr, len(data))
        if pa is not None:
            self.mem.write(pa, data)  # type: ignore[attr-defined]
            return
        done = 0
        for pa, n in self._pieces(addr, len(data)):
            self.mem.write(pa, data[done : done + n])  # type: ignore[attr-defined]
            done += n


class VirtioBackend(Protocol):
    """What a device type adds to the transport."""

    @property
    def device_id(self) -> int: ...  # read-only: a device type's class attribute (a VirtioDeviceId)

    features: int  # device-specific feature bits (the transport adds VERSION_1 etc.)
    num_queues: int
    queue_num_max: int

    def config(self) -> bytes: ...

    def handle(self, queue: int, request: bytes, capacity: int) -> bytes:
        """One chain: the device-readable bytes in, at most `capacity` bytes out."""
        ...


class ChainError(Exception):
    """A descriptor chain the device refuses."""


@dataclass
class Chain:
    head: int
    readable: list[tuple[int, int]]  # (addr, len)
    writable: list[tuple[int, int]]

    @property
    def capacity(self) -> int:
        return sum(n for _, n in self.writable)


@dataclass
class Virtqueue:
    num_max: int
    num: int = 0
    ready: bool = False
    desc: int = 0
    avail: int = 0
    used: int = 0
    last_avail: int = 0
    used_idx: int = 0

    def reset(self) -> None:
        self.num, self.ready, self.desc, self.avail, self.used = 0, False, 0, 0, 0
        self.last_avail = self.used_idx = 0

    def valid(self) -> bool:
        return (
            0 < self.num <= self.num_max
            and self.num & (self.num - 1) == 0
            and self.desc % VIRTQ_DESC_ALIGN == 0
            and self.avail % VIRTQ_AVAIL_ALIGN == 0
            and self.used % VIRTQ_USED_ALIGN == 0
        )


def _set_half(value: int, high: bool, word: int) -> int:
    return (value & 0xFFFF_FFFF) | (word << 32) if high else (value & ~0xFFFF_FFFF) | word


class VirtioMmioDevice:
    """The transport. `memory` is set by the VMM once guest memory exists (None: any
    request puts the device in NEEDS_RESET)."""

    def __init__(self, backend: VirtioBackend, access_platform: bool = False, name: str = "virtio",
                 memory: MemoryView | None = None, on_error: Callable[[str], None] | None = None,
                 event_idx: bool = True) -> None:
        self.backend = backend
        self.name = name
        self.memory = memory
        self.on_error = on_error
        self.device_features = backend.features | feature(VIRTIO_F_VERSION_1)
        if event_idx:  # §2.7.10: used_event/avail_event in place of the ring flags, if the driver takes it
            self.device_features |= feature(VIRTIO_F_EVENT_IDX)
        if access_platform:
            # kvmtool forces ACCESS_PLATFORM for realms: the device may only touch memory
            # the driver exposes (its DMA API path), here the realm's shared pages.
            self.device_features |= feature(VIRTIO_F_ACCESS_PLATFORM)
        self.required = feature(VIRTIO_F_VERSION_1) | (feature(VIRTIO_F_ACCESS_PLATFORM) if access_platform else 0)
        self.queues = [Virtqueue(backend.queue_num_max) for _ in range(backend.num_queues)]
        self.errors: list[str] = []
        self.requests = 0
        self.hostile: Any = None  # host.hostile.Hostile in a `--hostile` run: it writes the used entries
        self.on_interrupt: Callable[[], None] | None = None  # pulses the device's SPI (kvm__irq_trigger)
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.event_idx = False  # VIRTIO_F_EVENT_IDX negotiated (set at FEATURES_OK)
        self.queue_sel = 0
        self.interrupt_status = 0
        for q in self.queues:
            q.reset()

    # --- registers ------------------------------------------------------------------------
    @property
    def _queue(self) -> Virtqueue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def mmio_read(self, offset: int, size: int) -> int:
        if offset >= VIRTIO_MMIO_CONFIG:
            cfg = self.backend.config()
            start = offset - VIRTIO_MMIO_CONFIG
            return int.from_bytes(cfg[start : start + size].ljust(size, b"\0"), "little")
        if size != 4:
            return 0  # §4.2.2.2: registers are 32-bit
        q = self._queue
        reg = offset
        if reg == VirtioMmio.MAGIC_VALUE:
            return VIRTIO_MMIO_MAGIC
        if reg == VirtioMmio.VERSION:
            return VIRTIO_MMIO_VERSION
        if reg == VirtioMmio.DEVICE_ID:
            return self.backend.device_id
        if reg == VirtioMmio.VENDOR_ID:
            return VIRTIO_VENDOR_LKVM
        if reg == VirtioMmio.DEVICE_FEATURES:
            return (self.device_features >> (32 * self.device_features_sel)) & 0xFFFF_FFFF if self.device_features_sel < 2 else 0
        if reg == VirtioMmio.QUEUE_NUM_MAX:
            return q.num_max if q is not None else 0
        if reg == VirtioMmio.QUEUE_READY:
            return int(q.ready) if q is not None else 0
        if reg == VirtioMmio.INTERRUPT_STATUS:
            return self.interrupt_status
        if reg == VirtioMmio.STATUS:
            return self.status
        if reg == VirtioMmio.CONFIG_GENERATION:
            return 0
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset >= VIRTIO_MMIO_CONFIG or size != 4:
            return  # the 9p config space is read-only; registers are 32-bit
        value &= 0xFFFF_FFFF
        q = self._queue
        reg = offset
        if reg == VirtioMmio.DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif reg == VirtioMmio.DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif reg == VirtioMmio.DRIVER_FEATURES:
            if self.driver_features_sel < 2 and not self.status & VirtioStatus.FEATURES_OK:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xFFFF_FFFF << shift)) | (value << shift)
        elif reg == VirtioMmio.QUEUE_SEL:
            self.queue_sel = value
        elif reg == VirtioMmio.STATUS:
            self._write_status(value)
        elif reg == VirtioMmio.INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif reg == VirtioMmio.QUEUE_NOTIFY:
            self.notify(value)
        elif q is not None and not q.ready:
            if reg == VirtioMmio.QUEUE_NUM:
                q.num = value
            elif reg == VirtioMmio.QUEUE_READY:
                q.ready = bool(value & 1) and q.valid()
            elif reg in (VirtioMmio.QUEUE_DESC_LOW, VirtioMmio.QUEUE_DESC_HIGH):
                q.desc = _set_half(q.desc, reg == VirtioMmio.QUEUE_DESC_HIGH, value)
            elif reg in (VirtioMmio.QUEUE_DRIVER_LOW, VirtioMmio.QUEUE_DRIVER_HIGH):
                q.avail = _set_half(q.avail, reg == VirtioMmio.QUEUE_DRIVER_HIGH, value)
            elif reg in (VirtioMmio.QUEUE_DEVICE_LOW, VirtioMmio.QUEUE_DEVICE_HIGH):
                q.used = _set_half(q.used, reg == VirtioMmio.QUEUE_DEVICE_HIGH, value)
        elif q is not None and reg == VirtioMmio.QUEUE_READY and not value & 1:
            q.ready = False

    def _write_status(self, value: int) -> None:
        if value == 0:
            self.reset()
            return
        new = VirtioStatus(value & 0xFF)
        if new & VirtioStatus.FEATURES_OK and not self.status & VirtioStatus.FEATURES_OK:
            extra = self.driver_features & ~self.device_features
            if extra or self.driver_features & self.required != self.required:
                new &= ~VirtioStatus.FEATURES_OK  # §3.1.1: the driver re-reads and gives up
            else:
                self.event_idx = bool(self.driver_features & feature(VIRTIO_F_EVENT_IDX))
        keep = self.status & STATUS_DEVICE_NEEDS_RESET
        self.status = int(new) | keep  # a plain int: the hot paths test it bit by bit

    # --- the virtqueue engine --------------------------------------------------------------
    def raise_interrupt(self, reason: int) -> None:
        """Set `reason` in InterruptStatus (§4.2.2) and, when that sets a bit the driver has
        not acknowledged yet, signal the device's interrupt line (an edge). Notifications
        while the bit is still set are coalesced: the driver's handler, which acknowledges
        InterruptStatus before it looks at the rings, sees those buffers as well."""
        reason = int(reason)  # plain ints: IntFlag arithmetic builds a member at each step
        new = reason & ~self.interrupt_status
        self.interrupt_status |= reason
        if new and self.on_interrupt is not None:
            self.on_interrupt()

    def fail(self, why: str) -> None:
        self.status |= STATUS_DEVICE_NEEDS_RESET
        self.raise_interrupt(VirtioInterrupt.CONFIG_CHANGE)
        self.errors.append(why)
        log.warning("%s: %s; device needs reset", self.name, why)
        if self.on_error is not None:
            self.on_error(why)

    def notify(self, index: int) -> None:
        if self.status & STATUS_DEVICE_NEEDS_RESET or not self.status & STATUS_DRIVER_OK:
            return
        if index >= len(self.queues) or not self.queues[index].ready:
            return
        if self.memory is None:
            self.fail("no guest memory view")
            return
        try:
            self._process(index, self.queues[index], self.memory)
        except (DmaError, ChainError) as exc:
            self.fail(str(exc))

    def _u16(self, mem: MemoryView, addr: int) -> int:
        return int(struct.unpack("<H", mem.read(addr, 2))[0])

    def _process(self, index: int, q: Virtqueue, mem: MemoryView) -> None:
        # The rings must lie in accessible memory as a whole before anything is parsed
        # (each of their pages checked, none copied).
        self._check_ring(mem, q.desc, desc_table_size(q.num))
        self._check_ring(mem, q.avail, avail_ring_size(q.num))
        self._check_ring(mem, q.used, used_ring_size(q.num))
        avail_idx = self._u16(mem, q.avail + 2)
        pending = (avail_idx - q.last_avail) & 0xFFFF
        if pending > q.num:
            raise ChainError(f"available index moved by {pending} on a queue of {q.num}")
        for _ in range(pending):
            head = self._u16(mem, q.avail + avail_ring_entry(q.last_avail % q.num))
            chain = self._walk(mem, q, head)
            request = b"".join(mem.read(a, n) for a, n in chain.readable)
            self.requests += 1
            try:
                reply = self.backend.handle(index, request, chain.capacity)
            except Exception as exc:  # a device bug must not take the VMM down
                raise ChainError(f"device error: {type(exc).__name__}: {exc}") from None
            reply = reply[: chain.capacity]
            self._scatter(mem, chain, reply, note=True)
            used_id, used_len = head, len(reply)
            if self.hostile is not None:
                used_id, used_len = self.hostile.used_entry(q.num, head, used_len, chain.capacity)
            slot = q.used + used_ring_entry(q.used_idx % q.num)
            mem.write(slot, struct.pack("<II", used_id, used_len))
            q.used_idx = (q.used_idx + 1) & 0xFFFF
            mem.write(q.used + 2, struct.pack("<H", q.used_idx))
            q.last_avail = (q.last_avail + 1) & 0xFFFF
            self._used_buffer(mem, q)
        if self.event_idx:
            self._set_avail_event(mem, q, self.avail_event_for(index, q))

    def avail_event_for(self, index: int, q: Virtqueue) -> int:
        """With VIRTIO_F_EVENT_IDX, the available-ring index whose entry the driver notifies
        queue `index` for (§2.7.10): the next one, for a device that takes its chains at the
        notify. A device that also looks at a queue by itself may ask for fewer."""
        return q.last_avail

    def _set_avail_event(self, mem: MemoryView, q: Virtqueue, value: int) -> None:
        mem.write(q.used + avail_event_offset(q.num), struct.pack("<H", value & 0xFFFF))

    def _scatter(self, mem: MemoryView, chain: Chain, data: bytes | bytearray, note: bool) -> int:
        """Write `data` across the chain's device-writable buffers; the bytes written. `note`:
        a reply `--hostile toctou` may overwrite later."""
        done = 0
        for addr, n in chain.writable:
            if done >= len(data):
                break
            piece = bytes(data[done : done + n])
            mem.write(addr, piece)
            if note and self.hostile is not None:
                self.hostile.note_reply(mem, addr, len(piece))
            done += len(piece)
        return done

    def _receive_queue(self, index: int) -> tuple[Virtqueue, MemoryView] | None:
        """Queue `index` and the memory view, if the device may fill that queue now."""
        q = self.queues[index]
        if (self.status & STATUS_DEVICE_NEEDS_RESET or not self.status & STATUS_DRIVER_OK
                or not q.ready):
            return None
        if self.memory is None:
            self.fail("no guest memory view")
            return None
        return q, self.memory

    def _push_used(self, mem: MemoryView, q: Virtqueue, used_id: int, length: int) -> None:
        """One used entry, the used index, and the next available entry consumed."""
        mem.write(q.used + used_ring_entry(q.used_idx % q.num), struct.pack("<II", used_id, length))
        q.used_idx = (q.used_idx + 1) & 0xFFFF
        mem.write(q.used + 2, struct.pack("<H", q.used_idx))
        q.last_avail = (q.last_avail + 1) & 0xFFFF
        self._used_buffer(mem, q)

    def _used_buffer(self, mem: MemoryView, q: Virtqueue) -> None:
        """The used-buffer notification after one used-ring entry (the used index just moved
        by one), unless the driver suppressed it (virtio 1.2 §2.7.7.2). Without
        VIRTIO_F_EVENT_IDX: avail->flags VIRTQ_AVAIL_F_NO_INTERRUPT set, the device does not
        notify. With it the flags are ignored: the device notifies exactly when the entry it
        wrote is the one used_event names (the used index was equal to used_event, modulo
        2^16), and not otherwise. A suppressed notification leaves InterruptStatus alone too,
        as QEMU's and kvmtool's devices do."""
        if self.event_idx:
            if not need_event(self._u16(mem, q.avail + used_event_offset(q.num)), q.used_idx, q.used_idx - 1):
                return
        elif self._u16(mem, q.avail) & VIRTQ_AVAIL_F_NO_INTERRUPT:
            return
        self.raise_interrupt(VirtioInterrupt.USED_BUFFER)

    def _receive_chains(self, mem: MemoryView, q: Virtqueue, more: Callable[[], bool]) -> Iterator[Chain]:
        """The driver's posted device-writable chains, one at a time while `more()` says the
        device has something to put in them (a receive queue: virtio-net RX, console input)."""
        avail_idx = self._u16(mem, q.avail + 2)
        pending = (avail_idx - q.last_avail) & 0xFFFF
        if pending > q.num:
            raise ChainError(f"available index moved by {pending} on a queue of {q.num}")
        # The consumer moves last_avail when it uses a chain; one it leaves is offered again.
        while (avail_idx - q.last_avail) & 0xFFFF and more():
            chain = self._walk(mem, q, self._u16(mem, q.avail + avail_ring_entry(q.last_avail % q.num)))
            if chain.readable:
                raise ChainError("device-readable descriptor in a receive chain")
            yield chain

    def _walk(self, mem: MemoryView, q: Virtqueue, head: int) -> Chain:
        if head >= q.num:
            raise ChainError(f"descriptor head {head} is outside a queue of {q.num}")
        chain = Chain(head, [], [])
        seen: set[int] = set()
        i = head
        total = 0
        while True:
            if i in seen or len(seen) >= q.num:
                raise ChainError(f"descriptor chain from {head} loops")
            seen.add(i)
            addr, length, flags, nxt = unpack_desc(mem.read(q.desc + i * VIRTQ_DESC.size, VIRTQ_DESC.size))
            if flags & VIRTQ_DESC_F_INDIRECT:
                raise ChainError("indirect descriptor (VIRTIO_F_INDIRECT_DESC was not offered)")
            if addr + length > 0xFFFF_FFFF_FFFF_FFFF:
                raise ChainError(f"descriptor {i} wraps the address space")
            total += length
            if total > MAX_CHAIN_BYTES:
                raise ChainError(f"descriptor chain from {head} is longer than {MAX_CHAIN_BYTES} bytes")
            if length:
                self._check(mem, addr, length)
            if flags & VIRTQ_DESC_F_WRITE:
                chain.writable.append((addr, length))
            elif chain.writable:
                raise ChainError(f"device-readable descriptor {i} after a device-writable one")
            else:
                chain.readable.append((addr, length))
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= q.num:
                raise ChainError(f"descriptor {i} chains to {nxt}, outside a queue of {q.num}")
            i = nxt

    @classmethod
    def _check_ring(cls, mem: MemoryView, addr: int, length: int) -> None:
        """`_check` for a ring; refused, the view names the whole ring in its DmaError."""
        try:
            cls._check(mem, addr, length)
        except DmaError:
            mem.read(addr, length)
            raise

    @staticmethod
    def _check(mem: MemoryView, addr: int, length: int) -> None:
        """Refuse a buffer before using it: its first and last byte must be accessible, and
        every page between (a view raises DmaError on any page it does not allow)."""
        page = addr & ~(GRANULE_SIZE - 1)
        end = addr + length
        while page < end:
            start = max(page, addr)
            mem.read(start, 1)
            page += GRANULE_SIZE
        mem.read(end - 1, 1)


class ReceivingDevice(VirtioMmioDevice):
    """A device with a receive queue it fills from the host side (virtio-net RX, console
    input): waiting data goes into posted buffers whenever the driver touches the device
    (a notify of that queue, any register access) and whenever the VMM calls `deliver`."""

    receive_queue = 0

    def has_input(self) -> bool:
        """Whether anything waits for a receive buffer."""
        raise NotImplementedError

    def fill(self, mem: MemoryView, q: Virtqueue, chain: Chain) -> int:
        """Put waiting data into one posted chain and push its used entry (1), or leave the
        chain for the next data (0)."""
        raise NotImplementedError

    def deliver(self) -> int:
        """Fill posted receive buffers; how many were used."""
        if not self.has_input():
            return 0
        ready = self._receive_queue(self.receive_queue)
        if ready is None:
            return 0
        q, mem = ready
        done = 0
        try:
            for chain in self._receive_chains(mem, q, self.has_input):
                done += self.fill(mem, q, chain)
        except (DmaError, ChainError) as exc:
            self.fail(str(exc))
        return done

    def notify(self, index: int) -> None:
        if index == self.receive_queue:
            self.deliver()  # new buffers: fill them with whatever is waiting
        else:
            super().notify(index)

    def mmio_read(self, offset: int, size: int) -> int:
        self.deliver()  # a polling driver sees data as soon as it looks
        return super().mmio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        super().mmio_write(offset, size, value)
        self.deliver()
