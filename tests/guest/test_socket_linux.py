"""Guest sockets against Linux's documented behaviour, beyond the calls' argument checks
(tests/guest/test_socket_calls.py gives the process, the scripted peer and its helpers):

- read(2)/write(2)/readv(2)/writev(2) on a socket wait no longer than SO_RCVTIMEO/SO_SNDTIMEO
  (socket(7): "the call returns ... EAGAIN"), and readv is one read scattered over the
  buffers (it does not wait again once data came);
- a stream that can no longer send (shut down for writing, reset by the peer, never
  connected) fails with EPIPE and raises SIGPIPE at the caller, whose default action ends
  the process, unless MSG_NOSIGNAL (send(2)) or SIGPIPE is ignored or blocked (signal(7));
  a pipe without readers does the same (pipe(7));
- a RST's error is reported once (ECONNRESET), after which the stream is at end of file
  and sends are EPIPE; a RST in CLOSE_WAIT is EPIPE (tcp_reset);
- connect(2) with AF_UNSPEC dissolves a TCP association (tcp_disconnect: RST, CLOSE, the
  socket can connect again, a port bind() did not name is given back);
- SO_LINGER (socket(7)): a struct linger read back as set, and l_onoff=1, l_linger=0
  makes close() reset the connection instead of a FIN."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import pytest

from unirealm.arch import net
from unirealm.guest.net import socket as so
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.pagecache import Store
from unirealm.guest.sched import ProcessExit

from .process_support import scratch
from .test_socket_calls import SOL_SOCKET, STREAM, Net, established, frames, syn_ack, udp_in
from .test_syscall_fuzz import Idle
from .test_tcpip import HOST

F = net.TcpFlags
SIGPIPE = 13
SIG_IGN = 1
KILLED_BY_SIGPIPE = 128 + SIGPIPE  # the shell's status for a process SIGPIPE ended


@pytest.fixture
def n() -> Iterator[Net]:
    try:
        yield Net()
    finally:
        Store.current = None


def set_timeo(n: Net, fd: int, name: int, sec: int, usec: int) -> None:
    v = n.buf + 0x300
    n.p.write(v, struct.pack("<qq", sec, usec))
    assert n.call("setsockopt", fd, SOL_SOCKET, name, v, 16) == 0


def idle_steps(n: Net, count: int = 200) -> None:
    n.on_wfi(*[lambda: None] * count)


def sigaction(n: Net, sig: int, handler: int) -> None:
    act = n.buf + 0x7C0
    n.p.write(act, struct.pack("<QQQQ", handler, 0, 0, 0))
    assert n.call("rt_sigaction", sig, act, 0, 8) == 0


def iovec(n: Net, *spans: tuple[int, int], at: int = 0x600) -> int:
    n.p.write(n.buf + at, b"".join(struct.pack("<QQ", base, length) for base, length in spans))
    return n.buf + at


def msghdr(n: Net, iov: int, count: int, at: int = 0x700) -> int:
    n.p.write(n.buf + at, struct.pack("<QIxxxxQQQQi", 0, 0, iov, count, 0, 0, 0))
    return n.buf + at


def full_send_buffer(n: Net, port: int, sport: int) -> int:
    """An established stream whose send buffer is full (the peer acknowledges nothing)."""
    c, _, _ = established(n, port, sport)
    big = scratch(n.p, tcpmod.SNDBUF)
    assert n.call("write", c, big, tcpmod.SNDBUF) == tcpmod.SNDBUF
    assert n.file(c).tcb.send_room() == 0  # type: ignore[union-attr]
    frames(n.peer)
    return c


# --- 1. read/write/readv/writev and SO_RCVTIMEO/SO_SNDTIMEO -------------------------------
@pytest.mark.parametrize("name", ["read", "readv"])
def test_reads_time_out_with_eagain(n: Net, name: str) -> None:
    c, _, _ = established(n, 8400, 40100)
    args = (n.buf, 8) if name == "read" else (iovec(n, (n.buf, 4), (n.buf + 4, 4)), 2)
    idle_steps(n)
    with pytest.raises(Idle):  # no timeout: the call waits for ever
        n.call(name, c, *args)
    set_timeo(n, c, so.SO_RCVTIMEO, 0, 50)  # 50 us; the fake clock moves 1 us a reading
    idle_steps(n)
    assert n.call(name, c, *args) == -errno.EAGAIN


def test_a_read_timeout_still_takes_what_comes_in_time(n: Net) -> None:
    c, seq, gseq = established(n, 8401, 40101)
    set_timeo(n, c, so.SO_RCVTIMEO, 5, 0)
    n.on_wfi(lambda: n.peer.tcp(40101, 8401, seq, gseq, F.ACK | F.PSH, b"late"))
    assert n.call("read", c, n.buf, 8) == 4 and n.p.read(n.buf, 4) == b"late"


def test_a_negative_timeout_does_not_wait_at_all(n: Net) -> None:
    c, _, _ = established(n, 8402, 40102)
    set_timeo(n, c, so.SO_RCVTIMEO, -1, 0)
    n.on_wfi()  # the first idle would raise Idle: the call must not idle
    assert n.call("read", c, n.buf, 8) == -errno.EAGAIN


@pytest.mark.parametrize("name", ["write", "writev"])
def test_writes_time_out_with_eagain(n: Net, name: str) -> None:
    c = full_send_buffer(n, 8403, 40103)
    args = (n.buf, 8) if name == "write" else (iovec(n, (n.buf, 4), (n.buf + 4, 4)), 2)
    idle_steps(n)
    with pytest.raises(Idle):
        n.call(name, c, *args)
    set_timeo(n, c, so.SO_SNDTIMEO, 0, 50)
    idle_steps(n)
    assert n.call(name, c, *args) == -errno.EAGAIN
    set_timeo(n, c, so.SO_RCVTIMEO, 1, 0)  # the other direction's timeout bounds nothing here
    set_timeo(n, c, so.SO_SNDTIMEO, 0, 0)
    idle_steps(n)
    with pytest.raises(Idle):
        n.call(name, c, *args)


def test_readv_returns_what_one_read_gives(n: Net) -> None:
    """The first buffer filled exactly and nothing more queued: readv returns those bytes
    instead of waiting for the second buffer."""
    c, seq, gseq = established(n, 8404, 40104)
    n.peer.tcp(40104, 8404, seq, gseq, F.ACK | F.PSH, b"abcd")
    n.on_wfi()
    assert n.call("readv", c, iovec(n, (n.buf, 4), (n.buf + 0x10, 100)), 2) == 4
    assert n.p.read(n.buf, 4) == b"abcd"
    n.peer.tcp(40104, 8404, seq + 4, gseq, F.ACK | F.PSH, b"efghij")
    assert n.call("readv", c, iovec(n, (n.buf, 0), (n.buf + 0x20, 2), (n.buf + 0x30, 8)), 3) == 6
    assert n.p.read(n.buf + 0x20, 2) == b"ef" and n.p.read(n.buf + 0x30, 4) == b"ghij"


def test_readv_takes_a_datagram_whole(n: Net) -> None:
    u = n.socket(so.SOCK_DGRAM)
    assert n.call("bind", u, n.addr(so.ANY_IP, 9100), 16) == 0
    udp_in(n, 5000, 9100, b"0123456789")
    assert n.call("readv", u, iovec(n, (n.buf, 3), (n.buf + 0x10, 3)), 2) == 6
    assert n.p.read(n.buf, 3) == b"012" and n.p.read(n.buf + 0x10, 3) == b"345"
    assert n.call("recvfrom", u, n.buf, 16, so.MSG_DONTWAIT, 0, 0) == -errno.EAGAIN  # the rest is gone


# --- 2. EPIPE and SIGPIPE ---------------------------------------------------------------------
def to_el0(n: Net, name: str, *args: int) -> int | None:
    """A syscall and the return to EL0 after it, where the signals it raised are taken."""
    result = n.call(name, *args)
    n.p.syscalls.do_signal()
    return result


def shut_for_writing(n: Net, port: int, sport: int) -> int:
    c, _, _ = established(n, port, sport)
    assert n.call("shutdown", c, so.SHUT_WR) == 0
    frames(n.peer)
    n.p.write(n.buf, b"data")
    return c


@pytest.mark.parametrize("name", ["write", "writev", "sendto", "sendmsg"])
def test_sigpipe_ends_the_process(n: Net, name: str) -> None:
    c = shut_for_writing(n, 8410, 40110)
    iov = iovec(n, (n.buf, 4))
    args = {"write": (n.buf, 4), "writev": (iov, 1), "sendto": (n.buf, 4, 0, 0, 0),
            "sendmsg": (msghdr(n, iov, 1), 0)}[name]
    logged: list[tuple[str, bool]] = []
    n.p.kernel.log = lambda text, error=False, level=None: logged.append((text, error))
    with pytest.raises(ProcessExit) as died:
        to_el0(n, name, c, *args)
    assert died.value.status == KILLED_BY_SIGPIPE
    assert logged == [("/app: killed by signal 13", True)]  # an app's crash: shown even when quiet
    assert frames(n.peer) == []


def test_msg_nosignal_is_epipe_alone(n: Net) -> None:
    c = shut_for_writing(n, 8411, 40111)
    assert to_el0(n, "sendto", c, n.buf, 4, so.MSG_NOSIGNAL, 0, 0) == -errno.EPIPE
    assert to_el0(n, "sendmsg", c, msghdr(n, iovec(n, (n.buf, 4)), 1), so.MSG_NOSIGNAL) == -errno.EPIPE
    assert to_el0(n, "sendto", c, n.buf, 4, so.MSG_NOSIGNAL | so.MSG_DONTWAIT, 0, 0) == -errno.EPIPE
    with pytest.raises(ProcessExit):
        to_el0(n, "sendto", c, n.buf, 4, so.MSG_DONTWAIT, 0, 0)


def test_an_ignored_or_blocked_sigpipe_leaves_epipe(n: Net) -> None:
    c = shut_for_writing(n, 8412, 40112)
    sigaction(n, SIGPIPE, SIG_IGN)
    assert to_el0(n, "write", c, n.buf, 4) == -errno.EPIPE
    act = n.buf + 0x7C0
    n.p.write(act, struct.pack("<QQQQ", 0, 0x10000004, 0, 0))  # SIG_DFL with SA_SIGINFO | SA_RESTART
    assert n.call("rt_sigaction", SIGPIPE, act, 0, 8) == 0
    mask = n.buf + 0x7E0
    n.p.write(mask, (1 << (SIGPIPE - 1)).to_bytes(8, "little"))
    assert n.call("rt_sigprocmask", 0, mask, 0, 8) == 0  # SIG_BLOCK
    assert to_el0(n, "write", c, n.buf, 4) == -errno.EPIPE  # SIGPIPE stays pending ...
    with pytest.raises(ProcessExit):
        to_el0(n, "rt_sigprocmask", 1, mask, 0, 8)  # ... until SIG_UNBLOCK lets it in


def test_other_blocked_signals_do_not_shield_sigpipe(n: Net) -> None:
    c = shut_for_writing(n, 8413, 40113)
    mask = n.buf + 0x7E0
    n.p.write(mask, ((1 << 64) - 1 & ~(1 << (SIGPIPE - 1))).to_bytes(8, "little"))
    assert n.call("rt_sigprocmask", 2, mask, 0, 8) == 0  # SIG_SETMASK: all but SIGPIPE
    sigaction(n, SIGPIPE + 1, SIG_IGN)
    with pytest.raises(ProcessExit):
        to_el0(n, "write", c, n.buf, 4)


def test_a_stream_the_peer_reset_after_closing_is_epipe(n: Net) -> None:
    """The peer closes (CLOSE_WAIT: writing is still allowed), then answers data with a RST:
    tcp_reset leaves EPIPE, so the next write is EPIPE with SIGPIPE."""
    c, seq, gseq = established(n, 8414, 40114)
    n.peer.tcp(40114, 8414, seq, gseq, F.FIN | F.ACK)
    n.p.write(n.buf, b"more")
    assert n.call("write", c, n.buf, 4) == 4
    assert [f.payload for f in frames(n.peer) if f.payload] == [b"more"]
    n.peer.tcp(40114, 8414, seq + 1, 0, F.RST)
    assert n.file(c).tcb is not None and n.file(c).tcb.state == tcpmod.CLOSED  # type: ignore[union-attr]
    with pytest.raises(ProcessExit) as died:
        to_el0(n, "write", c, n.buf, 4)
    assert died.value.status == KILLED_BY_SIGPIPE


def test_a_reset_is_reported_once_then_epipe(n: Net) -> None:
    c, seq, gseq = established(n, 8415, 40115)
    n.peer.tcp(40115, 8415, seq, gseq, F.RST)
    n.p.write(n.buf, b"data")
    assert n.call("write", c, n.buf, 4) == -errno.ECONNRESET  # sk_err: no signal
    lenp = n.buf + 0x40
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf + 0x80, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf + 0x80, 4) == bytes(4)  # taken already
    assert n.call("read", c, n.buf, 4) == 0
    with pytest.raises(ProcessExit):
        to_el0(n, "write", c, n.buf, 4)


def test_so_error_takes_the_error(n: Net) -> None:
    c, seq, gseq = established(n, 8416, 40116)
    n.peer.tcp(40116, 8416, seq, gseq, F.RST)
    lenp = n.buf + 0x40
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == errno.ECONNRESET
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 4) == bytes(4)
    assert n.call("read", c, n.buf, 4) == 0  # reported: the stream just ends


def test_a_pipe_without_readers_raises_sigpipe(n: Net) -> None:
    fds = n.buf + 0x40
    assert n.call("pipe2", fds, 0) == 0
    r, w = struct.unpack("<ii", n.p.read(fds, 8))
    assert n.call("close", r) == 0
    sigaction(n, SIGPIPE, SIG_IGN)
    assert to_el0(n, "write", w, n.buf, 1) == -errno.EPIPE
    sigaction(n, SIGPIPE, 0)
    with pytest.raises(ProcessExit) as died:
        to_el0(n, "write", w, n.buf, 1)
    assert died.value.status == KILLED_BY_SIGPIPE


# --- 3. connect(AF_UNSPEC) on a stream ----------------------------------------------------
def unspec(n: Net) -> int:
    n.p.write(n.buf + 0x3F0, struct.pack("<H", so.AF_UNSPEC))
    return n.buf + 0x3F0


def connected(n: Net, port: int = 80) -> tuple[int, net.ParsedFrame]:
    c = n.socket()
    got: list[net.ParsedFrame] = []

    def answer() -> None:
        (syn,) = frames(n.peer)
        got.append(syn)
        syn_ack(n, syn)

    n.on_wfi(answer)
    assert n.call("connect", c, n.addr(HOST, port), 16) == 0
    frames(n.peer)  # the handshake's last ACK
    return c, got[0]


def test_af_unspec_resets_a_connection_and_it_connects_again(n: Net) -> None:
    c, syn = connected(n)
    assert syn.tcp is not None
    sport = syn.tcp.sport
    assert n.call("connect", c, unspec(n), 16) == 0
    (rst,) = frames(n.peer)
    assert rst.tcp is not None and rst.tcp.flags == F.RST | F.ACK and rst.tcp.sport == sport
    assert rst.tcp.seq == syn.tcp.seq + 1
    lenp = n.buf + 0x40
    assert n.call("getpeername", c, n.buf, n.room(lenp)) == -errno.ENOTCONN
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == errno.ECONNRESET
    assert n.call("getsockname", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp)[1] == 0  # the automatic port given back
    assert sport not in n.peer.stack.bound_tcp
    got: list[net.ParsedFrame] = []
    n.on_wfi(lambda: (got.append(frames(n.peer)[0]), syn_ack(n, got[0])))
    assert n.call("connect", c, n.addr(HOST, 81), 16) == 0  # CLOSE again: a new connection
    assert got[0].tcp is not None and got[0].tcp.dport == 81 and got[0].tcp.flags == F.SYN
    assert n.file(c).tcb.state == tcpmod.ESTABLISHED  # type: ignore[union-attr]
    assert n.call("getpeername", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp)[:2] == (HOST, 81)


def test_af_unspec_keeps_a_port_bind_named(n: Net) -> None:
    c = n.socket()
    assert n.call("bind", c, n.addr(so.ANY_IP, 41000), 16) == 0
    n.on_wfi(lambda: syn_ack(n, frames(n.peer)[0]))
    assert n.call("connect", c, n.addr(HOST, 80), 16) == 0
    assert n.call("connect", c, unspec(n), 2) == 0  # sizeof(sa_family) is enough
    lenp = n.buf + 0x40
    assert n.call("getsockname", c, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp)[1] == 41000
    assert n.call("bind", c, n.addr(so.ANY_IP, 41001), 16) == -errno.EINVAL  # still bound


def test_af_unspec_during_the_handshake_sends_nothing(n: Net) -> None:
    c = n.socket(STREAM, so.SOCK_NONBLOCK)
    assert n.call("connect", c, n.addr(HOST, 80), 16) == -errno.EINPROGRESS
    frames(n.peer)
    assert n.call("connect", c, unspec(n), 16) == 0
    assert frames(n.peer) == []  # SYN_SENT needs no reset
    lenp = n.buf + 0x40
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert struct.unpack("<i", n.p.read(n.buf, 4))[0] == errno.ECONNRESET
    assert n.call("getsockopt", c, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 4) == bytes(4)  # taken by the first read
    assert n.call("connect", c, n.addr(HOST, 80), 16) == -errno.EINPROGRESS  # not EALREADY


def test_af_unspec_stops_a_listener_and_ignores_a_fresh_socket(n: Net) -> None:
    s = n.socket()
    assert n.call("connect", s, unspec(n), 16) == 0  # CLOSE already: nothing to do
    assert n.call("listen", s, 4) == 0
    assert n.call("connect", s, unspec(n), 16) == 0
    lenp = n.buf + 0x40
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_ACCEPTCONN, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 4) == bytes(4)
    assert n.call("accept4", s, 0, 0, 0) == -errno.EINVAL
    assert n.call("getsockopt", s, SOL_SOCKET, so.SO_ERROR, n.buf, n.room(lenp, 4)) == 0
    assert n.p.read(n.buf, 4) == bytes(4)  # no connection was reset
    assert n.call("connect", s, unspec(n), 1) == -errno.EINVAL  # shorter than sa_family
    assert frames(n.peer) == []


def test_af_unspec_on_a_connected_udp_socket_frees_its_automatic_port(n: Net) -> None:
    u = n.socket(so.SOCK_DGRAM)
    assert n.call("connect", u, n.addr(HOST, 5000), 16) == 0
    port = n.file(u).port
    assert port and port in n.peer.stack.udp
    assert n.call("connect", u, unspec(n), 16) == 0
    assert port not in n.peer.stack.udp  # udp_disconnect: no SOCK_BINDPORT_LOCK, unhashed
    lenp = n.buf + 0x40
    assert n.call("getsockname", u, n.buf, n.room(lenp)) == 0
    assert n.got_addr(n.buf, lenp)[1] == 0


# --- 4. SO_LINGER ----------------------------------------------------------------------------
def get_linger(n: Net, fd: int, room: int = 8) -> tuple[bytes, int]:
    lenp = n.buf + 0x40
    n.p.write(n.buf + 0x80, b"\xee" * 8)
    assert n.call("getsockopt", fd, SOL_SOCKET, so.SO_LINGER, n.buf + 0x80, n.room(lenp, room)) == 0
    return n.p.read(n.buf + 0x80, 8), struct.unpack("<I", n.p.read(lenp, 4))[0]


def set_linger(n: Net, fd: int, onoff: int, secs: int, length: int = 8) -> int | None:
    n.p.write(n.buf + 0x90, struct.pack("<ii", onoff, secs))
    return n.call("setsockopt", fd, SOL_SOCKET, so.SO_LINGER, n.buf + 0x90, length)


def test_so_linger_reads_back_a_struct_linger(n: Net) -> None:
    s = n.socket()
    assert get_linger(n, s) == (struct.pack("<ii", 0, 0), 8)
    assert set_linger(n, s, 1, 5) == 0
    assert get_linger(n, s) == (struct.pack("<ii", 1, 5), 8)
    assert set_linger(n, s, 0, 7) == 0  # off: the time set before is kept
    assert get_linger(n, s) == (struct.pack("<ii", 0, 5), 8)
    assert set_linger(n, s, 3, 9, 16) == 0  # any non-zero l_onoff is on; a longer optlen is fine
    assert get_linger(n, s) == (struct.pack("<ii", 1, 9), 8)
    assert get_linger(n, s, 4) == (struct.pack("<i", 1) + b"\xee" * 4, 4)  # cut to the room
    assert get_linger(n, s, 100) == (struct.pack("<ii", 1, 9), 8)
    # l_linger is an int; sk_setsockopt's (unsigned int)l_linger * HZ on a 64-bit kernel reads
    # back as set, a negative one too (later kernels clamp that one to for ever)
    assert set_linger(n, s, 1, -1) == 0
    assert get_linger(n, s) == (struct.pack("<ii", 1, -1), 8)


@pytest.mark.parametrize("length", [0, 2, 4, 7, -1])
def test_so_linger_wants_a_whole_struct(n: Net, length: int) -> None:
    s = n.socket()
    assert set_linger(n, s, 1, 3, length) == -errno.EINVAL
    assert get_linger(n, s) == (struct.pack("<ii", 0, 0), 8)


def test_a_zero_linger_close_sends_rst(n: Net) -> None:
    c, seq, gseq = established(n, 8420, 40120)
    assert set_linger(n, c, 1, 0) == 0
    n.p.write(n.buf, b"unsent")
    tcb = n.file(c).tcb
    assert tcb is not None
    assert n.call("close", c) == 0
    (rst,) = frames(n.peer)
    assert rst.tcp is not None and rst.tcp.flags == F.RST | F.ACK and not rst.tcp.flags & F.FIN
    assert rst.tcp.seq == gseq and rst.tcp.ack == seq
    assert tcb.state == tcpmod.CLOSED
    assert n.peer.tcp(40120, 8420, seq, gseq, F.ACK)[0].tcp.flags & F.RST  # the connection is gone


@pytest.mark.parametrize(("onoff", "secs"), [(0, 0), (1, 5), (0, 0x7FFF)])
def test_other_lingers_close_with_a_fin(n: Net, onoff: int, secs: int) -> None:
    c, _, gseq = established(n, 8421, 40121)
    assert set_linger(n, c, onoff, secs) == 0
    assert n.call("close", c) == 0
    (fin,) = frames(n.peer)
    assert fin.tcp is not None and fin.tcp.flags == F.FIN | F.ACK and fin.tcp.seq == gseq


def test_a_zero_linger_close_of_a_handshake_sends_nothing(n: Net) -> None:
    c = n.socket(STREAM, so.SOCK_NONBLOCK)
    assert set_linger(n, c, 1, 0) == 0
    assert n.call("connect", c, n.addr(HOST, 80), 16) == -errno.EINPROGRESS
    frames(n.peer)
    assert n.call("close", c) == 0
    assert frames(n.peer) == []
