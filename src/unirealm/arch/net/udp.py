"""RFC 768: UDP, its checksum over the pseudo-header."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .common import NetParseError, checksum, pseudo_header_sum
from .ipv4 import IpProto

UDP_HLEN = 8
_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True)
class Udp:
    """RFC 768 header: source port, destination port, length, checksum."""

    sport: int
    dport: int
    length: int = 0
    udp_checksum: int = 0

    @classmethod
    def parse(
        cls, raw: bytes | bytearray | memoryview, src: bytes = b"", dst: bytes = b""
    ) -> tuple[Udp, bytes]:
        """Header and payload; with `src`/`dst` given, a non-zero checksum is verified."""
        if len(raw) < UDP_HLEN:
            raise NetParseError("short UDP datagram")
        sport, dport, length, csum = _UDP.unpack_from(raw)
        if length < UDP_HLEN or length > len(raw):
            raise NetParseError("bad UDP length")
        if src and dst and csum != 0:
            total = checksum(bytes(raw[:length]), pseudo_header_sum(src, dst, IpProto.UDP, length))
            if total != 0:
                raise NetParseError("bad UDP checksum")
        return cls(sport, dport, length, csum), bytes(raw[UDP_HLEN:length])


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """The UDP header and payload with the pseudo-header checksum (0 sent as 0xFFFF)."""
    length = UDP_HLEN + len(payload)
    body = _UDP.pack(sport, dport, length, 0) + payload
    csum = checksum(body, pseudo_header_sum(src, dst, IpProto.UDP, length)) or 0xFFFF
    return body[:6] + struct.pack("!H", csum) + body[8:]
