"""`unirealm run --hostile ATTACK[,ATTACK...]`: a test mode in which the VMM misbehaves in a
named way, to show what a realm (and the unikernel in it) does when its host turns on it.

Each attack is something a real VMM could do with what it holds: the MMIO answers it
emulates, the shared pages and rings of its devices, the device tree it writes, its answer
to a RIPAS change. None reaches protected memory: that is what the RMM and the GPT refuse
(tests/hostile shows those attempts too). The outcome that counts is the guest's: a clean
error, a refusal, or a stop with a panic status -- never a hang, a leak or a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unirealm.arch import p9
from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL
from unirealm.arch.net import (
    ETH_HLEN,
    IP_FLAG_MF,
    EtherType,
    NetParseError,
    ParsedFrame,
    Tcp,
    TcpFlags,
    checksum,
    parse_frame,
    tcp_frame,
)
from unirealm.arch.p9 import P9, Qid, QidType
from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiStatus, status_of

if TYPE_CHECKING:
    from .kvm import RealmRec, RealmVm, RecExitInfo

log = logging.getLogger("unirealm.hostile")

ATTACKS = {
    "mmio-sea": "every MMIO access to a device other than the UARTs ends in a synchronous external abort",
    "mmio-sea-all": "every MMIO access, the UARTs' too, ends in a synchronous external abort",
    "mmio-garbage": "MMIO reads of the virtio and RTC windows return random values",
    "uart-ram": "the console UART's window is host RAM full of 0xff (realm: RTT_MAP_UNPROTECTED over its alias)",
    "p9-readdir-loop": "Rreaddir never ends: every reply lists new entries at growing offsets",
    "p9-tag-long": "the 9p device's config space holds a 5000-character mount tag",
    "used-bogus": "used-ring entries name descriptors past the queue and lengths past the buffer",
    "toctou": "each reply in shared memory is overwritten with garbage at every later exit",
    "ripas-reject": "a RIPAS change to RAM is done for one granule, then REJECTed",
    "ripas-refuse": "a RIPAS change is acknowledged without any RTT_SET_RIPAS (no progress)",
    "ripas-replay": "around each RIPAS change, RTT_SET_RIPAS over ranges the realm did not ask for: below it, "
                    "past its top, the previous change again, and this one again once done; then a REJECT "
                    "response over the completed change",
    "dtb-device-in-ram": "the device tree puts the RTC's window inside the realm's protected RAM",
    "net-garbage": "malformed frames (bad Ethernet/IPv4/TCP headers, lengths and checksums, corrupted "
                   "copies of the real segment) before every frame to the guest",
    "net-rst-storm": "RSTs and SYNs with wrong sequence numbers for the connection before every TCP "
                     "segment to the guest",
    "net-bad-ack": "after every SYN-ACK the guest sends, forged ACKs with wrong acknowledgment numbers; "
                   "after every SYN, a forged SYN-ACK with a wrong one",
    "irq-storm": "interrupts at every exit: all SGIs and PPIs pending, spurious device SPIs, list registers "
                 "full of random vINTIDs, bursts withdrawn before their acknowledge, an SPI line stuck high; "
                 "a realm also gets REC_ENTERs with forbidden list register and HCR contents "
                 "(unirealm.host.hostile_irq)",
}
LONG_TAG = "t" * 5000
REALM_ONLY = ("uart-ram", "ripas-reject", "ripas-refuse", "ripas-replay")  # they act through RMI
NEEDS_9P = ("p9-readdir-loop", "p9-tag-long")
NEEDS_VIRTIO = ("used-bogus", "toctou")
NET_ATTACKS = ("net-garbage", "net-rst-storm", "net-bad-ack")


def check_attacks(attacks: frozenset[str], realm: bool, shares: int, nics: int, consoles: int = 0) -> str | None:
    """Why these attacks cannot act in this run (an attack is never accepted and ignored)."""
    for name in sorted(attacks):
        if name in REALM_ONLY and not realm:
            return f"--hostile {name} needs --realm"
        if name in NEEDS_9P and not shares:
            return f"--hostile {name} needs a --9p share"
        if name in NEEDS_VIRTIO and not shares + nics + consoles:
            return f"--hostile {name} needs a virtio device (--9p, -n or --console virtio)"
        if name in NET_ATTACKS and not nics:
            return f"--hostile {name} needs a network device (-n)"
    return None


def readdir_forever(request: bytes) -> bytes | None:
    """For p9-readdir-loop: an Rreaddir of fresh entries after any offset, or None when the
    request is not a Treaddir."""
    try:
        mtype, tag, fields = p9.decode(request)
    except p9.P9ProtocolError:
        return None
    if mtype != P9.TREADDIR:
        return None
    offset, data = fields["offset"], b""
    while True:
        offset += 1
        entry = p9.pack_dirent(Qid(QidType.FILE, 0, offset), offset, 8, f"f{offset}")
        if len(data) + len(entry) > fields["count"]:
            return p9.encode(P9.RREADDIR, tag, data=data)
        data += entry


@dataclass
class Hostile:
    """The attacks of one run, and the state they need."""

    attacks: frozenset[str]
    rng: random.Random = field(default_factory=lambda: random.Random(0x5EC))
    written: list[tuple[object, int, int]] = field(default_factory=list)  # (memory view, addr, length)

    def __contains__(self, name: str) -> bool:
        return name in self.attacks

    def mmio_read(self, device: str, value: int, size: int) -> int:
        if "mmio-garbage" in self and not device.startswith("ttyS"):
            return self.rng.getrandbits(8 * size)
        return value

    def faults(self, device: str | None) -> bool:
        """Whether this MMIO access ends in an abort."""
        if "mmio-sea-all" in self:
            return True
        return "mmio-sea" in self and device is not None and not device.startswith("ttyS")

    def used_entry(self, queue_num: int, head: int, length: int, capacity: int) -> tuple[int, int]:
        """The (id, len) the device writes in a used-ring slot."""
        if "used-bogus" in self:
            if self.rng.random() < 0.5:
                return queue_num + self.rng.randrange(1, 1 << 16), length
            return head, capacity + self.rng.randrange(1, 1 << 20)
        return head, length

    def note_reply(self, memory: object, addr: int, length: int) -> None:
        if "toctou" in self:
            self.written.append((memory, addr, length))
            del self.written[:-64]

    def at_exit(self) -> None:
        """toctou: overwrite every reply the devices wrote, while the guest may be parsing."""
        for memory, addr, length in self.written:
            try:
                memory.write(addr, self.rng.randbytes(length))  # type: ignore[attr-defined]
            except Exception:  # a page the guest took back: nothing to overwrite
                continue



@dataclass
class RipasReplay:
    """`ripas-replay`: the host answers each RIPAS change honestly, and around it calls
    RMI_RTT_SET_RIPAS over ranges the realm did not ask for -- the granule below the request,
    the request grown past its top, the previous change replayed, and this change again once
    it is complete. Each must fail with RMI_ERROR_INPUT (the base is not the REC's progress
    pointer, or the top exceeds the requested top) and leave every RTT entry it names as it
    was; anything else is logged as an error. The REC_ENTER that completes the change then
    carries RIPAS_RESPONSE (REJECT): the RMM reports REJECT only for a range left incomplete,
    so the realm is told ACCEPT and goes on (were it told REJECT, its kernel would stop)."""

    last: tuple[int, int] | None = None
    refused: int = 0

    def before(self, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> None:
        base, top = ex.ripas_base, ex.ripas_top
        if base >= GRANULE_SIZE:
            self.attempt(vm, rec, "below the range asked for", base - GRANULE_SIZE, base)
        self.attempt(vm, rec, "past the top asked for", base, top + GRANULE_SIZE)
        if self.last is not None and (self.last[0] != base or self.last[1] > top):  # else it asks this again
            self.attempt(vm, rec, "a replay of the previous change", *self.last)
        self.last = (base, top)

    def response(self) -> int:
        log.warning("hostile ripas-replay: REC_ENTER with RIPAS_RESPONSE (REJECT) over a completed change")
        return int(RmiRecEnterFlags.RIPAS_RESPONSE)

    def after(self, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> None:
        self.attempt(vm, rec, "a replay of this change, already done", ex.ripas_base, ex.ripas_top)

    def attempt(self, vm: RealmVm, rec: RealmRec, what: str, base: int, top: int) -> None:
        ends = sorted({base, max(base, top - GRANULE_SIZE)})
        before = [vm.rmi.try_call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)[:5] for ipa in ends]
        status = status_of(vm.rmi.try_call(RmiFid.RTT_SET_RIPAS, vm.rd, rec.pa, base, top)[0])
        after = [vm.rmi.try_call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)[:5] for ipa in ends]
        if status == RmiStatus.ERROR_INPUT and before == after:
            self.refused += 1
            log.warning("hostile ripas-replay: RTT_SET_RIPAS [%#x, %#x) (%s) -> %s, RTT entries unchanged",
                        base, top, what, status.name)
        else:
            log.error("hostile ripas-replay: RTT_SET_RIPAS [%#x, %#x) (%s) -> %s, RTT entries %s",
                      base, top, what, status.name, "unchanged" if before == after else "CHANGED")
M32 = 0xFFFF_FFFF


def _fix_ip_checksum(frame: bytearray) -> bytearray:
    """Recompute the IPv4 header checksum of a frame whose header was edited (so that only
    the edit is wrong)."""
    ihl = (frame[ETH_HLEN] & 0xF) * 4
    if ihl >= 20 and len(frame) >= ETH_HLEN + ihl:
        frame[ETH_HLEN + 10 : ETH_HLEN + 12] = b"\0\0"
        frame[ETH_HLEN + 10 : ETH_HLEN + 12] = struct.pack("!H", checksum(bytes(frame[ETH_HLEN : ETH_HLEN + ihl])))
    return frame


class HostileNet:
    """The network attacks of one NIC (net-garbage, net-rst-storm, net-bad-ack): frames the
    VMM forges into the guest's receive path around the real traffic. `to_guest` stands in
    front of the device's receive, `from_guest` sees every frame the guest transmits before
    the network does. What the guest must do with each forged frame: drop it (bad headers,
    lengths, checksums, not its address), answer with a challenge ACK (an in-window RST or
    SYN that is not exactly in sequence, RFC 5961 §3-4), or reset it (an ACK that does not
    acknowledge its SYN, RFC 9293 §3.10.7.4) -- and never let it change a connection."""

    def __init__(self, hostile: Hostile, deliver: Callable[[bytes], None]) -> None:
        self.attacks = hostile.attacks
        self.rng = hostile.rng
        self.deliver = deliver
        self.forged = 0
        self.seen: dict[tuple[bytes, int, bytes, int], list[int]] = {}  # peer -> guest: [first seq, end]

    def _forge(self, frame: bytes | bytearray) -> None:
        self.forged += 1
        self.deliver(bytes(frame))

    # --- frames to the guest ----------------------------------------------------------------
    def to_guest(self, frame: bytes) -> None:
        try:
            pf: ParsedFrame | None = parse_frame(frame)
        except (NetParseError, ValueError, struct.error):
            pf = None
        if "net-garbage" in self.attacks:
            for bad in self.rng.sample(self.garbage(frame, pf), 2):
                self._forge(bad)
        if "net-rst-storm" in self.attacks and pf is not None and pf.tcp is not None:
            self.storm(pf)
        self.deliver(frame)

    def garbage(self, frame: bytes, pf: ParsedFrame | None) -> list[bytes]:
        rng = self.rng
        out = [frame[: rng.randrange(ETH_HLEN)], rng.randbytes(rng.randrange(ETH_HLEN, 1514))]
        if pf is None or pf.ip is None or pf.tcp is None:
            return out
        ip_at, ihl = ETH_HLEN, pf.ip.header_length
        tcp_at = ip_at + ihl
        flip = bytearray(frame)
        if pf.payload:
            flip[-1 - rng.randrange(len(pf.payload))] ^= 1 + rng.randrange(255)  # payload changed,
        else:
            flip[tcp_at + 4 + rng.randrange(8)] ^= 1 + rng.randrange(255)  # or seq/ack: bad TCP checksum
        out.append(bytes(flip))
        # The same segment with other bytes and a correct TCP checksum: with one header field
        # made wrong below, only the guest's check of that field keeps the bytes out.
        body = bytes(flip[len(frame) - len(pf.payload):]) if pf.payload else b""
        tcp = pf.tcp if pf.payload else dataclasses.replace(pf.tcp, seq=(pf.tcp.seq + 1 + rng.randrange(1 << 16)) & M32)
        other = tcp_frame(pf.eth.dst, pf.eth.src, pf.ip.src, pf.ip.dst, tcp, body, pf.ip.ident)

        def edited(at: int, value: bytes, fix: bool = True) -> bytes:
            raw = bytearray(other)
            raw[at : at + len(value)] = value
            return bytes(_fix_ip_checksum(raw) if fix else raw)

        total = len(other) - ETH_HLEN
        out += [
            edited(12, struct.pack("!H", EtherType.IPV6)),  # not IPv4 at all
            edited(ip_at, bytes([0x65])),  # version 6 in an IPv4 header
            edited(ip_at, bytes([0x4F])),  # IHL 15: a header longer than the packet
            edited(ip_at, bytes([0x44])),  # IHL 4: shorter than the minimum
            edited(ip_at + 2, struct.pack("!H", total + 1 + rng.randrange(1000))),  # total length past the frame
            edited(ip_at + 2, struct.pack("!H", rng.randrange(20))),  # total length inside the header
            edited(ip_at + 6, struct.pack("!H", IP_FLAG_MF)),  # a first fragment
            edited(ip_at + 6, struct.pack("!H", 1 + rng.randrange(0x1FFF))),  # a later fragment
            edited(ip_at + 10, struct.pack("!H", rng.randrange(1, 0x10000)), fix=False),  # bad IP checksum
            edited(tcp_at + 12, bytes([rng.choice((0x00, 0x10, 0x40, 0xF0))])),  # TCP data offset < 5 or too long
            other[: rng.randrange(ETH_HLEN + 1, len(other))],  # cut short
        ]
        # well formed and correctly checksummed, but not for this guest (its MAC, its address)
        other_mac = bytes([0x02]) + rng.randbytes(5)
        out.append(tcp_frame(other_mac, pf.eth.src, pf.ip.src, pf.ip.dst, tcp, body))
        other_ip = bytes(pf.ip.dst[:3]) + bytes([pf.ip.dst[3] ^ (1 + rng.randrange(254))])
        out.append(tcp_frame(pf.eth.dst, pf.eth.src, pf.ip.src, other_ip, tcp, body))
        return out

    def storm(self, pf: ParsedFrame) -> None:
        """RSTs (and a SYN) that are never exactly at the guest's rcv_nxt: the guest's rcv_nxt
        is at most the end of what the peer sent so far (`end`), so anything after it, or
        before the first sequence number of the connection, is wrong."""
        ip, tcp = pf.ip, pf.tcp
        assert ip is not None and tcp is not None
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        if tcp.flags & TcpFlags.RST:
            return
        length = len(pf.payload) + bool(tcp.flags & TcpFlags.SYN) + bool(tcp.flags & TcpFlags.FIN)
        end = (tcp.seq + length) & M32
        if (tcp.flags & TcpFlags.SYN and not tcp.flags & TcpFlags.ACK) or key not in self.seen:
            if not tcp.flags & TcpFlags.SYN:
                return  # a connection the attack did not see open: its sequence space is unknown
            self.seen[key] = [tcp.seq, end]
            return  # nothing before the SYN: a forged RST could only meet a listener
        first, hi = self.seen[key]
        if ((end - hi) & M32) < 0x8000_0000:
            hi = self.seen[key][1] = end
        rng = self.rng

        def forge(flags: int, seq: int, ack: int = 0) -> None:
            seg = Tcp(tcp.sport, tcp.dport, seq & M32, ack & M32, flags, rng.randrange(1 << 16))
            self._forge(tcp_frame(pf.eth.dst, pf.eth.src, ip.src, ip.dst, seg))

        forge(TcpFlags.RST, hi + 1 + rng.randrange(4096))  # in the window, not in sequence
        forge(TcpFlags.RST | TcpFlags.ACK, hi + 0x8000_0000 + rng.randrange(1 << 20), tcp.ack)  # far away
        forge(TcpFlags.RST, first - 1 - rng.randrange(1 << 20))  # before the connection began
        forge(TcpFlags.SYN, hi + 1 + rng.randrange(4096))  # a SYN inside a synchronized connection
        if len(self.seen) > 4096:
            self.seen.pop(next(iter(self.seen)))

    # --- frames from the guest -----------------------------------------------------------------
    def from_guest(self, frame: bytes) -> None:
        if "net-bad-ack" not in self.attacks:
            return
        try:
            pf = parse_frame(frame)
        except (NetParseError, ValueError, struct.error):
            return
        ip, tcp = pf.ip, pf.tcp
        if ip is None or tcp is None or not tcp.flags & TcpFlags.SYN or tcp.flags & TcpFlags.RST:
            return
        rng = self.rng

        def forge(flags: int, seq: int, ack: int) -> None:
            seg = Tcp(tcp.dport, tcp.sport, seq & M32, ack & M32, flags, 65535)
            self._forge(tcp_frame(pf.eth.src, pf.eth.dst, ip.dst, ip.src, seg))

        # Wrong acknowledgments of the guest's SYN, far past it. The guest's reset for each
        # carries SEQ = the forged ACK, beyond any window of the real peer, so the real
        # connection is not hurt by the guest's correct answer. (Never behind: libslirp, like
        # 4.4BSD, trims a segment left of its window to rcv_nxt and takes its RST.)
        if tcp.flags & TcpFlags.ACK:  # the guest's SYN-ACK: forge the handshake's last ACK
            forge(TcpFlags.ACK, tcp.ack, tcp.seq + 0x1000_0000 + rng.randrange(1 << 20))
            forge(TcpFlags.ACK, tcp.ack, tcp.seq + 0x4000_0000 + rng.randrange(1 << 20))
        else:  # the guest's SYN: forge the SYN-ACK
            forge(TcpFlags.SYN | TcpFlags.ACK, rng.getrandbits(32), tcp.seq + 0x4000_0000 + rng.randrange(1 << 20))
