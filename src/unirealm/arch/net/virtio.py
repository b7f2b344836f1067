"""virtio 1.1 §5.1: virtio-net feature bits, struct virtio_net_hdr (§5.1.6) and struct virtio_net_config (§5.1.4)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import NetParseError


class VirtioNetFeature(IntEnum):
    """virtio 1.1 §5.1.3 feature bits (absolute bit numbers)."""

    CSUM = 0
    GUEST_CSUM = 1
    CTRL_GUEST_OFFLOADS = 2
    MTU = 3
    MAC = 5
    GUEST_TSO4 = 7
    GUEST_TSO6 = 8
    GUEST_ECN = 9
    GUEST_UFO = 10
    HOST_TSO4 = 11
    HOST_TSO6 = 12
    HOST_ECN = 13
    HOST_UFO = 14
    MRG_RXBUF = 15
    STATUS = 16
    CTRL_VQ = 17
    CTRL_RX = 18
    CTRL_VLAN = 19
    GUEST_ANNOUNCE = 21
    MQ = 22
    CTRL_MAC_ADDR = 23


VIRTIO_NET_RX_QUEUE = 0  # §5.1.2: receiveq1
VIRTIO_NET_TX_QUEUE = 1  # transmitq1
VIRTIO_NET_S_LINK_UP = 1  # §5.1.4 status
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1  # §5.1.6 flags
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_SIZE = 12  # with VERSION_1 (or MRG_RXBUF): includes num_buffers
VIRTIO_NET_CONFIG_MAC = 0  # offset of mac[6] in virtio_net_config
VIRTIO_NET_CONFIG_STATUS = 6  # le16, valid with VIRTIO_NET_F_STATUS
VIRTIO_NET_CONFIG_SIZE = 8
_VNET_HDR = struct.Struct("<BBHHHHH")


@dataclass(frozen=True)
class VirtioNetHdr:
    """§5.1.6 struct virtio_net_hdr: flags u8, gso_type u8, hdr_len le16, gso_size le16,
    csum_start le16, csum_offset le16, num_buffers le16."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0

    def pack(self) -> bytes:
        return _VNET_HDR.pack(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        )

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> VirtioNetHdr:
        if len(raw) < VIRTIO_NET_HDR_SIZE:
            raise NetParseError("short virtio_net_hdr")
        return cls(*_VNET_HDR.unpack_from(raw))


def virtio_net_config(mac: bytes, status: int = VIRTIO_NET_S_LINK_UP) -> bytes:
    """§5.1.4 struct virtio_net_config: mac[6], status le16 (max_virtqueue_pairs and mtu
    follow only with MQ / MTU, which neither side offers)."""
    if len(mac) != 6:
        raise ValueError("a MAC is 6 bytes")
    return bytes(mac) + struct.pack("<H", status)


def split_virtio_net(buf: bytes | bytearray | memoryview) -> tuple[VirtioNetHdr, bytes]:
    """A virtio-net buffer into its header and the Ethernet frame after it."""
    return VirtioNetHdr.parse(buf), bytes(buf[VIRTIO_NET_HDR_SIZE:])
