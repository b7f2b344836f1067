"""RMI_REC_ENTER: complete what the last exit left pending, run the REC, report the exit.

The REC runs until something needs the host (emulated MMIO, a stage-2 fault the host must
fix, PSCI, RIPAS_CHANGE, HOST_CALL, WFI/WFE, an interrupt). Everything else — RSI calls,
local PSCI calls, aborts the realm must see as external aborts, undefined instructions —
is handled here without leaving REC_ENTER (digest §2.2, §2.3; TF-RMM runtime/core/exit.c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unirealm.arch.esr import (
    DFSC_PERMISSION_L0,
    DFSC_TRANSLATION_L0,
    ISS_WFX_TI_WFE,
    ISV,
    REC_EXIT_ABORT_ESR_MASK,
    REC_EXIT_EMULATABLE_ABORT_ESR_MASK,
    REC_EXIT_WFX_ESR_MASK,
    Ec,
    SysRegAccess,
    esr,
    esr_ec,
    hpfar_for_ipa,
    ipa_from_hpfar_far,
)
from unirealm.arch.memory import GRANULE_MASK
from unirealm.arch.rmi import (
    NUM_REC_GPRS,
    REC_EXIT_OFFSET,
    RMI_REC_ENTER_SPAN,
    RMI_REC_EXIT_SPAN,
    RealmState,
    RmiRecEnterFlags,
    RmiRecExitReason,
    RmiRipas,
    RmiStatus,
)
from unirealm.arch.rsi import RSI_HOST_CALL, RsiResponse, RsiStatus
from unirealm.machine.monitor import Caller
from unirealm.machine.vcpu import (
    CpuErrorTrap,
    DataAbortTrap,
    HvcTrap,
    InstructionAbortTrap,
    IrqTrap,
    SmcTrap,
    SvcTrap,
    SysRegTrap,
    UndefinedTrap,
    WfxTrap,
)

from . import s2tte, sysreg, vgic
from .realm import PendingKind, Realm, Rec, rec_mpidr_to_mpidr
from .state import RmiError, RmmState

# Injected exceptions in a row after which the REC yields to the host, as a host timer
# interrupt would end a realm that is stuck taking the same fault.
MAX_INJECTIONS_IN_A_ROW = 64
# RmiRecEnter.flags as plain ints: tested at every REC_ENTER, where IntFlag arithmetic costs.
EMULATED_MMIO = int(RmiRecEnterFlags.EMULATED_MMIO)
INJECT_SEA = int(RmiRecEnterFlags.INJECT_SEA)
TRAP_WFI = int(RmiRecEnterFlags.TRAP_WFI)
TRAP_WFE = int(RmiRecEnterFlags.TRAP_WFE)
RIPAS_RESPONSE = int(RmiRecEnterFlags.RIPAS_RESPONSE)
ENTER_FLAGS_MASK = EMULATED_MMIO | INJECT_SEA | TRAP_WFI | TRAP_WFE | RIPAS_RESPONSE


@dataclass
class RecExit:
    """The contents of RmiRecExit, built by a handler that needs the host."""

    reason: RmiRecExitReason
    esr: int = 0
    far: int = 0
    hpfar: int = 0
    gprs: list[int] = field(default_factory=list)
    ripas_base: int = 0
    ripas_top: int = 0
    ripas_value: int = 0
    imm: int = 0


def realm_pa(rmm: RmmState, realm: Realm, ipa: int) -> int | None:
    mapping = rmm.stage2_translate(realm, ipa & ~GRANULE_MASK)
    if mapping is None or not realm.addr_in_par(ipa):
        return None
    return mapping.pa + (ipa & GRANULE_MASK)


def stage2_abort_exit(ipa: int, level: int = 3, ec: Ec = Ec.DABT_LOWER) -> RecExit:
    """A non-emulatable stage-2 abort at a protected IPA: the host must map the IPA, then the
    access retries. The host sees EC and the fault status only, and no FAR."""
    return RecExit(
        RmiRecExitReason.SYNC,
        esr=esr(ec, DFSC_TRANSLATION_L0 + level) & REC_EXIT_ABORT_ESR_MASK,
        hpfar=hpfar_for_ipa(ipa),
    )


def enter(rmm: RmmState, rec_pa: int, run_pa: int) -> tuple[int, ...]:
    rec = rmm.rec_of(rec_pa)
    if not rmm.is_ns_granule(run_pa):
        raise RmiError(RmiStatus.ERROR_INPUT)
    realm = rmm.realms[rec.rd]
    if realm.state == RealmState.NEW:
        raise RmiError(RmiStatus.ERROR_REALM, 0)
    if realm.state == RealmState.SYSTEM_OFF:
        raise RmiError(RmiStatus.ERROR_REALM, 1)
    if not rec.runnable or rec.psci_request is not None or rec.running:
        raise RmiError(RmiStatus.ERROR_REC)
    run = RMI_REC_ENTER_SPAN.unpack(rmm.mem.read(run_pa, RMI_REC_ENTER_SPAN.size))
    # The GIC state is checked after the REC's own state, before anything with side effects
    # (TF-RMM smc_rec_enter), and taken into the REC at once.
    if not vgic.entry_state_valid(run["enter_gicv3_hcr"], run["enter_gicv3_lrs"]):
        raise RmiError(RmiStatus.ERROR_REC)
    rec.gic.load_entry(run["enter_gicv3_hcr"], run["enter_gicv3_lrs"])

    flags = run["enter_flags"] & ENTER_FLAGS_MASK
    check_exit_completion_flags(realm, rec, flags)
    complete_pending(rmm, realm, rec, flags, run["enter_gprs"])
    rec.last_exit_esr = rec.last_exit_hpfar = 0
    rec.running = True
    rmm.current_rec = rec
    attach_interrupt_lines(rec)
    try:
        rec_exit = run_until_exit(rmm, realm, rec, flags)
    finally:
        rec.running = False
        rmm.current_rec = None
    if rec_exit.reason == RmiRecExitReason.SYNC:
        rec.last_exit_esr, rec.last_exit_hpfar = rec_exit.esr, rec_exit.hpfar
    write_exit(rmm, run_pa, rec, rec_exit)
    return ()


def attach_interrupt_lines(rec: Rec) -> None:
    """Give the PE that runs the REC its interrupt lines (machine.irq): the REC's virtual CPU
    interface and timers, and the MPIDR it reads. A machine.cpu.Cpu picks its mode at first
    use; a mode without interrupt inputs (the Python kernel, a scripted engine) has no
    `interrupts`."""
    target = getattr(rec.engine, "impl", rec.engine)
    if hasattr(target, "interrupts"):
        target.interrupts = rec.lines
    if hasattr(target, "set_mpidr"):  # VMPIDR_EL2 from RmiRecParams.mpidr (TF-RMM init_rec_sysregs)
        target.set_mpidr(rec_mpidr_to_mpidr(rec.mpidr))


def check_exit_completion_flags(realm: Realm, rec: Rec, flags: int) -> None:
    """INJECT_SEA needs a last exit that was a data abort at an unprotected IPA; otherwise
    EMULATED_MMIO needs one that was an emulatable data abort (ISV set). ERROR_REC if not
    (digest §2.2 REC_ENTER; TF-RMM complete_sea_insertion, complete_mmio_emulation)."""
    data_abort = esr_ec(rec.last_exit_esr) == Ec.DABT_LOWER
    if flags & INJECT_SEA:
        if not data_abort or realm.addr_in_par(ipa_from_hpfar_far(rec.last_exit_hpfar, 0)):
            raise RmiError(RmiStatus.ERROR_REC)
    elif flags & EMULATED_MMIO and not (data_abort and rec.last_exit_esr & ISV):
        raise RmiError(RmiStatus.ERROR_REC)


def complete_pending(rmm: RmmState, realm: Realm, rec: Rec, flags: int, gprs: list[int]) -> None:
    engine = rec.engine
    kind, rec.pending = rec.pending, PendingKind.NONE
    if kind == PendingKind.MMIO:
        if flags & INJECT_SEA:
            engine.inject_sea(rec.mmio_va)  # FAR_EL1 = the VA of the access the host refused
        elif flags & EMULATED_MMIO and rec.mmio is not None:
            if rec.mmio_is_write:
                engine.skip_instruction()
            else:
                engine.complete_mmio_read(rec.mmio, gprs[0])
        rec.mmio = None
    elif kind == PendingKind.RIPAS_CHANGE:
        req = rec.ripas_request
        assert req is not None
        rejected = (
            bool(flags & RIPAS_RESPONSE) and req.ripas == RmiRipas.RAM and req.addr != req.top
        )
        engine.set_gpr(0, RsiStatus.SUCCESS)
        engine.set_gpr(1, req.addr)
        engine.set_gpr(2, RsiResponse.REJECT if rejected else RsiResponse.ACCEPT)
        rec.ripas_request = None
    elif kind == PendingKind.HOST_CALL:
        pa = realm_pa(rmm, realm, rec.host_call_ipa)
        if pa is not None:
            buf = bytearray(rmm.mem.read(pa, RSI_HOST_CALL.size))
            RSI_HOST_CALL.pack_into(buf, 0, gprs=gprs[:NUM_REC_GPRS])
            rmm.mem.write(pa, buf)
            engine.set_gpr(0, RsiStatus.SUCCESS)
        else:  # the host unmapped the structure meanwhile
            engine.set_gpr(0, RsiStatus.ERROR_INPUT)
    elif kind == PendingKind.PSCI:
        engine.set_gpr(0, 0)  # PSCI_SUCCESS for the calls that need no PSCI_COMPLETE
    elif kind == PendingKind.TOKEN_IRQ:
        engine.set_gpr(0, RsiStatus.INCOMPLETE)
        engine.set_gpr(1, 0)


def run_until_exit(rmm: RmmState, realm: Realm, rec: Rec, flags: int) -> RecExit:
    engine = rec.engine
    while True:
        if rmm.pending_irq:
            rmm.pending_irq = False
            return RecExit(RmiRecExitReason.IRQ)
        if rec.gic.maintenance():  # the maintenance interrupt is the host's physical PPI
            return RecExit(RmiRecExitReason.IRQ)
        if rec.lines.check_timers():  # the host must learn a timer's new output level
            return RecExit(RmiRecExitReason.IRQ)
        if rec.injected_in_a_row >= MAX_INJECTIONS_IN_A_ROW:
            rec.injected_in_a_row = 0
            return RecExit(RmiRecExitReason.IRQ)
        trap = engine.run()
        if rec.lines.trapped is not None:  # an MSR the virtual CPU interface traps to EL2
            return gic_trap_exit(rec)
        if isinstance(trap, IrqTrap):  # a physical interrupt for the host (machine.interrupt)
            return RecExit(RmiRecExitReason.IRQ)
        if isinstance(trap, SmcTrap):
            rec.injected_in_a_row = 0
            result = rmm.monitor.smc(Caller.R_EL1, trap.regs)
            if isinstance(result, list):
                for i in range(9):  # x0..x8: the widest RSI result (MEASUREMENT_READ)
                    if result[i] != trap.regs[i]:
                        engine.set_gpr(i, result[i])
                continue
            assert isinstance(result, RecExit)
            return result
        if isinstance(trap, DataAbortTrap):
            exit_ = data_abort(rmm, realm, rec, trap)
            if exit_ is not None:
                return exit_
            continue
        if isinstance(trap, InstructionAbortTrap):
            if realm.addr_in_par(trap.ipa) and rmm.ripas_at(realm, trap.ipa)[0] != RmiRipas.EMPTY:
                return stage2_abort_exit(trap.ipa, rmm.ripas_at(realm, trap.ipa)[2], Ec.IABT_LOWER)
            engine.inject_sea(trap.ipa, is_fetch=True)
            rec.injected_in_a_row += 1
            continue
        if isinstance(trap, WfxTrap):
            trapped = TRAP_WFE if trap.is_wfe else TRAP_WFI
            if flags & trapped:
                rec.injected_in_a_row = 0
                iss = ISS_WFX_TI_WFE if trap.is_wfe else 0
                return RecExit(RmiRecExitReason.SYNC, esr=esr(Ec.WFX, iss) & REC_EXIT_WFX_ESR_MASK)
            if rec.gic.any_pending():
                # An interrupt is pending (masked or not): the WFI completes at once. A REC
                # that keeps waiting on a masked one yields to the host's tick.
                rec.injected_in_a_row += 1
                continue
            # Untrapped WFI waits for an interrupt; the host's next interrupt ends REC_ENTER.
            return RecExit(RmiRecExitReason.IRQ)
        if isinstance(trap, SvcTrap):
            # SVC at EL1 is taken to the realm's own EL1 vector.
            engine.take_exception(esr(Ec.SVC64, trap.imm))
            rec.injected_in_a_row += 1
            continue
        if isinstance(trap, SysRegTrap):
            value = sysreg.emulate(realm, trap.access, engine.read_sysreg)
            if value is None:
                engine.inject_undef()
            else:
                engine.set_gpr(trap.access.rt, value)
                engine.skip_instruction()
            continue
        if isinstance(trap, UndefinedTrap | HvcTrap | CpuErrorTrap):
            # HVC is not a conduit for realms: the RMM makes it UNDEFINED (digest §1.1),
            # with ELR = the HVC's preferred return address, the next instruction, as
            # TF-RMM's realm_inject_undef_abort() does; other traps return to the
            # instruction that trapped.
            engine.inject_undef()
            rec.injected_in_a_row += 1
            continue
        raise AssertionError(f"unexpected trap {trap!r}")


def gic_trap_exit(rec: Rec) -> RecExit:
    """The SYNC exit for the GIC register write the REC's interrupt lines took as a trap: the
    vCPU has completed the MSR, so its Rt is read from the instruction just executed."""
    assert rec.lines.trapped is not None
    key, value = rec.lines.trapped
    rec.lines.trapped = None
    target = getattr(rec.engine, "impl", rec.engine)
    insn = target.read_insn_at(rec.engine.pc - 4) if hasattr(target, "read_insn_at") else None
    decoded = SysRegAccess.from_insn(insn) if insn is not None else None
    rt = decoded.rt if decoded is not None else 0
    access = SysRegAccess(key >> 14, (key >> 11) & 7, (key >> 7) & 0xF, (key >> 3) & 0xF, key & 7, rt, False)
    return RecExit(RmiRecExitReason.SYNC, esr=esr(Ec.SYSREG, access.iss), gprs=[value])


def data_abort(rmm: RmmState, realm: Realm, rec: Rec, trap: DataAbortTrap) -> RecExit | None:
    """Route a stage-2 data abort: SEA into the realm, or a SYNC exit to the host."""
    ipa = trap.ipa
    engine = rec.engine
    va = ipa if trap.va is None else trap.va  # FAR_EL1 of an injected SEA holds the VA
    if ipa >= realm.ipa_size or trap.gpf:
        engine.inject_sea(va)
        rec.injected_in_a_row += 1
        return None
    if realm.addr_in_par(ipa):
        ripas, _, level = rmm.ripas_at(realm, ipa)
        if ripas == RmiRipas.EMPTY:
            engine.inject_sea(va)
            rec.injected_in_a_row += 1
            return None
        rec.injected_in_a_row = 0
        return stage2_abort_exit(ipa, level)
    rec.injected_in_a_row = 0
    rec.pending = PendingKind.MMIO
    rec.mmio = trap.syndrome
    rec.mmio_is_write = trap.is_write
    rec.mmio_va = va
    walk = realm.stage2.walk(ipa)
    if walk.entry.kind == s2tte.Kind.ASSIGNED_NS or trap.syndrome is None:
        # Non-emulatable: a mapped unprotected IPA faults only on what its S2AP forbids (a
        # permission fault), or the access has no instruction syndrome. The host sees EC,
        # SET, FnV, EA, the fault status and HPFAR; no FAR and no written value.
        dfsc = (DFSC_PERMISSION_L0 if walk.entry.kind == s2tte.Kind.ASSIGNED_NS else DFSC_TRANSLATION_L0) + walk.level
        return RecExit(
            RmiRecExitReason.SYNC, esr=esr(Ec.DABT_LOWER, dfsc) & REC_EXIT_ABORT_ESR_MASK, hpfar=hpfar_for_ipa(ipa)
        )
    return RecExit(
        RmiRecExitReason.SYNC,
        esr=esr(Ec.DABT_LOWER, trap.syndrome.iss(walk.level)) & REC_EXIT_EMULATABLE_ABORT_ESR_MASK,
        far=ipa & GRANULE_MASK,
        hpfar=hpfar_for_ipa(ipa),
        gprs=[trap.value] if trap.is_write else [],
    )


def write_exit(rmm: RmmState, run_pa: int, rec: Rec, rec_exit: RecExit) -> None:
    """RmiRecExit, all of it (the bytes between its fields zero): the exit's own fields, and
    at every exit the REC's GIC state and EL1 timers (TF-RMM gic_copy_state_to_rec_exit,
    report_timer_state_to_ns)."""
    rmm.mem.write(
        run_pa + REC_EXIT_OFFSET,
        RMI_REC_EXIT_SPAN.pack(
            exit_reason=rec_exit.reason,
            exit_esr=rec_exit.esr,
            exit_far=rec_exit.far,
            exit_hpfar=rec_exit.hpfar,
            exit_gprs=rec_exit.gprs,
            **rec.gic.exit_state(),
            **rec.lines.at_exit(),
            exit_ripas_base=rec_exit.ripas_base,
            exit_ripas_top=rec_exit.ripas_top,
            exit_ripas_value=rec_exit.ripas_value,
            exit_imm=rec_exit.imm,
        ),
    )
