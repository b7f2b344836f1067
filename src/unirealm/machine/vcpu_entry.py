"""How an AArch64 vCPU (machine/vcpu.py) enters EL1 and serves its interrupt inputs.

`El1Entry` is the part of `VCpu` that takes exceptions to EL1 as the Arm ARM's
AArch64.TakeException does (synchronous ones the hypervisor injects, and the IRQ/FIQ its
interrupt lines signal), and that serves the lines' system registers (GIC CPU interface,
generic timers) on MRS/MSR inside `run()`, watching for the unmask of a pending interrupt.
`VCpu` supplies the Unicorn instance and the state declared below.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_BLOCK, UC_HOOK_INSN
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.unicorn import Uc, UcContext, uclib

from unirealm.arch import sysreg
from unirealm.arch.esr import DFSC_SEA, Ec, esr
from unirealm.arch.timer import CntSysreg, el0_may_access

from .irq import PENDING_FIQ, PENDING_IRQ, InterruptLines

SP_EL_IDS = (a64.UC_ARM64_REG_SP_EL0, a64.UC_ARM64_REG_SP_EL1)
COUNTER_KEYS = frozenset((CntSysreg.CNTPCT_EL0, CntSysreg.CNTVCT_EL0, CntSysreg.CNTFRQ_EL0))
# The generic timer's registers, which the CPU model implements (its MRS does not end a block).
MODEL_TIMER_KEYS = frozenset(int(k) for k in CntSysreg)
# An IRQ or FIQ the PSTATE bit masks.
INTERRUPT_MASKS = ((PENDING_IRQ, sysreg.PSTATE_I), (PENDING_FIQ, sysreg.PSTATE_F))


class RawRegs:
    """Register reads and writes through Unicorn's C API, for hooks on the hot path (the
    Python binding's reg_read/reg_write cost several times more per call)."""

    def __init__(self, uc: Uc) -> None:
        self._uch = uc._uch
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)

    def read(self, reg: int) -> int:
        uclib.uc_reg_read(self._uch, reg, self._ref)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value & 0xFFFF_FFFF_FFFF_FFFF
        uclib.uc_reg_write(self._uch, reg, self._ref)


def _masked(pstate: int) -> int:
    """The PENDING_* bits PSTATE's I and F mask."""
    return sum(bit for bit, mask in INTERRUPT_MASKS if pstate & mask)


class El1Entry:
    """Exception entry to EL1 and the interrupt lines' MRS/MSR, for `VCpu`."""

    uc: UcAArch64
    interrupts: InterruptLines | None
    on_interrupt: Callable[[int], None] | None
    native_counter: bool
    exceptions_taken: int
    interrupts_taken: int
    _raw: RawRegs
    _recursive: int
    _last_vector: int | None
    _last_syndrome: int
    _sysreg_hooks: bool
    _unmask_hook: int | None
    _seen_pending: int
    _irq_stop: bool
    _before_store: UcContext | None

    if TYPE_CHECKING:  # VCpu's
        @property
        def pc(self) -> int: ...

        @property
        def pstate(self) -> int: ...

        def read_sysreg(self, reg: sysreg.SysReg) -> int: ...

        def write_sysreg(self, reg: sysreg.SysReg, value: int) -> None: ...

    def _enter_el1(self, syndrome: int | None, far: int | None, elr: int, kind: int = 0) -> None:
        """Take an exception to EL1 as the Arm ARM's AArch64.TakeException does
        (D1.10): ESR_EL1 = syndrome (unchanged for an interrupt: `syndrome` None), FAR_EL1 =
        the faulting VA for aborts (`far`),
        ELR_EL1 = the preferred return address, SPSR_EL1 = PSTATE; PSTATE becomes EL1h
        with D, A, I, F masked and PAN set unless SCTLR_EL1.SPAN; the stack pointer of the
        level left is saved and SP_EL1 selected; PC = VBAR_EL1 + the vector offset for
        the level and stack the exception came from, plus `kind` (0 synchronous,
        VECTOR_IRQ, VECTOR_FIQ)."""
        uc = self.uc
        if syndrome is not None:
            self._recursive = self._recursive + 1 if elr == self._last_vector else 0
            self._last_syndrome = syndrome
        pstate = uc.reg_read(a64.UC_ARM64_REG_PSTATE)
        el = sysreg.pstate_el(pstate)
        if el == 0:
            offset = sysreg.VECTOR_LOWER_A64
        elif pstate & sysreg.PSTATE_SP:
            offset = sysreg.VECTOR_CURRENT_SPX
        else:
            offset = sysreg.VECTOR_CURRENT_SP0
        if syndrome is not None:
            uc.reg_write(a64.UC_ARM64_REG_ESR_EL1, syndrome)
        if far is not None:
            uc.reg_write(a64.UC_ARM64_REG_FAR_EL1, far)
        uc.reg_write(a64.UC_ARM64_REG_ELR_EL1, elr)
        # The SP in use is the one PSTATE.SP selects: SP_EL0, or SP_ELx of the current EL.
        current_sp = uc.reg_read(a64.UC_ARM64_REG_SP)
        uc.reg_write(SP_EL_IDS[el] if pstate & sysreg.PSTATE_SP else SP_EL_IDS[0], current_sp)
        new = sysreg.PSTATE_DAIF | sysreg.PSTATE_EL1H | (pstate & sysreg.PSTATE_PAN)
        if not self.read_sysreg(sysreg.SCTLR_EL1) & sysreg.SCTLR_SPAN:
            new |= sysreg.PSTATE_PAN
        uc.reg_write(a64.UC_ARM64_REG_PSTATE, new)
        uc.reg_write(a64.UC_ARM64_REG_SP, uc.reg_read(a64.UC_ARM64_REG_SP_EL1))
        # SPSR_EL1 is written through the system-register path, which also rebuilds the
        # CPU's cached EL/translation-regime state for the new PSTATE: the handler's code
        # is translated as EL1 code, with EL1's privileges and translation regime.
        self.write_sysreg(sysreg.SPSR_EL1, pstate)
        vector = uc.reg_read(a64.UC_ARM64_REG_VBAR_EL1) + offset + kind
        uc.reg_write(a64.UC_ARM64_REG_PC, vector)
        self._last_vector = vector
        self.exceptions_taken += 1

    def _take_interrupt(self, signalled: int) -> None:
        """Take the IRQ or FIQ that `signalled` (PENDING_*) brings in (FIQ first), with
        ELR_EL1 = the next instruction to execute."""
        kind = sysreg.VECTOR_FIQ if signalled & PENDING_FIQ else sysreg.VECTOR_IRQ
        if self.on_interrupt is not None:
            self.on_interrupt(PENDING_FIQ if kind == sysreg.VECTOR_FIQ else PENDING_IRQ)
        self._enter_el1(None, None, self.pc, kind)
        self.interrupts_taken += 1

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        """Take a synchronous exception to EL1 that the hypervisor injects (ESR as given)."""
        self._enter_el1(esr_value, far, self.pc if preferred_return is None else preferred_return)

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        """A synchronous external abort at the current PC (the faulting instruction)."""
        ec = Ec.IABT_LOWER if is_fetch else Ec.DABT_LOWER
        from_el0 = sysreg.pstate_el(self.pstate) == 0
        ec_value = ec if from_el0 else ec + 1  # "same EL" variants are EC + 1
        self.take_exception(esr(ec_value, DFSC_SEA), far)

    def inject_undef(self, preferred_return: int | None = None) -> None:
        """An UNDEFINED exception (EC 0); FAR_EL1 is left as it was."""
        self._enter_el1(esr(Ec.UNKNOWN), None, self.pc if preferred_return is None else preferred_return)

    def _on_sysreg(self, uc: Uc, rt: int, cp: object, is_write: bool) -> int:
        """An MRS/MSR: the interrupt lines' registers are served here and the instruction
        skipped (1); any other register goes on to the CPU model (0)."""
        lines = self.interrupts
        if lines is None:
            return 0
        if self._before_store is not None:
            return 1  # after a refused store: the block is being left (VCpu._refuse_store)
        key = sysreg.sysreg_key(cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)  # type: ignore[attr-defined]
        if not is_write and key in COUNTER_KEYS and self.native_counter:
            return 0  # the same count, without stopping emulation
        raw = self._raw
        if sysreg.pstate_el(raw.read(a64.UC_ARM64_REG_PSTATE)) == 0 and not el0_may_access(
            key, self.read_sysreg(sysreg.CNTKCTL_EL1)
        ):
            return 0  # the CPU model makes it UNDEFINED
        if is_write:
            if not lines.write_sysreg(key, cp.val):  # type: ignore[attr-defined]
                return 0
        else:
            value = lines.read_sysreg(key)
            if value is None:
                return 0
            if rt != a64.UC_ARM64_REG_XZR:
                raw.write(rt, value)
            if key in MODEL_TIMER_KEYS:
                # A register the CPU model implements: "skip" goes on with the next
                # instruction of the block. Reading a timer changes nothing the lines
                # signal, so emulation goes on too (a PC written here would be taken back
                # to this instruction's successor at the block's end, after the rest of
                # the block had executed: those instructions would run twice).
                return 1
        # A GIC CPU interface register, which the CPU model does not implement: its block
        # ends at the instruction, and "skip" would restart the block, so the PC moves
        # past it here. Emulation stops (at that block end: machine/vcpu_stops.py) and
        # run() looks at the lines again (the access may have changed what is signalled);
        # an MSR to a timer register ends its block too, and stops the same way.
        raw.write(a64.UC_ARM64_REG_PC, raw.read(a64.UC_ARM64_REG_PC) + 4)
        self._irq_stop = True
        uc.emu_stop()
        return 1

    def _on_block(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        """Present while an interrupt is pending but masked: stop at the first translation
        block PSTATE lets it into (blocks end after each DAIF write and ERET)."""
        if self._seen_pending & ~_masked(self._raw.read(a64.UC_ARM64_REG_PSTATE)):
            self._irq_stop = True
            uc.emu_stop()

    def _install_sysreg_hooks(self) -> None:
        self.uc.hook_add(UC_HOOK_INSN, self._on_sysreg, False, 1, 0, a64.UC_ARM64_INS_MRS)
        self.uc.hook_add(UC_HOOK_INSN, self._on_sysreg, True, 1, 0, a64.UC_ARM64_INS_MSR)
        self.uc.ctl_flush_tb()  # code translated before has no hook calls
        self._sysreg_hooks = True

    def _watch_unmask(self, on: bool) -> None:
        if on and self._unmask_hook is None:
            self._unmask_hook = self.uc.hook_add(UC_HOOK_BLOCK, self._on_block)
            self.uc.ctl_flush_tb()
        elif not on and self._unmask_hook is not None:
            # Blocks translated meanwhile keep a call into Unicorn that finds no hook: cheap.
            self.uc.hook_del(self._unmask_hook)
            self._unmask_hook = None

    def _interrupt_window(self, lines: InterruptLines) -> tuple[int, float | None]:
        """Look at the lines before running: (what to take now, the deadline to stop at)."""
        deadline = lines.next_deadline()  # first: a deadline passing now shows in pending()
        pending = lines.pending()
        self._seen_pending = pending
        deliverable = pending & ~_masked(self._raw.read(a64.UC_ARM64_REG_PSTATE)) if pending else 0
        self._watch_unmask(bool(pending) and not deliverable)
        return deliverable, deadline
