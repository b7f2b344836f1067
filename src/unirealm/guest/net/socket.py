"""BSD sockets over the stack: `SocketFile` (an open file in the VFS's fd table, like a pipe
end) and `SocketCalls`, the socket syscalls the syscall layer inherits.

AF_INET only (SOCK_STREAM -> TCP, SOCK_DGRAM -> UDP); AF_UNIX, AF_INET6 and the rest
answer EAFNOSUPPORT, which glibc's probes expect. A call that cannot complete raises
WouldBlock (read/write) or waits through the syscall layer's `block` (accept, connect),
with EAGAIN/EINPROGRESS for O_NONBLOCK sockets. Waiting on a socket counts as waiting on
a device: the scheduler idles (WFI) and polls the NIC meanwhile. SO_RCVTIMEO/SO_SNDTIMEO
(a struct timeval) bound the waits of recv/read/accept and send/write/connect. A stream
that can no longer send answers EPIPE and raises SIGPIPE at the caller (not with
MSG_NOSIGNAL); connect(AF_UNSPEC) disconnects. The options are in sockopt.py.

Why one module: the file and the syscalls that drive it share the socket's state.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from ...arch.net import ANY_IP, BROADCAST_IP
from ..errors import BrokenPipe
from ..sysctx import _s32
from ..systable import SyscallSet
from ..vfs import (
    O_CLOEXEC,
    O_NONBLOCK,
    O_RDWR,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    FsError,
    Inode,
    OpenFile,
    WouldBlock,
)
from .sockopt import (  # noqa: F401  (the option numbers, re-exported)
    IPPROTO_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LINGER_SIZE,
    SO_ACCEPTCONN,
    SO_BROADCAST,
    SO_DOMAIN,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_LINGER,
    SO_PROTOCOL,
    SO_RCVBUF,
    SO_RCVTIMEO,
    SO_REUSEADDR,
    SO_REUSEPORT,
    SO_SNDBUF,
    SO_SNDTIMEO,
    SO_TYPE,
    SOL_SOCKET,
    TCP_MAXSEG,
    TCP_NODELAY,
    SockOptCalls,
)
from .stack import UdpEndpoint
from .tcp import ESTABLISHED, SYN_RCVD, SYN_SENT, Tcb

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2
SOCK_NONBLOCK, SOCK_CLOEXEC = O_NONBLOCK, O_CLOEXEC
MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_NOSIGNAL, MSG_TRUNC = 2, 0x40, 0x100, 0x4000, 0x20
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
POLLRDHUP = 0x2000
S_IFSOCK = 0o140000
FIONREAD = 0x541B
SOCKADDR_IN_SIZE = 16
SOCKADDR_STORAGE_SIZE = 128  # the longest address move_addr_to_kernel takes
AF_UNSPEC = 0


def pack_sockaddr(ip: bytes, port: int) -> bytes:
    """struct sockaddr_in: sa_family (host order), sin_port, sin_addr (network order), zero[8]."""
    return struct.pack("<H", AF_INET) + struct.pack("!H", port) + ip + bytes(8)


def unpack_sockaddr(raw: bytes) -> tuple[bytes, int]:
    if len(raw) < 8:
        raise FsError(errno.EINVAL)
    family = struct.unpack_from("<H", raw)[0]
    if family != AF_INET:
        raise FsError(errno.EAFNOSUPPORT)
    return bytes(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


def _oserror(exc: OSError) -> FsError:
    return FsError(exc.errno or errno.EIO)


class SocketFile(OpenFile):
    external = True  # input arrives from a device: waits idle the CPU and poll the NIC

    def __init__(self, stack: Any, kind: int, flags: int) -> None:
        super().__init__(Inode(S_IFSOCK | 0o777), (flags & O_NONBLOCK) | O_RDWR, "")
        self.path = f"socket:[{self.inode.ino}]"  # type: ignore[union-attr]
        self.stack = stack
        self.kind = kind
        self.port = 0  # bound local port (0: none yet)
        self.bound_ip = ANY_IP  # the address bind() named (getsockname of an unconnected socket)
        self.tcb: Tcb | None = None
        self.listener: Any = None
        self.udp: UdpEndpoint | None = None
        self.peer: tuple[bytes, int] | None = None  # UDP default destination
        self.connecting = False
        self.so_error = 0
        self.options: dict[tuple[int, int], int] = {}
        self.timeo: dict[int, int | None] = {SO_RCVTIMEO: None, SO_SNDTIMEO: None}  # ns; None: for ever
        self.linger: tuple[bool, int] = (False, 0)  # SO_LINGER: (l_onoff, l_linger seconds)
        self.rd_shut = False
        self.port_locked = False  # bind() named the port (SOCK_BINDPORT_LOCK): a disconnect keeps it

    # --- binding --------------------------------------------------------------------------
    def port_used(self, port: int) -> bool:
        s = self.stack
        if self.kind == SOCK_DGRAM:
            return port in s.udp
        return s.tcp_port_used(port) or port in s.bound_tcp

    def bind(self, ip: bytes, port: int) -> None:
        if self.port:
            raise FsError(errno.EINVAL)
        if ip not in (ANY_IP, self.stack.ip):
            raise FsError(errno.EADDRNOTAVAIL)
        if port == 0:
            port = self.stack.ephemeral_port(self.port_used)
        elif self.port_used(port):
            raise FsError(errno.EADDRINUSE)
        self.port = port
        self.bound_ip = ip
        if self.kind == SOCK_DGRAM:
            self.udp = self.stack.udp[port] = UdpEndpoint(port)
        else:
            self.stack.bound_tcp.add(port)

    def autobind(self) -> None:
        if not self.port:
            self.bind(ANY_IP, 0)

    def release_port(self) -> None:
        if self.kind == SOCK_DGRAM:
            if self.udp is not None and self.stack.udp.get(self.port) is self.udp:
                del self.stack.udp[self.port]
        else:
            self.stack.bound_tcp.discard(self.port)

    # --- the file interface -----------------------------------------------------------------
    def recv(self, size: int, peek: bool = False) -> tuple[bytes, tuple[bytes, int] | None]:
        """Data and (for UDP) its source; WouldBlock when there is nothing yet."""
        if self.kind == SOCK_DGRAM:
            if self.udp is None:
                raise WouldBlock()
            if not self.udp.queue:
                self.stack.poll()
            if not self.udp.queue:
                raise WouldBlock()
            src, sport, data = self.udp.queue[0] if peek else self.udp.queue.popleft()
            return data[:size], (src, sport)
        if self.tcb is None:
            raise FsError(errno.ENOTCONN)  # a listening socket too (tcp_recvmsg)
        if self.rd_shut:
            return b"", None
        out = self.tcb.recv(size, peek)
        if out is None:
            self.stack.poll()
            try:
                out = self.tcb.recv(size, peek)
            except OSError as exc:
                raise _oserror(exc) from None
            if out is None:
                raise WouldBlock()
        self.stack.flush()
        return out, None

    def read(self, size: int) -> bytes:
        try:
            return self.recv(size)[0]
        except OSError as exc:
            raise _oserror(exc) from None

    def send(self, data: bytes, dest: tuple[bytes, int] | None = None) -> int:
        if self.kind == SOCK_DGRAM:
            dest = dest or self.peer
            if dest is None:
                raise FsError(errno.EDESTADDRREQ)
            if len(data) > 65507:
                raise FsError(errno.EMSGSIZE)
            if len(data) > 1472:
                raise FsError(errno.EMSGSIZE)  # no fragmentation
            if dest[0] == BROADCAST_IP and not self.options.get((SOL_SOCKET, SO_BROADCAST)):
                raise FsError(errno.EACCES)
            self.autobind()
            self.stack.send_udp(dest[0], self.port, dest[1], data)
            return len(data)
        if self.tcb is None:  # never connected, or listening: sk_stream_wait_connect's EPIPE
            if self.connecting:
                raise FsError(errno.EAGAIN)
            raise BrokenPipe()
        try:
            n = self.tcb.send(data)
        except OSError as exc:  # sk_stream_error: EPIPE (shut down, or a RST in CLOSE_WAIT) raises SIGPIPE
            raise (BrokenPipe() if exc.errno == errno.EPIPE else _oserror(exc)) from None
        if n is None:
            self.stack.poll()
            raise WouldBlock()
        return n

    def write(self, data: bytes) -> int:
        return self.send(data)

    def io_timeout(self, write: bool) -> int | None:
        return self.timeo[SO_SNDTIMEO if write else SO_RCVTIMEO]

    def io_limit(self, size: int, write: bool) -> int:
        """A stream takes no more than its free send space and gives no more than it holds
        (when it holds nothing, the whole size: the read waits or ends the stream)."""
        t = self.tcb
        if self.kind != SOCK_STREAM or t is None:
            return size
        if write:
            return min(size, t.send_room())
        return min(size, len(t.rcvbuf)) if t.rcvbuf else size

    def poll(self) -> int:
        self.stack.poll()
        if self.kind == SOCK_DGRAM:
            return POLLOUT | (POLLIN if self.udp is not None and self.udp.queue else 0)
        if self.listener is not None:
            return POLLIN if self.listener.ready else 0
        t = self.tcb
        if t is None:
            return POLLOUT | POLLHUP
        if t.state in (SYN_SENT, SYN_RCVD):
            return 0
        ev = 0
        if t.readable or self.rd_shut:
            ev |= POLLIN
        if t.writable:
            ev |= POLLOUT
        if t.peer_fin:
            ev |= POLLRDHUP
        if t.error:
            ev |= POLLERR | POLLHUP
        elif t.state == "CLOSED" or (t.peer_fin and t.fin_queued):
            ev |= POLLHUP
        return ev

    def ioctl(self, req: int, arg: int, mem: Any) -> int:
        if req == FIONREAD:
            if self.kind == SOCK_DGRAM:
                n = len(self.udp.queue[0][2]) if self.udp is not None and self.udp.queue else 0
            else:
                n = len(self.tcb.rcvbuf) if self.tcb is not None else 0
            mem.write(arg, n.to_bytes(4, "little"))
            return 0
        raise FsError(errno.ENOTTY)

    def close(self) -> None:
        """tcp_close: a listener stops; a connection ends with a FIN, or a RST when data was
        left unread or SO_LINGER is on with a zero time (tcp_disconnect). A non-zero linger
        time does not hold close() back: the FIN handshake goes on behind it."""
        if self.listener is not None:
            self.stack.unlisten(self.listener)
            self.listener = None
        if self.tcb is not None:
            if self.linger == (True, 0):
                self.tcb.disconnect()
            else:
                self.tcb.close()
            self.stack.flush()
        self.release_port()

    def disconnect(self) -> None:
        """connect(AF_UNSPEC) (tcp_disconnect, udp_disconnect): a listener stops, a
        connection is reset (ECONNRESET left for SO_ERROR) or abandoned, a UDP peer is
        forgotten; the socket may connect again. A port bind() did not name is given back."""
        if self.listener is not None:
            self.stack.unlisten(self.listener)
            self.listener = None
        if self.tcb is not None:
            if self.tcb.disconnect():
                self.so_error = errno.ECONNRESET
            self.tcb = None
            self.rd_shut = False  # sk_shutdown = 0
            self.stack.flush()
        self.peer = None
        self.connecting = False
        if self.port and not self.port_locked:
            self.release_port()
            self.port, self.udp = 0, None


class SocketCalls(SockOptCalls):
    """The socket syscalls; mixed into guest.syscalls.Syscalls (self.p is the process)."""

    p: Any

    def _stack(self) -> Any:
        return getattr(self.p.kernel, "net", None)

    def _sock(self, fd: int) -> SocketFile:
        f = self.file(fd)  # type: ignore[attr-defined]
        if not isinstance(f, SocketFile):
            raise FsError(errno.ENOTSOCK)
        return f

    def _wait(self, ready: Any, what: str, timeout_ns: int | None = None) -> bool:
        return self.block(ready, timeout_ns, True, what)  # type: ignore[attr-defined]

    def _addr_bytes(self, addr: int, length: int) -> bytes:
        """The address handed in, as move_addr_to_kernel copies it (EINVAL, EFAULT)."""
        length = _s32(length)
        if not 0 <= length <= SOCKADDR_STORAGE_SIZE:
            raise FsError(errno.EINVAL)
        return self.p.read(addr, min(length, SOCKADDR_IN_SIZE)) if length else b""

    def _read_addr(self, addr: int, length: int) -> tuple[bytes, int]:
        raw = self._addr_bytes(addr, length)
        if len(raw) < SOCKADDR_IN_SIZE:  # inet_bind, tcp_v4_connect, udp_sendmsg
            raise FsError(errno.EINVAL)
        return unpack_sockaddr(raw)

    def _write_addr(self, addr: int, lenp: int, ip: bytes, port: int) -> None:
        if not addr or not lenp:
            return
        room = struct.unpack("<I", self.p.read(lenp, 4))[0]
        raw = pack_sockaddr(ip, port)
        if room:
            self.p.write(addr, raw[: min(room, len(raw))])
        self.p.write(lenp, struct.pack("<I", len(raw)))

    def sys_socket(self, domain: int, type_: int, protocol: int, *_: int) -> int:
        stack = self._stack()
        if domain != AF_INET or stack is None:
            return -errno.EAFNOSUPPORT
        kind = type_ & 0xF
        if kind not in (SOCK_STREAM, SOCK_DGRAM) or type_ & ~(0xF | SOCK_NONBLOCK | SOCK_CLOEXEC):
            return -errno.EINVAL
        if protocol not in (0, IPPROTO_TCP if kind == SOCK_STREAM else IPPROTO_UDP):
            return -errno.EPROTONOSUPPORT
        sock = SocketFile(stack, kind, type_ & SOCK_NONBLOCK)
        return self.install(sock, bool(type_ & SOCK_CLOEXEC))  # type: ignore[attr-defined]

    def sys_socketpair(self, domain: int, *_: int) -> int:
        return -errno.EAFNOSUPPORT if domain != AF_UNIX else -errno.EOPNOTSUPP

    def sys_bind(self, fd: int, addr: int, length: int, *_: int) -> int:
        sock = self._sock(fd)
        ip, port = self._read_addr(addr, length)
        try:
            sock.bind(ip, port)
        except OSError as exc:
            return -(exc.errno or errno.EADDRINUSE)
        sock.port_locked = port != 0
        return 0

    def sys_listen(self, fd: int, backlog: int, *_: int) -> int:
        sock = self._sock(fd)
        if sock.kind != SOCK_STREAM or sock.tcb is not None:
            return -errno.EOPNOTSUPP if sock.kind != SOCK_STREAM else -errno.EINVAL
        if sock.listener is not None:
            sock.listener.backlog = max(1, min(backlog & 0x7FFFFFFF, 128))
            return 0
        sock.autobind()
        try:
            sock.listener = sock.stack.listen(sock.port, backlog & 0x7FFFFFFF or 1)
        except OSError as exc:
            return -(exc.errno or errno.EADDRINUSE)
        return 0

    def sys_accept4(self, fd: int, addr: int, lenp: int, flags: int, *_: int) -> int:
        sock = self._sock(fd)
        listener = sock.listener
        if listener is None:
            return -errno.EINVAL
        if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
            return -errno.EINVAL

        def ready() -> bool:
            sock.stack.poll()
            return bool(listener.ready) or listener.closed

        if not ready():
            if sock.nonblock:
                return -errno.EAGAIN
            if not self._wait(ready, f"accept on port {sock.port}", sock.timeo[SO_RCVTIMEO]):
                return -errno.EAGAIN
        if not listener.ready:
            return -errno.EINVAL
        tcb = listener.ready.popleft()
        tcb.listener = None
        new = SocketFile(sock.stack, SOCK_STREAM, flags & SOCK_NONBLOCK)
        new.tcb = tcb
        new.port = tcb.lport
        self._write_addr(addr, lenp, tcb.rip, tcb.rport)
        return self.install(new, bool(flags & SOCK_CLOEXEC))  # type: ignore[attr-defined]

    def sys_accept(self, fd: int, addr: int, lenp: int, *_: int) -> int:
        return self.sys_accept4(fd, addr, lenp, 0)

    def sys_connect(self, fd: int, addr: int, length: int, *_: int) -> int:
        sock = self._sock(fd)
        raw = self._addr_bytes(addr, length)
        if len(raw) >= 2 and struct.unpack_from("<H", raw)[0] == AF_UNSPEC:  # only sa_family is read
            sock.disconnect()
            return 0
        if sock.kind == SOCK_DGRAM:
            ip, port = self._read_addr(addr, length)
            sock.autobind()
            sock.peer = None if ip == ANY_IP and port == 0 else (ip, port)
            return 0
        ip, port = self._read_addr(addr, length)
        if sock.listener is not None:
            return -errno.EISCONN  # __inet_stream_connect: not TCP_CLOSE
        if sock.tcb is None:
            if port == 0 or ip == ANY_IP:
                return -errno.ECONNREFUSED
            if ip[0] == 127:
                return -errno.ENETUNREACH  # no loopback device
            sock.autobind()
            try:
                sock.tcb = sock.stack.connect(sock.port, ip, port)
            except OSError as exc:
                return -(exc.errno or errno.EADDRINUSE)
            sock.connecting = True
            sock.so_error = 0  # tcp_connect_init
            sock.stack.flush()
            if sock.nonblock:
                return -errno.EINPROGRESS
        elif not sock.connecting:
            return -errno.EISCONN
        tcb = sock.tcb

        def ready() -> bool:
            sock.stack.poll()
            return tcb.state != SYN_SENT

        if not ready():
            if sock.nonblock:
                return -errno.EALREADY
            if not self._wait(ready, f"connect to port {port}", sock.timeo[SO_SNDTIMEO]):
                return -errno.EINPROGRESS  # inet_wait_for_connect timed out: the handshake goes on
        sock.connecting = False
        if tcb.state == ESTABLISHED or (tcb.state != "CLOSED" and not tcb.error):
            return 0
        err = tcb.error or errno.ECONNREFUSED
        sock.tcb = None
        return -err

    def sys_getsockname(self, fd: int, addr: int, lenp: int, *_: int) -> int:
        sock = self._sock(fd)
        connected = sock.tcb is not None or sock.peer is not None  # inet_getname: the bound address,
        ip = sock.stack.ip if connected and sock.bound_ip == ANY_IP else sock.bound_ip  # else the source chosen
        self._write_addr(addr, lenp, ip, sock.port)
        return 0

    def sys_getpeername(self, fd: int, addr: int, lenp: int, *_: int) -> int:
        sock = self._sock(fd)
        if sock.tcb is not None and sock.tcb.state not in (SYN_SENT, "CLOSED"):
            self._write_addr(addr, lenp, sock.tcb.rip, sock.tcb.rport)
            return 0
        if sock.peer is not None:
            self._write_addr(addr, lenp, *sock.peer)
            return 0
        return -errno.ENOTCONN

    def _sock_io(self, sock: SocketFile, op: Any, want: int, flags: int) -> Any:
        """A send or receive: waits as read/write do (SO_RCVTIMEO/SO_SNDTIMEO bound them),
        not at all with MSG_DONTWAIT; with MSG_NOSIGNAL, EPIPE raises no SIGPIPE."""
        try:
            if flags & MSG_DONTWAIT and not sock.nonblock:
                try:
                    return op()
                except WouldBlock:
                    raise FsError(errno.EAGAIN) from None
            return self._io(sock, op, want)  # type: ignore[attr-defined]
        except BrokenPipe:
            if flags & MSG_NOSIGNAL:
                raise FsError(errno.EPIPE) from None
            raise

    def _send_span(self, sock: SocketFile, buf: int, size: int) -> int:
        """How much of a send buffer is copied: a stream socket takes the bytes before the
        first page that faults (Linux's tcp_sendmsg returns what it copied), a datagram is
        all or nothing; EFAULT when nothing can be copied."""
        n = self.p.accessible(buf, size, False)
        if size and (not n or (sock.kind == SOCK_DGRAM and n < size)):
            raise MemoryError(f"EFAULT at {buf + n:#x}")
        return n

    def _recv_span(self, sock: SocketFile, buf: int, size: int) -> int:
        """How much a receive may deliver: up to the first page that faults, so that the
        bytes past it stay queued (a stream), or EFAULT before anything is taken."""
        n = self.p.accessible(buf, size, True)
        if size and (not n or (sock.kind == SOCK_DGRAM and n < size)):
            raise MemoryError(f"EFAULT at {buf + n:#x}")
        return n

    def sys_sendto(self, fd: int, buf: int, size: int, flags: int, addr: int, length: int) -> int:
        sock = self._sock(fd)
        size = min(size, 1 << 20)
        dest = self._read_addr(addr, length) if addr and sock.kind == SOCK_DGRAM else None

        def op() -> int:
            n = sock.io_limit(size, True)
            return sock.send(self.p.read(buf, self._send_span(sock, buf, n)) if n else b"", dest)

        return self._sock_io(sock, op, POLLOUT, flags)

    def sys_recvfrom(self, fd: int, buf: int, size: int, flags: int, addr: int, lenp: int) -> int:
        sock = self._sock(fd)
        size = min(size, 1 << 20)
        data, src = self._sock_io(
            sock, lambda: sock.recv(self._recv_span(sock, buf, sock.io_limit(size, False)), bool(flags & MSG_PEEK)),
            POLLIN, flags)
        if data:
            self.p.write(buf, data)
        if addr and lenp and src is not None:
            self._write_addr(addr, lenp, *src)
        elif addr and lenp:  # a stream names no source: a length of 0 (tcp_recvmsg leaves msg_namelen 0)
            self.p.write(lenp, bytes(4))
        return len(data)

    def _msghdr(self, msg: int) -> tuple[int, int, list[tuple[int, int]]]:
        name, namelen, iov, iovlen = struct.unpack("<QIxxxxQQ", self.p.read(msg, 32))
        return name, namelen, self._iovecs(iov, iovlen)  # type: ignore[attr-defined]

    def sys_sendmsg(self, fd: int, msg: int, flags: int, *_: int) -> int:
        sock = self._sock(fd)
        name, namelen, iovs = self._msghdr(msg)
        dest = self._read_addr(name, namelen) if name and sock.kind == SOCK_DGRAM else None
        total = sum(length for _, length in iovs)
        return self._sock_io(sock, lambda: sock.send(self._gather_send(sock, iovs, sock.io_limit(total, True)), dest),
                             POLLOUT, flags)

    def _gather_send(self, sock: SocketFile, iovs: list[tuple[int, int]], limit: int | None = None) -> bytes:
        """An iovec array's bytes (its first `limit`) up to the first page that faults (a
        stream), all of them (a datagram), or EFAULT if nothing can be copied."""
        out = bytearray()
        for base, length in iovs:
            if limit is not None:
                if len(out) >= limit:
                    break
                length = min(length, limit - len(out))
            n = self.p.accessible(base, length, False)
            out += self.p.read(base, n)
            if n < length:
                if not out or sock.kind == SOCK_DGRAM:
                    raise MemoryError(f"EFAULT at {base + n:#x}")
                break
        return bytes(out)

    def _recv_iovs(self, sock: SocketFile, iovs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The receive buffers a recvmsg may fill: cut at the first page that faults."""
        usable: list[tuple[int, int]] = []
        for base, length in iovs:
            n = self.p.accessible(base, length, True)
            if n:
                usable.append((base, n))
            if n < length:
                if not usable or sock.kind == SOCK_DGRAM:
                    raise MemoryError(f"EFAULT at {base + n:#x}")
                break
        return usable

    def sys_recvmsg(self, fd: int, msg: int, flags: int, *_: int) -> int:
        sock = self._sock(fd)
        name, namelen, iovs = self._msghdr(msg)
        iovs = self._recv_iovs(sock, iovs) if sum(n for _, n in iovs) else iovs
        total = sum(n for _, n in iovs)
        data, src = self._sock_io(sock, lambda: sock.recv(min(total, 1 << 20), bool(flags & MSG_PEEK)),
                                  POLLIN, flags)
        off = 0
        for base, n in iovs:
            if off >= len(data):
                break
            piece = data[off : off + n]
            self.p.write(base, piece)
            off += len(piece)
        if name and src is not None:
            raw = pack_sockaddr(*src)
            self.p.write(name, raw[: min(namelen, len(raw))])
            self.p.write(msg + 8, struct.pack("<I", len(raw)))
        elif name:
            self.p.write(msg + 8, struct.pack("<I", 0))
        self.p.write(msg + 40, struct.pack("<Q", 0))  # msg_controllen: no ancillary data
        self.p.write(msg + 48, struct.pack("<I", 0))
        return len(data)

    def sys_shutdown(self, fd: int, how: int, *_: int) -> int:
        sock = self._sock(fd)
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            return -errno.EINVAL
        if sock.listener is not None:  # inet_shutdown: SHUT_RD stops a listener (tcp_disconnect)
            if how != SHUT_WR:
                sock.stack.unlisten(sock.listener)
                sock.listener = None
            return 0
        if sock.kind == SOCK_DGRAM and sock.peer is None:
            sock.rd_shut = sock.rd_shut or how != SHUT_WR  # recorded all the same, as Linux does
            return -errno.ENOTCONN
        if sock.kind == SOCK_STREAM and (sock.tcb is None or sock.tcb.state == "CLOSED"):
            return -errno.ENOTCONN
        if how in (SHUT_RD, SHUT_RDWR):
            sock.rd_shut = True
        if how in (SHUT_WR, SHUT_RDWR) and sock.tcb is not None:
            sock.tcb.shutdown_write()
            sock.stack.flush()
        return 0


# The sockets subsystem's syscalls: every sys_<name> method of SocketCalls and its options mixin.
calls = SyscallSet.of_methods("sockets", SocketCalls)
calls.methods.update(SyscallSet.of_methods("sockets", SockOptCalls).methods)
