"""Socket copies against the app's page protections, as Linux's: a stream send or receive
stops at the first page that faults and counts the bytes before it (tcp_sendmsg /
tcp_recvmsg return what they copied), a datagram is all or nothing, and EFAULT only when
nothing at all can be copied. The bytes a receive could not deliver stay queued."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.guest.net.socket import SOCK_DGRAM, SOCK_STREAM, SocketCalls

PAGE = GRANULE_SIZE
BASE = 0x40_0000


@dataclass
class FakeProcess:
    """Pages BASE.. with a protection each ('rw', 'r' or '' for a fault)."""

    prots: list[str]
    memory: dict[int, int] = field(default_factory=dict)

    def _prot(self, va: int) -> str:
        i = (va - BASE) // PAGE
        return self.prots[i] if 0 <= i < len(self.prots) else ""

    def accessible(self, va: int, size: int, write: bool) -> int:
        done = 0
        while done < size:
            prot = self._prot(va + done)
            if not prot or (write and "w" not in prot):
                break
            done += min(size - done, PAGE - ((va + done) % PAGE))
        return done

    def read(self, va: int, size: int) -> bytes:
        assert self.accessible(va, size, False) == size, "a copy past the faulting page"
        return bytes(self.memory.get(va + i, 0x41) for i in range(size))

    def write(self, va: int, data: bytes) -> None:
        assert self.accessible(va, len(data), True) == len(data), "a copy past the faulting page"
        for i, b in enumerate(data):
            self.memory[va + i] = b


class FakeSocket:
    def __init__(self, kind: int, queued: bytes = b"") -> None:
        self.kind = kind
        self.queued = queued
        self.sent = b""

    def send(self, data: bytes, dest: Any) -> int:
        self.sent += data
        return len(data)

    def io_limit(self, size: int, write: bool) -> int:
        return size

    def recv(self, size: int, peek: bool) -> tuple[bytes, Any]:
        data, rest = self.queued[:size], self.queued[size:]
        if not peek:
            self.queued = rest
        return data, None


class Calls(SocketCalls):
    def __init__(self, p: FakeProcess, sock: FakeSocket) -> None:
        self.p = p
        self.sock = sock

    def _sock(self, fd: int) -> Any:
        return self.sock

    def _sock_io(self, sock: Any, op: Any, want: int, flags: int) -> Any:
        return op()


def test_stream_send_stops_at_the_faulting_page() -> None:
    calls = Calls(FakeProcess(["rw", ""]), FakeSocket(SOCK_STREAM))
    start = BASE + PAGE - 100
    assert calls.sys_sendto(3, start, 300, 0, 0, 0) == 100
    assert calls.sock.sent == b"A" * 100


def test_send_with_nothing_copyable_is_efault() -> None:
    calls = Calls(FakeProcess(["", "rw"]), FakeSocket(SOCK_STREAM))
    with pytest.raises(MemoryError):
        calls.sys_sendto(3, BASE + 10, 100, 0, 0, 0)
    assert calls.sock.sent == b""


def test_a_datagram_is_all_or_nothing() -> None:
    calls = Calls(FakeProcess(["rw", ""]), FakeSocket(SOCK_DGRAM))
    with pytest.raises(MemoryError):
        calls.sys_sendto(3, BASE + PAGE - 100, 300, 0, 0, 0)
    assert calls.sock.sent == b""


def test_stream_receive_delivers_up_to_the_fault_and_keeps_the_rest() -> None:
    calls = Calls(FakeProcess(["rw", "r"]), FakeSocket(SOCK_STREAM, b"x" * 500))
    start = BASE + PAGE - 200
    assert calls.sys_recvfrom(3, start, 500, 0, 0, 0) == 200  # the second page is read-only
    assert calls.sock.queued == b"x" * 300
    assert all(calls.p.memory[start + i] == ord("x") for i in range(200))


def test_receive_into_a_read_only_buffer_is_efault_and_takes_nothing() -> None:
    calls = Calls(FakeProcess(["r"]), FakeSocket(SOCK_STREAM, b"data"))
    with pytest.raises(MemoryError):
        calls.sys_recvfrom(3, BASE, 4, 0, 0, 0)
    assert calls.sock.queued == b"data"


def test_gather_and_scatter_stop_at_the_first_faulting_iovec() -> None:
    calls = Calls(FakeProcess(["rw", "", "rw"]), FakeSocket(SOCK_STREAM))
    iovs = [(BASE, 16), (BASE + PAGE, 16), (BASE + 2 * PAGE, 16)]
    assert calls._gather_send(calls.sock, iovs) == b"A" * 16
    assert calls._recv_iovs(calls.sock, iovs) == [(BASE, 16)]
    with pytest.raises(MemoryError):
        calls._recv_iovs(calls.sock, [(BASE + PAGE, 16), (BASE, 16)])
    dgram = FakeSocket(SOCK_DGRAM)
    with pytest.raises(MemoryError):
        calls._gather_send(dgram, iovs)
