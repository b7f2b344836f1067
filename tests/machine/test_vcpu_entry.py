"""Exception entry to EL1 (machine/vcpu_entry.py) where the Arm ARM's AArch64.TakeException
decides something the other vCPU tests do not look at: PSTATE.PAN after the entry as
SCTLR_EL1.SPAN says (FEAT_PAN: SPAN == 0 sets PAN, SPAN == 1 leaves it), and a vector that
faults at itself, which a real PE would take for ever and the vCPU ends after
MAX_RECURSIVE_EXCEPTIONS re-entries with a CpuErrorTrap naming the vector. And MRS/MSR once
the interrupt lines are gone: the CPU model serves them again."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.machine.vcpu import MAX_RECURSIVE_EXCEPTIONS, CpuErrorTrap, HvcTrap

from .asm_snippet import assemble
from .test_vcpu import CODE, Guest
from .test_vcpu_irq import Lines

PAN = 1 << 22
SPAN = 1 << 23

PAN_GUEST = """
    .arch armv8.1-a     // FEAT_PAN
    .text
_start:
    b start
    .balign 2048
vectors:
    .balign 128
    .rept 4             // current EL with SP0: unused
    hvc #0xee
    .balign 128
    .endr
    mrs x3, spsr_el1    // current EL with SPx, synchronous: the SVC below
    mrs x4, pan         // PSTATE.PAN after the entry
    hvc #1
start:
    adr x0, vectors
    msr vbar_el1, x0
    mrs x1, sctlr_el1
    bic x1, x1, #(1 << 23)
    orr x1, x1, x20     // SPAN from x20
    msr sctlr_el1, x1
    msr pan, x21        // PAN before the exception: bit 22 of x21
    isb
    svc #5
"""


@pytest.mark.parametrize(("span", "pan_before", "pan_after"), [
    (0, 0, PAN),  # SPAN 0: the entry sets PAN
    (0, 1, PAN),
    (SPAN, 0, 0),  # SPAN 1: PAN is left as it was
    (SPAN, 1, PAN),
])
def test_pan_after_an_exception_follows_sctlr_span(tmp_path: Path, span: int, pan_before: int,
                                                   pan_after: int) -> None:
    g = Guest(assemble(PAN_GUEST, CODE, tmp_path, "pan"))
    try:
        g.cpu.set_gpr(20, span)
        g.cpu.set_gpr(21, PAN if pan_before else 0)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.cpu.get_gpr(4) == pan_after
        assert g.cpu.get_gpr(3) & PAN == (PAN if pan_before else 0)  # SPSR_EL1 keeps the PAN it had
    finally:
        g.cpu.close()


FAULTING_VECTOR = """
    .text
_start:
    b start
    .balign 2048
vectors:
    .rept 16
    .balign 128
    udf #1              // every vector faults at itself
    .endr
start:
    adr x0, vectors
    msr vbar_el1, x0
    isb
    udf #0
"""


def test_a_vector_that_faults_at_itself_ends_the_run_after_the_limit(tmp_path: Path) -> None:
    g = Guest(assemble(FAULTING_VECTOR, CODE, tmp_path, "recursive"))
    try:
        trap = g.cpu.run()
        assert isinstance(trap, CpuErrorTrap), trap
        vector = CODE + 2048 + 0x200  # current EL with SPx, synchronous
        assert trap.pc == vector and f"{vector:#x}" in trap.message
        # the first UDF (outside the table), then the vector's own faults: the limit's re-entries
        assert g.cpu.exceptions_taken == 1 + MAX_RECURSIVE_EXCEPTIONS
    finally:
        g.cpu.close()


def test_without_its_lines_a_vcpu_serves_mrs_from_the_cpu_model(tmp_path: Path) -> None:
    g = Guest(assemble("""
    .text
    mrs x1, CNTVCT_EL0
    hvc #1
    mov x2, #0
    mrs x2, CNTFRQ_EL0
    hvc #2
    """, CODE, tmp_path, "nolines"))
    try:
        lines = Lines()
        g.cpu.interrupts = lines
        g.cpu.native_counter = False
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1
        assert g.cpu.get_gpr(1) == 0x1234_5678  # the lines served it
        g.cpu.interrupts = None  # the owner takes its interrupt controller away
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 2
        assert g.cpu.get_gpr(2) != 0  # the model's own CNTFRQ_EL0, not a skipped MRS
        assert len(lines.reads) == 1  # the second MRS never reached the lines
    finally:
        g.cpu.close()
