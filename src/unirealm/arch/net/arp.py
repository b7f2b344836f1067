"""RFC 826: ARP for IPv4 over Ethernet (28 bytes)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import NetParseError
from .ethernet import EtherType


class ArpOp(IntEnum):
    REQUEST = 1
    REPLY = 2


ARP_HTYPE_ETHERNET = 1
ARP_SIZE = 28
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True)
class Arp:
    """RFC 826 packet for Ethernet/IPv4: hrd, pro, hln, pln, op, sha, spa, tha, tpa."""

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    def pack(self) -> bytes:
        return _ARP.pack(
            ARP_HTYPE_ETHERNET, EtherType.IPV4, 6, 4, self.op, self.sha, self.spa, self.tha, self.tpa
        )

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> Arp:
        if len(raw) < ARP_SIZE:
            raise NetParseError("short ARP packet")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(raw)
        if htype != ARP_HTYPE_ETHERNET or ptype != EtherType.IPV4 or hlen != 6 or plen != 4:
            raise NetParseError("ARP not for Ethernet/IPv4")
        return cls(op, sha, spa, tha, tpa)
