"""IEEE 802.3 / RFC 894: the Ethernet II header."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import NetParseError


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    IPV6 = 0x86DD


ETH_HLEN = 14
ETH_MTU = 1500  # the payload limit of an Ethernet II frame
ETH_FRAME_MAX = ETH_HLEN + ETH_MTU
_ETH = struct.Struct("!6s6sH")


@dataclass(frozen=True)
class Ethernet:
    """Ethernet II header: destination, source, ethertype (big-endian)."""

    dst: bytes
    src: bytes
    ethertype: int

    def pack(self) -> bytes:
        return _ETH.pack(self.dst, self.src, self.ethertype)

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> tuple[Ethernet, bytes]:
        """The header and the payload after it."""
        if len(raw) < ETH_HLEN:
            raise NetParseError("short Ethernet frame")
        dst, src, ethertype = _ETH.unpack_from(raw)
        return cls(dst, src, ethertype), bytes(raw[ETH_HLEN:])


def ethernet_frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return _ETH.pack(dst, src, ethertype) + payload
