"""The socket syscalls (guest/net/socket.py) on a real Process (tests/guest/test_syscall_fuzz.py)
whose network is the guest's real IPv4 stack, driven by the scripted host peer of
tests/guest/test_tcpip.py: every frame the calls make is parsed on the peer's side, every
frame the peer sends goes in through the stack. Errors are Linux's (socket(2), bind(2),
connect(2), accept(2), getsockopt(2), shutdown(2), ip(7), tcp(7), udp(7)): the address
checks of move_addr_to_kernel and inet_bind (EINVAL, EFAULT, EAFNOSUPPORT, EADDRINUSE,
EADDRNOTAVAIL), the connect states (EINPROGRESS, EALREADY, EISCONN, ECONNREFUSED), and a
wild pointer anywhere is EFAULT."""

from __future__ import annotations

import errno
import struct

import pytest

from unirealm.arch import net
from unirealm.guest.net import socket as so
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.pagecache import Store
from unirealm.guest.vfs import POLLHUP, POLLIN, POLLOUT

from .process_support import WILD, call, scratch
from .test_syscall_fuzz import Idle, make_process
from .test_tcpip import GUEST, GUEST_MAC, HOST, HOST_MAC, Peer

F = net.TcpFlags
AF_INET, STREAM, DGRAM = so.AF_INET, so.SOCK_STREAM, so.SOCK_DGRAM
SOL_SOCKET = so.SOL_SOCKET
FOREIGN = net.ip_bytes("10.9.8.7")


class Net:
    """A process whose kernel's network is the peer's stack, and scratch memory in it."""

    def __init__(self) -> None:
        self.peer = Peer()
        self.p = make_process()
        self.p.kernel.net = self.peer.stack
        self.buf = scratch(self.p, 0x8000)

    def socket(self, kind: int = STREAM, flags: int = 0) -> int:
        fd = call(self.p, "socket", AF_INET, kind | flags, 0)
        assert fd is not None and fd >= 0
        return fd

    def addr(self, ip: bytes, port: int, at: int = 0x100) -> int:
        """A sockaddr_in in user memory (at buf + `at`)."""
        self.p.write(self.buf + at, so.pack_sockaddr(ip, port))
        return self.buf + at

    def got_addr(self, at: int, lenp: int) -> tuple[bytes, int, int]:
        """(ip, port, length) a call wrote back."""
        (length,) = struct.unpack("<I", self.p.read(lenp, 4))
        ip, port = so.unpack_sockaddr(self.p.read(at, 16))
        return ip, port, length

    def room(self, lenp: int, size: int = 16) -> int:
        self.p.write(lenp, struct.pack("<I", size))
        return lenp

    def call(self, name: str, *args: int) -> int | None:
        return call(self.p, name, *args)

    def file(self, fd: int) -> so.SocketFile:
        f = self.p.state.fds.file(fd)
        assert isinstance(f, so.SocketFile)
        return f

    def on_wfi(self, *steps: object) -> None:
        """What the host does each time the vCPU idles: the next of `steps`, then Idle."""
        queue = list(steps)

        def wfi() -> None:
            if not queue:
                raise Idle
            queue.pop(0)()  # type: ignore[operator]

        self.p.kernel.cpu.wfi = wfi


@pytest.fixture
def n() -> Net:
    try:
        yield Net()
    finally:
        Store.current = None


def frames(peer: Peer) -> list[net.ParsedFrame]:
    return peer.take()


def syn_ack(n: Net, syn: net.ParsedFrame, seq: int = 7000) -> None:
    assert syn.tcp is not None and syn.tcp.flags == F.SYN
    n.peer.tcp(syn.tcp.dport, syn.tcp.sport, seq, syn.tcp.seq + 1, F.SYN | F.ACK)


def refuse(n: Net, syn: net.ParsedFrame) -> None:
    """A closed port's answer to a SYN: RST|ACK acknowledging it."""
    assert syn.tcp is not None and syn.tcp.flags == F.SYN
    n.peer.tcp(syn.tcp.dport, syn.tcp.sport, 0, syn.tcp.seq + 1, F.RST | F.ACK)


# --- socket, socketpair ---------------------------------------------------------------------
def test_what_socket_refuses(n: Net) -> None:
    assert n.call("socket", so.AF_UNIX, STREAM, 0) == -errno.EAFNOSUPPORT
    assert n.call("socket", so.AF_INET6, STREAM, 0) == -errno.EAFNOSUPPORT
    assert n.call("socket", AF_INET, 3, 0) == -errno.EINVAL  # SOCK_RAW
    assert n.call("socket", AF_INET, 5, 0) == -errno.EINVAL  # SOCK_SEQPACKET
    assert n.call("socket", AF_INET, STREAM | 0x10, 0) == -errno.EINVAL  # not a type flag
    assert n.call("socket", AF_INET, STREAM, so.IPPROTO_UDP) == -errno.EPROTONOSUPPORT
    assert n.call("socket", AF_INET, DGRAM, so.IPPROTO_TCP) == -errno.EPROTONOSUPPORT
    assert n.call("socket", AF_INET, DGRAM, 1) == -errno.EPROTONOSUPPORT  # ICMP
    assert n.call("socketpair", so.AF_UNIX, STREAM, 0, n.buf) == -errno.EOPNOTSUPP
    assert n.call("socketpair", AF_INET, STREAM, 0, n.buf) == -errno.EAFNOSUPPORT
    n.p.kernel.net = None  # no NIC: no AF_INET
    assert n.call("socket", AF_INET, STREAM, 0) == -errno.EAFNOSUPPORT
    assert len(n.p.state.fds) == 0


def test_socket_flags_and_protocols(n: Net) -> None:
    a = n.socket(STREAM, so.SOCK_NONBLOCK | so.SOCK_CLOEXEC)
    b = call(n.p, "socket", AF_INET, STREAM, so.IPPROTO_TCP)
    c = call(n.p, "socket", AF_INET, DGRAM, so.IPPROTO_UDP)
    assert (a, b, c) == (0, 1, 2)
    fa = n.file(a)
    assert fa.nonblock and n.p.state.fds.get(a).cloexec  # type: ignore[union-attr]
    assert not n.file(b).nonblock and not n.p.state.fds.get(b).cloexec  # type: ignore[union-attr]
    assert fa.path == f"socket:[{fa.inode.ino}]"  # type: ignore[union-attr]
    assert n.file(c).kind == DGRAM


def test_socket_calls_on_other_files(n: Net) -> None:
    assert n.call("pipe2", n.buf, 0) == 0
    r = struct.unpack("<i", n.p.read(n.buf, 4))[0]
    sa = n.addr(GUEST, 80)
    for name, args in [("bind", (sa, 16)), ("listen", (1,)), ("accept4", (0, 0, 0)), ("connect", (sa, 16)),
                       ("getsockname", (0, 0)), ("getpeername", (0, 0)), ("shutdown", (0,)),
                       ("sendto", (n.buf, 1, 0, 0, 0)), ("recvfrom", (n.buf, 1, 0, 0, 0)),
                       ("setsockopt", (SOL_SOCKET, so.SO_REUSEADDR, n.buf, 4)),
                       ("getsockopt", (SOL_SOCKET, so.SO_TYPE, n.buf, n.buf + 8))]:
        assert n.call(name, r, *args) == -errno.ENOTSOCK, name
        assert n.call(name, 77, *args) == -errno.EBADF, name


# --- bind, getsockname ----------------------------------------------------------------------
def test_bind_and_getsockname(n: Net) -> None:
    a, b = n.socket(), n.socket()
    lenp = n.buf + 0x40
    assert n.call("getsockname", a, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (net.ip_bytes("0.0.0.0"), 0, 16)  # unbound
    assert n.call("bind", a, n.addr(so.ANY_IP, 8080), 16) == 0
    assert n.call("getsockname", a, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (so.ANY_IP, 8080, 16)  # bound to INADDR_ANY: 0.0.0.0 (inet_getname)
    assert n.call("bind", a, n.addr(so.ANY_IP, 8081), 16) == -errno.EINVAL  # bound already
    assert n.call("bind", b, n.addr(so.ANY_IP, 8080), 16) == -errno.EADDRINUSE
    assert n.call("bind", b, n.addr(FOREIGN, 8082), 16) == -errno.EADDRNOTAVAIL
    assert n.call("bind", b, n.addr(GUEST, 0), 16) == 0  # the stack's own address, any port
    assert n.call("getsockname", b, n.buf, n.room(lenp)) == 0
    ip, port, _ = n.got_addr(n.buf, lenp)
    assert ip == GUEST and port not in (0, 8080)
    u = n.socket(DGRAM)
    assert n.call("bind", u, n.addr(so.ANY_IP, 8080), 16) == 0  # UDP ports are their own
    assert n.call("close", a) == 0
    c = n.socket()
    assert n.call("bind", c, n.addr(so.ANY_IP, 8080), 16) == 0  # free again once closed


def test_getsockname_room_is_respected(n: Net) -> None:
    a = n.socket()
    n.call("bind", a, n.addr(GUEST, 8080), 16)
    lenp = n.buf + 0x40
    n.p.write(n.buf, b"\xee" * 16)
    assert n.call("getsockname", a, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 6) == so.pack_sockaddr(GUEST, 8080)[:4] + b"\xee\xee"
    assert struct.unpack("<I", n.p.read(lenp, 4))[0] == 16  # the real length, for a caller to see the cut
    assert n.call("getsockname", a, n.buf, n.room(lenp, 0)) == 0
    assert n.call("getsockname", a, WILD, n.room(lenp)) == -errno.EFAULT
    assert n.call("getsockname", a, n.buf, WILD) == -errno.EFAULT


@pytest.mark.parametrize("length", [0, 2, 8, 15, 129, 0xFFFF_FFFF, 1 << 31])
def test_address_lengths_linux_refuses(n: Net, length: int) -> None:
    """Shorter than sockaddr_in (inet_bind, tcp_v4_connect, udp_sendmsg) or past
    sockaddr_storage, or negative as an int (move_addr_to_kernel): EINVAL."""
    a, u = n.socket(), n.socket(DGRAM)
    sa = n.addr(HOST, 80)
    assert n.call("bind", a, sa, length) == -errno.EINVAL
    assert n.call("connect", a, sa, length) == -errno.EINVAL
    assert n.call("connect", u, sa, length) == -errno.EINVAL
    assert n.call("sendto", u, n.buf, 1, 0, sa, length) == -errno.EINVAL
    assert n.file(a).port == 0 and n.file(u).peer is None and frames(n.peer) == []


def test_addresses_at_wild_pointers_are_efault(n: Net) -> None:
    a, u = n.socket(), n.socket(DGRAM)
    for addr in (0, WILD):
        assert n.call("bind", a, addr, 16) == -errno.EFAULT
        assert n.call("connect", a, addr, 16) == -errno.EFAULT
        assert n.call("connect", u, addr, 16) == -errno.EFAULT


def test_other_address_families(n: Net) -> None:
    a, u = n.socket(), n.socket(DGRAM)
    six = n.buf + 0x200
    n.p.write(six, struct.pack("<HH", so.AF_INET6, 80) + bytes(24))
    assert n.call("bind", a, six, 28) == -errno.EAFNOSUPPORT
    assert n.call("connect", a, six, 28) == -errno.EAFNOSUPPORT
    assert n.call("sendto", u, n.buf, 1, 0, six, 28) == -errno.EAFNOSUPPORT


# --- listen, accept -------------------------------------------------------------------------
def test_listen_and_accept(n: Net) -> None:
    s = n.socket()
    assert n.call("listen", n.socket(DGRAM), 5) == -errno.EOPNOTSUPP
    assert n.call("accept4", s, 0, 0, 0) == -errno.EINVAL  # not listening
    assert n.call("bind", s, n.addr(so.ANY_IP, 8123), 16) == 0
    assert n.call("listen", s, 0) == 0  # a backlog of 0 takes one
    assert n.call("listen", s, 0x1_0000_0004) == 0  # again: the backlog changes (an int)
    assert n.file(s).listener.backlog == 4
    assert n.call("fcntl", s, 4, 0o4000) == 0  # F_SETFL O_NONBLOCK
    assert n.call("accept4", s, 0, 0, 0) == -errno.EAGAIN
    assert n.call("accept4", s, 0, 0, 0x1) == -errno.EINVAL  # not SOCK_NONBLOCK/SOCK_CLOEXEC
    seq, gseq = n.peer.handshake(8123, sport=40001)
    lenp = n.buf + 0x40
    c = n.call("accept4", s, n.buf, n.room(lenp), so.SOCK_CLOEXEC)
    assert c is not None and c > s
    assert n.got_addr(n.buf, lenp) == (HOST, 40001, 16)
    assert n.p.state.fds.get(c).cloexec and not n.file(c).nonblock  # type: ignore[union-attr]
    assert n.call("getsockname", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (GUEST, 8123, 16)
    assert n.call("getpeername", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (HOST, 40001, 16)
    assert n.call("getpeername", s, n.buf, n.room(lenp)) == -errno.ENOTCONN
    # data both ways through the accepted socket
    n.peer.tcp(40001, 8123, seq, gseq, F.ACK | F.PSH, b"hello")
    assert n.call("ioctl", c, so.FIONREAD, n.buf + 0x80) == 0
    assert struct.unpack("<I", n.p.read(n.buf + 0x80, 4))[0] == 5
    n.p.write(n.buf + 0x180, b"\xee" * 16)
    assert n.call("recvfrom", c, n.buf + 0x100, 100, 0, n.buf + 0x180, n.room(lenp)) == 5
    assert n.p.read(n.buf + 0x100, 5) == b"hello"
    # a stream names no source: the length comes back 0, the address untouched (as Linux's)
    assert n.p.read(lenp, 4) == bytes(4) and n.p.read(n.buf + 0x180, 16) == b"\xee" * 16
    n.p.write(n.buf + 0x200, b"world")
    assert n.call("sendto", c, n.buf + 0x200, 5, 0, 0, 0) == 5
    (out,) = frames(n.peer)
    assert out.tcp is not None and out.payload == b"world" and out.tcp.ack == seq + 5


def test_sending_on_a_stream_that_never_connected_is_epipe(n: Net) -> None:
    s = n.socket()
    n.p.write(n.buf + 0x40, struct.pack("<QQQQ", 1, 0, 0, 0))  # SIGPIPE: SIG_IGN (else it ends the process)
    assert n.call("rt_sigaction", 13, n.buf + 0x40, 0, 8) == 0
    n.p.write(n.buf, b"x")
    assert n.call("sendto", s, n.buf, 1, 0, 0, 0) == -errno.EPIPE  # tcp_sendmsg: not ESTABLISHED
    assert n.call("write", s, n.buf, 1) == -errno.EPIPE
    assert n.call("listen", s, 1) == 0
    assert n.call("write", s, n.buf, 1) == -errno.EPIPE
    assert frames(n.peer) == []


def test_a_listener_is_not_a_connection(n: Net) -> None:
    s = n.socket()
    assert n.call("listen", s, 4) == 0  # bound on the way
    assert n.file(s).port != 0
    assert n.call("connect", s, n.addr(HOST, 80), 16) == -errno.EISCONN  # __inet_stream_connect
    assert n.call("recvfrom", s, n.buf, 10, so.MSG_DONTWAIT, 0, 0) == -errno.ENOTCONN  # tcp_recvmsg
    assert n.call("shutdown", s, so.SHUT_WR) == 0
    assert n.file(s).listener is not None
    assert n.call("shutdown", s, so.SHUT_RD) == 0  # stops listening
    assert n.file(s).listener is None
    assert n.call("accept4", s, 0, 0, 0) == -errno.EINVAL
    (rst,) = n.peer.tcp(40000, n.file(s).port, 1000, 0, F.SYN)
    assert rst.tcp is not None and rst.tcp.flags & F.RST


def test_accept_waits_for_a_connection(n: Net) -> None:
    s = n.socket()
    n.call("bind", s, n.addr(so.ANY_IP, 8124), 16)
    n.call("listen", s, 4)
    n.on_wfi(lambda: n.peer.handshake(8124, sport=40002))
    c = n.call("accept4", s, 0, 0, 0)
    assert c is not None and c > s and n.file(c).tcb.rport == 40002  # type: ignore[union-attr]
    with pytest.raises(Idle):  # nothing more comes: the vCPU idles
        n.call("accept4", s, 0, 0, 0)


def test_accept_room_and_wild_pointers(n: Net) -> None:
    s = n.socket(STREAM, so.SOCK_NONBLOCK)
    n.call("bind", s, n.addr(so.ANY_IP, 8125), 16)
    n.call("listen", s, 4)
    n.peer.handshake(8125, sport=40003)
    lenp = n.buf + 0x40
    n.p.write(n.buf, b"\xee" * 16)
    c = n.call("accept", s, n.buf, n.room(lenp, 2))
    assert c is not None and c > 0
    assert n.p.read(n.buf, 3) == struct.pack("<H", AF_INET) + b"\xee"
    assert struct.unpack("<I", n.p.read(lenp, 4))[0] == 16


# --- connect ----------------------------------------------------------------------------------
def test_nonblocking_connect(n: Net) -> None:
    c = n.socket(STREAM, so.SOCK_NONBLOCK)
    sa = n.addr(HOST, 80)
    assert n.call("connect", c, sa, 16) == -errno.EINPROGRESS
    (syn,) = frames(n.peer)
    assert syn.tcp is not None and syn.tcp.dport == 80 and syn.ip is not None and syn.ip.dst == HOST
    f = n.file(c)
    assert f.poll() == 0  # SYN_SENT: neither readable nor writable
    assert n.call("connect", c, sa, 16) == -errno.EALREADY
    assert n.call("getpeername", c, n.buf, n.room(n.buf + 0x40)) == -errno.ENOTCONN
    assert n.call("sendto", c, n.buf, 1, 0, 0, 0) == -errno.EAGAIN
    syn_ack(n, syn)
    assert f.poll() & POLLOUT and not f.poll() & POLLIN
    assert n.call("connect", c, sa, 16) == 0  # the handshake is over: connected
    assert n.call("connect", c, sa, 16) == -errno.EISCONN
    lenp = n.buf + 0x40
    assert n.call("getpeername", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (HOST, 80, 16)
    assert n.call("getsockname", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (GUEST, f.port, 16)  # the source the connection chose
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 4) == bytes(4)
    assert n.call("getsockopt", c, so.IPPROTO_TCP, so.TCP_MAXSEG, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == f.tcb.mss  # type: ignore[union-attr]


def test_a_connection_the_peer_closed_before_connect_returned_is_connected(n: Net) -> None:
    """SYN-ACK, then the peer's FIN, before the app asks again: the state is CLOSE_WAIT, not
    CLOSE, so __inet_stream_connect answers 0 and the stream is at end of file."""
    c = n.socket(STREAM, so.SOCK_NONBLOCK)
    sa = n.addr(HOST, 80)
    assert n.call("connect", c, sa, 16) == -errno.EINPROGRESS
    (syn,) = frames(n.peer)
    syn_ack(n, syn)
    assert syn.tcp is not None
    n.peer.tcp(80, syn.tcp.sport, 7001, syn.tcp.seq + 1, F.FIN | F.ACK)
    assert n.file(c).tcb.state == tcpmod.CLOSE_WAIT  # type: ignore[union-attr]
    assert n.call("connect", c, sa, 16) == 0
    assert n.call("read", c, n.buf, 4) == 0
    assert n.call("getpeername", c, n.buf, n.room(n.buf + 0x40)) == 0


def test_nonblocking_connect_refused(n: Net) -> None:
    c = n.socket(STREAM, so.SOCK_NONBLOCK)
    assert n.call("connect", c, n.addr(HOST, 81), 16) == -errno.EINPROGRESS
    (syn,) = frames(n.peer)
    refuse(n, syn)
    lenp = n.buf + 0x40
    assert n.file(c).poll() & POLLHUP
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == errno.ECONNREFUSED
    assert n.call("connect", c, n.addr(HOST, 81), 16) == -errno.ECONNREFUSED


def test_blocking_connect_waits_for_the_handshake(n: Net) -> None:
    c = n.socket()
    n.on_wfi(lambda: syn_ack(n, frames(n.peer)[0]))
    assert n.call("connect", c, n.addr(HOST, 80), 16) == 0
    assert n.file(c).tcb.state == tcpmod.ESTABLISHED  # type: ignore[union-attr]
    r = n.socket()
    n.on_wfi(lambda: refuse(n, frames(n.peer)[0]))
    assert n.call("connect", r, n.addr(HOST, 82), 16) == -errno.ECONNREFUSED
    assert n.file(r).tcb is None


def test_connect_to_nowhere(n: Net) -> None:
    c = n.socket()
    assert n.call("connect", c, n.addr(HOST, 0), 16) == -errno.ECONNREFUSED
    assert n.call("connect", c, n.addr(so.ANY_IP, 80), 16) == -errno.ECONNREFUSED
    assert n.call("connect", c, n.addr(net.ip_bytes("127.0.0.1"), 80), 16) == -errno.ENETUNREACH
    assert frames(n.peer) == []


# --- UDP ----------------------------------------------------------------------------------
def udp_in(n: Net, sport: int, dport: int, data: bytes) -> None:
    n.peer.feed(net.udp_frame(GUEST_MAC, HOST_MAC, HOST, GUEST, sport, dport, data))


def test_udp_sendto_and_recvfrom(n: Net) -> None:
    u = n.socket(DGRAM, so.SOCK_NONBLOCK)
    n.p.write(n.buf, b"query")
    assert n.call("sendto", u, n.buf, 5, 0, 0, 0) == -errno.EDESTADDRREQ
    assert n.call("sendto", u, n.buf, 5, 0, n.addr(HOST, 53), 16) == 5
    (q,) = frames(n.peer)
    port = n.file(u).port
    assert q.udp is not None and q.udp.dport == 53 and q.udp.sport == port != 0 and q.payload == b"query"
    assert n.call("recvfrom", u, n.buf, 100, 0, 0, 0) == -errno.EAGAIN
    assert n.file(u).poll() == POLLOUT
    udp_in(n, 53, port, b"answer-1")
    udp_in(n, 54, port, b"answer-2")
    assert n.file(u).poll() == POLLOUT | POLLIN
    lenp = n.buf + 0x40
    assert n.call("recvfrom", u, n.buf + 0x100, 3, so.MSG_PEEK, n.buf, n.room(lenp)) == 3
    assert n.p.read(n.buf + 0x100, 3) == b"ans" and n.got_addr(n.buf, lenp) == (HOST, 53, 16)
    assert n.call("ioctl", u, so.FIONREAD, n.buf + 0x80) == 0
    assert struct.unpack("<I", n.p.read(n.buf + 0x80, 4))[0] == 8  # the next datagram's size
    assert n.call("recvfrom", u, n.buf + 0x100, 6, 0, n.buf, n.room(lenp)) == 6  # cut: the rest is gone
    assert n.call("recvfrom", u, n.buf + 0x100, 100, 0, n.buf, n.room(lenp)) == 8
    assert n.p.read(n.buf + 0x100, 8) == b"answer-2" and n.got_addr(n.buf, lenp) == (HOST, 54, 16)
    assert n.call("ioctl", u, so.FIONREAD, n.buf + 0x80) == 0
    assert n.p.read(n.buf + 0x80, 4) == bytes(4)
    assert n.call("ioctl", u, 0x5401, n.buf) == -errno.ENOTTY  # TCGETS: not a terminal


def test_udp_limits(n: Net) -> None:
    u = n.socket(DGRAM)
    sa = n.addr(HOST, 53)
    assert n.call("sendto", u, n.buf, 1473, 0, sa, 16) == -errno.EMSGSIZE  # no fragmentation
    assert n.call("sendto", u, n.buf, 1472, 0, sa, 16) == 1472
    bcast = n.addr(so.BROADCAST_IP, 67, at=0x180)
    assert n.call("sendto", u, n.buf, 10, 0, bcast, 16) == -errno.EACCES  # without SO_BROADCAST
    n.p.write(n.buf + 0x300, struct.pack("<i", 1))
    assert n.call("setsockopt", u, SOL_SOCKET, so.SO_BROADCAST, n.buf + 0x300, 4) == 0
    assert n.call("sendto", u, n.buf, 10, 0, bcast, 16) == 10
    assert n.call("sendto", u, WILD, 10, 0, sa, 16) == -errno.EFAULT
    assert [f.ip.dst for f in frames(n.peer) if f.ip is not None] == [HOST, so.BROADCAST_IP]


def test_udp_connect(n: Net) -> None:
    u = n.socket(DGRAM)
    lenp = n.buf + 0x40
    assert n.call("connect", u, n.addr(HOST, 5000), 16) == 0
    assert n.file(u).port != 0  # bound on the way
    assert n.call("getpeername", u, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp) == (HOST, 5000, 16)
    assert n.call("getsockname", u, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp)[0] == GUEST
    n.p.write(n.buf + 0x200, b"ping")
    assert n.call("write", u, n.buf + 0x200, 4) == 4  # to the connected peer
    (out,) = frames(n.peer)
    assert out.udp is not None and out.udp.dport == 5000 and out.payload == b"ping"
    unspec = n.buf + 0x300
    n.p.write(unspec, struct.pack("<H", 0) + bytes(14))  # AF_UNSPEC: dissolve the association
    assert n.call("connect", u, unspec, 16) == 0
    assert n.call("getpeername", u, n.buf, n.room(lenp)) == -errno.ENOTCONN
    assert n.call("write", u, n.buf + 0x200, 4) == -errno.EDESTADDRREQ
    assert n.call("connect", u, n.addr(HOST, 5000), 16) == 0
    assert n.call("connect", u, n.addr(so.ANY_IP, 0), 16) == 0  # 0.0.0.0:0 too
    assert n.file(u).peer is None


def test_udp_sendmsg_and_recvmsg(n: Net) -> None:
    u = n.socket(DGRAM, so.SOCK_NONBLOCK)
    b = n.buf
    n.p.write(b + 0x400, b"abc")
    n.p.write(b + 0x500, b"defg")
    iov = b + 0x600
    n.p.write(iov, struct.pack("<QQQQ", b + 0x400, 3, b + 0x500, 4))
    msg = b + 0x700
    name = n.addr(HOST, 6000, at=0x800)
    n.p.write(msg, struct.pack("<QIxxxxQQQQi", name, 16, iov, 2, 0, 0, 0))
    assert n.call("sendmsg", u, msg, 0) == 7
    (out,) = frames(n.peer)
    assert out.payload == b"abcdefg" and out.udp is not None and out.udp.dport == 6000
    udp_in(n, 6000, n.file(u).port, b"0123456789")
    n.p.write(b + 0x800, bytes(16))
    n.p.write(msg, struct.pack("<QIxxxxQQQQi", name, 16, iov, 2, b + 0x900, 64, 0x7777))
    assert n.call("recvmsg", u, msg, 0) == 7  # what the iovecs hold; the rest of the datagram goes
    assert n.p.read(b + 0x400, 3) == b"012" and n.p.read(b + 0x500, 4) == b"3456"
    assert so.unpack_sockaddr(n.p.read(name, 16)) == (HOST, 6000)
    namelen, controllen, flags = struct.unpack_from("<I", n.p.read(msg + 8, 4))[0], *struct.unpack(
        "<Qi", n.p.read(msg + 40, 12))
    assert (namelen, controllen, flags) == (16, 0, 0)
    assert n.call("recvmsg", u, msg, 0) == -errno.EAGAIN
    assert n.call("recvmsg", u, WILD, 0) == -errno.EFAULT


# --- options ----------------------------------------------------------------------------------
def test_setsockopt(n: Net) -> None:
    s = n.socket()
    v = n.buf + 0x300
    n.p.write(v, struct.pack("<i", 1))
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_REUSEADDR, v, 4) == 0
    assert n.call("setsockopt", s, so.IPPROTO_TCP, so.TCP_NODELAY, v, 4) == 0
    assert n.call("setsockopt", s, 41, 1, v, 4) == -errno.ENOPROTOOPT  # SOL_IPV6
    assert n.call("setsockopt", s, SOL_SOCKET, 999, v, 4) == -errno.ENOPROTOOPT
    for length in (0, 2, 3, 0xFFFF_FFFF):
        assert n.call("setsockopt", s, SOL_SOCKET, so.SO_KEEPALIVE, v, length) == -errno.EINVAL
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_KEEPALIVE, 0, 4) == -errno.EFAULT
    n.p.write(v, b"\x10")
    assert n.call("setsockopt", s, so.IPPROTO_IP, 1, v, 1) == 0  # IP_TOS as a char (ip_setsockopt)
    assert n.call("setsockopt", s, so.IPPROTO_IP, 1, v, 0) == -errno.EINVAL
    assert n.call("setsockopt", s, so.IPPROTO_TCP, so.TCP_NODELAY, v, 1) == -errno.EINVAL
    assert n.call("setsockopt", s, 41, 1, v, 0) == -errno.ENOPROTOOPT  # the level is looked at first
    lenp0 = n.buf + 0x48
    assert n.call("getsockopt", s, so.IPPROTO_IP, 1, n.buf + 0x50, n.room(lenp0, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf + 0x50, 4))[0] == 0x10
    n.p.write(v, struct.pack("<i", 1))
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_KEEPALIVE, WILD, 4) == -errno.EFAULT
    lenp = n.buf + 0x40
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_REUSEADDR, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == 1
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_KEEPALIVE, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == 0  # never set


@pytest.mark.parametrize("kind, name, value", [
    (STREAM, so.SO_TYPE, STREAM), (DGRAM, so.SO_TYPE, DGRAM), (STREAM, so.SO_DOMAIN, AF_INET),
    (STREAM, so.SO_PROTOCOL, so.IPPROTO_TCP), (DGRAM, so.SO_PROTOCOL, so.IPPROTO_UDP),
    (STREAM, so.SO_ACCEPTCONN, 0), (STREAM, so.SO_SNDBUF, tcpmod.SNDBUF), (STREAM, so.SO_RCVBUF, tcpmod.RCVBUF),
    (STREAM, so.SO_ERROR, 0),
])
def test_getsockopt_values(n: Net, kind: int, name: int, value: int) -> None:
    s = n.socket(kind)
    lenp = n.buf + 0x40
    n.p.write(n.buf, b"\xee" * 8)
    assert n.call("getsockopt", s, SOL_SOCKET, name, n.buf, n.room(lenp, 8)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == value
    assert struct.unpack("<I", n.p.read(lenp, 4))[0] == 4 and n.p.read(n.buf + 4, 4) == b"\xee" * 4


def test_getsockopt_lengths(n: Net) -> None:
    s = n.socket()
    n.call("listen", s, 1)
    lenp = n.buf + 0x40
    n.p.write(n.buf, b"\xee" * 4)
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_ACCEPTCONN, n.buf, n.room(lenp, 2)) == 0
    assert n.p.read(n.buf, 4) == b"\x01\x00\xee\xee" and struct.unpack("<I", n.p.read(lenp, 4))[0] == 2
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_ACCEPTCONN, n.buf, n.room(lenp, 0)) == 0
    assert struct.unpack("<I", n.p.read(lenp, 4))[0] == 0
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_TYPE, n.buf, n.room(lenp, 0xFFFF_FFFF)) == -errno.EINVAL
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_TYPE, n.buf, 0) == -errno.EFAULT  # optlen NULL
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_TYPE, WILD, n.room(lenp, 4)) == -errno.EFAULT
    assert n.call("getsockopt", s, so.IPPROTO_TCP, so.TCP_MAXSEG, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == 536  # not connected: the default MSS


# --- shutdown, close ----------------------------------------------------------------------------
def established(n: Net, port: int = 8200, sport: int = 40010) -> tuple[int, int, int]:
    s = n.socket()
    n.call("bind", s, n.addr(so.ANY_IP, port), 16)
    n.call("listen", s, 4)
    seq, gseq = n.peer.handshake(port, sport=sport)
    c = n.call("accept4", s, 0, 0, 0)
    assert c is not None and c >= 0
    return c, seq, gseq


def test_shutdown(n: Net) -> None:
    assert n.call("shutdown", n.socket(), so.SHUT_RDWR) == -errno.ENOTCONN
    u = n.socket(DGRAM)
    assert n.call("shutdown", u, so.SHUT_RD) == -errno.ENOTCONN  # not connected (TCP_CLOSE)
    assert n.file(u).rd_shut  # ... and recorded all the same
    c, seq, gseq = established(n)
    assert n.call("shutdown", c, 3) == -errno.EINVAL
    assert n.call("shutdown", c, -1) == -errno.EINVAL
    assert n.call("shutdown", c, so.SHUT_WR) == 0
    (fin,) = frames(n.peer)
    assert fin.tcp is not None and fin.tcp.flags & F.FIN and fin.tcp.seq == gseq
    n.peer.tcp(40010, 8200, seq, gseq + 1, F.ACK | F.PSH, b"late")
    assert n.call("shutdown", c, so.SHUT_RD) == 0
    assert n.call("recvfrom", c, n.buf, 10, 0, 0, 0) == 0  # reads end
    assert n.file(c).poll() & POLLIN


def test_peer_close_is_end_of_file_and_rdhup(n: Net) -> None:
    c, seq, gseq = established(n, 8201, 40011)
    n.peer.tcp(40011, 8201, seq, gseq, F.FIN | F.ACK)
    ev = n.file(c).poll()
    assert ev & POLLIN and ev & so.POLLRDHUP
    assert n.call("read", c, n.buf, 10) == 0
    assert n.call("close", c) == 0
    (fin,) = frames(n.peer)
    assert fin.tcp is not None and fin.tcp.flags & F.FIN


def test_reset_connection(n: Net) -> None:
    c, seq, gseq = established(n, 8202, 40012)
    n.peer.tcp(40012, 8202, seq, gseq, F.RST)
    assert n.file(c).poll() & POLLHUP
    assert n.call("read", c, n.buf, 10) == -errno.ECONNRESET  # sk_err, reported once (sock_error)
    assert n.call("read", c, n.buf, 10) == 0  # then the stream is shut down: end of file
    assert n.call("sendto", c, n.buf, 10, so.MSG_NOSIGNAL, 0, 0) == -errno.EPIPE


def test_stream_recvmsg_names_no_source(n: Net) -> None:
    c, seq, gseq = established(n, 8206, 40016)
    n.peer.tcp(40016, 8206, seq, gseq, F.ACK | F.PSH, b"abc")
    iov, name, msg = n.buf + 0x600, n.buf + 0x680, n.buf + 0x700
    n.p.write(iov, struct.pack("<QQ", n.buf, 8))
    n.p.write(name, b"\xee" * 16)
    n.p.write(msg, struct.pack("<QIxxxxQQQQi", name, 16, iov, 1, 0, 0, -1))
    assert n.call("recvmsg", c, msg, 0) == 3 and n.p.read(n.buf, 3) == b"abc"
    assert struct.unpack_from("<I", n.p.read(msg + 8, 4))[0] == 0  # msg_namelen: tcp_recvmsg sets none
    assert n.p.read(name, 16) == b"\xee" * 16
    assert struct.unpack("<i", n.p.read(msg + 48, 4))[0] == 0  # msg_flags


def test_stream_receive_to_a_wild_buffer_keeps_the_data(n: Net) -> None:
    c, seq, gseq = established(n, 8203, 40013)
    n.peer.tcp(40013, 8203, seq, gseq, F.ACK | F.PSH, b"keep")
    assert n.call("recvfrom", c, WILD, 4, 0, 0, 0) == -errno.EFAULT
    assert n.call("recvfrom", c, n.buf, 4, 0, 0, 0) == 4 and n.p.read(n.buf, 4) == b"keep"


def test_dontwait_on_a_blocking_socket(n: Net) -> None:
    c, _, _ = established(n, 8204, 40014)
    assert n.call("recvfrom", c, n.buf, 4, so.MSG_DONTWAIT, 0, 0) == -errno.EAGAIN
    u = n.socket(DGRAM)
    n.call("bind", u, n.addr(so.ANY_IP, 9000), 16)
    assert n.call("recvfrom", u, n.buf, 4, so.MSG_DONTWAIT, 0, 0) == -errno.EAGAIN
    n.on_wfi(lambda: udp_in(n, 1, 9000, b"late"))
    assert n.call("recvfrom", u, n.buf, 4, 0, 0, 0) == 4  # without it: waits until a datagram comes


def test_stream_sendmsg_takes_what_the_send_buffer_holds(n: Net) -> None:
    """Eight iovecs of 40 KiB, 320 KiB against a 256 KiB send buffer: the buffer's worth is
    taken (a short write); with the buffer full a non-blocking send is EAGAIN before any byte
    is copied, so even from a wild buffer (tcp_sendmsg waits for memory first)."""
    c, _, _ = established(n, 8205, 40015)
    assert n.call("fcntl", c, 4, 0o4000) == 0  # O_NONBLOCK
    big = scratch(n.p, 40 << 10)
    n.p.write(big, bytes(range(256)) * 160)
    iov = n.buf + 0x600
    n.p.write(iov, b"".join(struct.pack("<QQ", big, 40 << 10) for _ in range(8)))
    msg = n.buf + 0x700
    n.p.write(msg, struct.pack("<QIxxxxQQQQi", 0, 0, iov, 8, 0, 0, 0))
    assert n.call("sendmsg", c, msg, 0) == tcpmod.SNDBUF
    assert n.file(c).tcb.sndbuf[: 40 << 10] == bytes(range(256)) * 160  # type: ignore[union-attr]
    assert n.call("sendmsg", c, msg, 0) == -errno.EAGAIN
    assert n.call("sendto", c, WILD, 100, 0, 0, 0) == -errno.EAGAIN
    n.p.write(iov, struct.pack("<QQ", WILD, 100))
    n.p.write(msg, struct.pack("<QIxxxxQQQQi", 0, 0, iov, 1, 0, 0, 0))
    assert n.call("sendmsg", c, msg, 0) == -errno.EAGAIN  # from a wild iovec too
    assert n.file(c).poll() & POLLOUT == 0


def test_listen_again_with_a_zero_backlog(n: Net) -> None:
    s = n.socket()
    assert n.call("listen", s, 4) == 0
    assert n.call("listen", s, 0) == 0
    assert n.file(s).listener.backlog == 1  # type: ignore[union-attr]
    assert n.call("listen", s, 1000) == 0
    assert n.file(s).listener.backlog == 128  # type: ignore[union-attr]  # SOMAXCONN


def test_udp_disconnect_needs_only_the_family(n: Net) -> None:
    u = n.socket(DGRAM)
    assert n.call("connect", u, n.addr(HOST, 5000), 16) == 0
    unspec = n.buf + 0x300
    n.p.write(unspec, struct.pack("<H", 0))
    assert n.call("connect", u, unspec, 2) == 0  # sizeof(sa_family) is all inet_dgram_connect reads
    assert n.file(u).peer is None
    assert n.call("connect", u, unspec, 1) == -errno.EINVAL


# --- SO_RCVTIMEO, SO_SNDTIMEO (socket(7)) --------------------------------------------------------
def test_timeouts_are_a_timeval(n: Net) -> None:
    s = n.socket()
    v, lenp = n.buf + 0x300, n.buf + 0x40
    n.p.write(v, struct.pack("<qq", 2, 500_000))
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_RCVTIMEO, v, 8) == -errno.EINVAL  # < sizeof(timeval)
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_RCVTIMEO, v, 16) == 0
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_RCVTIMEO, n.buf, n.room(lenp, 16)) == 0
    assert struct.unpack("<qq", n.p.read(n.buf, 16)) == (2, 500_000)
    assert struct.unpack("<I", n.p.read(lenp, 4))[0] == 16
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_SNDTIMEO, n.buf, n.room(lenp, 16)) == 0
    assert n.p.read(n.buf, 16) == bytes(16)  # never set: {0, 0}
    for usec in (-1, 1_000_000):
        n.p.write(v, struct.pack("<qq", 1, usec))
        assert n.call("setsockopt", s, SOL_SOCKET, so.SO_SNDTIMEO, v, 16) == -errno.EDOM


def test_recv_and_accept_time_out_with_eagain(n: Net) -> None:
    c, _, _ = established(n, 8300, 40030)
    v = n.buf + 0x300
    n.p.write(v, struct.pack("<qq", 0, 50))  # 50 us; the fake clock moves 1 us a reading
    assert n.call("setsockopt", c, SOL_SOCKET, so.SO_RCVTIMEO, v, 16) == 0
    n.on_wfi(*[lambda: None] * 200)
    assert n.call("recvfrom", c, n.buf, 4, 0, 0, 0) == -errno.EAGAIN
    s = n.socket()
    n.call("listen", s, 1)
    assert n.call("setsockopt", s, SOL_SOCKET, so.SO_RCVTIMEO, v, 16) == 0
    n.on_wfi(*[lambda: None] * 200)
    assert n.call("accept4", s, 0, 0, 0) == -errno.EAGAIN
    n.p.write(v, bytes(16))  # {0, 0}: for ever again
    assert n.call("setsockopt", c, SOL_SOCKET, so.SO_RCVTIMEO, v, 16) == 0
    n.on_wfi(*[lambda: None] * 200)
    with pytest.raises(Idle):
        n.call("recvfrom", c, n.buf, 4, 0, 0, 0)


def test_connect_times_out_with_einprogress(n: Net) -> None:
    c = n.socket()
    v = n.buf + 0x300
    n.p.write(v, struct.pack("<qq", 0, 50))
    assert n.call("setsockopt", c, SOL_SOCKET, so.SO_SNDTIMEO, v, 16) == 0
    n.on_wfi(*[lambda: None] * 200)
    assert n.call("connect", c, n.addr(HOST, 80), 16) == -errno.EINPROGRESS
    assert n.file(c).tcb.state == tcpmod.SYN_SENT  # type: ignore[union-attr]  # the handshake goes on
