"""RFC 792: ICMP echo / echo reply."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .common import NetParseError, checksum


class IcmpType(IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11


ICMP_HLEN = 8
_ICMP_ECHO = struct.Struct("!BBHHH")


@dataclass(frozen=True)
class IcmpEcho:
    """RFC 792 echo / echo reply: type, code, checksum, identifier, sequence, data."""

    type: int
    ident: int
    seq: int
    data: bytes = b""
    code: int = 0

    def pack(self) -> bytes:
        body = _ICMP_ECHO.pack(self.type, self.code, 0, self.ident, self.seq) + self.data
        csum = checksum(body)
        return body[:2] + struct.pack("!H", csum) + body[4:]

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview, verify: bool = True) -> IcmpEcho:
        if len(raw) < ICMP_HLEN:
            raise NetParseError("short ICMP message")
        if verify and checksum(raw) != 0:
            raise NetParseError("bad ICMP checksum")
        type_, code, _csum, ident, seq = _ICMP_ECHO.unpack_from(raw)
        if type_ not in (IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY):
            raise NetParseError(f"ICMP type {type_} is not an echo")
        return cls(type_, ident, seq, bytes(raw[ICMP_HLEN:]), code)
