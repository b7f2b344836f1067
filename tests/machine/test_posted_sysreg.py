"""Accesses a kernel process completes itself and posts (kernel_channel LINE_POSTABLE): the
engine applies them in order against a real GICv3 CPU interface and generic timer, with the
GIC's rules (an acknowledged INTID is active and holds the running priority; EOImode 0
drops and deactivates), and the kernel process posts only what its last answer allowed."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

import pytest

from unirealm.arch.gic import GICD_CTLR_EnableGrp1, IccSysreg
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.timer import PPI_VIRT_TIMER, CntSysreg
from unirealm.host.devices.gicv3 import GicV3
from unirealm.host.vcpus import GicLines
from unirealm.machine.irq import PENDING_FIQ, PENDING_IRQ
from unirealm.machine.kernel_child import ChildEngine
from unirealm.machine.kernel_process import KernelProcess, KernelProcessStopped
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.timer import GenericTimer

from .channel_layout import (
    DATA_ABORT,
    F_WRITE,
    FIQ_LINE,
    HOST_LINE,
    IRQ_LINE,
    NO_IAR1,
    POSTABLE_LINE,
    POSTED,
    POSTED_FMT,
    RESUME,
    RESUME_FMT,
    SYSREG,
    SYSREG_DONE,
    SYSREG_DONE_FMT,
    TRAP_FMT,
)

SPI = 36


def _gic() -> tuple[GicV3, GenericTimer, list[tuple[str, int]]]:
    events: list[tuple[str, int]] = []
    gic = GicV3(1, 64, trace=lambda kind, cpu, intid: events.append((kind, intid)))
    gic.ctlr = GICD_CTLR_EnableGrp1
    cpuif = gic.cpus[0]
    cpuif.write_sysreg(IccSysreg.PMR, 0xFF)
    cpuif.write_sysreg(IccSysreg.IGRPEN1, 1)
    for intid, priority in ((SPI, 0xA0), (SPI + 1, 0xA0), (PPI_VIRT_TIMER, 0x20)):
        irq = gic.irq(0, intid)
        assert irq is not None
        irq.enabled, irq.priority, irq.cpu = True, priority, 0
        irq.edge = intid != PPI_VIRT_TIMER
    return gic, GenericTimer(gic, 0), events


def _engine(gic: GicV3, timer: GenericTimer) -> tuple[KernelProcess, list[int]]:
    engine = KernelProcess(PhysicalMemory(size=16 * GRANULE_SIZE), lambda *a: None, 0, [], "max", 0)
    engine.interrupts = GicLines(gic, timer, 0)
    kicks: list[int] = []
    engine.emu_stop = lambda: kicks.append(1)  # type: ignore[method-assign]
    engine._proc = SimpleNamespace(kill=lambda: None, wait=lambda: 0)  # type: ignore[assignment]
    return engine, kicks


def _edge(gic: GicV3, intid: int) -> None:
    irq = gic.irq(0, intid)
    assert irq is not None
    gic.set_latch(irq, True)


def _post(engine: KernelProcess, write: bool, key: int, value: int) -> None:
    engine._posted(POSTED_FMT.pack(POSTED, F_WRITE if write else 0, key, value))


def test_an_answer_foresees_iar1_and_allows_posting() -> None:
    gic, timer, _ = _gic()
    engine, _ = _engine(gic, timer)
    assert engine._lines(False) == (POSTABLE_LINE, 1023)  # nothing pending: IAR1 reads 1023
    _edge(gic, SPI)
    lines, iar1 = engine._lines(True)
    assert iar1 == SPI
    assert lines == HOST_LINE | PENDING_IRQ << 1 | POSTABLE_LINE


def test_a_posted_iar1_activates_the_foreseen_intid_though_the_timer_fired_since() -> None:
    gic, timer, events = _gic()
    engine, kicks = _engine(gic, timer)
    _edge(gic, SPI)
    assert engine._lines(False)[1] == SPI
    timer_ppi = gic.irq(0, PPI_VIRT_TIMER)
    assert timer_ppi is not None
    # The virtual timer's condition met after the answer (programmed as the host would be
    # unable to tell from a wait: due now).
    timer.write_sysreg(CntSysreg.CNTV_CVAL_EL0, timer.cntvct())
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)
    _post(engine, False, IccSysreg.IAR1, SPI)
    spi = gic.irq(0, SPI)
    assert spi is not None and spi.active and not timer_ppi.active
    assert ("ack", SPI) in events
    # The timer's PPI (priority 0x20) preempts the SPI's 0xA0: signalled, which the PE was not
    # shown (its IAR1 read leaves it believing nothing is): the engine stops its run.
    assert kicks == [1]
    assert gic.cpus[0].read_sysreg(IccSysreg.RPR) == 0xA0


def test_posted_eoir1_ends_the_interrupt_and_kicks_only_for_news() -> None:
    gic, timer, events = _gic()
    engine, kicks = _engine(gic, timer)
    _edge(gic, SPI)
    engine._lines(False)
    _post(engine, False, IccSysreg.IAR1, SPI)
    assert kicks == []  # nothing else pending
    _post(engine, True, IccSysreg.EOIR1, SPI)
    spi = gic.irq(0, SPI)
    assert spi is not None and not spi.active and ("eoi", SPI) in events
    assert gic.cpus[0].read_sysreg(IccSysreg.RPR) == 0xFF and kicks == []
    # A second SPI made pending while the first was active: after its EOI it is signalled,
    # and the PE's last answer did not show it.
    _edge(gic, SPI)
    assert engine._lines(False)[1] == SPI
    _post(engine, False, IccSysreg.IAR1, SPI)
    _edge(gic, SPI + 1)
    _post(engine, True, IccSysreg.EOIR1, SPI)
    assert kicks == [1]


def test_posted_timer_writes_program_the_timer_and_a_past_deadline_kicks() -> None:
    gic, timer, _ = _gic()
    engine, kicks = _engine(gic, timer)
    engine._lines(False)
    now = timer.cntvct()
    _post(engine, True, CntSysreg.CNTV_CVAL_EL0, now + 10**9)
    _post(engine, True, CntSysreg.CNTV_CTL_EL0, 1)
    assert timer.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == now + 10**9 and kicks == []
    _post(engine, True, CntSysreg.CNTV_CVAL_EL0, now)  # already due
    assert kicks == [1]


@pytest.mark.parametrize(("write", "key", "value"), [
    (True, IccSysreg.PMR, 0x80),  # not one of POSTED_WRITES
    (False, IccSysreg.IAR1, SPI),  # nothing pending: no read could have returned it
    (False, IccSysreg.HPPIR1, 1023),  # only IAR1 reads are foreseen
])
def test_a_post_the_lines_refuse_stops_the_kernel(write: bool, key: int, value: int) -> None:
    gic, timer, _ = _gic()
    engine, _ = _engine(gic, timer)
    with pytest.raises(KernelProcessStopped, match="posted an access"):
        _post(engine, write, key, value)
    assert gic.cpus[0].pmr == 0xF8  # five priority bits: 0xFF reads 0xF8


class _FiqLines:
    """Interrupt lines that signal an IRQ (INTID 40 foreseen) and later an FIQ as well."""

    def __init__(self) -> None:
        self.signalled = PENDING_IRQ

    def pending(self) -> int:
        return self.signalled

    def next_deadline(self) -> float | None:
        return None

    def iar1_now(self) -> int | None:
        return 40

    def acknowledge_foreseen(self, intid: int) -> bool:
        self.signalled &= ~PENDING_IRQ
        return intid == 40

    def read_sysreg(self, key: int) -> int | None:
        return None

    def write_sysreg(self, key: int, value: int) -> bool:
        return False


def test_an_fiq_signalled_after_the_answer_kicks_after_a_posted_iar1() -> None:
    gic, timer, _ = _gic()
    engine, kicks = _engine(gic, timer)
    lines = _FiqLines()
    engine.interrupts = lines
    assert engine._lines(False) == (IRQ_LINE | POSTABLE_LINE, 40)  # the answer shows the IRQ only
    lines.signalled |= PENDING_FIQ  # then the FIQ input rises: the PE was never shown it
    _post(engine, False, IccSysreg.IAR1, 40)
    assert kicks == [1]


def test_a_posted_iar1_does_not_kick_for_an_fiq_the_answer_showed() -> None:
    gic, timer, _ = _gic()
    engine, kicks = _engine(gic, timer)
    lines = _FiqLines()
    lines.signalled |= PENDING_FIQ
    engine.interrupts = lines
    assert engine._lines(False)[0] == IRQ_LINE | FIQ_LINE | POSTABLE_LINE
    _post(engine, False, IccSysreg.IAR1, 40)
    assert kicks == []


# --- the kernel process's side ------------------------------------------------------------

@pytest.fixture
def child() -> tuple[ChildEngine, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    yield ChildEngine(ours, -1, -1, "max"), theirs
    ours.close()
    theirs.close()


def _resume(engine: ChildEngine, lines: int, iar1: int) -> None:
    engine._resumed(RESUME_FMT.pack(RESUME, 0, lines, iar1, 0x1000, *([0] * 31), 0, 0))


def _no_message(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1024)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_the_kernel_posts_what_its_answer_allows(child: tuple[ChildEngine, socket.socket]) -> None:
    engine, vmm = child
    _resume(engine, PENDING_IRQ << 1 | POSTABLE_LINE, SPI)
    assert engine.lines() == PENDING_IRQ
    assert engine.sysreg(IccSysreg.IAR1, None) == SPI
    assert POSTED_FMT.unpack(vmm.recv(1024)) == (POSTED, 0, IccSysreg.IAR1, SPI)
    assert engine.lines() == 0  # active, it holds the running priority
    assert engine.sysreg(IccSysreg.EOIR1, SPI) == 0
    assert POSTED_FMT.unpack(vmm.recv(1024)) == (POSTED, F_WRITE, IccSysreg.EOIR1, SPI)
    # The foresight is spent: the next IAR1 read is a round trip, answered by the engine.
    vmm.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, POSTABLE_LINE, 1023, 1023))
    assert engine.sysreg(IccSysreg.IAR1, None) == 1023
    trap = TRAP_FMT.unpack(vmm.recv(1024))
    assert trap[1] == SYSREG and trap[36] == IccSysreg.IAR1
    # A foreseen 1023 acknowledges nothing: returned without a message.
    assert engine.sysreg(IccSysreg.IAR1, None) == 1023 and _no_message(vmm)


def test_the_kernel_asks_when_its_answer_does_not_allow_posting(child: tuple[ChildEngine, socket.socket]) -> None:
    engine, vmm = child
    _resume(engine, PENDING_IRQ << 1, SPI)  # no LINE_POSTABLE
    vmm.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, POSTABLE_LINE, 1023, SPI))
    assert engine.sysreg(IccSysreg.IAR1, None) == SPI
    assert TRAP_FMT.unpack(vmm.recv(1024))[1] == SYSREG
    # Now allowed: a timer write is posted, a PMR write (not one of POSTED_WRITES) is asked.
    assert engine.sysreg(CntSysreg.CNTV_CTL_EL0, 1) == 0
    assert POSTED_FMT.unpack(vmm.recv(1024))[2] == CntSysreg.CNTV_CTL_EL0
    vmm.send(SYSREG_DONE_FMT.pack(SYSREG_DONE, 1, 0, NO_IAR1, 0))
    assert engine.sysreg(IccSysreg.PMR, 0x80) == 0
    assert TRAP_FMT.unpack(vmm.recv(1024))[1] == SYSREG
    assert not engine.postable and engine.iar1 is None


# --- posted MMIO writes (a plain VM's VMM emulates them) ----------------------------------

POSTED_MMIO_MSG = 6
POSTED_MMIO_FMT = struct.Struct("<BB6xQQ")  # msg, size, IPA, value
MMIO_POSTABLE_LINE = 32
DEVICE = 0x0A00_0000


def test_a_posted_mmio_write_is_emulated_in_order_and_a_device_interrupt_kicks() -> None:
    gic, timer, _ = _gic()
    engine, kicks = _engine(gic, timer)
    writes: list[tuple[int, int, int]] = []

    def emulate(ipa: int, size: int, value: int) -> bool:
        writes.append((ipa, size, value))
        if value == 2:
            _edge(gic, SPI)  # this write makes the device interrupt
        return ipa == DEVICE + 0x64

    assert not engine._lines(False)[0] & MMIO_POSTABLE_LINE  # nothing to emulate them with
    engine.posted_mmio = emulate
    assert engine._lines(False)[0] & MMIO_POSTABLE_LINE
    engine._posted_mmio(POSTED_MMIO_FMT.pack(POSTED_MMIO_MSG, 4, DEVICE + 0x64, 1))
    assert writes == [(DEVICE + 0x64, 4, 1)] and kicks == []
    engine._posted_mmio(POSTED_MMIO_FMT.pack(POSTED_MMIO_MSG, 4, DEVICE + 0x64, 2))
    assert kicks == [1]  # signalled now, which the last answer did not show
    with pytest.raises(KernelProcessStopped, match="MMIO write the owner refuses"):
        engine._posted_mmio(POSTED_MMIO_FMT.pack(POSTED_MMIO_MSG, 4, DEVICE + 0x68, 1))


def test_the_kernel_posts_writes_only_to_a_page_the_engine_emulated(child: tuple[ChildEngine, socket.socket]) -> None:
    engine, vmm = child
    _resume(engine, MMIO_POSTABLE_LINE, NO_IAR1)
    # First write: a probe the engine answers by emulating it (the PC moves on: RESUME).
    vmm.send(RESUME_FMT.pack(RESUME, 0, MMIO_POSTABLE_LINE, NO_IAR1, 0x1004, *([0] * 31), 0, 0))
    engine.pc = 0x1000
    assert engine.mmio(DEVICE + 0x64, 4, 1) == 0
    trap = TRAP_FMT.unpack(vmm.recv(1024))
    assert trap[1] == DATA_ABORT and trap[36] == DEVICE + 0x64
    # Now known as a device page: the next write is posted, a read still asks.
    assert engine.mmio(DEVICE + 0x50, 4, 7) == 0
    assert POSTED_MMIO_FMT.unpack(vmm.recv(1024)) == (POSTED_MMIO_MSG, 4, DEVICE + 0x50, 7)
    assert _no_message(vmm)
    # Without the answer's permission, the same write asks again.
    _resume(engine, 0, NO_IAR1)
    vmm.send(RESUME_FMT.pack(RESUME, 0, 0, NO_IAR1, 0x1004, *([0] * 31), 0, 0))
    engine.pc = 0x1000
    engine.mmio(DEVICE + 0x50, 4, 8)
    assert TRAP_FMT.unpack(vmm.recv(1024))[1] == DATA_ABORT
