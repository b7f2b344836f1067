"""The engine side of the channel (machine/kernel_process.py) driven by a stand-in kernel
process: this test holds the child's end of the socket pair and writes its messages in the
documented layouts (kernel_channel.py's comments), and a plain process stands in for the child
where the engine looks at its status or its /proc maps."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.kernel_process import KernelProcess, KernelProcessStopped
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import DataAbortTrap, HvcTrap, IrqTrap, Mapping, SmcTrap, WfxTrap

from .channel_layout import (
    ACK,
    DATA_ABORT,
    DENY,
    F_PROBE,
    F_QUERY,
    F_SF,
    F_WRITE,
    GRANT,
    GRANT_FMT,
    HVC,
    IRQ,
    NO_IAR1,
    RESUME,
    RESUME_FMT,
    SMC,
    STOPPED,
    SYSREG,
    SYSREG_DONE,
    SYSREG_DONE_FMT,
    TRAP,
    TRAP_FMT,
    WFI,
)

PAGE = GRANULE_SIZE
RAM_IPA = 0x8000_0000


@dataclass
class Lines:
    """InterruptLines: one register served, pending and a deadline as set."""

    signalled: int = 0
    deadline: float | None = None
    value: int = 0
    writes: list[tuple[int, int]] = field(default_factory=list)

    def pending(self) -> int:
        return self.signalled

    def next_deadline(self) -> float | None:
        return self.deadline

    def read_sysreg(self, key: int) -> int | None:
        return self.value if key == 0xC660 else None

    def write_sysreg(self, key: int, value: int) -> bool:
        self.writes.append((key, value))
        return key == 0xC660

    def iar1_now(self) -> int | None:
        return None  # nothing may be posted: every access is a round trip

    def acknowledge_foreseen(self, intid: int) -> bool:
        return False


class Child:
    """The kernel process's end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.iar1 = -1

    def trap(self, kind: int, flags: int = 0, size: int = 0, pc: int = 0, regs: tuple[int, ...] = (0,) * 31,
             ipa: int = 0, value: int = 0) -> None:
        self.sock.send(TRAP_FMT.pack(TRAP, kind, flags, size, pc, *regs, ipa, value))

    def recv(self) -> bytes:
        return self.sock.recv(1024)

    def resume(self) -> tuple[int, ...]:
        """The RESUME's fields but its iar1 (kept in `iar1`)."""
        data = self.recv()
        assert len(data) == RESUME_FMT.size
        msg, fault, lines, self.iar1, *rest = RESUME_FMT.unpack(data)
        return (msg, fault, lines, *rest)


def start(memory: PhysicalMemory, ram_pa: int, pages: int = 4, argv: list[str] | None = None,
          pass_fds: tuple[int, ...] = ()) -> tuple[KernelProcess, Child]:
    def translate(ipa: int, write: bool, fetch: bool) -> Mapping | None:
        if RAM_IPA <= ipa < RAM_IPA + pages * PAGE:
            return Mapping(ram_pa + ipa - RAM_IPA, World.NON_SECURE, writable=ipa != RAM_IPA + PAGE)
        return None

    kp = KernelProcess(memory, translate, RAM_IPA, list(range(40, 45)), "max", pages * PAGE)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(argv or ["sleep", "60"], stdout=subprocess.PIPE, pass_fds=pass_fds)
    if argv:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    kp._proc, kp._sock = proc, parent
    kp._listener = os.eventfd(0)  # no notification ever comes
    kp._child_memfd, kp._child_memfd_ro = 7, 8
    import select

    kp._poller = select.poll()
    kp._poller.register(parent, select.POLLIN)
    kp._poller.register(kp._listener, select.POLLIN)
    return kp, Child(child)


@pytest.fixture
def machine() -> Iterator[tuple[KernelProcess, Child, PhysicalMemory]]:
    memory = PhysicalMemory(size=1 << 20)
    kp, child = start(memory, memory.base + 0x1_0000)
    try:
        yield kp, child, memory
    finally:
        assert kp._proc is not None
        proc = kp._proc
        kp.close()
        child.sock.close()
        if proc.stdout is not None:
            proc.stdout.close()
        HOST_IRQ.clear()


def test_run_resumes_with_the_register_file_and_returns_the_next_trap(
        machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    regs = tuple(range(100, 131))
    child.trap(SMC, pc=0x8000_0100, regs=regs)
    trap = kp.run()
    assert isinstance(trap, SmcTrap) and trap.pc == 0x8000_0100 and trap.regs == list(regs[:18])
    assert kp.pc == 0x8000_0100 and kp.regs == list(regs)
    sent = child.resume()
    assert sent[:4] == (RESUME, 0, 0, RAM_IPA)
    assert sent[4:35] == (40, 41, 42, 43, 44) + (0,) * 26 and sent[35:] == (0, 0)
    assert kp.counts["traps"] == 1


@pytest.mark.parametrize(("kind", "cls"), [(HVC, HvcTrap), (WFI, WfxTrap), (IRQ, IrqTrap)])
def test_each_trap_kind_becomes_its_trap(machine: tuple[KernelProcess, Child, PhysicalMemory], kind: int,
                                         cls: type) -> None:
    kp, child, _ = machine
    child.trap(kind, pc=0x44, regs=tuple(range(31)))
    trap = kp.run()
    assert type(trap) is cls and trap.pc == 0x44
    if isinstance(trap, HvcTrap):
        assert trap.regs == list(range(18))
    if isinstance(trap, WfxTrap):
        assert not trap.is_wfe


def test_a_resume_carries_the_fault_injected_once(machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    for inject, expected in ((lambda: kp.inject_sea(0x1234), (1, 0x1234, 0)),
                             (kp.inject_undef, (2, RAM_IPA, 0)),
                             (lambda: kp.take_exception(0x9600_0045, 0x5678), (3, 0x5678, 0x9600_0045))):
        inject()
        child.trap(WFI, pc=RAM_IPA)
        kp.run()
        sent = child.resume()
        assert (sent[1], *sent[35:]) == expected
    child.trap(WFI, pc=RAM_IPA)
    kp.run()
    sent = child.resume()
    assert (sent[1], *sent[35:]) == (0, 0, 0)


def test_the_resume_line_byte_has_the_host_interrupt_and_the_inputs(
        machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    kp.interrupts = Lines(signalled=3)
    HOST_IRQ.pending = True
    child.trap(WFI)
    kp.run()
    assert child.resume()[2] == 1 | 3 << 1
    HOST_IRQ.clear()
    kp.interrupts = Lines(signalled=2)
    child.trap(WFI)
    kp.run()
    assert child.resume()[2] == 2 << 1


@pytest.mark.parametrize(("flags", "size", "write", "sf"), [(0, 4, False, False), (F_WRITE | F_SF, 8, True, True),
                                                            (F_WRITE, 1, True, False), (F_SF, 2, False, True)])
def test_an_mmio_abort_is_a_data_abort_trap(machine: tuple[KernelProcess, Child, PhysicalMemory], flags: int,
                                            size: int, write: bool, sf: bool) -> None:
    kp, child, _ = machine
    child.trap(DATA_ABORT, flags, size, pc=0x50, ipa=0x900_0010, value=0xAB)
    trap = kp.run()
    assert isinstance(trap, DataAbortTrap)
    assert (trap.pc, trap.ipa, trap.is_write, trap.size) == (0x50, 0x900_0010, write, size)
    assert trap.value == (0xAB if write else 0)
    assert trap.syndrome is not None
    assert (trap.syndrome.is_write, trap.syndrome.size, trap.syndrome.sixty_four) == (write, size, sf)


def test_a_sysreg_trap_is_served_by_the_lines_inside_run(machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    lines = Lines(signalled=1, value=0x1_0000_0007)
    kp.interrupts = lines
    child.trap(SYSREG, 0, 8, ipa=0xC660)  # MRS, served
    child.trap(SYSREG, F_WRITE, 8, ipa=0xC660, value=0x55)  # MSR, served
    child.trap(SYSREG, 0, 8, ipa=0xC661, value=0x99)  # MRS, not served
    child.trap(SYSREG, F_WRITE, 8, ipa=0xC661, value=0x66)  # MSR, not served
    child.trap(WFI, pc=0x60)
    assert isinstance(kp.run(), WfxTrap)
    child.resume()
    answers = [SYSREG_DONE_FMT.unpack(child.recv()) for _ in range(4)]
    assert answers == [(SYSREG_DONE, 1, 2, NO_IAR1, 0x1_0000_0007), (SYSREG_DONE, 1, 2, NO_IAR1, 0),
                       (SYSREG_DONE, 0, 2, NO_IAR1, 0), (SYSREG_DONE, 0, 2, NO_IAR1, 0)]
    assert lines.writes == [(0xC660, 0x55), (0xC661, 0x66)]
    assert kp.counts["sysregs"] == 4 and kp.counts["traps"] == 1


def test_a_sysreg_answer_says_exit_once_a_deadline_has_passed(
        machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    answers = []
    for deadline in (time.monotonic() - 1, time.monotonic() + 60, None):
        kp.interrupts = Lines(deadline=deadline)
        child.trap(SYSREG, 0, 8, ipa=0xC660)
        child.trap(IRQ)
        kp.run()
        child.resume()
        answers.append(SYSREG_DONE_FMT.unpack(child.recv())[2])
    assert answers == [8, 0, 0]
    kp.interrupts = None
    child.trap(SYSREG, 0, 8, ipa=0xC660)  # no lines: UNDEFINED
    child.trap(IRQ)
    kp.run()
    child.resume()
    assert SYSREG_DONE_FMT.unpack(child.recv()) == (SYSREG_DONE, 0, 0, NO_IAR1, 0)


def test_a_stage_two_miss_is_granted_a_run_of_contiguous_pages(
        machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, memory = machine
    child.trap(DATA_ABORT, F_PROBE | F_SF, 8, ipa=RAM_IPA + 2 * PAGE + 0x18)
    child.trap(DATA_ABORT, F_PROBE, 8, ipa=RAM_IPA + 0x10)  # page 0: page 1 is read-only, the run ends
    child.trap(DATA_ABORT, F_PROBE | F_WRITE, 4, ipa=RAM_IPA + PAGE)  # a write to the read-only page: MMIO
    trap = kp.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == RAM_IPA + PAGE and trap.is_write and trap.size == 4
    assert child.resume()[0] == RESUME
    grants = [GRANT_FMT.unpack(child.recv()) for _ in range(2)]
    ram_off = memory.offset(memory.base + 0x1_0000)
    assert grants[0] == (GRANT, 1, 2, RAM_IPA + 2 * PAGE, ram_off + 2 * PAGE)
    assert grants[1] == (GRANT, 1, 1, RAM_IPA, ram_off)
    assert kp.counts["grants"] == 2
    child.trap(DATA_ABORT, F_PROBE, 8, ipa=RAM_IPA + PAGE)  # the read-only page, read: granted read-only
    child.trap(DATA_ABORT, F_QUERY | F_SF, 8, ipa=0x900_0000)  # a question about MMIO: no trap
    child.trap(DATA_ABORT, F_PROBE, 8, ipa=1 << 44)  # outside the window
    child.trap(HVC)
    assert isinstance(kp.run(), HvcTrap)
    assert child.resume()[0] == RESUME
    assert GRANT_FMT.unpack(child.recv()) == (GRANT, 0, 1, RAM_IPA + PAGE, ram_off + PAGE)
    assert child.recv() == bytes([DENY, 0]) and child.recv() == bytes([DENY, 1])


@pytest.mark.parametrize(("message", "reason"), [
    (bytes([STOPPED]) + "the kernel returned ✓".encode(), "the kernel returned ✓"),
    (bytes([ACK]), "the kernel process broke the channel protocol"),
    (TRAP_FMT.pack(TRAP, SMC, 0, 0, 0, *(0,) * 31, 0, 0)[:-1], "the kernel process broke the channel protocol"),
    (TRAP_FMT.pack(TRAP, 9, 0, 8, 0, *(0,) * 31, 0, 0), "the kernel process broke the channel protocol"),
    (TRAP_FMT.pack(TRAP, DATA_ABORT, F_PROBE, 3, 0, *(0,) * 31, RAM_IPA, 0),
     "the kernel process broke the channel protocol"),
    # An MMIO access of a size no access has, at a pc equal to one: the size is what is judged.
    (TRAP_FMT.pack(TRAP, DATA_ABORT, 0, 3, 4, *(0,) * 31, 0x900_0000, 0),
     "the kernel process broke the channel protocol"),
    (TRAP_FMT.pack(TRAP, DATA_ABORT, 0, 16, 8, *(0,) * 31, 0x900_0000, 0),
     "the kernel process broke the channel protocol"),
])
def test_a_stop_or_a_broken_protocol_ends_the_kernel(machine: tuple[KernelProcess, Child, PhysicalMemory],
                                                     message: bytes, reason: str) -> None:
    kp, child, _ = machine
    child.sock.send(message)
    with pytest.raises(KernelProcessStopped) as exc:
        kp.run()
    assert str(exc.value) == reason == kp.stopped
    assert kp._proc is not None and kp._proc.returncode is not None
    with pytest.raises(KernelProcessStopped):
        kp.run()  # stopped for good


def test_a_closed_channel_reports_how_the_child_ended(machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    child.sock.close()
    with pytest.raises(KernelProcessStopped) as exc:
        kp.run()
    assert str(exc.value) == f"the kernel process ended (status {-signal.SIGKILL})"


def test_a_child_killed_by_its_filter_says_so() -> None:
    memory = PhysicalMemory(size=1 << 20)
    kp, child = start(memory, memory.base, argv=[sys.executable, "-c",
                                                  "import os, signal; print('ready', flush=True); "
                                                  "os.kill(os.getpid(), signal.SIGSYS)"])
    try:
        assert kp._proc is not None
        kp._proc.wait()
        child.sock.close()
        with pytest.raises(KernelProcessStopped) as exc:
            kp.run()
        assert str(exc.value) == "killed by its seccomp filter"
    finally:
        kp.close()


def test_the_listener_is_looked_at_when_the_channel_is_quiet(
        machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    assert kp._sock is not None
    kp._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
    looked: list[int] = []
    kp._judge_pending = lambda: (looked.append(1), child.trap(IRQ) if len(looked) == 2 else None)  # type: ignore
    assert isinstance(kp.run(), IrqTrap)
    assert len(looked) == 2


def test_after_a_grant_the_childs_mmap_is_judged_at_once(machine: tuple[KernelProcess, Child, PhysicalMemory]) -> None:
    kp, child, _ = machine
    assert kp._sock is not None
    kp._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
    judged: list[int] = []
    quiet: list[int] = []

    def judge() -> bool:  # the notification of the child's mmap: the child goes on once it is answered
        os.eventfd_read(kp._listener)
        judged.append(1)
        child.trap(IRQ)
        return True

    def judge_pending() -> None:
        quiet.append(1)
        KernelProcess._judge_pending(kp)

    kp._judge = judge  # type: ignore[method-assign]
    kp._judge_pending = judge_pending  # type: ignore[method-assign]
    child.trap(DATA_ABORT, F_PROBE | F_SF, 8, ipa=RAM_IPA)
    os.eventfd_write(kp._listener, 1)  # its mmap of the grant, waiting on the listener
    assert isinstance(kp.run(), IrqTrap)
    assert child.resume()[0] == RESUME and GRANT_FMT.unpack(child.recv())[0] == GRANT
    assert judged == [1] and quiet == []  # not left until the channel had been quiet
