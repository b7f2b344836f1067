"""Revocation and the mmap supervisor of machine/kernel_process.py: a REVOKE is answered by
an ACK or the child is killed, a mapping the child kept is found in its /proc maps, and the
child's mmap of the memory file is judged through a real seccomp listener (a forked child)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from unirealm.arch.memory import Pas, World
from unirealm.machine import kernel_child as kc
from unirealm.machine import kernel_process
from unirealm.machine import seccomp as sc
from unirealm.machine.kernel_channel import WINDOW
from unirealm.machine.kernel_process import KernelProcess
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import SmcTrap

from .channel_layout import ACK, REVOKE, REVOKE_FMT, SMC, TRAP_FMT
from .test_kernel_process_serve import PAGE, RAM_IPA, Child, start

RAM_OFFSET = 0x1_0000


def nothing_sent(child: Child) -> bool:
    return not select.select([child.sock], [], [], 0)[0]


@pytest.fixture
def granted() -> Iterator[tuple[KernelProcess, Child, PhysicalMemory]]:
    memory = PhysicalMemory(size=1 << 20)
    kp, child = start(memory, memory.base + RAM_OFFSET)
    assert kp._grant(RAM_IPA + 2 * PAGE, True) is not None  # pages 2 and 3
    assert kp._grant(RAM_IPA, False) is not None  # page 0
    try:
        yield kp, child, memory
    finally:
        assert kp._proc is not None and kp._proc.stdout is not None
        kp._proc.stdout.close()
        kp.close()
        child.sock.close()


def test_a_revoke_waits_for_the_ack_and_forgets_the_grants(
        granted: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = granted
    child.sock.send(bytes([ACK]))  # the child's answer, queued before it is asked
    kp.invalidate(RAM_IPA + 2 * PAGE + 0x40, PAGE)  # touches pages 2 and 3
    assert REVOKE_FMT.unpack(child.recv()) == (REVOKE, RAM_IPA + 2 * PAGE, PAGE + 0x40)
    assert sorted(kp._grants) == [RAM_IPA]
    assert kp.stopped is None and kp.counts["revokes"] == 1
    assert kp._proc is not None and kp._proc.poll() is None
    kp.invalidate(RAM_IPA + PAGE, PAGE)  # nothing granted there: nothing to ask
    kp.invalidate(RAM_IPA + 0x10_0000, 0x10_0000)
    assert nothing_sent(child) and kp.counts["revokes"] == 1
    child.sock.send(bytes([ACK]))
    kp.invalidate(0, 1 << 40)  # a range wider than the grants
    assert REVOKE_FMT.unpack(child.recv()) == (REVOKE, 0, 1 << 40)
    assert kp._grants == {} and kp._by_pa == {}
    kp.invalidate(0, 1 << 40)  # nothing granted at all
    assert nothing_sent(child)


def test_a_revoke_ending_where_a_grant_starts_leaves_it(granted: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = granted
    child.sock.send(bytes([ACK]))
    kp.invalidate(RAM_IPA + 2 * PAGE - 8 * PAGE, 8 * PAGE)  # wider than the three grants, up to page 2
    assert REVOKE_FMT.unpack(child.recv())[1:] == (RAM_IPA - 6 * PAGE, 8 * PAGE)
    assert sorted(kp._grants) == [RAM_IPA + 2 * PAGE, RAM_IPA + 3 * PAGE]


@pytest.mark.parametrize("answer", [b"\x01", b""])
def test_a_revoke_answered_otherwise_kills_the_child(granted: tuple[KernelProcess, Child, PhysicalMemory],
                                                     answer: bytes) -> None:
    kp, child, _ = granted
    if answer:
        child.sock.send(answer)
    else:
        child.sock.shutdown(socket.SHUT_WR)  # the child's end closes: recv returns nothing
    kp.invalidate(RAM_IPA, PAGE)
    assert kp.stopped == "the kernel process did not complete a TLB invalidation"
    assert kp._proc is not None and kp._proc.returncode is not None
    assert kp._grants == {}
    kp.invalidate(RAM_IPA + 2 * PAGE, PAGE)  # a dead child is not asked
    child.recv()  # the first REVOKE
    assert nothing_sent(child)


def test_a_revoke_never_answered_times_out(granted: tuple[KernelProcess, Child, PhysicalMemory],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    kp, _, _ = granted
    monkeypatch.setattr(kernel_process, "REVOKE_TIMEOUT", 0.05)
    kp.invalidate(RAM_IPA, PAGE)
    assert kp.stopped == "the kernel process did not complete a TLB invalidation"


def test_a_pas_change_of_a_granted_granule_revokes_it(granted: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, memory = granted
    ram = memory.base + RAM_OFFSET
    memory.set_pas(World.ROOT, ram + PAGE, Pas.REALM)  # page 1 was never granted
    assert nothing_sent(child)
    child.sock.send(bytes([ACK]))
    memory.set_pas(World.ROOT, ram + 3 * PAGE, Pas.REALM)
    assert REVOKE_FMT.unpack(child.recv()) == (REVOKE, RAM_IPA + 3 * PAGE, PAGE)
    assert sorted(kp._grants) == [RAM_IPA, RAM_IPA + 2 * PAGE]
    kp.close()
    memory.set_pas(World.ROOT, ram, Pas.REALM)  # closed: no longer listening
    assert child.recv() == b""  # the channel's end, no REVOKE before it


def test_a_pa_granted_at_two_ipas_stays_until_both_go() -> None:
    memory = PhysicalMemory(size=1 << 20)
    ram = memory.base + RAM_OFFSET
    kp, child = start(memory, ram)
    try:
        kp.translate = lambda ipa, write, fetch: kernel_process.Mapping(ram, World.NON_SECURE)  # type: ignore
        kp._grant(RAM_IPA, True)
        kp._grant(RAM_IPA + 0x10_0000, True)
        assert kp._by_pa == {ram: {RAM_IPA, RAM_IPA + 0x10_0000}}
        assert kp._ungrant(RAM_IPA) is None
        assert kp._ungrant(RAM_IPA + 0x10_0000) == ram and kp._by_pa == {}
        kp._grant(RAM_IPA, True)
        kp._grant(RAM_IPA, False)  # granted again: the old grant goes first
        assert kp._grants == {RAM_IPA: (ram, True)} and kp._by_pa == {ram: {RAM_IPA}}
    finally:
        assert kp._proc is not None and kp._proc.stdout is not None
        kp._proc.stdout.close()
        kp.close()
        child.sock.close()


KEEPER = ("import mmap, sys, time; m = mmap.mmap({fd}, {size}, mmap.MAP_SHARED, mmap.PROT_READ, offset={off}); "
          "print('ready', flush=True); time.sleep(60)")


@pytest.mark.parametrize(("kept", "expected"), [(0, "the kernel process kept a revoked mapping"),
                                                (2 * PAGE, "the kernel process kept a revoked mapping"),
                                                (PAGE, None)])
def test_a_mapping_the_child_kept_is_found_in_its_maps(kept: int, expected: str | None) -> None:
    memory = PhysicalMemory(size=1 << 20)
    off = RAM_OFFSET + kept
    size = PAGE if kept != 2 * PAGE else 3 * PAGE  # a larger mapping covering the revoked page
    if kept == 2 * PAGE:
        off = RAM_OFFSET - PAGE
    argv = [sys.executable, "-c", KEEPER.format(fd=memory.fd, size=size, off=off)]
    kp, child = start(memory, memory.base + RAM_OFFSET, argv=argv, pass_fds=(memory.fd,))
    try:
        kp._grant(RAM_IPA, False)
        child.sock.send(bytes([ACK]))
        kp.invalidate(RAM_IPA, PAGE)
        assert kp.stopped == expected
        assert kp._proc is not None
        assert (kp._proc.returncode is not None) == (expected is not None)
    finally:
        assert kp._proc is not None and kp._proc.stdout is not None
        kp._proc.stdout.close()
        kp.close()
        child.sock.close()


# --- the mmap supervisor, through a real listener ----------------------------------------------------------
def _kernel(sock: socket.socket, memfd: int, root: int) -> None:  # pragma: no cover - the forked child
    f = sc.Filter(sc.SCMP_ACT_ALLOW)
    f.add(sc.SCMP_ACT_NOTIFY, "mmap", sc.Arg(4, sc.SCMP_CMP_EQ, memfd))
    f.add(sc.SCMP_ACT_NOTIFY, "fchdir", sc.Arg(0, sc.SCMP_CMP_EQ, root))
    listener = f.load()
    assert listener is not None
    socket.send_fds(sock, [b"L"], [listener])

    def report(result: int) -> None:
        sock.send(TRAP_FMT.pack(1, SMC, 0, 0, 0, result, *(0,) * 30, 0, 0))

    for ipa, offset in ((RAM_IPA, RAM_OFFSET), (RAM_IPA + 2 * PAGE, RAM_OFFSET)):
        got = kc._mmap(WINDOW + ipa, PAGE, 3, kc.MAP_SHARED | kc.MAP_FIXED, memfd, offset)
        report(ctypes.get_errno() if got == kc.MAP_FAILED else 0)
    try:
        os.fchdir(root)
        report(0)
    except OSError as exc:
        report(exc.errno or 0)


def test_the_childs_mmap_is_judged_as_it_comes() -> None:
    memory = PhysicalMemory(size=1 << 20)
    kp = KernelProcess(memory, lambda ipa, write, fetch: None, RAM_IPA, [], "max", 4 * PAGE)
    parent, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    root = os.open("/", os.O_RDONLY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            parent.close()
            _kernel(theirs, memory.fd, root)
        except BaseException:
            code = 70
        os._exit(code)
    theirs.close()
    try:
        assert select.select([parent], [], [], 30)[0], "the child sent no listener"
        _, fds, _, _ = socket.recv_fds(parent, 16, 1)
        assert len(fds) == 1
        kp._listener = fds[0]
        kp._sock = parent
        kp._child_memfd, kp._child_memfd_ro = memory.fd, root + 1000
        kp._poller = select.poll()
        kp._poller.register(parent, select.POLLIN)
        kp._poller.register(kp._listener, select.POLLIN)
        ram = memory.base + RAM_OFFSET
        kp.translate = lambda ipa, write, fetch: (  # type: ignore[assignment]
            kernel_process.Mapping(ram + ipa - RAM_IPA, World.NON_SECURE) if ipa < RAM_IPA + PAGE else None)
        kp._grant(RAM_IPA, True)
        kp._granted = True  # a GRANT went out: its mmap comes next
        first = kp._serve()
        assert isinstance(first, SmcTrap) and first.regs[0] == 0
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
        second = kp._serve()  # an mmap of an offset granted elsewhere: judged when the channel is quiet
        assert isinstance(second, SmcTrap) and second.regs[0] == errno.EACCES
        third = kp._serve()  # a notification of another call
        assert isinstance(third, SmcTrap) and third.regs[0] == errno.EPERM
        assert kp.counts["mmaps"] == 2
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(root)
        kp.close()
        parent.close()


def _listener_of_a_child(stay: bool) -> tuple[int, int, int]:
    """(listener, pid, write end of a pipe the child waits on): a forked child with a filter
    that notifies, which exits at once or, if `stay`, when the pipe closes."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            a.close()
            os.close(w)
            f = sc.Filter(sc.SCMP_ACT_ALLOW)
            f.add(sc.SCMP_ACT_NOTIFY, "fchdir", sc.Arg(0, sc.SCMP_CMP_EQ, 12345))
            listener = f.load()
            assert listener is not None
            socket.send_fds(b, [b"L"], [listener])
            if stay:
                with contextlib.suppress(OSError):
                    os.fchdir(12345)  # a notification for the supervisor to answer
                os.read(r, 1)
        except BaseException:
            code = 70
        os._exit(code)
    b.close()
    os.close(r)
    try:
        assert select.select([a], [], [], 30)[0], "the child sent no listener"
        _, fds, _, _ = socket.recv_fds(a, 16, 1)
    finally:
        a.close()
    assert len(fds) == 1
    return fds[0], pid, w


def finishes(call: Callable[[], object], seconds: float = 5.0) -> bool:
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_the_listener_of_an_ended_child_is_not_judged_for_ever(granted: tuple[KernelProcess, Child, PhysicalMemory],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    kp, child, _ = granted
    listener, pid, w = _listener_of_a_child(stay=False)
    os.waitpid(pid, 0)
    os.close(w)
    os.close(kp._listener)
    kp._listener = listener  # readable for ever, nothing to receive
    assert select.select([listener], [], [], 0)[0]
    assert kp._listener_gone() and not kp._judge()
    assert finishes(kp._judge_pending)
    kp._poller = select.poll()
    assert kp._sock is not None
    kp._poller.register(listener, select.POLLIN)  # the listener alone: the channel is asked only then
    child.trap(1)
    got: list[bytes] = []
    assert finishes(lambda: got.append(kp._next_with_listener()))
    assert got == [TRAP_FMT.pack(1, 1, 0, 0, 0, *(0,) * 31, 0, 0)]
    kp._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
    assert finishes(lambda: got.append(kp._next_with_listener()))  # nothing on the channel either
    assert got[1] == b""
    monkeypatch.setattr(kernel_process, "REVOKE_TIMEOUT", 30.0)
    assert finishes(lambda: kp.invalidate(RAM_IPA, PAGE))  # not waiting out the timeout
    assert kp.stopped == "the kernel process did not complete a TLB invalidation"


def test_the_listener_of_a_live_child_is_not_gone() -> None:
    listener, pid, w = _listener_of_a_child(stay=True)
    memory = PhysicalMemory(size=1 << 20)
    kp = KernelProcess(memory, lambda ipa, write, fetch: None, RAM_IPA, [], "max", 4 * PAGE)
    try:
        kp._listener = listener
        assert select.select([listener], [], [], 30)[0]  # the child's call waits for an answer
        assert not kp._listener_gone()
        assert kp._judge()  # not an mmap: EPERM
        assert not kp._listener_gone()
        os.close(w)
        os.waitpid(pid, 0)
        assert kp._listener_gone()
    finally:
        kp.close()
