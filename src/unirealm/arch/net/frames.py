"""Whole Ethernet frames parsed down to their transport, checksums verified."""

from __future__ import annotations

from dataclasses import dataclass

from .arp import Arp, ArpOp
from .common import BROADCAST_MAC
from .ethernet import Ethernet, EtherType, ethernet_frame
from .icmp import IcmpEcho, IcmpType
from .ipv4 import IpProto, IPv4, ipv4_packet
from .tcp import Tcp
from .udp import Udp, udp_datagram


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
