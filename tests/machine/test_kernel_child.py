"""The kernel process's side of the channel (machine/kernel_child.py), run in this process over
a socket pair: the engine's answers are queued on the peer end before the child side asks, and
what it sent is read back. The layouts are the channel's documented ones (kernel_channel.py's
comments), spelled out here: msg, kind, flags, size, pc, x0..x30, ipa, value for TRAP, and so on."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from unirealm.arch.esr import AccessSyndrome
from unirealm.machine import kernel_child as kc
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.kernel_channel import WINDOW, WINDOW_SIZE
from unirealm.machine.pykernel import GuestFault
from unirealm.machine.vcpu import CpuErrorTrap, DataAbortTrap, HvcTrap, IrqTrap, SmcTrap, WfxTrap

from .channel_layout import (
    ACK,
    DATA_ABORT,
    DENY,
    EXCEPTION,
    EXIT_LINE,
    F_PROBE,
    F_QUERY,
    F_SF,
    F_WRITE,
    FIQ_LINE,
    GRANT,
    GRANT_FMT,
    HOST_LINE,
    HVC,
    IRQ,
    IRQ_LINE,
    NO_IAR1,
    RESUME,
    RESUME_FMT,
    REVOKE,
    REVOKE_FMT,
    SEA,
    SETUP,
    SETUP_FMT,
    SMC,
    SYSREG,
    SYSREG_DONE,
    SYSREG_DONE_FMT,
    TRAP,
    TRAP_FMT,
    UNDEF,
    WFI,
)

PAGE = 4096
RAM = 0x4000_0000  # the test's IPAs: mapped at WINDOW + IPA in this process


class Peer:
    """The engine's end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def resume(self, pc: int = 0, regs: tuple[int, ...] = (0,) * 31, fault: int = 0, lines: int = 0,
               address: int = 0, esr: int = 0) -> None:
        self.sock.send(RESUME_FMT.pack(RESUME, fault, lines, NO_IAR1, pc, *regs, address, esr))

    def grant(self, ipa: int, count: int, offset: int, writable: bool) -> None:
        self.sock.send(GRANT_FMT.pack(GRANT, writable, count, ipa, offset))

    def deny(self, why: int = 1) -> None:
        self.sock.send(bytes([DENY, why]))

    def trap(self) -> tuple[int, ...]:
        data = self.sock.recv(1024)
        assert len(data) == TRAP_FMT.size
        return TRAP_FMT.unpack(data)

    def nothing_sent(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(1024)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


class Space:
    """An EL0 CPU's view, as far as a revocation goes."""

    def __init__(self) -> None:
        self.dropped: list[tuple[int, int]] = []

    def drop_ipa(self, ipa: int, size: int) -> None:
        self.dropped.append((ipa, size))


def _window_is_free() -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo < WINDOW + WINDOW_SIZE and hi > WINDOW:
                return False
    return True


@pytest.fixture
def pair() -> Iterator[tuple[kc.ChildEngine, Peer, int]]:
    assert _window_is_free()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, 16 * PAGE)
    os.pwrite(memfd, bytes(range(256)) * (16 * PAGE // 256), 0)
    ro = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)
    engine = kc.ChildEngine(mine, memfd, ro, "max")
    try:
        yield engine, Peer(theirs), memfd
    finally:
        engine._revoke(0, WINDOW_SIZE)
        HOST_IRQ.clear()
        for fd in (memfd, ro):
            os.close(fd)
        mine.close()
        theirs.close()
    assert _window_is_free()


def regs_of(base: int) -> tuple[int, ...]:
    return tuple(base + i for i in range(31))


# --- traps and resumes ----------------------------------------------------------------------------
def test_a_trap_carries_the_register_file_and_the_resume_replaces_it(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc, engine.regs[:] = 0x8000_1000, list(regs_of(100))
    peer.resume(0x8000_2000, regs_of(500), lines=HOST_LINE | IRQ_LINE)
    engine.trap_and_wait(SmcTrap(engine.pc))
    sent = peer.trap()
    assert sent[:5] == (TRAP, SMC, 0, 0, 0x8000_1000)
    assert sent[5:36] == regs_of(100) and sent[36:] == (0, 0)
    assert engine.pc == 0x8000_2000 and tuple(engine.regs) == regs_of(500)
    assert HOST_IRQ.pending and engine.signalled == 1  # PENDING_IRQ
    peer.resume(0x8000_3000, lines=FIQ_LINE | EXIT_LINE)  # the exit bit is not an input
    engine.trap_and_wait(HvcTrap(engine.pc))
    assert peer.trap()[1] == HVC
    assert not HOST_IRQ.pending and engine.signalled == 2  # PENDING_FIQ


@pytest.mark.parametrize(("trap", "kind"), [(WfxTrap(4), WFI), (IrqTrap(4), IRQ), (HvcTrap(4), HVC)])
def test_each_trap_has_its_kind(pair: tuple[kc.ChildEngine, Peer, int], trap: object, kind: int) -> None:
    engine, peer, _ = pair
    peer.resume(8)
    engine.trap_and_wait(trap)  # type: ignore[arg-type]
    assert peer.trap()[1:4] == (kind, 0, 0)
    assert engine.pc == 8


@pytest.mark.parametrize(("write", "size", "sf", "flags"), [(True, 8, True, F_WRITE | F_SF), (False, 4, False, 0),
                                                            (True, 1, False, F_WRITE), (False, 8, True, F_SF)])
def test_a_data_abort_carries_direction_size_address_and_value(pair: tuple[kc.ChildEngine, Peer, int], write: bool,
                                                               size: int, sf: bool, flags: int) -> None:
    engine, peer, _ = pair
    peer.resume(0)
    syndrome = AccessSyndrome(write, size, 3, sixty_four=sf)
    engine.trap_and_wait(DataAbortTrap(0x10, 0x900_0008, write, size, syndrome, 0xAB if write else 0))
    sent = peer.trap()
    assert sent[1:4] == (DATA_ABORT, flags, size)
    assert sent[36:] == (0x900_0008, 0xAB if write else 0)


def test_a_trap_the_channel_cannot_carry_is_a_type_error(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    with pytest.raises(TypeError, match="no channel encoding for CpuErrorTrap"):
        engine.trap_and_wait(CpuErrorTrap(0, "x"))
    assert peer.nothing_sent()


def test_a_data_abort_without_syndrome_is_not_sixty_four(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.resume(0)
    engine.trap_and_wait(DataAbortTrap(0x10, 0x900_0000, True, 8, None, 1))
    assert peer.trap()[2] == F_WRITE


@pytest.mark.parametrize(("fault", "esr", "kind"), [(SEA, 0, "synchronous external abort"),
                                                    (UNDEF, 0, "undefined instruction"),
                                                    (EXCEPTION, 0x9600_0045, "exception (ESR 0x96000045)")])
def test_a_resume_with_a_fault_raises_it_in_the_kernel(pair: tuple[kc.ChildEngine, Peer, int], fault: int, esr: int,
                                                       kind: str) -> None:
    engine, peer, _ = pair
    peer.resume(0x8000_0040, fault=fault, address=0x1234_5000, esr=esr)
    with pytest.raises(GuestFault) as exc:
        engine.trap_and_wait(SmcTrap(0))
    assert exc.value.kind == kind and exc.value.address == 0x1234_5000
    peer.trap()
    peer.resume(0)  # the fault was taken once
    engine.trap_and_wait(SmcTrap(0))


def test_the_first_resume_sets_pc_and_registers(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.resume(0x8008_0000, regs_of(7))
    engine.wait_first_resume()
    assert engine.pc == 0x8008_0000 and tuple(engine.regs) == regs_of(7)
    assert peer.nothing_sent()


def test_anything_but_a_resume_or_a_closed_channel_ends_the_kernel(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.sock.send(bytes(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, 0, NO_IAR1, 5)))
    with pytest.raises(kc.ChannelClosed):
        engine.trap_and_wait(SmcTrap(0))
    peer.trap()
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(kc.ChannelClosed):
        engine.wait_first_resume()


# --- system registers ------------------------------------------------------------------------------
def test_an_mrs_is_a_sysreg_trap_answered_without_a_resume(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc = 0x40
    peer.sock.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, IRQ_LINE | FIQ_LINE, NO_IAR1, 0xFEED_0000_0001))
    assert engine.sysreg(0xC660, None) == 0xFEED_0000_0001
    assert peer.trap()[1:4] == (SYSREG, 0, 8)
    assert engine.signalled == 3
    peer.sock.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 0, 0, NO_IAR1, 0))
    assert engine.sysreg(0xC661, None) is None  # UNDEFINED
    sent = peer.trap()
    assert sent[36:] == (0xC661, 0) and engine.signalled == 0


def test_an_msr_carries_its_value_and_an_exit_line_makes_an_irq_trap(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc = 0x80
    peer.sock.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, EXIT_LINE | IRQ_LINE, NO_IAR1, 0))
    peer.resume(0x80, lines=IRQ_LINE)
    assert engine.sysreg(0xDF19, 0x1234) == 0
    sent = peer.trap()
    assert sent[1:4] == (SYSREG, F_WRITE, 8) and sent[36:] == (0xDF19, 0x1234)
    irq = peer.trap()
    assert irq[1] == IRQ and irq[4] == 0x80
    assert engine.signalled == 1
    peer.sock.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, 0, NO_IAR1, 0))
    engine.sysreg(0xDF19, 0)  # an MSR of zero is still a write
    assert peer.trap()[2] == F_WRITE and peer.nothing_sent()
    peer.resume(0)
    with pytest.raises(kc.ChannelClosed):
        engine.sysreg(0xC660, None)


# --- stage 2 -----------------------------------------------------------------------------------------
def test_a_miss_asks_and_a_grant_maps_the_memory_file(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, memfd = pair
    engine.pc = 0x700
    peer.grant(RAM, 2, 4 * PAGE, True)
    accessor, addr = engine.resolve(RAM + PAGE + 0x10, True)
    sent = peer.trap()
    assert sent[1:5] == (DATA_ABORT, F_PROBE | F_WRITE | F_SF, 8, 0x700) and sent[36] == RAM + PAGE
    assert addr == WINDOW + RAM + PAGE + 0x10
    assert accessor.read(WINDOW + RAM, 4) == bytes(range(4))  # the file's page 4 at RAM
    accessor.write(addr, b"\xAA\xBB")
    assert os.pread(memfd, 2, 5 * PAGE + 0x10) == b"\xAA\xBB"
    assert engine.mapped == {RAM: True, RAM + PAGE: True}
    assert engine.resolve(RAM, True) == (kc.WINDOW_ACCESSOR, WINDOW + RAM) and peer.nothing_sent()
    assert engine.peek(RAM + PAGE) == (WINDOW + RAM + PAGE, True)
    assert engine.peek(RAM + 2 * PAGE) is None and peer.nothing_sent()


def test_a_read_only_grant_maps_the_twin_and_a_write_asks_again(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.grant(RAM, 1, 0, False)
    assert engine.resolve(RAM + 8, False)[1] == WINDOW + RAM + 8
    assert peer.trap()[2] == F_PROBE | F_SF
    assert engine.mapped == {RAM: False}
    assert engine.probe(RAM) == (WINDOW + RAM, False) and peer.nothing_sent()
    with open("/proc/self/maps") as maps:
        line = next(x for x in maps if x.startswith(f"{WINDOW + RAM:x}-"))
    assert line.split()[1].startswith("r--s")
    peer.deny()
    with pytest.raises(GuestFault) as exc:
        engine.resolve(RAM + 8, True)
    assert exc.value.kind == "granule protection fault" and exc.value.address == RAM + 8
    assert peer.trap()[2] == F_PROBE | F_WRITE | F_SF


def test_a_miss_that_traps_is_asked_again_from_the_same_pc(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc = 0x500
    peer.resume(0x504)  # the host answered the trap (and moved the PC)
    peer.grant(RAM, 1, 0, True)
    assert engine.resolve(RAM, False)[1] == WINDOW + RAM
    assert peer.trap()[4] == 0x500 and peer.trap()[4] == 0x500
    assert engine.pc == 0x500


def test_a_miss_answered_with_a_fault_raises_it(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.resume(0, fault=SEA, address=RAM)
    with pytest.raises(GuestFault) as exc:
        engine.resolve(RAM, False)
    assert exc.value.kind == "synchronous external abort"


def test_a_probe_is_a_query_and_a_denied_probe_is_none(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.deny(0)
    assert engine.probe(RAM) is None
    assert peer.trap()[1:4] == (DATA_ABORT, F_QUERY | F_SF, 8)
    peer.resume(0)
    assert engine.probe(RAM) is None
    peer.trap()
    peer.grant(RAM + PAGE, 1, 0, True)  # a grant of another page: this one still unmapped
    assert engine.probe(RAM) is None
    peer.trap()
    peer.grant(RAM, 1, PAGE, True)
    assert engine.probe(RAM) == (WINDOW + RAM, True)


def test_pages_outside_the_window_are_refused_without_asking(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    with pytest.raises(GuestFault):
        engine.resolve(WINDOW_SIZE, False)
    assert engine.probe(WINDOW_SIZE + PAGE) is None
    assert peer.nothing_sent()


def test_a_grant_outside_the_window_or_not_mappable_faults(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.grant(WINDOW_SIZE - PAGE, 2, 0, True)  # runs past the window's end
    with pytest.raises(GuestFault) as exc:
        engine.resolve(WINDOW_SIZE - PAGE, False)
    assert exc.value.kind == "granule protection fault"
    peer.trap()
    peer.grant(RAM, 1, 100, True)  # an offset mmap refuses
    with pytest.raises(GuestFault) as exc:
        engine.resolve(RAM, False)
    assert exc.value.kind == "mapping refused (EINVAL)" and exc.value.address == RAM
    assert engine.mapped == {}


def test_a_grant_of_the_last_window_page_maps(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    last = WINDOW_SIZE - PAGE
    peer.grant(last, 1, 0, False)
    assert engine.resolve(last, False)[1] == WINDOW + last


def test_a_grant_of_the_first_window_page_maps(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    peer.grant(0, 1, 0, False)  # IPA 0 is inside the window: asked, not refused
    assert engine.resolve(8, False)[1] == WINDOW + 8
    assert peer.trap()[36] == 0 and engine.mapped == {0: False}


# --- MMIO ---------------------------------------------------------------------------------------------
def test_mmio_on_granted_memory_is_a_plain_access(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, memfd = pair
    peer.grant(RAM, 1, 0, True)
    assert engine.mmio(RAM + 0x10, 4, None) == int.from_bytes(bytes(range(0x10, 0x14)), "little")
    peer.trap()
    assert engine.mmio(RAM + 0x20, 2, 0xBEEF) == 0 and peer.nothing_sent()
    assert os.pread(memfd, 2, 0x20) == b"\xEF\xBE"


def test_mmio_that_traps_returns_what_the_host_put_in_x0(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc = 0x900
    regs = (0x1122_3344_5566_7788,) + (0,) * 30
    peer.resume(0x904, regs)  # emulated: the host stepped the PC
    assert engine.mmio(0x900_0004, 2, None) == 0x7788
    sent = peer.trap()
    assert sent[1:4] == (DATA_ABORT, F_PROBE, 2) and sent[36:] == (0x900_0004, 0)
    assert engine.pc == 0x900
    peer.resume(0x904, regs)
    assert engine.mmio(0x900_0008, 8, 0x55) == 0
    sent = peer.trap()
    assert sent[1:4] == (DATA_ABORT, F_PROBE | F_WRITE | F_SF, 8) and sent[36:] == (0x900_0008, 0x55)


def test_mmio_the_host_did_not_emulate_is_tried_again(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    engine.pc = 0x900
    peer.resume(0x900)  # the PC unchanged: the host mapped something
    peer.grant(RAM, 1, 0, False)
    assert engine.mmio(RAM + 1, 1, None) == 1
    assert peer.trap()[36] == RAM + 1 and peer.trap()[36] == RAM + 1
    peer.deny()  # a write to the read-only page: the GPT refuses it
    with pytest.raises(GuestFault):
        engine.mmio(RAM + 1, 1, 7)


# --- revocation ---------------------------------------------------------------------------------------
def mapped_with_a_space(engine: kc.ChildEngine, peer: Peer, pages: int) -> Space:
    """`pages` pages mapped at RAM, and an EL0 CPU's space that sees revocations."""
    space = Space()
    engine.cpu._spaces.append(space)  # type: ignore[arg-type]
    peer.grant(RAM, pages, 0, True)
    engine.resolve(RAM, False)
    peer.trap()
    return space


def test_a_revoke_is_carried_out_and_acknowledged_while_waiting(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    space = mapped_with_a_space(engine, peer, 3)
    peer.sock.send(REVOKE_FMT.pack(REVOKE, RAM + PAGE + 0x80, PAGE))
    peer.resume(0)
    engine.trap_and_wait(SmcTrap(0))
    assert peer.trap()[1] == SMC  # the trap, then the revocation's ACK while it waits
    assert peer.sock.recv(64) == bytes([ACK])
    assert sorted(engine.mapped) == [RAM]  # every page the range touches goes
    assert space.dropped == [(RAM + PAGE, PAGE + 0x80)]
    with open("/proc/self/maps") as maps:
        text = maps.read()
    assert f"{WINDOW + RAM:x}-{WINDOW + RAM + PAGE:x} " in text
    assert f"{WINDOW + RAM + PAGE:x}-" not in text and f"{WINDOW + RAM + 2 * PAGE:x}-" not in text


def test_a_revoke_of_nothing_mapped_touches_nothing(pair: tuple[kc.ChildEngine, Peer, int]) -> None:
    engine, peer, _ = pair
    space = mapped_with_a_space(engine, peer, 1)
    peer.sock.send(REVOKE_FMT.pack(REVOKE, RAM + PAGE, 8 * PAGE))
    peer.resume(0)
    engine.trap_and_wait(SmcTrap(0))
    assert peer.trap()[1] == SMC
    assert peer.sock.recv(64) == bytes([ACK])
    assert space.dropped == [] and engine.mapped == {RAM: True}
    peer.grant(RAM + PAGE, 1, 0, True)
    engine.resolve(RAM + PAGE, False)
    peer.trap()
    engine._revoke(RAM - 8 * PAGE, 9 * PAGE)  # wider than what is mapped: ends where RAM + PAGE starts
    assert engine.mapped == {RAM + PAGE: True}
    engine._revoke(0, WINDOW_SIZE)  # the whole window: the mapped pages, not every page of it
    assert space.dropped == [(RAM - 8 * PAGE, 9 * PAGE), (0, WINDOW_SIZE)] and engine.mapped == {}


# --- setup, descriptors, the interrupt watchdog -----------------------------------------------------------------
def test_setup_hands_over_three_descriptors_the_limit_and_the_model() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = [os.eventfd(0) for _ in range(3)]
    try:
        socket.send_fds(a, [SETUP_FMT.pack(SETUP, 0x4000_0000, b"cortex-a710")], fds)
        got = kc._receive_setup(b)
        assert got is not None
        assert got[3:] == (0x4000_0000, "cortex-a710")
        for mine, theirs in zip(fds, got[:3], strict=True):
            assert os.fstat(mine).st_ino == os.fstat(theirs).st_ino
            os.close(theirs)
        # two descriptors, or a message of another kind: refused, the descriptors closed
        for msg, count in ((SETUP_FMT.pack(SETUP, 1, b"max"), 2), (SETUP_FMT.pack(RESUME, 1, b"max"), 3),
                           (SETUP_FMT.pack(SETUP, 1, b"max")[:-1], 3)):
            before = set(os.listdir("/proc/self/fd"))
            socket.send_fds(a, [msg], fds[:count])
            assert kc._receive_setup(b) is None
            assert set(os.listdir("/proc/self/fd")) == before
        a.close()
        assert kc._receive_setup(b) is None  # the engine went away first
        b.settimeout(0.01)
        c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        d.settimeout(0.01)
        assert kc._receive_setup(d) is None  # nothing comes (an error on the channel)
        c.close()
        d.close()
    finally:
        for fd in fds:
            os.close(fd)
        b.close()


def test_every_other_descriptor_is_closed(tmp_path: Path) -> None:
    # the descriptors a listing names, here a directory of this process's own descriptors' numbers
    fds = [os.open("/", os.O_RDONLY) for _ in range(3)]
    unused = os.open("/", os.O_RDONLY)
    os.close(unused)  # named but no longer open: its EBADF is no error
    try:
        for fd in (*fds, unused):
            (tmp_path / str(fd)).touch()
        kc._close_other_fds({fds[1]}, str(tmp_path))
        os.fstat(fds[1])
        for fd in (fds[0], fds[2]):
            with pytest.raises(OSError) as exc:
                os.fstat(fd)
            assert exc.value.errno == errno.EBADF
    finally:
        os.close(fds[1])
    # by default, every descriptor of the process (/proc/self/fd), in a child
    r, w = os.pipe()
    extra = [os.open("/", os.O_RDONLY) for _ in range(3)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            kc._close_other_fds({w, extra[1]})
            os.write(w, " ".join(sorted(os.listdir("/proc/self/fd"), key=int)).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        report = os.read(r, 4096).decode().split()
        os.waitpid(pid, 0)
    finally:
        os.close(r)
        for fd in extra:
            os.close(fd)
    # what is left: the two kept, and the descriptor listdir had open on /proc/self/fd
    assert str(w) in report and str(extra[1]) in report
    assert str(extra[0]) not in report and str(extra[2]) not in report
    assert len(report) == 3


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmSize:")).split()[1]) << 10


def test_the_warm_up_runs_unicorn_once_within_a_small_address_space() -> None:
    kc._warm_up()  # here: a scratch engine made, run and dropped
    # under a limit 256 MiB above what the process has: Unicorn's default translation
    # buffer (1 GiB) would not fit, so the scratch engine must ask for a small one
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            limit = _vm_size() + (256 << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            kc._warm_up()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_interrupt_watchdog_raises_the_host_interrupt_and_ends_with_its_descriptor() -> None:
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    HOST_IRQ.clear()
    try:
        os.eventfd_write(fd, 1)
        kc._watch_interrupts(fd)  # reads the 1, raises, then EAGAIN: returns
        assert HOST_IRQ.pending
        HOST_IRQ.clear()
        kc._watch_interrupts(fd)  # nothing written
        assert not HOST_IRQ.pending
    finally:
        HOST_IRQ.clear()
        os.close(fd)


def test_window_memory_is_read_and_written_by_address() -> None:
    buf = mmap.mmap(-1, PAGE)
    try:
        addr = ctypes_address(buf)
        kc.WINDOW_ACCESSOR.write(addr + 4, bytearray(b"abc"))
        kc.WindowAccessor.write(addr + 7, memoryview(b"de"))
        assert kc.WINDOW_ACCESSOR.read(addr + 4, 5) == b"abcde" == buf[4:9]
    finally:
        with contextlib.suppress(BufferError):
            buf.close()


def ctypes_address(buf: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_the_mmap_binding_reports_failure_as_map_failed() -> None:
    got = kc._mmap(0, PAGE, kc.PROT_READ, kc.MAP_SHARED, -1, 0)  # shared, no file, not anonymous
    assert got == kc.MAP_FAILED
    assert kc.ctypes.get_errno() == errno.EBADF
