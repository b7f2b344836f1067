"""Socket options (socket(7), ip(7), tcp(7)): setsockopt and getsockopt, the half of the
socket syscalls that reads and writes a socket's settings rather than moving data. Mixed
into guest.net.socket.SocketCalls; the option numbers are the arm64 (asm-generic) ones.

SO_RCVTIMEO/SO_SNDTIMEO take a struct timeval, SO_LINGER a struct linger; the other
SOL_SOCKET options an int (what is stored is what getsockopt answers, for the options
this stack does not act on)."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any

from ..sysctx import _s32
from ..uapi import TIMEVAL, TIMEVAL_SIZE, pack_timeval
from .tcp import RCVBUF, SNDBUF

if TYPE_CHECKING:
    from .socket import SocketFile

AF_INET = 2
SOCK_STREAM = 1
SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP = 1, 0, 6, 17
SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_BROADCAST, SO_SNDBUF, SO_RCVBUF = 2, 3, 4, 6, 7, 8
SO_KEEPALIVE, SO_LINGER, SO_REUSEPORT, SO_RCVTIMEO, SO_SNDTIMEO, SO_ACCEPTCONN = 9, 13, 15, 20, 21, 30
SO_DOMAIN, SO_PROTOCOL = 39, 38
TCP_NODELAY, TCP_MAXSEG = 1, 2
LINGER_SIZE = 8  # struct linger: int l_onoff, int l_linger
INT_OPTIONS = frozenset((SOL_SOCKET, n) for n in (SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, SO_BROADCAST,
                                                  SO_SNDBUF, SO_RCVBUF))


class SockOptCalls:
    """setsockopt and getsockopt; self is the syscall layer (SocketCalls gives `_sock`)."""

    p: Any

    def _sock(self, fd: int) -> SocketFile:
        raise NotImplementedError

    def _set_timeo(self, sock: SocketFile, name: int, val: int, length: int) -> int:
        """SO_RCVTIMEO/SO_SNDTIMEO take a struct timeval (sock_set_timeout): EINVAL when
        shorter, EDOM for tv_usec outside [0, 1e6); {0, 0} waits for ever, a negative
        tv_sec not at all."""
        if length < TIMEVAL_SIZE:
            return -errno.EINVAL
        sec, usec = TIMEVAL.unpack(self.p.read(val, TIMEVAL_SIZE))
        if not 0 <= usec < 1_000_000:
            return -errno.EDOM
        if sec < 0:
            sock.timeo[name] = 0
        else:
            sock.timeo[name] = None if sec == usec == 0 else sec * 1_000_000_000 + usec * 1000
        return 0

    def _set_linger(self, sock: SocketFile, val: int) -> int:
        """SO_LINGER (sk_setsockopt): l_onoff 0 turns lingering off and keeps the time set
        before; non-zero turns it on with l_linger seconds (kept as the int it was)."""
        onoff, secs = struct.unpack("<ii", self.p.read(val, LINGER_SIZE))
        sock.linger = (True, secs) if onoff else (False, sock.linger[1])
        return 0

    def sys_setsockopt(self, fd: int, level: int, name: int, val: int, length: int, *_: int) -> int:
        sock = self._sock(fd)
        if level not in (SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP):
            return -errno.ENOPROTOOPT
        length = _s32(length)  # sk_setsockopt, do_tcp_setsockopt want an int; ip_setsockopt a char too
        if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
            return self._set_timeo(sock, name, val, length)
        if length < (1 if level == IPPROTO_IP else 4):
            return -errno.EINVAL
        if level == SOL_SOCKET and name == SO_LINGER:
            return -errno.EINVAL if length < LINGER_SIZE else self._set_linger(sock, val)
        value = int.from_bytes(self.p.read(val, min(length, 4)), "little")
        if level == SOL_SOCKET and (level, name) not in INT_OPTIONS:
            return -errno.ENOPROTOOPT
        sock.options[(level, name)] = value
        return 0

    def _so_error(self, sock: SocketFile) -> int:
        """SO_ERROR: the pending error, taken (sock_error): a second read answers 0."""
        t = sock.tcb
        value = sock.so_error
        if not value and t is not None and t.state == "CLOSED":
            value = t.error or (errno.ECONNREFUSED if sock.connecting else 0)
            t.error = 0
        sock.so_error = 0
        return value

    def sys_getsockopt(self, fd: int, level: int, name: int, val: int, lenp: int, *_: int) -> int:
        sock = self._sock(fd)
        if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
            ns = sock.timeo[name]
            tv = pack_timeval(ns or 0)  # for ever: {0, 0}
            return self._put_opt(val, lenp, tv)
        if level == SOL_SOCKET and name == SO_LINGER:
            return self._put_opt(val, lenp, struct.pack("<ii", int(sock.linger[0]), sock.linger[1]))
        if level == SOL_SOCKET and name == SO_ERROR:
            value = self._so_error(sock)
        elif level == SOL_SOCKET and name == SO_TYPE:
            value = sock.kind
        elif level == SOL_SOCKET and name == SO_DOMAIN:
            value = AF_INET
        elif level == SOL_SOCKET and name == SO_PROTOCOL:
            value = IPPROTO_TCP if sock.kind == SOCK_STREAM else IPPROTO_UDP
        elif level == SOL_SOCKET and name == SO_ACCEPTCONN:
            value = int(sock.listener is not None)
        elif level == SOL_SOCKET and name in (SO_SNDBUF, SO_RCVBUF):
            value = SNDBUF if name == SO_SNDBUF else RCVBUF
        elif level == IPPROTO_TCP and name == TCP_MAXSEG:
            value = sock.tcb.mss if sock.tcb is not None else 536
        else:
            value = sock.options.get((level, name), 0)
        return self._put_opt(val, lenp, struct.pack("<i", value))

    def _put_opt(self, val: int, lenp: int, value: bytes) -> int:
        """getsockopt's answer, cut to the room *optlen gives (sk_getsockopt)."""
        room = struct.unpack("<i", self.p.read(lenp, 4))[0]  # an int: negative is EINVAL
        if room < 0:
            return -errno.EINVAL
        raw = value[: min(room, len(value))]
        if raw:
            self.p.write(val, raw)
        self.p.write(lenp, struct.pack("<I", len(raw)))
        return 0
