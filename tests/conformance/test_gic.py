"""ACS 1.0 GIC suite: REC_ENTER's checks of the GICv3 state in RmiRecEnter, virtual interrupts
through the list registers taken by realm code (assembled at test time) on the RMM's vCPU,
the maintenance status the exits report, VMCR as the realm's ICV_* reads see it, and the
REC's EL1 timers (counters, an IRQ exit when a timer fires, the host's EL2 timer ending
REC_ENTER). Hosts enter the REC the way the ACS's do; the realm code follows the ACS's realm
side, returning to the host with RSI_HOST_CALL."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from machine.asm_snippet import assemble
from unirealm.arch.esr import Ec, SysRegAccess, esr
from unirealm.arch.gic import (
    ICH_HCR_LRENPIE,
    ICH_HCR_NPIE,
    ICH_HCR_UIE,
    ICH_MISR_LRENP,
    ICH_MISR_NP,
    ICH_MISR_U,
    LR_STATE_ACTIVE,
    LR_STATE_INVALID,
    LR_STATE_PENDING,
    ICH_HCR_EOIcount_SHIFT,
    lr_state,
    lr_with_state,
    make_lr,
)
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import REC_EXIT_OFFSET, RMI_REC_RUN, RmiFid, RmiRecExitReason, RmiStatus
from unirealm.arch.timer import CNT_CTL_ENABLE, CNT_CTL_ISTATUS
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_HZ

from .acs import CODE_IPA, DATA_IPA, AcsEnv, RecHandle, assert_status


def enter_with_gic(acs: AcsEnv, rec: RecHandle, hcr: int = 0, lrs: tuple[int, ...] = ()) -> list[int]:
    page = RMI_REC_RUN.pack(enter_gicv3_hcr=hcr, enter_gicv3_lrs=list(lrs) + [0] * (16 - len(lrs)))
    acs.ns.write(rec.run, page[:REC_EXIT_OFFSET])
    return acs.smc(RmiFid.REC_ENTER, rec.rec, rec.run)


def active_rec(acs: AcsEnv) -> RecHandle:
    realm = acs.default_realm()
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return rec


def test_gic_hcr_invalid(acs: AcsEnv) -> None:
    """ICH_HCR_EL2 bits the host may not set fail REC_ENTER: the ACS's vSGIEOICount (8) and
    TALL0 (11), and with TF-RMM every bit but UIE, LRENPIE, NPIE, VGrp{0,1}{E,D}IE and TDIR
    (En and EOIcount are the RMM's)."""
    rec = active_rec(acs)
    for bit in (0, 8, 9, 10, 11, 12, 13, 15, 27, 31, 63):
        assert_status(enter_with_gic(acs, rec, hcr=1 << bit), RmiStatus.ERROR_REC)
    assert_status(enter_with_gic(acs, rec, hcr=0xFE | 1 << 14), RmiStatus.SUCCESS)


def test_gic_ctrl_list_invalid(acs: AcsEnv) -> None:
    """A list register with HW = 1 fails REC_ENTER in every valid state (the ACS's vINTID 0x35,
    pINTID 0x32); the exit mirrors valid list registers."""
    rec = active_rec(acs)
    for state in (1, 2, 3):
        lr = (state << 62) | (1 << 61) | (0x32 << 32) | 0x35
        assert_status(enter_with_gic(acs, rec, lrs=(lr,)), RmiStatus.ERROR_REC)
    lr = (1 << 62) | 0x20  # pending, vINTID 32
    assert_status(enter_with_gic(acs, rec, lrs=(lr,)), RmiStatus.SUCCESS)
    run = RMI_REC_RUN.unpack(acs.ns.read(rec.run, GRANULE_SIZE))
    assert run["exit_reason"] == RmiRecExitReason.PSCI and run["exit_gicv3_lrs"][0] == lr


# --- realms running code --------------------------------------------------------------
HOST_CALL_IPA = DATA_IPA  # RsiHostCall (imm, gprs[31]) for val_realm_return_to_host
FLAG_IPA = DATA_IPA + 0x800  # the realm's handler_flag (holds the acknowledged INTID + 1)
SPI_VINTID, PPI_VINTID, SGI_VINTID = 59, 27, 12  # the ACS's FVP values (pal_config_def.h)

PRELUDE = f"""
    .text
_start:
    adr x0, vectors
    msr vbar_el1, x0
    ldr x20, ={HOST_CALL_IPA:#x}
    ldr x21, ={FLAG_IPA:#x}
    mov x0, #0xff
    msr icc_pmr_el1, x0
    mov x0, #1
    msr icc_igrpen1_el1, x0
    isb
    msr daifclr, #2
    b main

host_call:                          // val_realm_return_to_host: RSI_HOST_CALL
    ldr x0, =0xc4000199
    mov x1, x20
    smc #0
    ret

wait:                               // wait_for_interrupt: x1 = the INTID the handler saw, 0 on timeout
    ldr x2, =0x1000000
1:  ldr x1, [x21]
    cbnz x1, 2f
    subs x2, x2, #1
    bne 1b
    ret
2:  str xzr, [x21]
    sub x1, x1, #1
    ret
"""

VECTORS_IRQ = """
    .balign 2048
vectors:
    .balign 0x80
    b .
    .balign 0x80
    b .
    .balign 0x80
    b .
    .balign 0x80
    b .
    .balign 0x80                    // current EL, SP_ELx: synchronous
    b .
    .balign 0x80                    // current EL, SP_ELx: IRQ
    b irq
"""


def realm_code(acs: AcsEnv, tmp_path: Path, body: str, irq: str = "irq: eret") -> RecHandle:
    """The ACS's default realm running PRELUDE + `body` (label main), with `irq` as the IRQ
    handler (x21 points at the flag), its data page holding the RsiHostCall and the flag."""
    binary = assemble(PRELUDE + body + "\n" + irq + "\n" + VECTORS_IRQ + "    .ltorg\n", CODE_IPA, tmp_path)
    words = [int.from_bytes(binary[i : i + 4], "little") for i in range(0, len(binary), 4)]
    return acs.code_realm(words).rec


WATCHDOG = 30.0  # seconds: the host's EL2 timer ends a REC_ENTER whose realm code went astray


def enter_run(acs: AcsEnv, rec: RecHandle, hcr: int = 0, lrs: Sequence[int] = ()) -> dict[str, Any]:
    watchdog = HOST_IRQ.deadline is None
    if watchdog:
        HOST_IRQ.deadline = time.monotonic() + WATCHDOG
    try:
        assert_status(enter_with_gic(acs, rec, hcr, tuple(lrs)), RmiStatus.SUCCESS)
    finally:
        if watchdog:
            HOST_IRQ.deadline = None
    return RMI_REC_RUN.unpack(acs.ns.read(rec.run, GRANULE_SIZE))


def host_call_gprs(acs: AcsEnv, rec: RecHandle) -> list[int]:
    """The gprs of the realm's RsiHostCall, as the host call exit shows them."""
    run = RMI_REC_RUN.unpack(acs.ns.read(rec.run, GRANULE_SIZE))
    assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
    return list(run["exit_gprs"])


ACK_HANDLER = """
irq:                                // rmi_irq_handler: handler_flag = 1 (here the INTID + 1)
    mrs x3, icc_iar1_el1
    add x3, x3, #1
    str x3, [x21]
    eret
"""


def test_gic_ctrl_list(acs: AcsEnv, tmp_path: Path) -> None:
    """An SPI, a PPI and an SGI in a pending list register are taken by the realm and
    acknowledged (the exit shows the list register active), then EOIed (inactive); a list
    register the host writes inactive comes back inactive."""
    body = """
main:
    bl host_call
    mov x22, #3
1:  bl wait
    mov x23, x1
    bl host_call                    // exit without EOIR
    msr icc_eoir1_el1, x23
    msr icc_eoir1_el1, x23
    bl host_call
    subs x22, x22, #1
    bne 1b
    bl host_call
    bl host_call
    bl host_call
    b .
"""
    rec = realm_code(acs, tmp_path, body, ACK_HANDLER)
    run = enter_run(acs, rec)
    assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
    for intid in (SPI_VINTID, PPI_VINTID, SGI_VINTID):
        lr = make_lr(intid, LR_STATE_PENDING, 0)
        run = enter_run(acs, rec, lrs=[lr])
        assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
        assert run["exit_gicv3_lrs"][0] == lr_with_state(lr, LR_STATE_ACTIVE)
        run = enter_run(acs, rec, lrs=[run["exit_gicv3_lrs"][0]])
        assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
        assert lr_state(run["exit_gicv3_lrs"][0]) == LR_STATE_INVALID
    for intid in (SPI_VINTID, PPI_VINTID, SGI_VINTID):
        lr = make_lr(intid, LR_STATE_INVALID, 0)
        run = enter_run(acs, rec, lrs=[lr])
        assert run["exit_gicv3_lrs"][0] == lr


def test_gic_obsv_vmcr(acs: AcsEnv, tmp_path: Path) -> None:
    """VMCR in the exit matches what the realm reads from ICV_PMR, ICV_CTLR (EOImode),
    ICV_IGRPEN1 and ICV_BPR0, after the realm has set them."""
    body = """
main:
    mov x0, #0xa8
    msr icc_pmr_el1, x0
    mov x0, #2                      // EOImode
    msr icc_ctlr_el1, x0
    mov x0, #4
    msr icc_bpr0_el1, x0
    mrs x0, icc_pmr_el1
    str x0, [x20, #16]              // RsiHostCall.gprs[1]
    mrs x0, icc_ctlr_el1
    str x0, [x20, #24]
    mrs x0, icc_igrpen1_el1
    str x0, [x20, #32]
    mrs x0, icc_bpr0_el1
    str x0, [x20, #40]
    bl host_call
    b .
"""
    rec = realm_code(acs, tmp_path, body)
    run = enter_run(acs, rec)
    gprs, vmcr = host_call_gprs(acs, rec), run["exit_gicv3_vmcr"]
    assert (vmcr >> 24) & 0xFF == gprs[1] & 0xFF == 0xA8
    assert (vmcr >> 9) & 1 == (gprs[2] >> 1) & 1 == 1
    assert (vmcr >> 1) & 1 == gprs[3] & 1 == 1
    assert (vmcr >> 21) & 7 == gprs[4] & 7 == 4


def test_gic_ctrl_hcr(acs: AcsEnv, tmp_path: Path) -> None:
    """Maintenance status as the host enables it: NPIE once the realm has EOIed the only
    pending interrupt, UIE once one valid list register is left, LRENPIE (with EOIcount 1)
    after an EOI of an INTID no list register holds."""
    handler = f"""
irq:
    mrs x3, icc_iar1_el1
    cmp x3, #{SGI_VINTID}
    beq 1f                          // rmi_sgi_handler: no EOI
    msr icc_eoir1_el1, x3           // rmi_spi_handler, rmi_ppi_handler
1:  add x3, x3, #1
    str x3, [x21]
    eret
"""
    body = f"""
main:
    bl host_call
    bl wait
    bl host_call
    bl wait
    bl host_call
    bl wait
    mov x0, #{SPI_VINTID + 1}
    msr icc_eoir1_el1, x0
    bl host_call
    b .
"""
    rec = realm_code(acs, tmp_path, body, handler)
    assert enter_run(acs, rec)["exit_reason"] == RmiRecExitReason.HOST_CALL
    spi = make_lr(SPI_VINTID, LR_STATE_PENDING, 0)
    ppi = make_lr(PPI_VINTID, LR_STATE_PENDING, 0)
    run = enter_run(acs, rec, hcr=ICH_HCR_NPIE, lrs=[spi])
    assert run["exit_gicv3_misr"] & ICH_MISR_NP and run["exit_gicv3_hcr"] >> ICH_HCR_EOIcount_SHIFT == 0
    run = enter_run(acs, rec, hcr=ICH_HCR_UIE, lrs=[spi, ppi])
    assert run["exit_gicv3_misr"] & ICH_MISR_U and run["exit_gicv3_hcr"] >> ICH_HCR_EOIcount_SHIFT == 0
    run = enter_run(acs, rec, hcr=ICH_HCR_LRENPIE, lrs=[make_lr(SGI_VINTID, LR_STATE_PENDING, 0)])
    assert run["exit_gicv3_misr"] & ICH_MISR_LRENP, (run["exit_reason"], hex(run["exit_gicv3_hcr"]), [hex(x) for x in run["exit_gicv3_lrs"][:2]], run["exit_gprs"][:2])
    assert run["exit_gicv3_hcr"] >> ICH_HCR_EOIcount_SHIFT == 1


def test_gic_maintenance_interrupt_at_entry_is_an_irq_exit(acs: AcsEnv, tmp_path: Path) -> None:
    """UIE with no valid list register asserts the maintenance interrupt before the realm
    runs: REC_ENTER ends with an IRQ exit that reports MISR.U, and the realm made no progress."""
    rec = realm_code(acs, tmp_path, "main:\n    bl host_call\n    b .\n")
    run = enter_run(acs, rec, hcr=ICH_HCR_UIE)
    assert run["exit_reason"] == RmiRecExitReason.IRQ and run["exit_gicv3_misr"] == ICH_MISR_U
    assert enter_run(acs, rec)["exit_reason"] == RmiRecExitReason.HOST_CALL


def test_gic_sgi_from_the_realm_is_a_sysreg_exit(acs: AcsEnv, tmp_path: Path) -> None:
    """ICC_SGI1R_EL1 writes trap to EL2 (GICv3 does not virtualise SGI generation): a SYNC
    exit with the EC 0x18 syndrome of the MSR and the value in gprs[0]; the realm continues
    after it. Reading the write-only register is UNDEFINED in the realm."""
    body = """
main:
    ldr x5, =0x0c000008             // INTID 12 to Aff0 3
    msr icc_sgi1r_el1, x5
    bl host_call
    b .
"""
    rec = realm_code(acs, tmp_path, body)
    run = enter_run(acs, rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    access = SysRegAccess(op0=3, op1=0, crn=12, crm=11, op2=5, rt=5, is_read=False)
    assert run["exit_esr"] == esr(Ec.SYSREG, access.iss)
    assert run["exit_gprs"][0] == 0x0C00_0008
    assert enter_run(acs, rec)["exit_reason"] == RmiRecExitReason.HOST_CALL


COUNTERS = """
main:
    mrs x3, cntpct_el0
    mrs x4, cntvct_el0
1:  mrs x5, cntpct_el0
    cmp x5, x3
    beq 1b
    mrs x6, cntvct_el0
    stp x3, x5, [x20, #16]
    stp x4, x6, [x20, #32]
    bl host_call
    b .
"""


def test_gic_timer_val_read(acs: AcsEnv, tmp_path: Path) -> None:
    """The realm's physical and virtual counters both advance."""
    rec = realm_code(acs, tmp_path, COUNTERS)
    enter_run(acs, rec)
    p0, p1, v0, v1 = host_call_gprs(acs, rec)[1:5]
    assert p1 > p0 and v1 > v0


def test_gic_timer_rel1_trig(acs: AcsEnv, tmp_path: Path) -> None:
    """The realm's EL1 physical timer fires while the realm spins: an IRQ exit with ESR 0
    and cntp_ctl = ENABLE | ISTATUS; the REC timer's level stays with the REC (no second
    exit for the same level on the next entry)."""
    body = """
main:
    mov x0, #1
    msr cntp_tval_el0, x0
    msr cntp_ctl_el0, x0            // ENABLE, IMASK 0
    isb
    ldr x2, =0x4000000
1:  subs x2, x2, #1
    bne 1b
    bl host_call
    b .
"""
    rec = realm_code(acs, tmp_path, body)
    run = enter_run(acs, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ and run["exit_esr"] == 0
    assert run["exit_cntp_ctl"] == CNT_CTL_ENABLE | CNT_CTL_ISTATUS
    assert run["exit_cntv_ctl"] == 0
    run = enter_run(acs, rec)  # masked for the REC while asserted: the realm runs on
    assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
    assert run["exit_cntp_ctl"] == CNT_CTL_ENABLE | CNT_CTL_ISTATUS


@pytest.fixture
def host_timer() -> Iterator[None]:
    yield
    HOST_IRQ.deadline = None


SPIN = """
main:
    ldr x2, =0x40000000
1:  subs x2, x2, #1
    bne 1b
    bl host_call
    b .
"""


def test_gic_timer_nsel2_trig(acs: AcsEnv, tmp_path: Path, host_timer: None) -> None:
    """The host's own EL2 timer fires while the realm spins: REC_ENTER ends with an IRQ exit
    (ESR 0) before the realm's loop is done."""
    rec = realm_code(acs, tmp_path, SPIN)
    HOST_IRQ.deadline = time.monotonic() + 5000 / SYSTEM_COUNTER_HZ  # the ACS's 5000 ticks
    run = enter_run(acs, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ and run["exit_esr"] == 0
    assert time.monotonic() >= HOST_IRQ.deadline
