"""Network packet layouts shared by the host's virtio-net/user network and the guest's stack.

Each layout names its source:

- virtio 1.1 §5.1.6 "Device Operation": struct virtio_net_hdr (12 bytes with VERSION_1,
  i.e. virtio_net_hdr_v1 including num_buffers) before every frame on both queues;
  §5.1.3 feature bits, §5.1.4 struct virtio_net_config (mac[6], status, ...).
- IEEE 802.3 / RFC 894: the Ethernet II header (dst[6], src[6], ethertype be16).
- RFC 826: ARP for IPv4 over Ethernet (28 bytes).
- RFC 791 §3.1: the IPv4 header; RFC 1071: the internet checksum.
- RFC 792: ICMP echo / echo reply.
- RFC 768: UDP, its checksum over the RFC 768 pseudo-header.
- RFC 9293 §3.1: the TCP header and its options (§3.2: EOL, NOP, MSS; RFC 7323 §2 window
  scale, §3 timestamps; RFC 2018 SACK-permitted and SACK), checksum over the pseudo-header.
- RFC 2131 §2: the DHCP (BOOTP) message; RFC 2132: its options (1, 3, 6, 12, 50, 51, 53,
  54, 55, 61) and the magic cookie.

Addresses are bytes on the wire and here: a MAC is 6 bytes, an IPv4 address 4 bytes.
Every `parse` raises `NetParseError` (a ValueError) on malformed input; callers that read
frames from the other side drop the frame on that error. Standard library only, so the
guest may import it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag


class NetParseError(ValueError):
    """A malformed packet (short, bad version, bad length or bad checksum)."""


# --------------------------------------------------------------------------- addresses


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def ip_str(addr: bytes) -> str:
    return ".".join(str(b) for b in addr)


def ip_bytes(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"bad IPv4 address {text!r}")
    return bytes(int(p) for p in parts)


def ip_int(addr: bytes) -> int:
    return int.from_bytes(addr, "big")


def int_ip(value: int) -> bytes:
    return (value & 0xFFFF_FFFF).to_bytes(4, "big")


def prefix_mask(prefix: int) -> bytes:
    """The netmask for a prefix length, e.g. 24 -> 255.255.255.0."""
    if not 0 <= prefix <= 32:
        raise ValueError(f"bad prefix length {prefix}")
    return int_ip((0xFFFF_FFFF << (32 - prefix)) & 0xFFFF_FFFF)


def mask_prefix(mask: bytes) -> int:
    value = ip_int(mask)
    n = bin(value).count("1")
    if value != ip_int(prefix_mask(n)):
        raise ValueError(f"non-contiguous netmask {ip_str(mask)}")
    return n


BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ANY_IP = b"\x00\x00\x00\x00"
BROADCAST_IP = b"\xff\xff\xff\xff"

# kvmtool's user-mode network (tools/kvm/net/uip, virtio/net.c defaults).
KVMTOOL_GUEST_IP = ip_bytes("192.168.33.15")
KVMTOOL_GATEWAY_IP = ip_bytes("192.168.33.1")
KVMTOOL_PREFIX = 24
KVMTOOL_GUEST_MAC = mac_bytes("02:15:15:15:15:15")
KVMTOOL_HOST_MAC = mac_bytes("02:01:01:01:01:01")


# --------------------------------------------------------------------------- RFC 1071


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 internet checksum: the ones' complement of the ones' complement sum of the
    16-bit big-endian words (an odd final byte padded with zero). `initial` is a partial
    sum to continue from (see `checksum_partial`)."""
    return ~checksum_partial(data, initial) & 0xFFFF


def checksum_partial(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The folded (16-bit) ones' complement sum, not yet complemented. The data is read as
    one big-endian integer: 2^16 = 1 modulo 0xFFFF, so the sum of its 16-bit words is that
    integer modulo 0xFFFF, which end-around carries fold into 1..0xFFFF (0 only for 0)."""
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8  # the odd final byte padded with zero
    total += initial
    if not total:
        return 0
    return total % 0xFFFF or 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """RFC 768 / RFC 9293 §3.1 pseudo-header: src, dst, zero, protocol, length."""
    return checksum_partial(src + dst + struct.pack("!BBH", 0, proto, length))


# --------------------------------------------------------------------------- virtio-net


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


# --------------------------------------------------------------------------- Ethernet


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


# --------------------------------------------------------------------------- ARP, RFC 826


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


# --------------------------------------------------------------------------- IPv4, RFC 791


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


# --------------------------------------------------------------------------- ICMP, RFC 792


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


# --------------------------------------------------------------------------- UDP, RFC 768

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


# --------------------------------------------------------------------------- TCP, RFC 9293


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


# --------------------------------------------------------------------------- DHCP, RFC 2131/2132


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


# --------------------------------------------------------------------------- whole frames


@dataclass(frozen=True)
class ParsedFrame:
    """An Ethernet frame parsed down to its transport: exactly one of arp/icmp/udp/tcp is
    set for a recognised frame (`ip` with the others); `payload` is the transport payload."""

    eth: Ethernet
    arp: Arp | None = None
    ip: IPv4 | None = None
    icmp: IcmpEcho | None = None
    udp: Udp | None = None
    tcp: Tcp | None = None
    payload: bytes = b""


def parse_frame(frame: bytes | bytearray | memoryview) -> ParsedFrame:
    """Parse an Ethernet frame with all checksums verified. IPv4 fragments and unknown
    protocols come back with only `eth`/`ip` set."""
    eth, rest = Ethernet.parse(frame)
    if eth.ethertype == EtherType.ARP:
        return ParsedFrame(eth, arp=Arp.parse(rest))
    if eth.ethertype != EtherType.IPV4:
        return ParsedFrame(eth, payload=rest)
    ip, body = IPv4.parse(rest)
    if ip.is_fragment:
        return ParsedFrame(eth, ip=ip, payload=body)
    if ip.proto == IpProto.ICMP:
        if len(body) >= 1 and body[0] in (IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY):
            icmp = IcmpEcho.parse(body)
            return ParsedFrame(eth, ip=ip, icmp=icmp, payload=icmp.data)
        return ParsedFrame(eth, ip=ip, payload=body)
    if ip.proto == IpProto.UDP:
        udp, data = Udp.parse(body, ip.src, ip.dst)
        return ParsedFrame(eth, ip=ip, udp=udp, payload=data)
    if ip.proto == IpProto.TCP:
        tcp, data = Tcp.parse(body, ip.src, ip.dst)
        return ParsedFrame(eth, ip=ip, tcp=tcp, payload=data)
    return ParsedFrame(eth, ip=ip, payload=body)


def tcp_frame(
    dst_mac: bytes,
    src_mac: bytes,
    src: bytes,
    dst: bytes,
    tcp: Tcp,
    payload: bytes = b"",
    ident: int = 0,
) -> bytes:
    segment = tcp.pack(src, dst, payload)
    return ethernet_frame(
        dst_mac, src_mac, EtherType.IPV4, ipv4_packet(src, dst, IpProto.TCP, segment, ident)
    )


def udp_frame(
    dst_mac: bytes,
    src_mac: bytes,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    payload: bytes,
    ident: int = 0,
) -> bytes:
    datagram = udp_datagram(src, dst, sport, dport, payload)
    return ethernet_frame(
        dst_mac, src_mac, EtherType.IPV4, ipv4_packet(src, dst, IpProto.UDP, datagram, ident)
    )


def arp_frame(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, dst_mac: bytes | None = None) -> bytes:
    """An ARP packet in an Ethernet frame (requests broadcast unless `dst_mac` is given)."""
    if dst_mac is None:
        dst_mac = BROADCAST_MAC if op == ArpOp.REQUEST else tha
    return ethernet_frame(dst_mac, sha, EtherType.ARP, Arp(op, sha, spa, tha, tpa).pack())


def seq_lt(a: int, b: int) -> bool:
    """RFC 9293 §3.4 modular sequence comparison a < b."""
    return ((a - b) & 0xFFFF_FFFF) > 0x7FFF_FFFF


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


# --------------------------------------------------------------------------- Linux tun/tap
# linux/if_tun.h, linux/if.h, linux/sockios.h: the host's tap device for `-n mode=tap`.
IFNAMSIZ = 16
IFREQ_SIZE = 40  # struct ifreq on LP64: ifr_name[16] and a 24-byte union
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000  # frames without the 4-byte packet-information prefix
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
IFF_UP = 0x1
IFF_RUNNING = 0x40
AF_INET = 2


def ifreq_flags(name: str, flags: int) -> bytes:
    """struct ifreq with ifr_name and ifr_flags (a short at offset 16)."""
    return name.encode().ljust(IFNAMSIZ, b"\0")[:IFNAMSIZ] + struct.pack("=H", flags).ljust(IFREQ_SIZE - IFNAMSIZ, b"\0")


def ifreq_addr(name: str, ip: bytes) -> bytes:
    """struct ifreq with ifr_name and ifr_addr, a struct sockaddr_in (family, port 0, address)."""
    sockaddr = struct.pack("=H", AF_INET) + bytes(2) + ip
    return name.encode().ljust(IFNAMSIZ, b"\0")[:IFNAMSIZ] + sockaddr.ljust(IFREQ_SIZE - IFNAMSIZ, b"\0")


def ifreq_name(raw: bytes) -> str:
    return raw[:IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")


def ifreq_get_flags(raw: bytes) -> int:
    return struct.unpack_from("=H", raw, IFNAMSIZ)[0]
