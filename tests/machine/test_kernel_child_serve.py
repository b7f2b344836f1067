"""How a kernel process ends (machine/kernel_child.serve): the image boots at the first
RESUME's PC with its x0..x3, and when the kernel ends the child says why in a STOPPED message
(msg 3, then a UTF-8 reason) and waits for the channel to close."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest

from unirealm.machine import kernel_child as kc

from .test_kernel_child import PAGE, RAM, Peer

STOPPED = 3
LIMIT = (64 << 20) + (512 << 20)


@pytest.fixture
def engine_and_peer() -> Iterator[tuple[kc.ChildEngine, Peer]]:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, 4 * PAGE)
    ro = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)
    engine = kc.ChildEngine(mine, memfd, ro, "max")
    try:
        yield engine, Peer(theirs)
    finally:
        engine._revoke(0, kc.WINDOW_SIZE)
        for fd in (memfd, ro):
            os.close(fd)
        mine.close()
        theirs.close()


def ending(exc: BaseException | None) -> Callable[[], None]:
    def boot() -> None:
        if exc is not None:
            raise exc

    return boot


@pytest.mark.parametrize(("exc", "reason"), [
    (None, "the kernel returned"),
    (MemoryError(), "out of memory (address-space limit 576 MiB)"),
    (ModuleNotFoundError("no", name="cbor3"),
     "the kernel imports 'cbor3', which is not in its image: the image was built by another unirealm; "
     "build it again with this one"),
    (RuntimeError("the guest's CPU went away"), "the kernel stopped: RuntimeError: the guest's CPU went away"),
    (KeyboardInterrupt(), "the kernel stopped: KeyboardInterrupt: "),
    (ValueError("a lone \udcff surrogate"), "the kernel stopped: ValueError: a lone ? surrogate"),
    (RuntimeError("x" * 1000), ("the kernel stopped: RuntimeError: " + "x" * 1000)[:400]),
])
def test_the_child_says_why_its_kernel_ended(engine_and_peer: tuple[kc.ChildEngine, Peer],
                                             exc: BaseException | None, reason: str) -> None:
    engine, peer = engine_and_peer
    booted: list[tuple[int, list[int]]] = []

    def boot() -> None:
        booted.append((engine.image_base, list(engine.boot_regs)))
        ending(exc)()

    engine.boot_image = boot  # type: ignore[method-assign]
    peer.resume(0x8008_0000, tuple(range(1, 32)))
    peer.sock.send(b"\x13" + bytes(23))  # what the engine sends meanwhile is not answered
    peer.sock.shutdown(socket.SHUT_WR)  # the VM ends
    kc.serve(engine, LIMIT)
    assert booted == [(0x8008_0000, [1, 2, 3, 4])]
    assert peer.sock.recv(1024) == bytes([STOPPED]) + reason.encode()
    assert peer.nothing_sent()


def test_a_channel_closed_while_the_kernel_runs_ends_it_without_a_word(
        engine_and_peer: tuple[kc.ChildEngine, Peer]) -> None:
    engine, peer = engine_and_peer
    engine.boot_image = ending(kc.ChannelClosed())  # type: ignore[method-assign]
    peer.resume(RAM)
    kc.serve(engine, LIMIT)
    assert peer.nothing_sent()
    peer.sock.shutdown(socket.SHUT_WR)
    kc.serve(engine, LIMIT)  # closed before the first RESUME: ends quietly
    assert peer.nothing_sent()


def test_an_image_that_is_not_one_stops_the_kernel(engine_and_peer: tuple[kc.ChildEngine, Peer]) -> None:
    engine, peer = engine_and_peer
    peer.resume(RAM)
    for _ in range(8):  # whatever the loader reads of the zeroed RAM is granted
        peer.grant(RAM, 4, 0, False)
    peer.sock.shutdown(socket.SHUT_WR)
    kc.serve(engine, LIMIT)
    data = b""
    while (got := peer.sock.recv(1024)) and got[0] != STOPPED:
        data = got
    assert got[:1] == bytes([STOPPED]) and got[1:].startswith(b"the kernel stopped: ImageError: "), got
    assert data[:2] == bytes([1, 4])  # it asked for its header first: a DATA_ABORT TRAP
