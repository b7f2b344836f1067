"""Bulk transfers through the guest's sockets and TCP, in-process against a scripted peer: a
multi-MiB writev leaves the app's memory once (a stream socket's write copies only what its
send buffer takes, not the whole remaining buffer at every call), arrives whole and in
order in MSS segments within the peer's window, and a burst of segments reaches the NIC
with one notification; the socket becomes writable again only with a useful amount of room."""

from __future__ import annotations

import hashlib
import struct

from unirealm.arch import net
from unirealm.guest import syscalls as sc
from unirealm.guest.net import tcp as tcpmod
from unirealm.guest.net.socket import SOCK_STREAM, SocketFile
from unirealm.guest.vfs import POLLOUT

from .test_tcpip import GUEST_MAC, Peer
from .test_vfs import FakeProcess

F = net.TcpFlags
PORT = 6379
IOV = 0x100
BUF = 0x1000


class CountingProcess(FakeProcess):
    """A process with `size` bytes of app data at BUF, counting what the kernel copies out."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.mem = bytearray(BUF + size)
        self.copied = 0

    def read(self, va: int, n: int) -> bytes:
        self.copied += n
        return super().read(va, n)


class BatchingNic:
    """The guest driver's interface with deferred notification: frames posted with
    notify=False reach the device at the next kick."""

    def __init__(self) -> None:
        self.mac = GUEST_MAC
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []
        self.unannounced = 0
        self.notifies = 0

    def poll(self) -> list[bytes]:
        out, self.inbox = self.inbox, []
        return out

    def send(self, frame: bytes, notify: bool = True) -> bool:
        self.sent.append(frame)
        self.unannounced += 1
        if notify:
            self.kick()
        return True

    def kick(self) -> None:
        if self.unannounced:
            self.unannounced = 0
            self.notifies += 1


def connected(peer: Peer, window: int = 65535) -> tuple[tcpmod.Tcb, int, int]:
    listener = peer.stack.listen(PORT, 4)
    seq, gseq = peer.handshake(PORT, window=window)
    return listener.ready.popleft(), seq, gseq


def test_writev_of_4_mib_leaves_app_memory_once_and_arrives_whole() -> None:
    size = 4 << 20
    peer = Peer()
    tcb, seq, gseq = connected(peer)
    p = CountingProcess(size)
    data = bytes((i * 7919 + (i >> 12)) & 0xFF for i in range(size))
    p.mem[BUF:] = data
    s = sc.Syscalls(p)
    sock = SocketFile(peer.stack, SOCK_STREAM, 0)
    sock.tcb = tcb
    fd = s.install(sock, False)
    received = bytearray()
    sent = calls = 0
    while sent < size:
        p.write(IOV, struct.pack("<QQ", BUF + sent, size - sent))
        n = s.call(sc.NR["writev"], [fd, IOV, 1, 0, 0, 0])
        assert 0 < n <= tcpmod.SNDBUF, n
        sent += n
        calls += 1
        # the peer takes every segment in flight and acknowledges it; the ACK releases more
        frames = peer.take()
        while len(received) < sent:
            assert frames, "the guest stopped sending within the window"
            for f in frames:
                assert f.tcp is not None and f.tcp.seq == (gseq + len(received)) & 0xFFFF_FFFF, "out of order"
                assert len(f.payload) <= 1460
                received += f.payload
            assert len(received) - sent <= 0
            frames = peer.tcp(40000, PORT, seq, (gseq + len(received)) & 0xFFFF_FFFF, F.ACK)
        assert frames == []
    assert len(received) == size and hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    # each byte copied out of the app once, plus the iovec arrays
    assert p.copied <= size + 16 * calls, p.copied
    assert calls <= size // (tcpmod.SNDBUF // 3) + 2  # woken with room for a third of the buffer


def test_a_burst_of_segments_is_announced_with_one_notify() -> None:
    peer = Peer()
    peer.nic = nic = BatchingNic()  # type: ignore[assignment]
    peer.stack.nic, peer.stack.kick = nic, nic.kick
    tcb, seq, gseq = connected(peer)
    nic.sent.clear()
    nic.notifies = 0
    assert tcb.send(bytes(60000)) == 60000
    assert len(nic.sent) == -(-60000 // 1460) and nic.notifies == 1 and nic.unannounced == 0
    # the ACK of it, taken at a poll, releases the rest of a larger write in one burst too
    assert tcb.send(bytes(100000)) == 100000
    nic.sent.clear()
    nic.notifies = 0
    burst = peer.tcp(40000, PORT, seq, (gseq + 60000) & 0xFFFF_FFFF, F.ACK)
    assert len(burst) == -(-60000 // 1460) and nic.notifies == 1


def test_writable_again_only_with_useful_room() -> None:
    peer = Peer()
    tcb, seq, gseq = connected(peer)
    sock = SocketFile(peer.stack, SOCK_STREAM, 0)
    sock.tcb = tcb
    assert tcb.send(bytes(tcpmod.SNDBUF)) == tcpmod.SNDBUF
    assert tcb.send(b"x") is None and not sock.poll() & POLLOUT
    acked = 0
    while 3 * (tcpmod.SNDBUF - acked - 2920) > 2 * tcpmod.SNDBUF:
        acked += 2920  # one ACK for two segments frees a few KiB: not yet worth a wake-up
        peer.tcp(40000, PORT, seq, (gseq + acked) & 0xFFFF_FFFF, F.ACK)
        assert not sock.poll() & POLLOUT, acked
    acked = tcpmod.SNDBUF // 3 + 1460
    peer.tcp(40000, PORT, seq, (gseq + acked) & 0xFFFF_FFFF, F.ACK)
    assert sock.poll() & POLLOUT
    assert sock.io_limit(1 << 24, True) == acked and sock.io_limit(10, True) == 10
