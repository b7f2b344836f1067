"""RFC 9293 §3.1: the TCP header and its options (§3.2: EOL, NOP, MSS; RFC 7323 §2 window
scale, §3 timestamps; RFC 2018 SACK-permitted and SACK), checksum over the pseudo-header;
sequence-number comparison."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from .common import NetParseError, checksum, checksum_partial, pseudo_header_sum
from .ipv4 import IpProto


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class TcpOpt(IntEnum):
    EOL = 0
    NOP = 1
    MSS = 2
    WSCALE = 3  # RFC 7323 §2
    SACK_PERMITTED = 4  # RFC 2018
    SACK = 5
    TIMESTAMP = 8  # RFC 7323 §3


TCP_HLEN = 20
TCP_DEFAULT_MSS = 536  # RFC 9293 §3.7.1: without an MSS option
TCP_MAX_WSCALE = 14
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(frozen=True)
class TcpOptions:
    """The options this stack reads and writes; `unknown` keeps the others (kind, data)."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None
    unknown: tuple[tuple[int, bytes], ...] = ()

    def pack(self) -> bytes:
        """Options padded with NOPs/EOL to a multiple of 4 bytes."""
        out = bytearray()
        if self.mss is not None:
            out += struct.pack("!BBH", TcpOpt.MSS, 4, self.mss)
        # Linux's tcp_options_write order: SACK-permitted shares a word with timestamps.
        if self.timestamp is not None:
            lead = (TcpOpt.SACK_PERMITTED, 2) if self.sack_permitted else (TcpOpt.NOP, TcpOpt.NOP)
            out += bytes(lead) + struct.pack("!BBII", TcpOpt.TIMESTAMP, 10, *self.timestamp)
        elif self.sack_permitted:
            out += bytes((TcpOpt.NOP, TcpOpt.NOP, TcpOpt.SACK_PERMITTED, 2))
        if self.wscale is not None:
            out += bytes((TcpOpt.NOP, TcpOpt.WSCALE, 3, self.wscale))
        if self.sack_blocks:
            out += bytes((TcpOpt.NOP, TcpOpt.NOP, TcpOpt.SACK, 2 + 8 * len(self.sack_blocks)))
            for left, right in self.sack_blocks:
                out += struct.pack("!II", left, right)
        while len(out) % 4:
            out.append(TcpOpt.EOL)
        return bytes(out)

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview) -> TcpOptions:
        """RFC 9293 §3.2: kind, then (except EOL and NOP) length covering kind and length."""
        raw = bytes(raw)
        mss = wscale = ts = None
        sack_ok = False
        blocks: list[tuple[int, int]] = []
        unknown: list[tuple[int, bytes]] = []
        i = 0
        while i < len(raw):
            kind = raw[i]
            if kind == TcpOpt.EOL:
                break
            if kind == TcpOpt.NOP:
                i += 1
                continue
            if i + 1 >= len(raw):
                raise NetParseError("truncated TCP option")
            length = raw[i + 1]
            if length < 2 or i + length > len(raw):
                raise NetParseError("bad TCP option length")
            data = raw[i + 2 : i + length]
            if kind == TcpOpt.MSS and length == 4:
                mss = struct.unpack("!H", data)[0]
            elif kind == TcpOpt.WSCALE and length == 3:
                wscale = min(data[0], TCP_MAX_WSCALE)
            elif kind == TcpOpt.SACK_PERMITTED and length == 2:
                sack_ok = True
            elif kind == TcpOpt.SACK and (length - 2) % 8 == 0:
                blocks.extend(struct.unpack_from("!II", data, j) for j in range(0, length - 2, 8))
            elif kind == TcpOpt.TIMESTAMP and length == 10:
                ts = struct.unpack("!II", data)
            else:
                unknown.append((kind, bytes(data)))
            i += length
        return cls(mss, wscale, sack_ok, tuple(blocks), ts, tuple(unknown))


@dataclass(frozen=True)
class Tcp:
    """RFC 9293 §3.1 header: ports, sequence and acknowledgment numbers, data offset,
    control bits, window, checksum, urgent pointer, options."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: TcpOptions = field(default_factory=TcpOptions)
    urgent: int = 0
    tcp_checksum: int = 0
    header_length: int = TCP_HLEN

    def pack(self, src: bytes, dst: bytes, payload: bytes = b"") -> bytes:
        """Header and payload with the pseudo-header checksum for src -> dst."""
        opts = self.options.pack()
        hlen = TCP_HLEN + len(opts)
        fields = [self.sport, self.dport, self.seq & 0xFFFF_FFFF, self.ack & 0xFFFF_FFFF, (hlen // 4) << 4,
                  int(self.flags) & 0xFF, self.window, 0, self.urgent]
        head = _TCP.pack(*fields) + opts
        # the header is a whole number of 16-bit words, so the payload's sum simply adds on
        partial = checksum_partial(payload, checksum_partial(head, pseudo_header_sum(src, dst, IpProto.TCP,
                                                                                      hlen + len(payload))))
        fields[7] = ~partial & 0xFFFF
        return b"".join((_TCP.pack(*fields), opts, payload))

    @classmethod
    def parse(
        cls, raw: bytes | bytearray | memoryview, src: bytes = b"", dst: bytes = b""
    ) -> tuple[Tcp, bytes]:
        """Header and payload; with `src`/`dst` given the checksum is verified."""
        if len(raw) < TCP_HLEN:
            raise NetParseError("short TCP segment")
        sport, dport, seq, ack, off, flags, window, csum, urg = _TCP.unpack_from(raw)
        hlen = (off >> 4) * 4
        if hlen < TCP_HLEN or hlen > len(raw):
            raise NetParseError("bad TCP data offset")
        if src and dst and checksum(raw, pseudo_header_sum(src, dst, IpProto.TCP, len(raw))) != 0:
            raise NetParseError("bad TCP checksum")
        options = TcpOptions.parse(raw[TCP_HLEN:hlen])
        return cls(sport, dport, seq, ack, flags, window, options, urg, csum, hlen), bytes(
            raw[hlen:]
        )
