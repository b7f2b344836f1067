"""RFC 791 §3.1: the IPv4 header."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import NetParseError, checksum


class IpProto(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


IPV4_HLEN = 20
IP_FLAG_DF = 0x4000
IP_FLAG_MF = 0x2000
IP_FRAG_OFFSET_MASK = 0x1FFF
IP_DEFAULT_TTL = 64
_IPV4 = struct.Struct("!BBHHHBBH4s4s")


@dataclass(frozen=True)
class IPv4:
    """RFC 791 §3.1 header. `flags_frag` holds the 3 flag bits and the 13-bit fragment
    offset as on the wire; `options` are the bytes between 20 and IHL*4."""

    src: bytes
    dst: bytes
    proto: int
    total_length: int = 0
    ident: int = 0
    flags_frag: int = IP_FLAG_DF
    ttl: int = IP_DEFAULT_TTL
    tos: int = 0
    header_checksum: int = 0
    options: bytes = b""

    @property
    def header_length(self) -> int:
        return IPV4_HLEN + len(self.options)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_frag & IP_FLAG_MF) or bool(self.flags_frag & IP_FRAG_OFFSET_MASK)

    def pack(self, payload_length: int | None = None) -> bytes:
        """The header with its checksum computed; total length from `payload_length` when
        given, else from `total_length`."""
        if len(self.options) % 4:
            raise ValueError("IPv4 options must fill whole 32-bit words")
        hlen = self.header_length
        total = hlen + payload_length if payload_length is not None else self.total_length
        head = _IPV4.pack(
            0x40 | (hlen // 4),
            self.tos,
            total,
            self.ident,
            self.flags_frag,
            self.ttl,
            self.proto,
            0,
            self.src,
            self.dst,
        ) + bytes(self.options)
        csum = checksum(head)
        return head[:10] + struct.pack("!H", csum) + head[12:]

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview, verify: bool = True) -> tuple[IPv4, bytes]:
        """The header and the payload, trimmed to the total length (Ethernet pads short
        frames)."""
        if len(raw) < IPV4_HLEN:
            raise NetParseError("short IPv4 header")
        vihl, tos, total, ident, ff, ttl, proto, csum, src, dst = _IPV4.unpack_from(raw)
        if vihl >> 4 != 4:
            raise NetParseError("not IPv4")
        hlen = (vihl & 0xF) * 4
        if hlen < IPV4_HLEN or total < hlen or total > len(raw):
            raise NetParseError("bad IPv4 lengths")
        if verify and checksum(bytes(raw[:hlen])) != 0:
            raise NetParseError("bad IPv4 header checksum")
        header = cls(src, dst, proto, total, ident, ff, ttl, tos, csum, bytes(raw[IPV4_HLEN:hlen]))
        return header, bytes(raw[hlen:total])


def ipv4_packet(
    src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0, ttl: int = IP_DEFAULT_TTL
) -> bytes:
    return IPv4(src, dst, proto, ident=ident, ttl=ttl).pack(len(payload)) + payload
