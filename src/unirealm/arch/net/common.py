"""Addresses, the kvmtool network's defaults, NetParseError and the internet checksum (RFC 1071)."""

from __future__ import annotations

import struct


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
