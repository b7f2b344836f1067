"""RFC 2131 §2: the DHCP (BOOTP) message; RFC 2132: its options and the magic cookie."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .arp import ARP_HTYPE_ETHERNET
from .common import ANY_IP, NetParseError


class DhcpOp(IntEnum):
    BOOTREQUEST = 1
    BOOTREPLY = 2


class DhcpMessageType(IntEnum):
    """RFC 2132 §9.6 option 53 values."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class DhcpOption(IntEnum):
    PAD = 0
    SUBNET_MASK = 1  # §3.3
    ROUTER = 3  # §3.5
    DNS = 6  # §3.8
    HOSTNAME = 12  # §3.14
    REQUESTED_IP = 50  # §9.1
    LEASE_TIME = 51  # §9.2
    MESSAGE_TYPE = 53  # §9.6
    SERVER_ID = 54  # §9.7
    PARAM_REQUEST = 55  # §9.8
    CLIENT_ID = 61  # §9.14
    END = 255


DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
DHCP_MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3, RFC 2132 §2
DHCP_FLAG_BROADCAST = 0x8000
DHCP_FIXED_SIZE = 236  # op .. file, before the cookie
_DHCP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")


@dataclass(frozen=True)
class Dhcp:
    """RFC 2131 §2 Table 1: op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr,
    siaddr, giaddr, chaddr[16], sname[64], file[128], then the magic cookie and options
    (RFC 2132 §2: code, length, data; PAD and END are single bytes)."""

    op: int
    xid: int
    chaddr: bytes
    ciaddr: bytes = ANY_IP
    yiaddr: bytes = ANY_IP
    siaddr: bytes = ANY_IP
    giaddr: bytes = ANY_IP
    flags: int = 0
    secs: int = 0
    hops: int = 0
    htype: int = ARP_HTYPE_ETHERNET
    hlen: int = 6
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> int | None:
        raw = self.options.get(DhcpOption.MESSAGE_TYPE)
        return raw[0] if raw else None

    def ip_option(self, code: int) -> bytes | None:
        """The first address of an address-valued option (1, 3, 6, 50, 54)."""
        raw = self.options.get(code)
        return raw[:4] if raw is not None and len(raw) >= 4 else None

    def u32_option(self, code: int) -> int | None:
        raw = self.options.get(code)
        return struct.unpack("!I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None

    def pack(self) -> bytes:
        head = _DHCP.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
            bytes(self.chaddr).ljust(16, b"\x00"),
            b"",
            b"",
        )
        out = bytearray(head + DHCP_MAGIC_COOKIE)
        for code, value in self.options.items():
            if code in (DhcpOption.PAD, DhcpOption.END):
                continue
            if len(value) > 255:
                raise ValueError(f"DHCP option {code} longer than 255 bytes")
            out += bytes((code, len(value))) + value
        out.append(DhcpOption.END)
        while len(out) < 300:  # RFC 1542 §3.1.1 minimum BOOTP message
            out.append(DhcpOption.PAD)
        return bytes(out)

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> Dhcp:
        raw = bytes(raw)
        if len(raw) < DHCP_FIXED_SIZE + 4:
            raise NetParseError("short DHCP message")
        op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, _sname, _file = _DHCP.unpack_from(raw)
        if raw[DHCP_FIXED_SIZE : DHCP_FIXED_SIZE + 4] != DHCP_MAGIC_COOKIE:
            raise NetParseError("no DHCP magic cookie")
        if hlen > 16:
            raise NetParseError("bad DHCP hlen")
        options: dict[int, bytes] = {}
        i = DHCP_FIXED_SIZE + 4
        while i < len(raw):
            code = raw[i]
            if code == DhcpOption.END:
                break
            if code == DhcpOption.PAD:
                i += 1
                continue
            if i + 1 >= len(raw) or i + 2 + raw[i + 1] > len(raw):
                raise NetParseError("truncated DHCP option")
            length = raw[i + 1]
            options[code] = options.get(code, b"") + raw[i + 2 : i + 2 + length]  # RFC 3396 concat
            i += 2 + length
        return cls(op, xid, ch[:hlen], ci, yi, si, gi, flags, secs, hops, htype, hlen, options)


def dhcp_message_type(kind: int) -> bytes:
    return bytes((kind,))
