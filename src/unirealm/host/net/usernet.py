"""A user-mode network (kvmtool's `-n mode=user`, its "uip" stack; QEMU's slirp does the same):
the guest's NIC is wired to a virtual gateway that the VMM implements with ordinary host
sockets, so no privilege and no tap device are needed.

What the gateway (default 192.168.33.1, MAC 02:01:01:01:01:01) does:

- answers ARP for its own address, and ICMP echo sent to it;
- DHCP (RFC 2131): DISCOVER -> OFFER, REQUEST -> ACK (NAK for another address), handing out
  the NIC's guest_ip with a /24 mask, the gateway as router and as DNS server;
- UDP from the guest is sent from a host UDP socket (one per guest source port) and the
  replies come back from the address they were sent to; UDP to the gateway's port 53 goes to
  the host's first nameserver (/etc/resolv.conf), to any other gateway port to 127.0.0.1;
- TCP from the guest is terminated here: the gateway answers the guest's SYN once a host
  socket has connected to the same destination (the gateway's own address means the host's
  127.0.0.1) and relays bytes both ways; a refused connect is an RST to the guest;
- inbound forwarding (`hostfwd=tcp:127.0.0.1:HOSTPORT-:GUESTPORT`, an extension of kvmtool's
  options): a listening socket on a loopback address; each accepted client becomes a TCP
  connection the gateway opens to guest_ip:GUESTPORT (from the gateway's address and an
  ephemeral port), relayed both ways.

The TCP endpoint is small and complete enough for a well-behaved peer on a lossless link:
SYN/SYN-ACK/ACK both ways, MSS option (no window scaling, no SACK), data with cumulative ACKs
and a receive window that follows what the host socket has not yet taken, FIN both ways,
RST, retransmission with exponential back-off (go-back-N from the oldest unacknowledged
byte), a one-byte probe into a zero window, and a short linger after the close to answer a
repeated FIN. Out-of-order segments are dropped and answered with a duplicate ACK.

Everything is non-blocking and single-threaded: the VMM calls `poll()` (selector with a
zero or short timeout, then timers) at its exits and WFIs, and `input()` with each frame
the guest transmits. Frames for the guest go to `output`. A malformed frame, or one the
gateway does not handle, is dropped and counted; nothing the guest sends raises.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from unirealm.arch.net import (
    ANY_IP,
    BROADCAST_IP,
    BROADCAST_MAC,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    KVMTOOL_GATEWAY_IP,
    KVMTOOL_GUEST_IP,
    KVMTOOL_GUEST_MAC,
    KVMTOOL_HOST_MAC,
    KVMTOOL_PREFIX,
    ArpOp,
    Dhcp,
    DhcpMessageType,
    DhcpOp,
    DhcpOption,
    EtherType,
    IcmpEcho,
    IcmpType,
    IpProto,
    NetParseError,
    ParsedFrame,
    Tcp,
    TcpFlags,
    TcpOptions,
    arp_frame,
    ethernet_frame,
    ip_bytes,
    ip_int,
    ip_str,
    ipv4_packet,
    parse_frame,
    prefix_mask,
    seq_le,
    seq_lt,
    tcp_frame,
    udp_frame,
)

log = logging.getLogger("unirealm.usernet")

MSS = 1460  # what the gateway accepts: an Ethernet MTU less IPv4 and TCP headers
UDP_MAX_PAYLOAD = 1472  # larger datagrams from the host would need fragmenting: dropped
RCV_WINDOW = 65535  # no window scaling
SND_BUFFER_LIMIT = 256 * 1024  # host bytes waiting for the guest's ACK before reading more
RTO_INITIAL = 0.2  # seconds; the guest is next door
RTO_MAX = 4.0
MAX_RETRIES = 10
LINGER = 2.0  # after both FINs are acknowledged, answer a repeated FIN for this long
UDP_IDLE = 60.0
LEASE_TIME = 86400
MAX_TCP = 1024
MAX_UDP = 256
EPHEMERAL = (49152, 65535)
SEQ_MASK = 0xFFFF_FFFF


class UserNetError(Exception):
    """A set-up problem (a forwarded port that cannot be bound); one line."""


@dataclass(frozen=True)
class Forward:
    """A TCP port forward from a host loopback address to a guest port."""

    host_addr: str
    host_port: int
    guest_port: int


def host_nameserver(path: str = "/etc/resolv.conf") -> str:
    """The host's first IPv4 nameserver, or 127.0.0.1."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        return str(ipaddress.IPv4Address(parts[1]))
                    except ValueError:
                        continue
    except OSError:
        pass
    return "127.0.0.1"


class TcpConn:
    """One guest TCP connection, terminated at the gateway, relayed to host socket `sock`.

    Sequence space: `buf` holds the host's bytes from `buf_seq` on, acknowledged up to
    `snd_una`, sent up to `snd_nxt`; the SYN is at `iss`, the FIN (once the host closed) right
    after the last byte of `buf`."""

    def __init__(self, net: UserNet, remote: tuple[bytes, int], guest_port: int, sock: socket.socket,
                 state: str) -> None:
        self.net = net
        self.remote_ip, self.remote_port = remote
        self.guest_port = guest_port
        self.sock: socket.socket | None = sock
        self.state = state  # CONNECTING, SYN_SENT, SYN_RCVD, ESTABLISHED, LINGER
        self.iss = int.from_bytes(os.urandom(4), "big")
        self.snd_una = self.snd_nxt = self.iss
        self.buf_seq = (self.iss + 1) & SEQ_MASK
        self.buf = bytearray()
        self.snd_wnd = 0
        self.mss = 536
        self.rcv_nxt = 0
        self.to_host = bytearray()
        self.adv_wnd = RCV_WINDOW
        self.host_eof = False
        self.fin_sent = False
        self.fin_acked = False
        self.guest_fin = False
        self.host_shut = False
        self.probe = False
        self.rto = RTO_INITIAL
        self.retries = 0
        self.timer: float | None = None
        self.mask = 0

    @property
    def key(self) -> tuple[bytes, int, int]:
        return self.remote_ip, self.remote_port, self.guest_port

    # --- segments to the guest --------------------------------------------------------------
    def rcv_wnd(self) -> int:
        return max(0, RCV_WINDOW - len(self.to_host))

    def segment(self, flags: int, seq: int, payload: bytes = b"", options: TcpOptions | None = None) -> None:
        ack = self.rcv_nxt if flags & TcpFlags.ACK else 0
        self.adv_wnd = self.rcv_wnd()
        tcp = Tcp(self.remote_port, self.guest_port, seq & SEQ_MASK, ack, flags, self.adv_wnd,
                  options or TcpOptions())
        self.net.send_tcp(self.remote_ip, tcp, payload)

    def send_syn(self) -> None:
        flags = TcpFlags.SYN | (TcpFlags.ACK if self.state == "SYN_RCVD" else 0)
        self.segment(flags, self.iss, options=TcpOptions(mss=MSS))
        self.snd_nxt = (self.iss + 1) & SEQ_MASK
        self.arm()

    def arm(self) -> None:
        if self.timer is None:
            self.timer = time.monotonic() + self.rto

    # --- from the host socket ----------------------------------------------------------------
    def on_host(self, mask: int) -> None:
        if self.sock is None:
            return
        if self.state == "CONNECTING":
            if mask & selectors.EVENT_WRITE:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    log.info("usernet: connect to %s:%d failed: %s", ip_str(self.remote_ip), self.remote_port,
                             os.strerror(err))
                    self.segment(TcpFlags.RST | TcpFlags.ACK, 0)
                    self.net.drop(self)
                    return
                self.state = "SYN_RCVD"
                self.send_syn()
            self.update()
            return
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if self.sock is not None and mask & selectors.EVENT_READ:
            self.read_host()
        self.update()

    def read_host(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if data:
            self.buf += data
        else:
            self.host_eof = True
        self.output()

    def flush(self) -> None:
        """Hand the guest's bytes to the host socket; close its write side after the guest's FIN."""
        if self.sock is None:
            return
        if self.to_host:
            try:
                n = self.sock.send(self.to_host)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.abort()
                return
            del self.to_host[:n]
            if self.state == "ESTABLISHED" and self.adv_wnd < RCV_WINDOW // 2 and self.rcv_wnd() - self.adv_wnd >= MSS:
                self.segment(TcpFlags.ACK, self.snd_nxt)  # window update
        if not self.to_host and self.guest_fin and not self.host_shut:
            self.host_shut = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        self.maybe_finish()

    # --- to the guest ------------------------------------------------------------------------
    def output(self) -> None:
        if self.state != "ESTABLISHED":
            return
        end = (self.buf_seq + len(self.buf)) & SEQ_MASK
        wnd_end = (self.snd_una + self.snd_wnd) & SEQ_MASK
        while seq_lt(self.snd_nxt, end):
            room = (wnd_end - self.snd_nxt) & SEQ_MASK
            if room > 0x7FFF_FFFF or room == 0:
                if not self.probe:
                    break
                room = 1  # a zero-window probe
            self.probe = False
            off = (self.snd_nxt - self.buf_seq) & SEQ_MASK
            n = min(self.mss, room, (end - self.snd_nxt) & SEQ_MASK)
            self.segment(TcpFlags.ACK | TcpFlags.PSH, self.snd_nxt, bytes(self.buf[off : off + n]))
            self.snd_nxt = (self.snd_nxt + n) & SEQ_MASK
        if self.host_eof and not self.fin_sent and self.snd_nxt == end:
            self.segment(TcpFlags.FIN | TcpFlags.ACK, self.snd_nxt)
            self.snd_nxt = (self.snd_nxt + 1) & SEQ_MASK
            self.fin_sent = True
        if self.snd_una != self.snd_nxt or (self.buf and self.snd_wnd == 0):
            self.arm()

    # --- from the guest ----------------------------------------------------------------------
    def on_segment(self, tcp: Tcp, payload: bytes) -> None:
        flags = tcp.flags
        if self.state == "LINGER":
            if flags & TcpFlags.FIN and not flags & TcpFlags.RST:
                self.segment(TcpFlags.ACK, self.snd_nxt)
            return
        if flags & TcpFlags.RST:
            if self.state != "SYN_SENT" or tcp.ack == self.snd_nxt:
                self.net.drop(self, reset_host=True)
            return
        if self.state == "CONNECTING":
            return  # the guest repeats its SYN while the host connects
        if self.state == "SYN_SENT":
            if flags & TcpFlags.ACK and tcp.ack != self.snd_nxt:
                self.net.send_reset_for(self.remote_ip, tcp, payload)
                return
            if flags & TcpFlags.SYN and flags & TcpFlags.ACK:
                self.rcv_nxt = (tcp.seq + 1) & SEQ_MASK
                self.snd_una = self.snd_nxt
                self.snd_wnd = tcp.window
                self.mss = min(MSS, tcp.options.mss or 536)
                self.state = "ESTABLISHED"
                self.timer, self.retries, self.rto = None, 0, RTO_INITIAL
                self.segment(TcpFlags.ACK, self.snd_nxt)
                self.output()
                self.update()
            return
        if flags & TcpFlags.SYN:
            if self.state == "SYN_RCVD":
                self.segment(TcpFlags.SYN | TcpFlags.ACK, self.iss, options=TcpOptions(mss=MSS))
            else:
                self.segment(TcpFlags.ACK, self.snd_nxt)
            return
        if not flags & TcpFlags.ACK:
            return
        ack = tcp.ack
        if seq_lt(self.snd_una, ack) and seq_le(ack, self.snd_nxt):
            if self.state == "SYN_RCVD":
                self.state = "ESTABLISHED"
            n = (ack - self.buf_seq) & SEQ_MASK
            if n > 0x7FFF_FFFF:
                n = 0  # only the SYN was acknowledged
            if n > len(self.buf):
                self.fin_acked = self.fin_sent
                n = len(self.buf)
            del self.buf[:n]
            self.buf_seq = (self.buf_seq + n) & SEQ_MASK
            self.snd_una = ack
            self.retries, self.rto = 0, RTO_INITIAL
            self.timer = None
            self.snd_wnd = tcp.window
        elif ack == self.snd_una:
            self.snd_wnd = tcp.window
        elif self.state == "SYN_RCVD":
            self.net.send_reset_for(self.remote_ip, tcp, payload)
            return
        if self.state != "ESTABLISHED":
            return
        if payload or flags & TcpFlags.FIN:
            off = (self.rcv_nxt - tcp.seq) & SEQ_MASK
            if off <= len(payload) and not self.guest_fin:
                fresh = payload[off:]
                take = fresh[: self.rcv_wnd()]
                self.to_host += take
                self.rcv_nxt = (self.rcv_nxt + len(take)) & SEQ_MASK
                if flags & TcpFlags.FIN and len(take) == len(fresh):
                    self.guest_fin = True
                    self.rcv_nxt = (self.rcv_nxt + 1) & SEQ_MASK
            self.segment(TcpFlags.ACK, self.snd_nxt)  # new data, a repeat or out of order: ACK what we have
            self.flush()
            if self.state != "ESTABLISHED":
                return
        self.output()
        self.maybe_finish()
        self.update()

    def maybe_finish(self) -> None:
        if self.state == "ESTABLISHED" and self.fin_acked and self.guest_fin and not self.to_host:
            self.close_host()
            self.state = "LINGER"
            self.timer = time.monotonic() + LINGER

    # --- timers ------------------------------------------------------------------------------
    def on_timer(self, now: float) -> None:
        self.timer = None
        if self.state == "LINGER":
            self.net.drop(self)
            return
        if self.state == "CONNECTING":
            return
        self.retries += 1
        if self.retries > MAX_RETRIES:
            log.info("usernet: %s:%d <-> guest port %d timed out", ip_str(self.remote_ip), self.remote_port,
                     self.guest_port)
            self.abort()
            return
        self.rto = min(self.rto * 2, RTO_MAX)
        if self.state in ("SYN_SENT", "SYN_RCVD"):
            self.send_syn()
            return
        if self.snd_una != self.snd_nxt or self.buf:
            self.snd_nxt = self.snd_una  # go back N
            if self.fin_sent and not self.fin_acked:
                self.fin_sent = False
            self.probe = self.snd_wnd == 0
            self.output()

    # --- closing -----------------------------------------------------------------------------
    def abort(self) -> None:
        """The host side failed or the guest stopped answering: RST to the guest."""
        if self.state not in ("CONNECTING", "LINGER"):
            self.segment(TcpFlags.RST | TcpFlags.ACK, self.snd_nxt)
        self.net.drop(self, reset_host=True)

    def close_host(self, reset: bool = False) -> None:
        if self.sock is None:
            return
        self.net.unwatch(self)
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass
        self.sock = None

    def update(self) -> None:
        """Watch the host socket for what this connection can use now."""
        if self.sock is None:
            return
        mask = 0
        if self.state == "CONNECTING" or self.to_host:
            mask |= selectors.EVENT_WRITE
        if self.state != "CONNECTING" and not self.host_eof and len(self.buf) < SND_BUFFER_LIMIT:
            mask |= selectors.EVENT_READ
        self.net.watch(self, mask)


class UdpFlow:
    """One guest UDP source port: a host socket, and who the guest sent to (reply addresses)."""

    def __init__(self, sock: socket.socket, guest_port: int) -> None:
        self.sock = sock
        self.guest_port = guest_port
        self.peers: dict[tuple[str, int], tuple[bytes, int]] = {}  # host address -> as the guest sees it
        self.last = time.monotonic()


class Listener:
    def __init__(self, sock: socket.socket, fwd: Forward) -> None:
        self.sock = sock
        self.fwd = fwd


class UserNet:
    """The virtual gateway and its host sockets. `output(frame)` carries frames to the guest."""

    def __init__(
        self,
        output: Callable[[bytes], None],
        guest_ip: bytes = KVMTOOL_GUEST_IP,
        gateway_ip: bytes = KVMTOOL_GATEWAY_IP,
        guest_mac: bytes = KVMTOOL_GUEST_MAC,
        gateway_mac: bytes = KVMTOOL_HOST_MAC,
        prefix: int = KVMTOOL_PREFIX,
        forwards: Sequence[Forward] = (),
        nameserver: str | None = None,
    ) -> None:
        self.output = output
        self.guest_ip, self.gateway_ip = bytes(guest_ip), bytes(gateway_ip)
        self.guest_mac, self.gateway_mac = bytes(guest_mac), bytes(gateway_mac)
        self.mask = prefix_mask(prefix)
        self.nameserver = nameserver or host_nameserver()
        self.sel = selectors.DefaultSelector()
        self.tcp: dict[tuple[bytes, int, int], TcpConn] = {}
        self.udp: dict[int, UdpFlow] = {}
        self.listeners: list[Listener] = []
        self.ident = 0
        self.next_port = EPHEMERAL[0]
        self.dropped = 0
        self.frames_in = 0
        self.frames_out = 0
        try:
            for fwd in forwards:
                self.listen(fwd)
        except UserNetError:
            self.close()
            raise

    # --- set-up and tear-down ------------------------------------------------------------------
    def listen(self, fwd: Forward) -> Listener:
        try:
            if not ipaddress.IPv4Address(fwd.host_addr).is_loopback:
                raise UserNetError(f"hostfwd {fwd.host_addr}:{fwd.host_port}: not a loopback address")
        except ValueError:
            raise UserNetError(f"hostfwd {fwd.host_addr!r}: not an IPv4 address") from None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((fwd.host_addr, fwd.host_port))
            sock.listen(16)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise UserNetError(f"hostfwd {fwd.host_addr}:{fwd.host_port}: {exc.strerror or exc}") from None
        lst = Listener(sock, fwd)
        self.sel.register(sock, selectors.EVENT_READ, lambda _mask: self.accept(lst))
        self.listeners.append(lst)
        return lst

    def close(self) -> None:
        for conn in list(self.tcp.values()):
            self.drop(conn, reset_host=False)
        for flow in list(self.udp.values()):
            self._close_udp(flow)
        for lst in self.listeners:
            self.sel.unregister(lst.sock)
            lst.sock.close()
        self.listeners.clear()
        self.sel.close()

    # --- the event loop ----------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadlines = [c.timer for c in self.tcp.values() if c.timer is not None]
        return min(deadlines) if deadlines else None

    def poll(self, timeout: float = 0.0) -> None:
        """Serve ready host sockets (waiting at most `timeout` seconds, less if a timer is due)
        and expired timers."""
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        if self.sel.get_map():
            for key, mask in self.sel.select(timeout):
                try:
                    key.data(mask)
                except Exception as exc:  # one connection's trouble must not stop the others
                    log.warning("usernet: %s: %s", type(exc).__name__, exc)
        now = time.monotonic()
        for conn in list(self.tcp.values()):
            if conn.timer is not None and now >= conn.timer and self.tcp.get(conn.key) is conn:
                conn.on_timer(now)
        for flow in list(self.udp.values()):
            if now - flow.last > UDP_IDLE:
                self._close_udp(flow)

    def watch(self, conn: TcpConn, mask: int) -> None:
        if conn.sock is None or mask == conn.mask:
            return
        if conn.mask == 0:
            self.sel.register(conn.sock, mask, conn.on_host)
        elif mask == 0:
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, mask, conn.on_host)
        conn.mask = mask

    def unwatch(self, conn: TcpConn) -> None:
        if conn.sock is not None and conn.mask:
            self.sel.unregister(conn.sock)
        conn.mask = 0

    def drop(self, conn: TcpConn, reset_host: bool = False) -> None:
        conn.close_host(reset=reset_host)
        conn.state = "CLOSED"
        conn.timer = None
        if self.tcp.get(conn.key) is conn:
            del self.tcp[conn.key]

    # --- frames to the guest -----------------------------------------------------------------
    def _ip_ident(self) -> int:
        self.ident = (self.ident + 1) & 0xFFFF
        return self.ident

    def _emit(self, frame: bytes) -> None:
        self.frames_out += 1
        self.output(frame)

    def send_tcp(self, src_ip: bytes, tcp: Tcp, payload: bytes = b"") -> None:
        self._emit(tcp_frame(self.guest_mac, self.gateway_mac, src_ip, self.guest_ip, tcp, payload, self._ip_ident()))

    def send_udp(self, src: tuple[bytes, int], dport: int, payload: bytes, dst_ip: bytes | None = None,
                 dst_mac: bytes | None = None) -> None:
        self._emit(udp_frame(dst_mac or self.guest_mac, self.gateway_mac, src[0], dst_ip or self.guest_ip, src[1],
                             dport, payload, self._ip_ident()))

    def send_reset_for(self, remote_ip: bytes, tcp: Tcp, payload: bytes) -> None:
        """RFC 9293 §3.10.7.1: the reset for a segment that belongs to no connection."""
        if tcp.flags & TcpFlags.RST:
            return
        if tcp.flags & TcpFlags.ACK:
            rst = Tcp(tcp.dport, tcp.sport, tcp.ack, 0, TcpFlags.RST, 0)
        else:
            length = len(payload) + bool(tcp.flags & TcpFlags.SYN) + bool(tcp.flags & TcpFlags.FIN)
            rst = Tcp(tcp.dport, tcp.sport, 0, (tcp.seq + length) & SEQ_MASK, TcpFlags.RST | TcpFlags.ACK, 0)
        self.send_tcp(remote_ip, rst)

    # --- frames from the guest ---------------------------------------------------------------
    def input(self, frame: bytes) -> None:
        """One frame the guest transmitted."""
        self.frames_in += 1
        try:
            pf = parse_frame(frame)
        except (NetParseError, ValueError, struct.error):
            self.dropped += 1
            return
        try:
            if not self._dispatch(pf):
                self.dropped += 1
        except (NetParseError, ValueError, struct.error, KeyError):
            self.dropped += 1

    def _dispatch(self, pf: ParsedFrame) -> bool:
        eth = pf.eth
        if eth.dst not in (self.gateway_mac, BROADCAST_MAC) or eth.src[0] & 1:
            return False
        if pf.arp is not None:
            return self._arp(pf)
        ip = pf.ip
        if ip is None or eth.ethertype != EtherType.IPV4 or ip.is_fragment:
            return False
        if pf.udp is not None and pf.udp.dport == DHCP_SERVER_PORT:
            return self._dhcp(pf)
        if ip.src != self.guest_ip:
            return False
        if pf.icmp is not None:
            return self._icmp(pf)
        if pf.udp is not None:
            return self._udp(pf)
        if pf.tcp is not None:
            return self._tcp(pf)
        return False

    def _arp(self, pf: ParsedFrame) -> bool:
        arp = pf.arp
        assert arp is not None
        if arp.op != ArpOp.REQUEST or arp.tpa != self.gateway_ip or arp.spa == self.gateway_ip:
            return False
        self._emit(arp_frame(ArpOp.REPLY, self.gateway_mac, self.gateway_ip, arp.sha, arp.spa))
        return True

    def _icmp(self, pf: ParsedFrame) -> bool:
        icmp, ip = pf.icmp, pf.ip
        assert icmp is not None and ip is not None
        if ip.dst != self.gateway_ip or icmp.type != IcmpType.ECHO_REQUEST:
            return False
        reply = IcmpEcho(IcmpType.ECHO_REPLY, icmp.ident, icmp.seq, icmp.data).pack()
        self._emit(ethernet_frame(pf.eth.src, self.gateway_mac, EtherType.IPV4,
                                  ipv4_packet(self.gateway_ip, ip.src, IpProto.ICMP, reply, self._ip_ident())))
        return True

    # --- DHCP --------------------------------------------------------------------------------
    def _dhcp(self, pf: ParsedFrame) -> bool:
        msg = Dhcp.parse(pf.payload)
        if msg.op != DhcpOp.BOOTREQUEST or msg.hlen != 6:
            return False
        kind = msg.message_type
        if kind == DhcpMessageType.DISCOVER:
            answer = DhcpMessageType.OFFER
        elif kind == DhcpMessageType.REQUEST:
            server = msg.ip_option(DhcpOption.SERVER_ID)
            if server is not None and server != self.gateway_ip:
                return False  # the client chose another server
            wanted = msg.ip_option(DhcpOption.REQUESTED_IP) or msg.ciaddr
            answer = DhcpMessageType.ACK if wanted == self.guest_ip else DhcpMessageType.NAK
        else:
            return False  # RELEASE, DECLINE, INFORM: nothing to do for a single fixed lease
        options: dict[int, bytes] = {
            DhcpOption.MESSAGE_TYPE: bytes((answer,)),
            DhcpOption.SERVER_ID: self.gateway_ip,
        }
        if answer != DhcpMessageType.NAK:
            options.update({
                DhcpOption.LEASE_TIME: struct.pack("!I", LEASE_TIME),
                DhcpOption.SUBNET_MASK: self.mask,
                DhcpOption.ROUTER: self.gateway_ip,
                DhcpOption.DNS: self.gateway_ip,
            })
        reply = Dhcp(DhcpOp.BOOTREPLY, msg.xid, msg.chaddr,
                     yiaddr=self.guest_ip if answer != DhcpMessageType.NAK else ANY_IP,
                     siaddr=self.gateway_ip, flags=msg.flags, options=options)
        self.send_udp((self.gateway_ip, DHCP_SERVER_PORT), DHCP_CLIENT_PORT, reply.pack(), dst_ip=BROADCAST_IP,
                      dst_mac=BROADCAST_MAC)
        return True

    # --- where a guest destination is on the host --------------------------------------------
    def _outside(self, dst: bytes) -> bool:
        """An address the gateway may reach for the guest: itself (the host) or beyond the subnet."""
        if dst == self.gateway_ip:
            return True
        net = ip_int(self.guest_ip) & ip_int(self.mask)
        if ip_int(dst) & ip_int(self.mask) == net:
            return False
        addr = ipaddress.IPv4Address(dst)
        return not (addr.is_multicast or addr.is_unspecified or dst == BROADCAST_IP)

    def _host_target(self, dst: bytes, port: int, udp: bool = False) -> tuple[str, int]:
        if dst == self.gateway_ip:
            if udp and port == 53:
                return self.nameserver, 53
            return "127.0.0.1", port
        return ip_str(dst), port

    # --- UDP -----------------------------------------------------------------------------------
    def _udp(self, pf: ParsedFrame) -> bool:
        ip, udp = pf.ip, pf.udp
        assert ip is not None and udp is not None
        if not self._outside(ip.dst) or udp.dport == 0:
            return False
        flow = self.udp.get(udp.sport)
        if flow is None:
            if len(self.udp) >= MAX_UDP:
                oldest = min(self.udp.values(), key=lambda f: f.last)
                self._close_udp(oldest)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            flow = UdpFlow(sock, udp.sport)
            self.udp[udp.sport] = flow
            self.sel.register(sock, selectors.EVENT_READ, lambda _mask, f=flow: self._udp_reply(f))
        target = self._host_target(ip.dst, udp.dport, udp=True)
        flow.peers[target] = (ip.dst, udp.dport)
        flow.last = time.monotonic()
        try:
            flow.sock.sendto(pf.payload, target)
        except OSError as exc:
            log.info("usernet: UDP to %s:%d: %s", target[0], target[1], exc)
            return False
        return True

    def _udp_reply(self, flow: UdpFlow) -> None:
        for _ in range(64):
            try:
                data, addr = flow.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP port unreachable reported on the socket
            flow.last = time.monotonic()
            src = flow.peers.get(addr)
            if src is None:
                try:
                    raw = ip_bytes(addr[0])
                except ValueError:
                    continue
                src = (self.gateway_ip if ipaddress.IPv4Address(addr[0]).is_loopback else raw, addr[1])
            if len(data) <= UDP_MAX_PAYLOAD:
                self.send_udp(src, flow.guest_port, data)

    def _close_udp(self, flow: UdpFlow) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(flow.sock)
        flow.sock.close()
        self.udp.pop(flow.guest_port, None)

    # --- TCP -----------------------------------------------------------------------------------
    def _tcp(self, pf: ParsedFrame) -> bool:
        ip, tcp = pf.ip, pf.tcp
        assert ip is not None and tcp is not None
        conn = self.tcp.get((ip.dst, tcp.dport, tcp.sport))
        if conn is not None:
            conn.on_segment(tcp, pf.payload)
            return True
        if tcp.flags & TcpFlags.SYN and not tcp.flags & (TcpFlags.ACK | TcpFlags.RST | TcpFlags.FIN):
            return self._connect(ip.dst, tcp)
        self.send_reset_for(ip.dst, tcp, pf.payload)
        return True

    def _connect(self, dst: bytes, tcp: Tcp) -> bool:
        """A guest SYN: connect a host socket; the SYN-ACK waits for the connect to finish."""
        refused = not self._outside(dst) or tcp.dport == 0 or len(self.tcp) >= MAX_TCP
        sock = None
        if not refused:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex(self._host_target(dst, tcp.dport))
            if rc not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                sock.close()
                refused = True
        if refused or sock is None:
            self.send_reset_for(dst, tcp, b"")
            return True
        conn = TcpConn(self, (dst, tcp.dport), tcp.sport, sock, "CONNECTING")
        conn.rcv_nxt = (tcp.seq + 1) & SEQ_MASK
        conn.snd_wnd = tcp.window
        conn.mss = min(MSS, tcp.options.mss or 536)
        self.tcp[conn.key] = conn
        conn.update()
        return True

    def accept(self, lst: Listener) -> None:
        """A host client on a forwarded port: open a connection to the guest."""
        for _ in range(16):
            try:
                client, _addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.info("usernet: accept on %s:%d: %s", lst.fwd.host_addr, lst.fwd.host_port, exc)
                return
            if len(self.tcp) >= MAX_TCP:
                client.close()
                continue
            client.setblocking(False)
            conn = TcpConn(self, (self.gateway_ip, self._ephemeral(lst.fwd.guest_port)), lst.fwd.guest_port, client,
                           "SYN_SENT")
            self.tcp[conn.key] = conn
            conn.send_syn()
            conn.update()

    def _ephemeral(self, guest_port: int) -> int:
        lo, hi = EPHEMERAL
        for _ in range(hi - lo + 1):
            port = self.next_port
            self.next_port = lo if port >= hi else port + 1
            if (self.gateway_ip, port, guest_port) not in self.tcp:
                return port
        raise UserNetError("no free gateway port")  # more than 16k connections to one guest port
