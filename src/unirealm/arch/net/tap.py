"""linux/if_tun.h, linux/if.h, linux/sockios.h: the host's tap device for `-n mode=tap`."""

from __future__ import annotations

import struct

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
