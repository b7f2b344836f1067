"""The IPv4 stack: one interface, ARP (RFC 826) with a cache and replies, IPv4 (RFC 791;
fragments dropped), ICMP echo replies (RFC 792), UDP (RFC 768) sockets and TCP (tcp.py).

`input(frame)` takes one Ethernet frame; anything malformed or not for this host is
dropped and counted, never raised. `poll()` drains the NIC, runs the TCP timers and flushes
pending ACKs. Frames go out through `nic.send`; inside `tx_batch()` (a TCP burst, a poll)
a NIC that can (one with `kick`) is told of them once, at the end.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from ...arch.net import (
    ANY_IP,
    BROADCAST_IP,
    BROADCAST_MAC,
    ZERO_MAC,
    ArpOp,
    EtherType,
    IcmpEcho,
    IcmpType,
    IpProto,
    NetParseError,
    Tcp,
    arp_frame,
    ethernet_frame,
    ip_int,
    ip_str,
    ipv4_packet,
    parse_frame,
    prefix_mask,
    udp_datagram,
)
from .tcp import F_ACK, F_FIN, F_RST, F_SYN, TIME_WAIT, Listener, Tcb

ARP_RETRY_NS = 1_000_000_000
ARP_TRIES = 3
ARP_QUEUE = 32
UDP_QUEUE = 256
EPHEMERAL = (49152, 65535)


class UdpEndpoint:
    def __init__(self, port: int) -> None:
        self.port = port
        self.queue: deque[tuple[bytes, int, bytes]] = deque()  # (source ip, port, data)
        self.dropped = 0


class TxBatch:
    """`with stack.tx_batch():` as a plain object (a generator-based context manager costs
    more than the frames it batches on the per-request path); nesting counts in the stack."""

    __slots__ = ("stack",)

    def __init__(self, stack: NetStack) -> None:
        self.stack = stack

    def __enter__(self) -> None:
        self.stack.batching += 1

    def __exit__(self, *_: object) -> None:
        stack = self.stack
        stack.batching -= 1
        if not stack.batching and stack.kick is not None:
            stack.kick()


class NetStack:
    def __init__(self, nic: Any, now_ns: Callable[[], int], rand32: Callable[[], int],
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.nic = nic
        self.mac: bytes = nic.mac
        self.now_ns = now_ns
        self.rand32 = lambda: rand32() & 0xFFFF_FFFF
        self.log = log
        self.ip = ANY_IP
        self.prefix = 0
        self.gateway: bytes | None = None
        self.dns: list[bytes] = []
        self.arp: dict[bytes, bytes] = {}
        self.arp_wait: dict[bytes, list[Any]] = {}  # ip -> [packets, tries, next request time]
        self.conns: dict[tuple[int, bytes, int], Tcb] = {}
        self.listeners: dict[int, Listener] = {}
        self.udp: dict[int, UdpEndpoint] = {}
        self.bound_tcp: set[int] = set()  # ports bound by sockets that neither listen nor connect yet
        self.udp_hook: dict[int, Callable[[bytes, int, bytes], None]] = {}  # port -> raw handler (DHCP)
        self.ident = 0
        self.dirty: set[Tcb] = set()
        self.next_port = EPHEMERAL[0] + self.rand32() % (EPHEMERAL[1] - EPHEMERAL[0])
        self.stats = {"rx": 0, "tx": 0, "dropped": 0, "rst_sent": 0, "echo": 0}
        self.polling = False
        self.batching = 0  # nesting depth of tx_batch
        self._tx_batch = TxBatch(self)
        self.kick = getattr(nic, "kick", None)

    # --- configuration --------------------------------------------------------------------
    def configure(self, ip: bytes, prefix: int, gateway: bytes | None, dns: list[bytes] | None = None) -> None:
        self.ip, self.prefix, self.gateway = ip, prefix, gateway
        self.dns = dns or []

    def on_link(self, dst: bytes) -> bool:
        mask = ip_int(prefix_mask(self.prefix))
        return ip_int(dst) & mask == ip_int(self.ip) & mask

    def describe(self) -> str:
        gw = ip_str(self.gateway) if self.gateway else "none"
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return f"{ip_str(self.ip)}/{self.prefix} gateway {gw} mac {mac}"

    # --- the loop -------------------------------------------------------------------------
    def tx_batch(self) -> TxBatch:
        """Frames sent inside are announced to the NIC once, when the outermost batch ends."""
        return self._tx_batch

    def transmit(self, frame: bytes) -> None:
        if self.batching and self.kick is not None:
            self.nic.send(frame, notify=False)
        else:
            self.nic.send(frame)
        self.stats["tx"] += 1

    def poll(self) -> None:
        if self.polling:
            return
        self.polling = True
        try:
            with self.tx_batch():
                for _ in range(8):
                    frames = self.nic.poll()
                    for frame in frames:
                        self.input(frame)
                    if not frames:
                        break
                self.timers()
                self.flush()
        finally:
            self.polling = False

    def flush_later(self, tcb: Tcb) -> None:
        self.dirty.add(tcb)

    def flush(self) -> None:
        while self.dirty:
            tcb = self.dirty.pop()
            if tcb.state != "CLOSED":
                tcb.output()

    def next_deadline(self) -> int | None:
        """The earliest time `timers()` has something to do (retransmission, a delayed ACK
        still owed (one that rode on data is not), TIME_WAIT/FIN_WAIT_2 end, ARP retry);
        None: nothing is timed."""
        times = [t for tcb in self.conns.values()
                 for t in (tcb.rtx_deadline, tcb.delack if tcb.ack_delayed else None, tcb.deadline) if t is not None]
        times.extend(entry[2] for entry in self.arp_wait.values())
        return min(times, default=None)

    def timers(self) -> None:
        now = self.now_ns()
        for tcb in list(self.conns.values()):
            tcb.timers(now)
        for ip, entry in list(self.arp_wait.items()):
            if now >= entry[2]:
                if entry[1] >= ARP_TRIES:
                    del self.arp_wait[ip]  # unreachable: its packets are dropped
                    self.stats["dropped"] += len(entry[0])
                else:
                    self.arp_request(ip, entry)

    # --- input ----------------------------------------------------------------------------
    def input(self, frame: bytes) -> None:
        self.stats["rx"] += 1
        try:
            self._input(frame)
        except (NetParseError, ValueError, struct.error, IndexError, KeyError):
            self.stats["dropped"] += 1

    def _input(self, frame: bytes) -> None:
        f = parse_frame(frame)
        if f.eth.dst not in (self.mac, BROADCAST_MAC):
            self.stats["dropped"] += 1
            return
        if f.arp is not None:
            self.arp_input(f.arp)
            return
        ip = f.ip
        if ip is None or ip.is_fragment:
            self.stats["dropped"] += 1
            return
        unconfigured = self.ip == ANY_IP
        if ip.dst != self.ip and ip.dst != BROADCAST_IP and not unconfigured:
            self.stats["dropped"] += 1
            return
        if f.udp is not None:
            hook = self.udp_hook.get(f.udp.dport)
            if hook is not None:
                hook(ip.src, f.udp.sport, f.payload)
                return
            if unconfigured:
                return
            ep = self.udp.get(f.udp.dport)
            if ep is None:
                self.stats["dropped"] += 1
                return
            if len(ep.queue) >= UDP_QUEUE:
                ep.dropped += 1
                return
            ep.queue.append((ip.src, f.udp.sport, f.payload))
            return
        if unconfigured or ip.dst != self.ip:
            return
        if ip.src not in self.arp and self.on_link(ip.src) and f.eth.src != BROADCAST_MAC:
            self.arp[ip.src] = f.eth.src  # learn the peer's MAC from its traffic
        if f.icmp is not None:
            if f.icmp.type == IcmpType.ECHO_REQUEST:
                self.stats["echo"] += 1
                reply = IcmpEcho(IcmpType.ECHO_REPLY, f.icmp.ident, f.icmp.seq, f.icmp.data).pack()
                self.send_ip(ip.src, IpProto.ICMP, reply)
            return
        if f.tcp is not None:
            self.tcp_input(ip.src, f.tcp, f.payload)

    def arp_input(self, arp: Any) -> None:
        if arp.spa == ANY_IP or arp.sha in (BROADCAST_MAC, ZERO_MAC):
            return
        for_us = self.ip != ANY_IP and arp.tpa == self.ip
        if for_us or arp.spa in self.arp:
            self.arp[arp.spa] = arp.sha
        if for_us and arp.op == ArpOp.REQUEST:
            self.transmit(arp_frame(ArpOp.REPLY, self.mac, self.ip, arp.sha, arp.spa))
        entry = self.arp_wait.pop(arp.spa, None) if arp.spa in self.arp else None
        if entry is not None:
            for dst, proto, payload in entry[0]:
                self.send_ip(dst, proto, payload)

    # --- output ---------------------------------------------------------------------------
    def send_ip(self, dst: bytes, proto: int, payload: bytes, src: bytes | None = None) -> None:
        self.ident = (self.ident + 1) & 0xFFFF
        packet = ipv4_packet(self.ip if src is None else src, dst, proto, payload, self.ident)
        if dst == BROADCAST_IP:
            mac: bytes | None = BROADCAST_MAC
            hop = dst
        else:
            hop = dst if self.on_link(dst) or self.gateway is None else self.gateway
            mac = self.arp.get(hop)
        if mac is None:
            entry = self.arp_wait.get(hop)
            if entry is None:
                entry = self.arp_wait[hop] = [[], 0, 0]
                self.arp_request(hop, entry)
            if len(entry[0]) < ARP_QUEUE:
                entry[0].append((dst, proto, payload))
            return
        self.transmit(ethernet_frame(mac, self.mac, EtherType.IPV4, packet))

    def arp_request(self, ip: bytes, entry: list[Any]) -> None:
        entry[1] += 1
        entry[2] = self.now_ns() + ARP_RETRY_NS
        self.transmit(arp_frame(ArpOp.REQUEST, self.mac, self.ip, ZERO_MAC, ip))

    def send_udp(self, dst: bytes, sport: int, dport: int, data: bytes, src: bytes | None = None) -> None:
        source = self.ip if src is None else src
        self.send_ip(dst, IpProto.UDP, udp_datagram(source, dst, sport, dport, data), src=source)

    def send_tcp(self, dst: bytes, tcp: Tcp, data: bytes = b"") -> None:
        self.send_ip(dst, IpProto.TCP, tcp.pack(self.ip, dst, data))

    # --- ports ----------------------------------------------------------------------------
    def ephemeral_port(self, used: Callable[[int], bool]) -> int:
        lo, hi = EPHEMERAL
        for _ in range(hi - lo):
            self.next_port = lo + (self.next_port + 1 - lo) % (hi - lo)
            if not used(self.next_port):
                return self.next_port
        raise OSError(98, "no free port")  # EADDRINUSE

    def tcp_port_used(self, port: int) -> bool:
        return port in self.listeners or any(k[0] == port for k in self.conns)

    # --- TCP demultiplexing -----------------------------------------------------------------
    def tcp_input(self, src: bytes, seg: Tcp, data: bytes) -> None:
        tcb = self.conns.get((seg.dport, src, seg.sport))
        if tcb is not None and tcb.state == TIME_WAIT and seg.flags & F_SYN and not seg.flags & F_ACK:
            tcb.release()  # a new incarnation of the connection (RFC 9293 §3.10.7.4 note)
            tcb = None
        if tcb is not None:
            tcb.input(seg, data)
            return
        listener = self.listeners.get(seg.dport)
        if listener is not None and not listener.closed:
            f = seg.flags
            if f & F_RST:
                return
            if f & F_ACK:
                self.send_rst_for(src, seg, len(data))
                return
            if not f & F_SYN or listener.full():
                return  # a full backlog drops the SYN; the peer retries
            tcb = Tcb(self, seg.dport, src, seg.sport)
            tcb.listener = listener
            tcb.take_syn_options(seg, True)
            tcb.irs = seg.seq
            tcb.rcv_nxt = (seg.seq + 1) & 0xFFFF_FFFF
            tcb.snd_wnd = seg.window
            tcb.state = "SYN_RCVD"
            self.conns[tcb.key] = tcb
            listener.pending.add(tcb)
            tcb.send_synack()
            tcb.snd_nxt = (tcb.iss + 1) & 0xFFFF_FFFF
            tcb.arm(self.now_ns())
            return
        if not seg.flags & F_RST:
            self.send_rst_for(src, seg, len(data))

    def send_rst_for(self, dst: bytes, seg: Tcp, data_len: int) -> None:
        """RFC 9293 §3.10.7.1: the reset for a segment no connection accepts."""
        self.stats["rst_sent"] += 1
        if seg.flags & F_ACK:
            rst = Tcp(seg.dport, seg.sport, seg.ack, 0, F_RST, 0)
        else:
            seg_len = data_len + (1 if seg.flags & F_SYN else 0) + (1 if seg.flags & F_FIN else 0)
            rst = Tcp(seg.dport, seg.sport, 0, (seg.seq + seg_len) & 0xFFFF_FFFF, F_RST | F_ACK, 0)
        self.send_tcp(dst, rst)

    def forget(self, tcb: Tcb) -> None:
        if self.conns.get(tcb.key) is tcb:
            del self.conns[tcb.key]
        self.dirty.discard(tcb)

    # --- the socket layer's entry points -------------------------------------------------------
    def listen(self, port: int, backlog: int) -> Listener:
        if port in self.listeners:
            raise OSError(98, "address in use")
        listener = Listener(self, port, backlog)
        self.listeners[port] = listener
        return listener

    def unlisten(self, listener: Listener) -> None:
        if self.listeners.get(listener.port) is listener:
            del self.listeners[listener.port]
        listener.close()

    def connect(self, lport: int, dst: bytes, dport: int) -> Tcb:
        key = (lport, dst, dport)
        old = self.conns.get(key)
        if old is not None:
            if old.state != TIME_WAIT:
                raise OSError(98, "address in use")
            old.release()
        tcb = Tcb(self, lport, dst, dport)
        self.conns[key] = tcb
        tcb.connect()
        return tcb
