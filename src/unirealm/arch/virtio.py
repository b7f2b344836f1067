"""virtio over MMIO, OASIS "Virtual I/O Device (VIRTIO)" 1.1/1.2.

- §4.2.2 "MMIO Device Register Layout" (modern, version 2): register offsets and values.
- §2.1 device status bits, §6 reserved feature bits (VERSION_1 = 32, ACCESS_PLATFORM = 33).
- §2.7 (1.2; §2.6 in 1.1) split virtqueues: the 16-byte descriptor, the available ring
  (flags, idx, ring[num], used_event) and the used ring (flags, idx, ring[num] of {id, len},
  avail_event), with their alignments (§2.7.10 in 1.2, "Virtqueue Layout": desc 16,
  avail 2, used 4).
- §5.1/5.2 device ids; §5.11 (1.2) virtio-9p configuration: tag_len le16, tag[tag_len].
- §5.3 (1.2) virtio-console: receiveq 0 / transmitq 1 of port 0, virtio_console_config
  (cols, rows, max_nr_ports, emerg_wr).

Both the host's device model and the guest's driver use these names; neither repeats a
layout.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

from .layout import Field, Layout

VIRTIO_MMIO_MAGIC = 0x7472_6976  # "virt", little-endian
VIRTIO_MMIO_VERSION = 2  # modern; 1 is legacy
VIRTIO_VENDOR_LKVM = 0x4D56_4B4C  # "LKVM", kvmtool's vendor id
VIRTIO_MMIO_CONFIG = 0x100  # device-specific configuration space


class VirtioMmio(IntEnum):
    """§4.2.2 register offsets (all 32-bit registers)."""

    MAGIC_VALUE = 0x000
    VERSION = 0x004
    DEVICE_ID = 0x008
    VENDOR_ID = 0x00C
    DEVICE_FEATURES = 0x010
    DEVICE_FEATURES_SEL = 0x014
    DRIVER_FEATURES = 0x020
    DRIVER_FEATURES_SEL = 0x024
    QUEUE_SEL = 0x030
    QUEUE_NUM_MAX = 0x034
    QUEUE_NUM = 0x038
    QUEUE_READY = 0x044
    QUEUE_NOTIFY = 0x050
    INTERRUPT_STATUS = 0x060
    INTERRUPT_ACK = 0x064
    STATUS = 0x070
    QUEUE_DESC_LOW = 0x080
    QUEUE_DESC_HIGH = 0x084
    QUEUE_DRIVER_LOW = 0x090  # the available ring
    QUEUE_DRIVER_HIGH = 0x094
    QUEUE_DEVICE_LOW = 0x0A0  # the used ring
    QUEUE_DEVICE_HIGH = 0x0A4
    CONFIG_GENERATION = 0x0FC


class VirtioStatus(IntFlag):
    """§2.1 device status field."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 0x40
    FAILED = 0x80


class VirtioInterrupt(IntFlag):
    """§4.2.2 InterruptStatus bits."""

    USED_BUFFER = 1
    CONFIG_CHANGE = 2


class VirtioDeviceId(IntEnum):
    NET = 1
    BLOCK = 2
    CONSOLE = 3
    ENTROPY = 4
    NINEP = 9  # "9P transport"


# §6 reserved feature bits (absolute bit numbers; FeaturesSel picks the 32-bit word).
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_9P_MOUNT_TAG = 0  # §5.11.3: the config space carries a mount tag


def feature(bit: int) -> int:
    return 1 << bit


class VirtqDescFlags(IntFlag):
    NEXT = 1
    WRITE = 2  # device-writable (otherwise device-readable)
    INDIRECT = 4


# The bits the per-chain paths test, as plain ints (IntFlag arithmetic builds an enum member
# at every test): §2.7.5's VIRTQ_DESC_F_* and §2.1's DRIVER_OK and DEVICE_NEEDS_RESET.
VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT = (
    int(VirtqDescFlags.NEXT), int(VirtqDescFlags.WRITE), int(VirtqDescFlags.INDIRECT))
STATUS_DRIVER_OK, STATUS_DEVICE_NEEDS_RESET = int(VirtioStatus.DRIVER_OK), int(VirtioStatus.DEVICE_NEEDS_RESET)


VIRTQ_DESC = Layout(
    "virtq_desc",
    "virtio 1.2 §2.7.5 The Virtqueue Descriptor Table",
    16,
    (Field("addr", 0, "Q"), Field("len", 8, "I"), Field("flags", 12, "H"), Field("next", 14, "H")),
)
VIRTQ_USED_ELEM = Layout(
    "virtq_used_elem",
    "virtio 1.2 §2.7.8 The Virtqueue Used Ring",
    8,
    (Field("id", 0, "I"), Field("len", 4, "I")),
)
VIRTQ_USED_F_NO_NOTIFY = 1  # §2.7.10: used->flags bit 0, the device needs no notifications
VIRTQ_AVAIL_F_NO_INTERRUPT = 1  # §2.7.7: avail->flags bit 0, the driver needs no used-buffer interrupts
VIRTQ_RING_HEADER = 4  # flags le16, idx le16: the start of both rings
VIRTQ_DESC_ALIGN, VIRTQ_AVAIL_ALIGN, VIRTQ_USED_ALIGN = 16, 2, 4
VIRTQ_MAX_SIZE = 32768  # §2.7: Queue Size is at most 32768


def desc_table_size(num: int) -> int:
    return VIRTQ_DESC.size * num


def avail_ring_size(num: int) -> int:
    """flags, idx, ring[num], used_event (all le16)."""
    return VIRTQ_RING_HEADER + 2 * num + 2


def used_ring_size(num: int) -> int:
    """flags, idx, ring[num] of virtq_used_elem, avail_event."""
    return VIRTQ_RING_HEADER + VIRTQ_USED_ELEM.size * num + 2


def avail_ring_entry(num_index: int) -> int:
    """Offset of ring[i] in the available ring."""
    return VIRTQ_RING_HEADER + 2 * num_index


def used_ring_entry(num_index: int) -> int:
    return VIRTQ_RING_HEADER + VIRTQ_USED_ELEM.size * num_index


def used_event_offset(num: int) -> int:
    """§2.7.6: the available ring's used_event (le16, after ring[num]; VIRTIO_F_EVENT_IDX)."""
    return VIRTQ_RING_HEADER + 2 * num


def avail_event_offset(num: int) -> int:
    """§2.7.8: the used ring's avail_event (le16, after ring[num]; VIRTIO_F_EVENT_IDX)."""
    return VIRTQ_RING_HEADER + VIRTQ_USED_ELEM.size * num


def need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """§2.7.10 with VIRTIO_F_EVENT_IDX: whether moving a ring's idx from `old_idx` to
    `new_idx` wrote the entry `event_idx` the other side asked to hear about (all le16,
    modulo 2^16: the spec's vring_need_event)."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old_idx) & 0xFFFF


def pack_desc(addr: int, length: int, flags: int, next_: int) -> bytes:
    return struct.pack("<QIHH", addr, length, flags, next_)


def unpack_desc(raw: bytes) -> tuple[int, int, int, int]:
    """(addr, len, flags, next)."""
    addr, length, flags, next_ = struct.unpack_from("<QIHH", raw)
    return addr, length, flags, next_


def ninep_config(tag: str) -> bytes:
    """§5.11.4 virtio_9p_config: tag_len le16, then the tag (not NUL-terminated)."""
    raw = tag.encode()
    return struct.pack("<H", len(raw)) + raw


# §5.3 virtio-console (device id 3), without VIRTIO_CONSOLE_F_MULTIPORT: one port, two queues.
VIRTIO_CONSOLE_F_SIZE = 0  # cols and rows are valid
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2
VIRTIO_CONSOLE_RX_QUEUE = 0  # receiveq (port 0): device-writable buffers, host -> guest
VIRTIO_CONSOLE_TX_QUEUE = 1  # transmitq (port 0): device-readable buffers, guest -> host
VIRTIO_CONSOLE_CONFIG = Layout(
    "virtio_console_config",
    "virtio 1.2 §5.3.4 Device configuration layout",
    12,
    (Field("cols", 0, "H"), Field("rows", 2, "H"), Field("max_nr_ports", 4, "I"), Field("emerg_wr", 8, "I")),
)
