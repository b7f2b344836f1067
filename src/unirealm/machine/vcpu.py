"""An AArch64 vCPU on Unicorn, with a stage-2 translation supplied by its owner.

The vCPU presents EL1 as an RME machine does: SCR_EL3 and HCR_EL2 are programmed as EL3
firmware and the hypervisor (KVM, or the RMM for a realm) program them, so EL1 and EL0 are
AArch64 and the guest's own stage-1 tables are walked in the VMSAv8-64 format. Unicorn's
address space is the guest's IPA space: stage 1 is the guest's, stage 2 is the owner's.

The vCPU runs guest code until something needs its hypervisor: an SMC or HVC, a stage-2
fault, WFI/WFE, an access EL2 traps (ID registers of a realm). `run()` returns that event as
a Trap, with the PC where the architecture leaves it: after the SMC/HVC/WFx, at the faulting
load or store or trapped instruction. The owner (the RMM for a REC, the host's KVM layer
for a normal VM) handles the trap and calls `run()` again; the guest resumes exactly where
it stopped. Exceptions the architecture takes to EL1 (SVC, stage-1 aborts, undefined
instructions, BRK, alignment faults) never leave the vCPU: see `_enter_el1` (machine/vcpu_entry.py).

With `interrupts` set (machine/irq.py), the owner's interrupt controller and timers are the
PE's: their MRS/MSR are served inside `run()` (an UC_HOOK_INSN on MRS/MSR), and an IRQ or
FIQ the lines signal is taken as the architecture takes it, at `run()` entry and at the
first instruction boundary where PSTATE lets it in (machine/vcpu_entry.py). QEMU ends a translation block after
every write of PSTATE.DAIF (MSR DAIFClr/DAIFSet/DAIF) and after ERET, so while an interrupt
is pending but masked a UC_HOOK_BLOCK, present only then, sees the unmask at the first
instruction it allows. `emu_start`'s timeout ends a run at the lines' next deadline; the
owner gets an IrqTrap (a physical interrupt for the hypervisor).

Guest memory is never copied: each IPA page is mapped on first touch with
`mem_map_ptr` onto the machine's physical memory, after the owner's stage-2 lookup and the
GPT check for the world the mapping belongs to. `invalidate()` is the TLBI: it drops
mappings (and translated code) when the owner changes stage 2, and any PAS change of a
mapped granule drops its mappings too.

A run that stops for a reason outside the guest (the timeout at the lines' deadline or the
time slice's end, a kick) stops between two instructions, as the PE takes an interrupt:
machine/vcpu_stops.py keeps Unicorn from stopping after a load or store with the PC still
at it, and `_refuse_store` makes a store stage 2 refuses end its block at once.

Exception entry to EL1 and the interrupt lines' MRS/MSR are `El1Entry` (machine/vcpu_entry.py).
Why one module: what stays here is one state machine: `run()`, the Unicorn hooks it
arms and the stage-2 mappings they fill share the vCPU's private fault/trap state.
"""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from unicorn import (
    UC_ARCH_ARM64,
    UC_HOOK_INTR,
    UC_HOOK_MEM_PROT,
    UC_HOOK_MEM_UNMAPPED,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_PROT,
    UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_ARM,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UcError,
)
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.unicorn import Uc, UcContext, uclib

from unirealm.arch import sysreg
from unirealm.arch.a64 import access_address
from unirealm.arch.esr import (
    WFE_INSN,
    WFI_INSN,
    AccessSyndrome,
    Ec,
    SysRegAccess,
    decode_load_store,
    esr,
    esr_ec,
    esr_iss,
    may_be_unmapped_table,
)
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE, World

from .interrupt import HOST_IRQ
from .irq import InterruptLines
from .memory import GranuleProtectionFault, PhysicalMemory
from .vcpu_entry import El1Entry, RawRegs
from .vcpu_stops import stop_at_block_boundaries

# A permission fault is reported as the access kind of the matching unmapped fault.
PROT_AS_UNMAPPED = {
    UC_MEM_READ_PROT: UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE_PROT: UC_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT: UC_MEM_FETCH_UNMAPPED,
}

# Unicorn interrupt numbers (QEMU EXCP_*) seen by UC_HOOK_INTR for AArch64.
EXCP_UDEF = 1
EXCP_SWI = 2
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7
EXCP_HVC = 11
EXCP_SMC = 13
SYNC_EXCEPTIONS = (EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT, EXCP_BKPT, EXCP_HVC, EXCP_SMC)

GPR_IDS: tuple[int, ...] = (
    *(a64.UC_ARM64_REG_X0 + i for i in range(29)),
    a64.UC_ARM64_REG_X29,
    a64.UC_ARM64_REG_X30,
)
NUM_SMC_ARGS = 18
PSTATE_EL1H_DAIF = 0x3C5  # EL1h, D/A/I/F masked: the reset state of a REC (digest §2.2)
PSTATE_EL0T = 0x0
# In-vCPU exceptions in a row whose handler's first instruction faults again: the guest's
# vectors are broken, and the vCPU stops rather than spin as the hardware would.
MAX_RECURSIVE_EXCEPTIONS = 8

RUN_FOREVER = 0xFFFF_FFFF_FFFF_FFFF
TCR_EPD0, TCR_EPD1 = 1 << 7, 1 << 23  # TCR_EL1: no walk for TTBR0_EL1, TTBR1_EL1 addresses

CPU_MODELS = {"a72": a64.UC_CPU_ARM64_A72, "a53": a64.UC_CPU_ARM64_A53, "max": a64.UC_CPU_ARM64_MAX}


class ExceptionRecord:
    """Where the CPU model keeps the exception it is about to take.

    When the translated code raises a synchronous exception, QEMU's target code fills
    `env->exception` (syndrome in ESR format, faulting virtual address, target EL) before
    the exception is taken; Unicorn then calls UC_HOOK_INTR instead of taking it. The
    record is read out of the CPU context: its offset is found once per process by
    raising an SVC with a known immediate in a scratch CPU and locating the syndrome that
    SVC must produce (Arm ARM: EC 0x15, IL 1, ISS = imm16)."""

    PROBE_IMM = 0xA5C3
    _offset: int | None = None

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.ctx = uc.context_save()
        self._data = self._data_address(uc, self.ctx)
        self.offset = ExceptionRecord.find_offset()

    @staticmethod
    def _data_address(uc: Uc, ctx: object) -> int:
        pointer = ctypes.cast(ctx.context, ctypes.c_void_p).value  # type: ignore[attr-defined]
        assert pointer is not None
        cpu_size = ctypes.c_size_t.from_address(pointer).value  # uc_context.context_size
        return pointer + uclib.uc_context_size(uc._uch) - cpu_size  # uc_context.data

    @classmethod
    def find_offset(cls) -> int:
        if cls._offset is None:
            uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
            uc.mem_map(0, 0x1000)
            uc.mem_write(0, (0xD4000001 | cls.PROBE_IMM << 5).to_bytes(4, "little"))  # svc #imm
            seen: list[bytes] = []

            def hook(uc: Uc, intno: int, _ud: object) -> None:
                ctx = uc.context_save()
                address = cls._data_address(uc, ctx)
                start = ctypes.cast(ctx.context, ctypes.c_void_p).value or 0
                size = uclib.uc_context_size(uc._uch) - (address - start)
                seen.append(ctypes.string_at(address, size))
                uc.emu_stop()

            uc.hook_add(UC_HOOK_INTR, hook)
            uc.emu_start(0, 4)
            expected = struct.pack("<I", esr(Ec.SVC64, cls.PROBE_IMM))
            if len(seen) != 1 or seen[0].count(expected) != 1:
                raise RuntimeError("this Unicorn build does not expose its exception record")
            cls._offset = seen[0].index(expected)
        return cls._offset

    def read(self) -> tuple[int, int, int]:
        """(syndrome, virtual address, target EL) of the exception being raised."""
        self.uc.context_update(self.ctx)
        syndrome, _fsr, vaddress, target_el = struct.unpack(
            "<IIQI", ctypes.string_at(self._data + self.offset, 20)
        )
        return syndrome, vaddress, target_el


@dataclass(frozen=True)
class Mapping:
    """A stage-2 translation result for one page: where it lives and in which PAS."""

    pa: int
    world: World  # the PAS the access is made in: REALM for protected, NON_SECURE for NS
    writable: bool = True
    executable: bool = True
    readable: bool = True


# (ipa, is_write, is_fetch) -> Mapping, or None for a stage-2 fault
Translate = Callable[[int, bool, bool], Mapping | None]


@dataclass
class Trap:
    pc: int


@dataclass
class SmcTrap(Trap):
    regs: list[int] = field(default_factory=list)  # x0..x17


@dataclass
class HvcTrap(Trap):
    regs: list[int] = field(default_factory=list)
    imm: int = 0


@dataclass
class SvcTrap(Trap):
    imm: int = 0


@dataclass
class DataAbortTrap(Trap):
    """A stage-2 data abort. `syndrome` is None when the instruction gives no valid ISS."""

    ipa: int = 0
    is_write: bool = False
    size: int = 0
    syndrome: AccessSyndrome | None = None
    value: int = 0  # the value a store would have written
    gpf: bool = False  # the stage-2 mapping exists but the GPT refused the access
    s1ptw: bool = False  # the access was the stage-1 table walk's, to a table at `ipa`
    va: int | None = None  # the virtual address accessed (FAR), when it can be known


@dataclass
class InstructionAbortTrap(Trap):
    ipa: int = 0


@dataclass
class WfxTrap(Trap):
    is_wfe: bool = False


@dataclass
class UndefinedTrap(Trap):
    """An exception EL2 or EL3 configuration routes to the hypervisor that has no handler
    of its own here (an SVE access EL2 traps, for one); `esr` is its syndrome."""

    insn: int = 0
    esr: int = 0


@dataclass
class SysRegTrap(Trap):
    """An MRS/MSR EL2 traps (EC 0x18), e.g. an ID register read with HCR_EL2.TID3 set."""

    access: SysRegAccess = field(default_factory=lambda: SysRegAccess.from_iss(0))


@dataclass
class IrqTrap(Trap):
    """A physical interrupt for the host stopped the PE at pc (machine.interrupt)."""


@dataclass
class CpuErrorTrap(Trap):
    message: str = ""


@dataclass(frozen=True)
class El2Context:
    """How EL3 firmware and the hypervisor configure the PE for a guest."""

    world: World = World.NON_SECURE
    trap_id_registers: bool = False  # HCR_EL2.TID3, as the RMM sets it for realms
    trap_sve: bool = False  # CPTR_EL2.TZ

    @property
    def scr_el3(self) -> int:
        world = sysreg.SCR_NS | (sysreg.SCR_NSE if self.world == World.REALM else 0)
        return world | sysreg.SCR_HCE | sysreg.SCR_RW

    @property
    def hcr_el2(self) -> int:
        return sysreg.HCR_RW | (sysreg.HCR_TID3 if self.trap_id_registers else 0)


class VCpu(El1Entry):
    """One AArch64 processing element, executing guest machine code on Unicorn."""

    def __init__(
        self,
        memory: PhysicalMemory,
        translate: Translate,
        cpu_model: str = "max",
        context: El2Context | None = None,
    ) -> None:
        self.memory = memory
        self.translate = translate
        self.context = context or El2Context()
        self.uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
        stop_at_block_boundaries(self.uc)  # a stop never lands inside an instruction
        self.uc.ctl_set_cpu_model(CPU_MODELS[cpu_model])
        self._program_el3_el2()
        self._exception = ExceptionRecord(self.uc)
        self._mapped: dict[int, int] = {}  # ipa page -> pa
        self._by_pa: dict[int, set[int]] = {}  # pa -> ipa pages mapping it
        self._trap: Trap | None = None
        self._fault: tuple[int, int, int, int] | None = None  # (kind, address, size, value)
        self._fault_gpf = False
        self._code_page: tuple[int, Mapping] | None = None  # a page a fetch needs, mapped after the run
        # Pages a refused store waits to be stepped through: page -> (its mapping, the address
        # and size of the store's access to it).
        self._write_only: dict[int, tuple[Mapping, int, int]] = {}
        # The state at a store a hook refused, while the rest of its block is made to fault.
        self._before_store: UcContext | None = None
        self._store_context = self.uc.context_save()  # reused: one allocation per vCPU
        self._last_vector: int | None = None
        self._entry: tuple[int, int | None, int] | None = None  # an exception for EL1 (ESR, FAR, ELR)
        self._recursive = 0
        self._last_syndrome = 0
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self.uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        self.uc.hook_add(UC_HOOK_MEM_PROT, self._on_forbidden)
        memory.on_pas_change(self._on_pas_change)
        self.exceptions_taken = 0
        self.interrupts: InterruptLines | None = None  # set by the owner; None: no interrupt inputs
        self.interrupts_taken = 0
        self._sysreg_hooks = False
        self._unmask_hook: int | None = None
        self._seen_pending = 0  # what the lines signalled when last looked at
        self._irq_stop = False  # a hook stopped emulation to look at the lines again
        self.on_interrupt: Callable[[int], None] | None = None  # told PENDING_IRQ/FIQ at each entry
        self._kicked = False
        # CNTPCT/CNTVCT/CNTFRQ reads left to the CPU model, whose counter is the machine's
        # system counter (host CLOCK_MONOTONIC at 62.5 MHz, machine/timer.py system_count)
        # with CNTVOFF_EL2 = 0: an owner whose timers count otherwise sets this False.
        self.native_counter = True
        self._raw = RawRegs(self.uc)

    def _program_el3_el2(self) -> None:
        """SCR_EL3 and HCR_EL2 as the firmware and hypervisor leave them when they enter EL1.

        The CPU model predates FEAT_RME and keeps only SCR_EL3 bits it knows: NSE is not
        retained, and the realm world of this PE's accesses is the PAS of each stage-2
        mapping, checked against the GPT (`Mapping.world`)."""
        ctx = self.context
        self.write_sysreg(sysreg.SCR_EL3, ctx.scr_el3)
        self.write_sysreg(sysreg.HCR_EL2, ctx.hcr_el2)
        # EL3 firmware built with SVE for the lower ELs (TF-A's ENABLE_SVE_FOR_NS): CPTR_EL3.EZ
        # and the largest vector length; the CPU model's ID_AA64PFR0_EL1.SVE says it is there.
        self.write_sysreg(sysreg.CPTR_EL3, self.read_sysreg(sysreg.CPTR_EL3) | sysreg.CPTR_EL3_EZ)
        self.write_sysreg(sysreg.ZCR_EL3, sysreg.ZCR_LEN_MAX)
        if ctx.trap_sve:
            self.write_sysreg(sysreg.CPTR_EL2, self.read_sysreg(sysreg.CPTR_EL2) | sysreg.CPTR_EL2_TZ)
        else:  # KVM's vCPU with SVE: EL1 decides (CPACR_EL1.ZEN), at the largest vector length
            self.write_sysreg(sysreg.ZCR_EL2, sysreg.ZCR_LEN_MAX)

    def read_sysreg(self, reg: sysreg.SysReg) -> int:
        return int(self.uc.cpr_read(reg.op0, reg.op1, reg.crn, reg.crm, reg.op2))

    def write_sysreg(self, reg: sysreg.SysReg, value: int) -> None:
        """Write a system register the way EL3/EL2 software would (the CPU model's own
        write function), then refresh the CPU's cached translation regime state."""
        self.uc.cpr_write(reg.op0, reg.op1, reg.crn, reg.crm, reg.op2, value)

    def close(self) -> None:
        self.memory.remove_pas_listener(self._on_pas_change)
        self.invalidate_all()

    # --- registers ----------------------------------------------------------------------
    def get_gpr(self, n: int) -> int:
        return 0 if n == 31 else self.uc.reg_read(GPR_IDS[n])

    def set_gpr(self, n: int, value: int) -> None:
        if n != 31:
            self.uc.reg_write(GPR_IDS[n], value & 0xFFFF_FFFF_FFFF_FFFF)

    def get_gprs(self, count: int = 31) -> list[int]:
        return [self.uc.reg_read(GPR_IDS[i]) for i in range(count)]

    def set_gprs(self, values: list[int] | tuple[int, ...], first: int = 0) -> None:
        for i, v in enumerate(values):
            self.set_gpr(first + i, v)

    @property
    def pc(self) -> int:
        return self.uc.reg_read(a64.UC_ARM64_REG_PC)

    @pc.setter
    def pc(self, value: int) -> None:
        self.uc.reg_write(a64.UC_ARM64_REG_PC, value)

    @property
    def sp(self) -> int:
        return self.uc.reg_read(a64.UC_ARM64_REG_SP)

    @sp.setter
    def sp(self, value: int) -> None:
        self.uc.reg_write(a64.UC_ARM64_REG_SP, value)

    @property
    def pstate(self) -> int:
        return self.uc.reg_read(a64.UC_ARM64_REG_PSTATE)

    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None:
        """Architectural reset for a guest: x0..x30 = 0 except the given ones, PC, EL1h."""
        for i in range(31):
            self.set_gpr(i, 0)
        self.set_gprs(list(gprs))
        self.uc.reg_write(a64.UC_ARM64_REG_PSTATE, PSTATE_EL1H_DAIF)
        self.pc = pc

    def read_insn(self, ipa: int) -> int | None:
        try:
            return int.from_bytes(self.uc.mem_read(ipa, 4), "little")
        except UcError:
            return None

    # --- stage-2 mappings ---------------------------------------------------------------
    def invalidate(self, ipa: int, size: int) -> None:
        """Drop the mappings and translated code of [ipa, ipa+size) (TLBI IPAS2E1 + IC IALLU)."""
        if size >= len(self._mapped) * GRANULE_SIZE:
            pages = [p for p in self._mapped if ipa <= p < ipa + size]
        else:
            start = ipa & ~GRANULE_MASK
            pages = [p for p in range(start, ipa + size, GRANULE_SIZE) if p in self._mapped]
        for page in pages:
            self._unmap_page(page)

    def invalidate_all(self) -> None:
        for page in list(self._mapped):
            self._unmap_page(page)

    def _unmap_page(self, page: int) -> None:
        pa = self._mapped.pop(page)
        ipas = self._by_pa.get(pa)
        if ipas is not None:
            ipas.discard(page)
            if not ipas:
                del self._by_pa[pa]
        self.uc.mem_unmap(page, GRANULE_SIZE)
        self.uc.ctl_remove_cache(page, page + GRANULE_SIZE)

    def _on_pas_change(self, pa: int) -> None:
        for page in list(self._by_pa.get(pa, ())):
            self._unmap_page(page)

    def mapped_pages(self) -> dict[int, int]:
        return dict(self._mapped)

    def _map_page(self, page: int, mapping: Mapping) -> None:
        ptr = self.memory.host_pointer(mapping.world, mapping.pa, GRANULE_SIZE)
        perms = UC_PROT_READ if mapping.readable else 0
        if mapping.writable:
            perms |= UC_PROT_WRITE
        if mapping.executable:
            perms |= UC_PROT_EXEC
        self.uc.mem_map_ptr(page, GRANULE_SIZE, perms, ptr)
        self._mapped[page] = mapping.pa
        self._by_pa.setdefault(mapping.pa, set()).add(page)

    # --- hooks --------------------------------------------------------------------------
    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        page = address & ~GRANULE_MASK
        is_write = access == UC_MEM_WRITE_UNMAPPED
        is_fetch = access == UC_MEM_FETCH_UNMAPPED
        mapping = self.translate(page, is_write, is_fetch)
        if mapping is not None and not mapping.readable:
            # Unicorn lets a load through a page a store has touched whatever its
            # permissions, so a page that forbids reads is never left mapped: a store to it
            # is refused here, and run() executes that one instruction again with the page
            # mapped write-only (all its stores and its writeback, as the PE makes them),
            # then unmaps it. Anything else is a permission fault.
            if is_write and mapping.writable and page not in self._write_only:
                self._refuse_store()  # the state before it
                self._write_only[page] = (mapping, address, size)
                uc.emu_stop()
                return False
        elif mapping is not None:
            try:
                if is_fetch:
                    # Code on a page mapped inside this hook is translated with a broken
                    # map from its host code back to guest PCs in this Unicorn: a later
                    # memory hook in the block reads the PC of an earlier access. The
                    # fetch stops the run instead (no instruction of its block has run),
                    # and run() maps the page.
                    self.memory.host_pointer(mapping.world, mapping.pa, GRANULE_SIZE)  # the GPT check
                    self._code_page = (page, mapping)
                    uc.emu_stop()
                    return False
                self._map_page(page, mapping)
                return True
            except GranuleProtectionFault:
                self._fault_gpf = True
        if is_write:
            self._refuse_store()
        self._fault = (access, address, size, value)
        uc.emu_stop()
        return False

    def _map_write_only(self) -> list[int] | None:
        """Map the pages a refused store waits for, write-only, for one instruction: the
        pages mapped (none: no store waits), or None if the GPT refuses one (that store's
        granule protection fault, at the store's access to that page, is then this run's)."""
        if not self._write_only:
            return []
        mapped: list[int] = []
        for page, (mapping, address, size) in self._write_only.items():
            try:
                ptr = self.memory.host_pointer(mapping.world, mapping.pa, GRANULE_SIZE)
            except GranuleProtectionFault:
                for done in mapped:
                    self.uc.mem_unmap(done, GRANULE_SIZE)
                self._write_only.clear()
                self._fault = (UC_MEM_WRITE_UNMAPPED, address, size, 0)
                self._fault_gpf = True
                return None
            self.uc.mem_map_ptr(page, GRANULE_SIZE, UC_PROT_WRITE, ptr)
            mapped.append(page)
        return mapped

    def _on_forbidden(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        """An access the page's stage-2 permissions forbid: a stage-2 permission fault."""
        if access == UC_MEM_WRITE_PROT:
            self._refuse_store()
        self._fault = (PROT_AS_UNMAPPED[access], address, size, value)
        uc.emu_stop()
        return False

    def _refuse_store(self) -> None:
        """A store a hook refuses does not leave the block in this Unicorn (a load does:
        machine/vcpu_stops.py): the rest of the block would run. The state before the store
        (synced for the hook: the PC at the store) is kept, and stage 1 is made to fault
        every access and fetch (SCTLR_EL1.M set, TCR_EL1.EPD0 and EPD1 set: no walk), so
        the block's next access or fetch ends emulation with nothing written; run() puts
        the kept state back, system registers included."""
        if self._before_store is not None:
            return
        self.uc.context_update(self._store_context)
        self._before_store = self._store_context
        self.write_sysreg(sysreg.TCR_EL1, self.read_sysreg(sysreg.TCR_EL1) | TCR_EPD0 | TCR_EPD1)
        self.write_sysreg(sysreg.SCTLR_EL1, self.read_sysreg(sysreg.SCTLR_EL1) | 1)

    def _on_intr(self, uc: Uc, intno: int, _ud: object) -> None:
        if self._before_store is not None:  # the rest of a refused store's block faulted
            uc.emu_stop()
            return
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if intno not in SYNC_EXCEPTIONS:
            self._trap = CpuErrorTrap(pc, f"unexpected CPU exception {intno}")
            uc.emu_stop()
            return
        syndrome, vaddress, target_el = self._exception.read()
        if target_el == 1:
            if intno in (EXCP_DATA_ABORT, EXCP_PREFETCH_ABORT) and may_be_unmapped_table(syndrome & 0x3F):
                if self._walk_for(vaddress, pc):
                    return  # a table page was mapped at stage 2: the access retries
                if self._trap is not None:
                    uc.emu_stop()
                    return
            is_abort = intno in (EXCP_DATA_ABORT, EXCP_PREFETCH_ABORT)
            # Taken once emulation has stopped: a PC written inside the hook would leave
            # the next translation block's PC bookkeeping stale.
            self._entry = (syndrome, vaddress if is_abort else None, pc)
            uc.emu_stop()
            return
        ec = esr_ec(syndrome)
        if intno == EXCP_SMC:
            self._trap = SmcTrap(pc, [uc.reg_read(GPR_IDS[i]) for i in range(NUM_SMC_ARGS)])
        elif intno == EXCP_HVC:
            self._trap = HvcTrap(pc, [uc.reg_read(GPR_IDS[i]) for i in range(NUM_SMC_ARGS)], syndrome & 0xFFFF)
        elif ec == Ec.SYSREG:
            self._trap = SysRegTrap(pc, SysRegAccess.from_iss(esr_iss(syndrome)))
        else:
            self._trap = UndefinedTrap(pc, self.read_insn_at(pc) or 0, syndrome)
        uc.emu_stop()

    def _walk_for(self, va: int, pc: int) -> bool:
        """The CPU's stage-1 walk for `va` may have read a table at an IPA not mapped yet
        (it reads as zero, or aborts): map the table pages on the way (see `stage1`). True if one was mapped (the access retries);
        False with `_trap` set if stage 2 has no mapping for a table (the hypervisor's
        fault), or False with no trap for an external abort the guest takes itself."""
        _, mapped_any = self.stage1(va, pc)
        return mapped_any

    def stage1(self, va: int, pc: int | None = None) -> tuple[int | None, bool]:
        """The guest's own stage-1 translation of `va` in the EL1&0 regime (VMSAv8-64,
        TTBRn_EL1 and TCR_EL1, 4, 16 or 64 KiB granules), mapping at stage 2 each table page
        the walk reads. Returns (IPA or None if stage 1 faults, whether a page was mapped);
        with `pc` given, a table stage 2 cannot map, or maps without read permission, becomes
        the trap of this run."""
        if not self.read_sysreg(sysreg.SCTLR_EL1) & 1:  # SCTLR_EL1.M: MMU off, VA = IPA
            return va, False
        tcr = self.read_sysreg(sysreg.TCR_EL1)
        if (va >> 55) & 1:
            tsz, tg = (tcr >> 16) & 0x3F, {1: 14, 2: 12, 3: 16}.get((tcr >> 30) & 3, 12)
            ttbr = self.uc.reg_read(a64.UC_ARM64_REG_TTBR1_EL1)
        else:
            tsz, tg = tcr & 0x3F, {0: 12, 1: 16, 2: 14}.get((tcr >> 14) & 3, 12)
            ttbr = self.uc.reg_read(a64.UC_ARM64_REG_TTBR0_EL1)
        stride, va_bits = tg - 3, 64 - tsz
        level = 4 - -(-(va_bits - tg) // stride)
        oa_mask = ((1 << 48) - 1) & ~((1 << tg) - 1)
        table = ttbr & ((1 << 48) - 1) & ~1
        mapped_any = False
        while True:
            shift = tg + stride * (3 - level)
            index = (va >> shift) & ((1 << min(stride, va_bits - shift)) - 1)
            entry_ipa = table + 8 * index
            page = entry_ipa & ~GRANULE_MASK
            if page not in self._mapped:
                mapping = self.translate(page, False, False)
                gpf = False
                if mapping is not None and mapping.readable:
                    try:
                        self._map_page(page, mapping)
                        mapped_any = True
                    except GranuleProtectionFault:
                        gpf = True
                if mapping is None or not mapping.readable or gpf:  # a stage-2 fault on the walk's read
                    if pc is not None:
                        self._trap = DataAbortTrap(pc, entry_ipa, False, 8, None, 0, gpf, True)
                    return None, mapped_any
            desc = int.from_bytes(self.uc.mem_read(entry_ipa, 8), "little")
            if not desc & 1 or (level == 3 and not desc & 2):
                return None, mapped_any
            if level == 3 or not desc & 2:  # page, or block
                return (desc & oa_mask & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1)), mapped_any
            table = desc & oa_mask
            level += 1

    def read_insn_at(self, va: int) -> int | None:
        """The instruction word at virtual address `va`, through the guest's stage 1."""
        ipa, _ = self.stage1(va)
        return None if ipa is None else self.read_insn(ipa)

    # --- running ------------------------------------------------------------------------
    def kick(self) -> None:
        """Make the current `run()` end with an IrqTrap as soon as emulation stops: the host's
        IPI to the PE running this vCPU (another vCPU's SGI, a device for a sleeping one)."""
        self._kicked = True
        self.uc.emu_stop()

    def set_mpidr(self, mpidr: int) -> None:
        """The MPIDR_EL1 EL1 reads, as the hypervisor sets it (VMPIDR_EL2)."""
        self.write_sysreg(sysreg.VMPIDR_EL2, mpidr | sysreg.MPIDR_RES1)

    def run(self, until: float | None = None) -> Trap:
        """Run from the current PC until the next trap, taking the exceptions that go to
        EL1 on the way. `until` (a time.monotonic() value) ends the run with an IrqTrap at
        the latest then: the host's own timer interrupt (a scheduler's time slice)."""
        if HOST_IRQ.pending:
            return IrqTrap(self.pc)
        lines = self.interrupts
        if lines is not None and not self._sysreg_hooks:
            self._install_sysreg_hooks()
        self._kicked = False
        deadline: float | None = until
        while True:
            if self._recursive >= MAX_RECURSIVE_EXCEPTIONS:
                vector = self._last_vector or 0
                return CpuErrorTrap(vector, f"the exception vector at {vector:#x} faults (ESR {self._last_syndrome:#x})")
            timeout_us = 0
            if lines is not None:
                deliverable, deadline = self._interrupt_window(lines)
                if deliverable:
                    self._take_interrupt(deliverable)
                    continue
                if until is not None:
                    deadline = until if deadline is None else min(deadline, until)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return IrqTrap(self.pc)
                timeout_us = max(1, int(left * 1e6) + 1)
            self._irq_stop = False
            self._trap = None
            self._fault = None
            self._fault_gpf = False
            self._entry = None
            error = ""
            stepping = self._map_write_only()
            if stepping is None:
                break  # the GPT refused a write-only page: the store's fault
            if stepping:
                # Code translated before ignores the end address: the store's block would run
                # whole, its loads through the write-only pages. Translated again, it ends there.
                self.uc.ctl_remove_cache(self.pc, self.pc + 4)
            try:
                with HOST_IRQ.running(self.uc):
                    self.uc.emu_start(self.pc, self.pc + 4 if stepping else RUN_FOREVER, timeout_us)
            except UcError as exc:
                error = str(exc)
            for page in stepping:
                self.uc.mem_unmap(page, GRANULE_SIZE)
            if self._before_store is not None:  # back to the state at the refused store
                self.uc.context_restore(self._before_store)
                self._before_store = None
                if len(self._write_only) > len(stepping) and self._fault is None:
                    continue  # the store reached another write-only page: step it with both
            if self._code_page is not None:  # a fetch stopped at a page stage 2 maps
                self._map_page(*self._code_page)
                self._code_page = None
                if self._kicked or HOST_IRQ.pending:
                    return IrqTrap(self.pc)
                continue
            if stepping:
                self._write_only.clear()
                if self._entry is None and self._fault is None and self._trap is None and not error:
                    continue  # the store was made: go on from the next instruction
            if self._entry is None or self._fault is not None or self._trap is not None or error:
                if self._irq_stop and self._entry is None and self._fault is None and self._trap is None and not error:
                    if self._kicked or HOST_IRQ.pending:
                        return IrqTrap(self.pc)
                    continue  # a hook wants the lines looked at again
                break
            self._enter_el1(*self._entry)
        pc = self.pc
        if self._fault is not None:
            access, address, size, value = self._fault
            if access == UC_MEM_FETCH_UNMAPPED:
                return InstructionAbortTrap(pc, address)
            insn = self.read_insn_at(pc)
            syndrome = decode_load_store(insn) if insn is not None else None
            if syndrome is not None and syndrome.is_write:
                value = self.get_gpr(syndrome.srt) & ((1 << (8 * syndrome.size)) - 1)
            return DataAbortTrap(
                pc, address, access == UC_MEM_WRITE_UNMAPPED, size, syndrome, value, self._fault_gpf,
                va=self._fault_va(insn, address, pc),
            )
        if self._trap is not None:
            return self._trap
        if error:
            return CpuErrorTrap(pc, error)
        insn = self.read_insn_at(pc - 4)
        if insn in (WFI_INSN, WFE_INSN):
            return WfxTrap(pc, insn == WFE_INSN)
        if HOST_IRQ.pending or deadline is not None or self._kicked:
            return IrqTrap(pc)  # the host's interrupt, or the lines' deadline passed
        return CpuErrorTrap(pc, "emulation stopped without a trap")

    def _fault_va(self, insn: int | None, ipa: int, pc: int) -> int | None:
        """The VA of a stage-2 data abort at `ipa`: the IPA itself with the MMU off, else the
        instruction's address (the part of a wider access that faulted: same page offset)."""
        if not self.read_sysreg(sysreg.SCTLR_EL1) & 1:
            return ipa
        if insn is None:
            return None
        first = access_address(insn, self.get_gpr, self.sp, pc)
        if first is None:
            return None
        delta = ((ipa & GRANULE_MASK) - (first & GRANULE_MASK)) & GRANULE_MASK
        return first + delta if delta < 64 else None

    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None:
        """Finish an emulated load: write Rt as the syndrome says, then step past it."""
        bits = 8 * syndrome.size
        value &= (1 << bits) - 1
        if syndrome.sign_extend and value >> (bits - 1):
            value -= 1 << bits
        if not syndrome.sixty_four:
            value &= 0xFFFF_FFFF
        self.set_gpr(syndrome.srt, value)
        self.pc = self.pc + 4

    def skip_instruction(self) -> None:
        self.pc = self.pc + 4
