"""The vCPU's interrupt inputs (machine/irq.py InterruptLines, machine/vcpu.py): MRS/MSR of
the lines' registers served inside `run()`, and IRQ/FIQ exception entry as the Arm ARM's
AArch64.TakeException makes it (ELR = the next instruction, SPSR = PSTATE, ESR unchanged,
DAIF set, PC = VBAR_EL1 + the vector for the level and stack the interrupt came from), at
`run()` entry and at the first instruction boundary an unmask lets it in. Each guest is a
small assembled vector table whose every entry reports its index, ELR, SPSR and ESR by HVC."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unirealm.arch.sysreg import sysreg_key
from unirealm.machine.irq import PENDING_FIQ, PENDING_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_HZ
from unirealm.machine.timer import system_count
from unirealm.machine.vcpu import HvcTrap, IrqTrap

from .asm_snippet import assemble
from .test_vcpu import CODE, Guest

IAR1 = sysreg_key(3, 0, 12, 12, 0)  # ICC_IAR1_EL1
EOIR1 = sysreg_key(3, 0, 12, 12, 1)  # ICC_EOIR1_EL1
PMR = sysreg_key(3, 0, 4, 6, 0)  # ICC_PMR_EL1
CNTVCT = sysreg_key(3, 3, 14, 0, 2)
ESR_MARK = 0x5600_0ABC  # written to ESR_EL1 before an interrupt: it must stay

# Vector index = (offset from VBAR_EL1) / 0x80.
CUR_SP0_IRQ, CUR_SP0_FIQ = 1, 2
CUR_SPX_SYNC, CUR_SPX_IRQ, CUR_SPX_FIQ = 4, 5, 6
LOWER_IRQ = 9

VECTORS = """
    .text
_start:
    b start
    .balign 2048
vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 128
    movz x9, #\\n
    b report
    .endr
report:
    cbz x12, 1f         // x12: a handler of the test's own
    br x12
1:  mrs x5, elr_el1
    mrs x6, spsr_el1
    mrs x7, esr_el1
    hvc #0x77
start:
    adr x0, vectors
    msr vbar_el1, x0
    ldr x0, =0x56000abc
    msr esr_el1, x0
    isb
"""


class Lines:
    """A scripted interrupt controller: `signal` is what pending() says; IAR1 acknowledges
    (INTID 27, then nothing pending), EOIR1 is recorded, a PMR write raises IRQ."""

    def __init__(self, signal: int = 0, deadline: float | None = None) -> None:
        self.signal = signal
        self.deadline = deadline
        self.writes: list[tuple[int, int]] = []
        self.reads: list[int] = []

    def pending(self) -> int:
        return self.signal

    def next_deadline(self) -> float | None:
        return self.deadline

    def read_sysreg(self, key: int) -> int | None:
        self.reads.append(key)
        if key == IAR1:
            self.signal = 0
            return 27
        if key == CNTVCT:
            return 0x1234_5678
        return None

    def write_sysreg(self, key: int, value: int) -> bool:
        if key not in (EOIR1, PMR):
            return False
        self.writes.append((key, value))
        if key == PMR:
            self.signal = PENDING_IRQ
        return True


def guest(tmp_path: Path, body: str, lines: Lines | None, native_counter: bool = False) -> Guest:
    g = Guest(assemble(VECTORS + body, CODE, tmp_path, "irq"))
    g.cpu.interrupts = lines
    g.cpu.native_counter = native_counter  # False: CNTVCT reads go to the Lines as well
    return g


def label(tmp_path: Path, name: str) -> int:
    """The address of `name` in the last assembled guest."""
    import subprocess

    out = subprocess.run(["aarch64-linux-gnu-nm", str(tmp_path / "irq.elf")], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        addr, _, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise KeyError(name)


def report(g: Guest) -> tuple[int, int, int, int]:
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap), trap
    return g.cpu.get_gpr(9), g.cpu.get_gpr(5), g.cpu.get_gpr(6), g.cpu.get_gpr(7)


def test_handled_sysregs_never_leave_run(tmp_path: Path) -> None:
    lines = Lines()
    g = guest(tmp_path, """
    mrs x1, ICC_IAR1_EL1
    add x2, x1, #1
    msr ICC_EOIR1_EL1, x2
    mrs x3, CNTVCT_EL0
    hvc #1
    """, lines)
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap) and trap.imm == 1
    assert g.cpu.get_gpr(1) == 27 and g.cpu.get_gpr(3) == 0x1234_5678
    assert lines.writes == [(EOIR1, 28)]
    assert g.cpu.interrupts_taken == 0


@pytest.mark.parametrize("register", ["CNTVCT_EL0", "ICC_IAR1_EL1"])
def test_instructions_after_a_served_mrs_run_once(tmp_path: Path, register: str) -> None:
    """A timer register (which the CPU model implements: the block goes on after its MRS)
    and a GIC CPU interface register (which it does not: the block ends there), served
    by the lines, then instructions and a load in the same block: each runs once."""
    lines = Lines()
    g = guest(tmp_path, f"""
    mov x5, #0
    mrs x1, {register}
    add x5, x5, #1
    add x5, x5, #1
    adr x6, start
    ldr x7, [x6]
    add x5, x5, #1
    hvc #1
    """, lines)
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap) and trap.imm == 1
    assert g.cpu.get_gpr(1) in (27, 0x1234_5678) and g.cpu.get_gpr(5) == 3


def test_counter_reads_stay_with_the_cpu_model_and_match_the_system_counter(tmp_path: Path) -> None:
    lines = Lines()
    g = guest(tmp_path, """
    mrs x1, CNTVCT_EL0
    mrs x2, CNTPCT_EL0
    mrs x3, CNTFRQ_EL0
    hvc #1
    """, lines, native_counter=True)
    before = system_count()
    trap = g.cpu.run()
    after = system_count()
    assert isinstance(trap, HvcTrap)
    assert before <= g.cpu.get_gpr(1) <= g.cpu.get_gpr(2) <= after
    assert g.cpu.get_gpr(3) == SYSTEM_COUNTER_HZ and lines.reads == []


def test_a_register_the_lines_refuse_is_undefined(tmp_path: Path) -> None:
    g = guest(tmp_path, """
    mrs x1, ICC_HPPIR1_EL1
    hvc #1
    """, Lines())
    index, elr, _, esr_value = report(g)
    assert index == CUR_SPX_SYNC and esr_value >> 26 == 0  # EC 0: unknown reason
    assert elr == label(tmp_path, "start") + 5 * 4


def test_irq_at_entry_is_taken_with_elr_at_the_next_instruction(tmp_path: Path) -> None:
    g = guest(tmp_path, """
    msr daifclr, #2
    hvc #1
here:
    nop
    """, Lines())
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap) and trap.imm == 1
    g.cpu.interrupts.signal = PENDING_IRQ  # type: ignore[union-attr]
    index, elr, spsr, esr_value = report(g)
    assert index == CUR_SPX_IRQ
    assert elr == label(tmp_path, "here")
    assert spsr == 0x345  # EL1h, D A F masked, I clear
    assert esr_value == ESR_MARK
    assert g.cpu.pstate & 0x3CF == 0x3C5  # EL1h, DAIF all set
    assert g.cpu.interrupts_taken == 1


@pytest.mark.parametrize("unmask", [
    "msr daifclr, #2",
    "msr daif, xzr",
    "mov x0, #0x80\n    msr daif, x0\n    msr daifclr, #3",  # FIQ unmasked first: no FIQ pending
    "adr x0, after\n    msr elr_el1, x0\n    mov x0, #0x305\n    msr spsr_el1, x0\n    eret",
])
def test_masked_irq_is_taken_right_after_the_unmask(tmp_path: Path, unmask: str) -> None:
    lines = Lines(PENDING_IRQ)
    g = guest(tmp_path, f"""
    movz x3, #0
    add x3, x3, #1
    add x3, x3, #1
    {unmask}
after:
    add x3, x3, #10
    hvc #1
    """, lines)
    index, elr, spsr, esr_value = report(g)
    assert index == CUR_SPX_IRQ
    assert elr == label(tmp_path, "after")
    assert g.cpu.get_gpr(3) == 2  # the code before the unmask ran, nothing after it
    assert not spsr & 0x80 and spsr & 0xF == 0x5
    assert esr_value == ESR_MARK


def test_masked_irq_stays_pending_while_masked(tmp_path: Path) -> None:
    lines = Lines(PENDING_IRQ)
    g = guest(tmp_path, """
    msr daifclr, #1   // FIQ unmasked, IRQ still masked
    mov x3, #100
1:  subs x3, x3, #1
    b.ne 1b
    hvc #1
    """, lines)
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap) and trap.imm == 1
    assert g.cpu.interrupts_taken == 0


def test_fiq_and_sp0_and_lower_el_vectors(tmp_path: Path) -> None:
    g = guest(tmp_path, """
    msr spsel, #0
    msr daifclr, #3
    nop
    """, Lines(PENDING_FIQ))
    index, _, spsr, _ = report(g)
    assert index == CUR_SP0_FIQ and spsr & 0xF == 0x4  # from EL1t
    g = guest(tmp_path, """
    adr x0, el0
    msr elr_el1, x0
    msr spsr_el1, xzr   // EL0t, nothing masked
    eret
el0:
    nop
    b el0
    """, Lines(PENDING_IRQ))
    index, elr, spsr, _ = report(g)
    assert index == LOWER_IRQ and elr == label(tmp_path, "el0") and spsr == 0


def test_a_handled_write_that_signals_an_irq_is_taken_at_the_next_instruction(tmp_path: Path) -> None:
    lines = Lines()
    g = guest(tmp_path, """
    msr daifclr, #2
    mov x0, #0xf0
    msr ICC_PMR_EL1, x0
next:
    hvc #1
    """, lines)
    index, elr, _, _ = report(g)
    assert index == CUR_SPX_IRQ and elr == label(tmp_path, "next")
    assert lines.writes == [(PMR, 0xF0)]


def test_irq_handler_acknowledges_and_returns(tmp_path: Path) -> None:
    """A handler that reads IAR1, writes EOIR1 and ERETs: the loop it interrupted finishes."""
    body = """
    adr x12, handler    // every vector comes here with x9 = its index
    msr daifclr, #2
    mov x3, #0
1:  add x3, x3, #1
    cmp x3, #50
    b.ne 1b
    hvc #1
handler:
    cmp x9, #5
    b.ne .
    mrs x10, ICC_IAR1_EL1
    msr ICC_EOIR1_EL1, x10
    add x11, x11, #1
    eret
    """
    lines = Lines(PENDING_IRQ)
    g = guest(tmp_path, body, lines)
    trap = g.cpu.run()
    assert isinstance(trap, HvcTrap) and trap.imm == 1
    assert g.cpu.get_gpr(3) == 50 and g.cpu.get_gpr(10) == 27 and g.cpu.get_gpr(11) == 1
    assert lines.writes == [(EOIR1, 27)] and g.cpu.interrupts_taken == 1


def test_a_deadline_ends_the_run_with_an_irq_trap(tmp_path: Path) -> None:
    lines = Lines(deadline=time.monotonic() + 0.05)
    g = guest(tmp_path, """
    msr daifclr, #2
spin:
    b spin
    """, lines)
    start = time.monotonic()
    trap = g.cpu.run()
    assert isinstance(trap, IrqTrap)
    assert time.monotonic() >= lines.deadline  # type: ignore[operator]
    assert time.monotonic() - start < 5
    lines.deadline = None
    lines.signal = PENDING_IRQ
    index, elr, _, _ = report(g)
    assert index == CUR_SPX_IRQ and elr == label(tmp_path, "spin")


def test_el0_timer_access_follows_cntkctl(tmp_path: Path) -> None:
    body = """
    msr cntkctl_el1, x20
    adr x0, el0
    msr elr_el1, x0
    mov x0, #0x3c0      // EL0t, DAIF masked
    msr spsr_el1, x0
    eret
el0:
    mrs x3, CNTVCT_EL0
    svc #1
    """
    g = guest(tmp_path, body, Lines())
    g.cpu.set_gpr(20, 0)
    index, _, _, esr_value = report(g)
    assert index == 8 and esr_value >> 26 == 0x18  # lower-EL sync: the MRS trapped to EL1
    g = guest(tmp_path, body, Lines())
    g.cpu.set_gpr(20, 1 << 1)  # EL0VCTEN
    index, _, _, esr_value = report(g)
    assert index == 8 and esr_value == 0x5600_0001  # the SVC after it: EC 0x15, imm 1
    assert g.cpu.get_gpr(3) == 0x1234_5678


def test_a_vcpu_leaves_counter_reads_to_the_cpu_model_unless_told(tmp_path: Path) -> None:
    """With interrupt lines and nothing else said, CNTVCT_EL0 is the CPU model's: the
    machine's system counter, never asked of the lines."""
    g = Guest(assemble(VECTORS + """
    mrs x1, CNTVCT_EL0
    hvc #1
    """, CODE, tmp_path, "irq"))
    lines = Lines()
    g.cpu.interrupts = lines
    before = system_count()
    trap = g.cpu.run()
    after = system_count()
    assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
    assert before <= g.cpu.get_gpr(1) <= after and lines.reads == []
    g.cpu.close()


@pytest.mark.parametrize("lines_deadline", [None, 0.02])
def test_a_run_ends_at_the_earlier_of_its_limit_and_the_lines_deadline(tmp_path: Path,
                                                                       lines_deadline: float | None) -> None:
    """A spinning guest: the run ends with an IrqTrap at `until` when the lines have no
    deadline, and at the lines' deadline when that comes first."""
    g = guest(tmp_path, """
spin:
    b spin
    """, Lines())
    start = time.monotonic()
    assert g.cpu.interrupts is not None
    g.cpu.interrupts.deadline = None if lines_deadline is None else start + lines_deadline  # type: ignore[attr-defined]
    until = start + (0.05 if lines_deadline is None else 3)
    trap = g.cpu.run(until=until)
    elapsed = time.monotonic() - start
    assert isinstance(trap, IrqTrap), trap
    assert trap.pc == label(tmp_path, "spin")
    if lines_deadline is None:
        assert elapsed >= 0.05
    assert elapsed < 1.5
    g.cpu.close()
