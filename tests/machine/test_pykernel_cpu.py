"""What the Python kernel has of its processing element besides calls and memory
(machine/pykernel.py GuestCpu on the in-process engine): MRS/MSR of the registers the PE's
interrupt lines serve (machine/irq.py; any other is UNDEFINED), the virtual timer the
kernel programs (CNTV_CTL_EL0 ENABLE and IMASK, CNTV_CVAL_EL0, CNTV_TVAL_EL0 as a signed
32-bit count from now; Arm ARM D12 "The Generic Timer"), the counter at CNTFRQ_EL0, RNDR,
the pointers EL0 mapping needs, and EL0 code on Unicorn stopped for the host's view of a
timer that has fired."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from unirealm.arch.gic import IccSysreg
from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.arch.timer import CntSysreg
from unirealm.machine.irq import PENDING_FIQ, PENDING_IRQ, InterruptLines
from unirealm.machine.pykernel import SYSTEM_COUNTER_HZ, GuestCpu, GuestFault
from unirealm.machine.vcpu import DataAbortTrap, HvcTrap, IrqTrap, Mapping, WfxTrap

from .pykernel_support import RAM_IPA, Machine, register

MASK64 = (1 << 64) - 1
DATA_IPA = RAM_IPA + 8 * GRANULE_SIZE
CODE_IPA = RAM_IPA + 9 * GRANULE_SIZE
CODE_VA = 0x40_0000
UNSERVED = 0x7FFF  # a key no interrupt controller or timer answers
SERVED = (IccSysreg.PMR, CntSysreg.CNTV_CTL_EL0, CntSysreg.CNTV_CVAL_EL0, CntSysreg.CNTV_TVAL_EL0)
SVC_0 = 0xD4000001
LDR_X0_X2 = 0xF9400040  # ldr x0, [x2]
STR_X1_X2 = 0xF9000041  # str x1, [x2]
DATA_VA = 0x50_0000
B_SELF = 0x14000000  # b .
R, W, X = 1, 2, 4


class Lines:
    """Interrupt lines that serve SERVED as plain registers; `signalled` is what they signal."""

    def __init__(self) -> None:
        self.regs: dict[int, int] = {}
        self.signalled = 0
        self.deadline: float | None = None
        self.writes: list[tuple[int, int]] = []

    def pending(self) -> int:
        return self.signalled

    def next_deadline(self) -> float | None:
        return self.deadline

    def read_sysreg(self, key: int) -> int | None:
        return self.regs.get(key, 0) if key in SERVED else None

    def write_sysreg(self, key: int, value: int) -> bool:
        if key not in SERVED:
            return False
        self.writes.append((key, value))
        self.regs[key] = value
        return True

    def iar1_now(self) -> int | None:
        return None

    def acknowledge_foreseen(self, intid: int) -> bool:
        return False


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def machine(lines: Lines) -> Iterator[Machine]:
    m = Machine()
    m.engine.interrupts = cast(InterruptLines, lines)
    yield m
    m.close()


def run_kernel(machine: Machine, monkeypatch: pytest.MonkeyPatch, body: Callable[[GuestCpu], Any]) -> list[Any]:
    """Run `body` as the kernel until it returns; what it returned, in a list."""
    out: list[Any] = []
    register(monkeypatch, lambda cpu: out.append(body(cpu)))
    for _ in range(20):
        if isinstance(machine.run(), WfxTrap) and out:
            break
    if machine.engine.finished is not None:
        raise machine.engine.finished
    return out


def undefined(access: Callable[[], object]) -> tuple[str, int] | None:
    try:
        access()
    except GuestFault as exc:
        return exc.kind, exc.address
    return None


# --- system registers ---------------------------------------------------------------------


def test_without_interrupt_lines_every_sysreg_access_is_undefined(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = Machine()
    try:
        got = run_kernel(machine, monkeypatch, lambda cpu: (
            undefined(lambda: cpu.read_sysreg(IccSysreg.PMR)),
            undefined(lambda: cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)),
            cpu.irq_signalled(), cpu.timer_due()))
        undef = ("undefined instruction", RAM_IPA)
        assert got == [(undef, undef, False, False)]
    finally:
        machine.close()


def test_the_lines_serve_their_registers_and_refuse_the_rest(machine: Machine, lines: Lines,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    lines.regs[IccSysreg.PMR] = 0xF0
    got = run_kernel(machine, monkeypatch, lambda cpu: (
        cpu.read_sysreg(IccSysreg.PMR), undefined(lambda: cpu.write_sysreg(IccSysreg.PMR, -1)),
        undefined(lambda: cpu.read_sysreg(UNSERVED)), undefined(lambda: cpu.write_sysreg(UNSERVED, 1))))
    undef = ("undefined instruction", RAM_IPA)
    assert got == [(0xF0, None, undef, undef)]
    assert lines.writes == [(IccSysreg.PMR, MASK64)]  # an MSR writes the 64-bit register


def test_the_irq_input_is_what_the_lines_signal_fiq_aside(machine: Machine, lines: Lines,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lines.signalled = PENDING_FIQ
    assert run_kernel(machine, monkeypatch, lambda cpu: cpu.irq_signalled()) == [False]
    lines.signalled = PENDING_IRQ | PENDING_FIQ
    machine2 = Machine()
    machine2.engine.interrupts = cast(InterruptLines, lines)
    try:
        assert run_kernel(machine2, monkeypatch, lambda cpu: cpu.irq_signalled()) == [True]
    finally:
        machine2.close()


def test_a_deadline_the_lines_have_passed_makes_the_access_exit_to_the_owner(
        machine: Machine, lines: Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.read_sysreg(IccSysreg.PMR))
        cpu.hvc(0)

    register(monkeypatch, kernel)
    lines.regs[IccSysreg.PMR] = 0x80
    lines.deadline = time.monotonic() - 1
    trap = machine.run()
    assert isinstance(trap, IrqTrap) and trap.pc == RAM_IPA and seen == []
    assert isinstance(machine.run(), HvcTrap) and seen == [0x80]


# --- the virtual timer ----------------------------------------------------------------------


def deadline_after(machine: Machine, monkeypatch: pytest.MonkeyPatch, *writes: tuple[int, int]) -> float | None:
    def kernel(cpu: GuestCpu) -> None:
        for key, value in writes:
            cpu.write_sysreg(key, value)

    run_kernel(machine, monkeypatch, kernel)
    return machine.engine.timer_deadline()


def test_an_enabled_unmasked_timer_fires_at_its_compare_value(machine: Machine,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cval = 5 * SYSTEM_COUNTER_HZ  # 5 s of the system counter
    got = deadline_after(machine, monkeypatch, (CntSysreg.CNTV_CVAL_EL0, cval), (CntSysreg.CNTV_CTL_EL0, 1))
    assert got == pytest.approx(5.0)


@pytest.mark.parametrize("ctl", [0, 2, 3])  # disabled; masked (IMASK); enabled but masked
def test_a_disabled_or_masked_timer_never_fires(machine: Machine, monkeypatch: pytest.MonkeyPatch, ctl: int) -> None:
    assert deadline_after(machine, monkeypatch, (CntSysreg.CNTV_CVAL_EL0, 1), (CntSysreg.CNTV_CTL_EL0, ctl)) is None


@pytest.mark.parametrize("tval", [1000, 0xFFFF_FF00, 0x7FFF_FFFF, 0x1_0000_0010])
def test_tval_sets_the_compare_value_a_signed_32_bit_count_from_now(machine: Machine,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     tval: int) -> None:
    before = time.monotonic_ns() * SYSTEM_COUNTER_HZ // 1_000_000_000
    deadline_after(machine, monkeypatch, (CntSysreg.CNTV_TVAL_EL0, tval), (CntSysreg.CNTV_CTL_EL0, 1))
    after = time.monotonic_ns() * SYSTEM_COUNTER_HZ // 1_000_000_000
    low = tval & 0xFFFF_FFFF
    ticks = low - (1 << 32) if low >> 31 else low
    assert before + ticks <= machine.engine.cntv_cval <= after + ticks


def test_a_timer_that_has_fired_is_due_until_the_lines_show_it(machine: Machine, lines: Lines,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel(cpu: GuestCpu) -> tuple[bool, ...]:
        cpu.write_sysreg(CntSysreg.CNTV_CVAL_EL0, cpu.cntvct() + SYSTEM_COUNTER_HZ * 3600)
        cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)
        future = cpu.timer_due()
        cpu.write_sysreg(CntSysreg.CNTV_CVAL_EL0, cpu.cntvct() - 1)
        past = cpu.timer_due()
        lines.signalled = PENDING_IRQ  # the host raised the timer's PPI
        shown = cpu.timer_due()
        return future, past, shown

    assert run_kernel(machine, monkeypatch, kernel) == [(False, True, False)]


def test_the_counter_runs_at_cntfrq_on_the_hosts_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = Machine()
    try:
        def kernel(cpu: GuestCpu) -> tuple[int, int, int, int]:
            before = time.monotonic_ns()
            count = cpu.cntvct()
            return before, count, time.monotonic_ns(), cpu.cntfrq

        [(before, count, after, freq)] = run_kernel(machine, monkeypatch, kernel)
        assert freq == 62_500_000  # Unicorn's generic timer: 16 ns a tick
        assert before * freq // 10**9 <= count <= after * freq // 10**9
    finally:
        machine.close()


def test_rndr_gives_64_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = Machine()
    try:
        [values] = run_kernel(machine, monkeypatch, lambda cpu: [cpu.rndr() for _ in range(64)])
        assert all(0 <= v <= MASK64 for v in values) and len(set(values)) == 64
        assert max(values) >= 1 << 60  # 64 bits wide, not fewer (fails with odds 2^-256)
    finally:
        machine.close()


# --- memory helpers and EL0 pointers ----------------------------------------------------------


def test_word_and_zero_helpers(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine.ram.write(machine.pa(DATA_IPA), b"\xAA" * 64)

    def kernel(cpu: GuestCpu) -> tuple[int, int, bytes]:
        cpu.write_u64(DATA_IPA, -1)
        cpu.write_u64(DATA_IPA + 8, 1 << 64 | 0x1234)
        cpu.zero(DATA_IPA + 16, 8)
        cpu.write_u64(DATA_IPA + 32, 5)
        return cpu.read_u64(DATA_IPA), cpu.read_u64(DATA_IPA + 8), cpu.read(DATA_IPA + 16, 32)

    assert run_kernel(machine, monkeypatch, kernel) == [
        (MASK64, 0x1234, bytes(8) + b"\xAA" * 8 + (5).to_bytes(8, "little") + b"\xAA" * 8)]


def test_probe_and_peek_never_trap_and_host_pointer_faults_the_page_in(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    host = machine.memory.host_pointer(World.NON_SECURE, machine.pa(DATA_IPA), GRANULE_SIZE)

    def kernel(cpu: GuestCpu) -> None:
        seen.extend([cpu.probe(DATA_IPA + 8), cpu.peek(DATA_IPA)])
        seen.append(cpu.host_pointer(DATA_IPA + 8, True))
        seen.append(cpu.probe(DATA_IPA + 0x123))
        seen.append(cpu.peek(DATA_IPA + 0x123))
        seen.append(cpu.probe(CODE_IPA))
        seen.append(cpu.host_pointer(CODE_IPA, False))
        cpu.hvc(0)

    register(monkeypatch, kernel)
    mapping = machine.stage2.pop(DATA_IPA)
    machine.stage2[CODE_IPA] = Mapping(machine.pa(CODE_IPA), World.NON_SECURE, writable=False)
    machine.memory.set_pas(World.ROOT, machine.pa(CODE_IPA), Pas.REALM)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == DATA_IPA and trap.is_write  # host_pointer's fault
    assert seen == [None, None]
    machine.stage2[DATA_IPA] = mapping
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [None, None, (host, True), (host, True), (host, True), None, None]  # the GPT refuses the last


def test_a_read_only_page_is_reached_read_only(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine.stage2[DATA_IPA] = Mapping(machine.pa(DATA_IPA), World.NON_SECURE, writable=False)
    host = machine.memory.host_pointer(World.NON_SECURE, machine.pa(DATA_IPA), GRANULE_SIZE)
    assert run_kernel(machine, monkeypatch, lambda cpu: (cpu.probe(DATA_IPA), cpu.host_pointer(DATA_IPA, False))) \
        == [((host, False), (host, False))]


# --- EL0 under the engine -----------------------------------------------------------------------


def test_el0_code_stops_for_the_host_when_the_kernels_timer_has_fired(machine: Machine, lines: Lines,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A REC exits (IrqTrap at EL0's PC) so that its host raises the timer's PPI; EL0 then
    returns to the kernel with the IRQ it now sees, the PC where the exception returns."""
    seen: list[object] = []
    machine.ram.write(machine.pa(CODE_IPA), struct.pack("<2I", B_SELF, SVC_0))

    def kernel(cpu: GuestCpu) -> None:
        space = cpu.el0_space()
        space.map(CODE_VA, CODE_IPA, GRANULE_SIZE, R | X)
        seen.append(space.run(CODE_VA + 4))  # svc: no timer yet
        cpu.write_sysreg(CntSysreg.CNTV_CVAL_EL0, 0)  # long past
        cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)
        seen.append(space.run(CODE_VA))
        seen.append(space.reg("pc"))
        cpu.hvc(0)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, IrqTrap) and trap.pc == CODE_VA
    assert seen == [("svc", CODE_VA + 8, 0)]
    lines.signalled = PENDING_IRQ
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [("svc", CODE_VA + 8, 0), ("irq", CODE_VA, 0), CODE_VA]


def test_closing_the_engine_closes_its_el0_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    spaces: list[Any] = []

    def kernel(cpu: GuestCpu) -> None:
        space = cpu.el0_space()
        space.map(CODE_VA, CODE_IPA, GRANULE_SIZE, R | X)
        spaces.append(space)
        spaces.append(space.run(CODE_VA))  # the page maps into the CPU, then its code faults
        cpu.wfi()

    register(monkeypatch, kernel)
    machine = Machine()
    machine.run()
    assert spaces[1][0] == "undef" and list(spaces[0].uc.mem_regions())
    machine.close()
    assert not list(spaces[0].uc.mem_regions())


def test_the_engines_tlbi_reaches_the_kernels_el0_spaces(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 2 moves a page EL0 has used; after the owner's invalidate EL0 loads from the
    granule stage 2 maps now."""
    seen: list[int] = []
    machine.ram.write(machine.pa(CODE_IPA), struct.pack("<2I", LDR_X0_X2, SVC_0))
    machine.ram.write_u64(machine.pa(DATA_IPA), 1)
    moved = machine.pa(RAM_IPA + 12 * GRANULE_SIZE)
    machine.ram.write_u64(moved, 2)

    def kernel(cpu: GuestCpu) -> None:
        space = cpu.el0_space()
        space.map(CODE_VA, CODE_IPA, GRANULE_SIZE, R | X)
        space.map(DATA_VA, DATA_IPA, GRANULE_SIZE, R)
        for _ in range(2):
            space.set_gpr(2, DATA_VA)
            assert space.run(CODE_VA)[0] == "svc"
            seen.append(space.gpr(0))
            cpu.hvc(0)

    register(monkeypatch, kernel)
    assert isinstance(machine.run(), HvcTrap) and seen == [1]
    machine.stage2[DATA_IPA] = Mapping(moved, World.NON_SECURE)
    machine.engine.invalidate(DATA_IPA, GRANULE_SIZE)
    assert isinstance(machine.run(), HvcTrap) and seen == [1, 2]


def test_el0s_first_touch_faults_a_page_in_for_writing(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 2 maps the page read-only until a write fault (as a hypervisor tracking dirty
    pages does): EL0's store reaches the hypervisor as a write and then lands."""
    seen: list[object] = []
    machine.ram.write(machine.pa(CODE_IPA), struct.pack("<2I", STR_X1_X2, SVC_0))
    pa = machine.pa(DATA_IPA)
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE, writable=False)

    def kernel(cpu: GuestCpu) -> None:
        space = cpu.el0_space()
        space.map(CODE_VA, CODE_IPA, GRANULE_SIZE, R | X)
        space.map(DATA_VA, DATA_IPA, GRANULE_SIZE, R | W)
        space.set_gpr(1, 0xFEED)
        space.set_gpr(2, DATA_VA + 8)
        seen.append(space.run(CODE_VA))
        cpu.hvc(0)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == DATA_IPA and trap.is_write
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE)  # the write fault makes it writable
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [("svc", CODE_VA + 8, 0)] and machine.ram.read_u64(pa + 8) == 0xFEED
    assert machine.fetches == []


def test_a_timer_enabled_before_any_compare_value_is_due_from_the_counters_zero(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    # the engine's compare value is 0 until the kernel writes one: the deadline is the counter's start
    assert deadline_after(machine, monkeypatch, (CntSysreg.CNTV_CTL_EL0, 1)) == 0.0
