"""An AArch64 vCPU on Unicorn, with a stage-2 translation supplied by its owner.

The vCPU runs guest code at EL1 with its MMU off (VA = IPA) until something needs its
hypervisor: an SMC or HVC, a stage-2 fault, WFI/WFE, an undefined instruction, an SVC.
`run()` returns that event as a Trap, with the PC where the architecture leaves it:
after the SMC/HVC/SVC/WFx, at the faulting load or store. The owner (the RMM for a REC,
the host's KVM layer for a normal VM) handles the trap and calls `run()` again; the guest
resumes exactly where it stopped.

Guest memory is never copied: each IPA page is mapped on first touch with
`mem_map_ptr` onto the machine's physical memory, after the owner's stage-2 lookup and the
GPT check for the world the mapping belongs to. `invalidate()` is the TLBI: it drops
mappings (and translated code) when the owner changes stage 2, and any PAS change of a
mapped granule drops its mappings too.
"""

from __future__ import annotations

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
    Uc,
    UcError,
)
from unicorn import arm64_const as a64

from unirealm.arch.esr import (
    DFSC_SEA,
    WFE_INSN,
    WFI_INSN,
    AccessSyndrome,
    Ec,
    decode_load_store,
    esr,
)
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE, World

from .interrupt import HOST_IRQ
from .memory import GranuleProtectionFault, PhysicalMemory

# A permission fault is reported as the access kind of the matching unmapped fault.
PROT_AS_UNMAPPED = {
    UC_MEM_READ_PROT: UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE_PROT: UC_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT: UC_MEM_FETCH_UNMAPPED,
}

# Unicorn interrupt numbers (QEMU EXCP_*) seen by UC_HOOK_INTR for AArch64.
EXCP_UDEF = 1
EXCP_SWI = 2
EXCP_HVC = 11
EXCP_SMC = 13

GPR_IDS: tuple[int, ...] = (
    *(a64.UC_ARM64_REG_X0 + i for i in range(29)),
    a64.UC_ARM64_REG_X29,
    a64.UC_ARM64_REG_X30,
)
NUM_SMC_ARGS = 18
PSTATE_EL1H_DAIF = 0x3C5  # EL1h, D/A/I/F masked: the reset state of a REC (digest §2.2)
PSTATE_EL0T = 0x0

CPU_MODELS = {"a72": a64.UC_CPU_ARM64_A72, "a53": a64.UC_CPU_ARM64_A53, "max": a64.UC_CPU_ARM64_MAX}


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


@dataclass
class InstructionAbortTrap(Trap):
    ipa: int = 0


@dataclass
class WfxTrap(Trap):
    is_wfe: bool = False


@dataclass
class UndefinedTrap(Trap):
    insn: int = 0


@dataclass
class IrqTrap(Trap):
    """A physical interrupt for the host stopped the PE at pc (machine.interrupt)."""


@dataclass
class CpuErrorTrap(Trap):
    message: str = ""


class VCpu:
    """One AArch64 processing element, executing guest machine code on Unicorn."""

    def __init__(
        self,
        memory: PhysicalMemory,
        translate: Translate,
        cpu_model: str = "max",
    ) -> None:
        self.memory = memory
        self.translate = translate
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.uc.ctl_set_cpu_model(CPU_MODELS[cpu_model])
        self._mapped: dict[int, int] = {}  # ipa page -> pa
        self._by_pa: dict[int, set[int]] = {}  # pa -> ipa pages mapping it
        self._trap: Trap | None = None
        self._fault: tuple[int, int, int, int] | None = None  # (kind, address, size, value)
        self._fault_gpf = False
        self._store_done = False
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self.uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        self.uc.hook_add(UC_HOOK_MEM_PROT, self._on_forbidden)
        memory.on_pas_change(self._on_pas_change)
        self.instructions_hint = 0

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

    def read_insn(self, pc: int) -> int | None:
        try:
            return int.from_bytes(self.uc.mem_read(pc, 4), "little")
        except UcError:
            return None

    # --- exceptions into the guest ------------------------------------------------------
    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        """Take a synchronous exception to EL1, as the hardware would after an injection:
        ESR/FAR/ELR/SPSR_EL1 set and PC at the matching VBAR_EL1 vector."""
        pstate = self.pstate
        from_el0 = (pstate >> 2) & 3 == 0
        elr = self.pc if preferred_return is None else preferred_return
        self.uc.reg_write(a64.UC_ARM64_REG_ESR_EL1, esr_value)
        self.uc.reg_write(a64.UC_ARM64_REG_FAR_EL1, far)
        self.uc.reg_write(a64.UC_ARM64_REG_ELR_EL1, elr)
        self.uc.cpr_write(3, 0, 4, 0, 0, pstate)  # SPSR_EL1
        vbar = self.uc.reg_read(a64.UC_ARM64_REG_VBAR_EL1)
        offset = 0x400 if from_el0 else (0x200 if pstate & 1 else 0x000)
        self.uc.reg_write(a64.UC_ARM64_REG_PSTATE, PSTATE_EL1H_DAIF)
        self.pc = vbar + offset

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        """A synchronous external abort at the current PC (the faulting instruction)."""
        ec = Ec.IABT_LOWER if is_fetch else Ec.DABT_LOWER
        from_el0 = (self.pstate >> 2) & 3 == 0
        ec_value = ec if from_el0 else ec + 1  # "same EL" variants are EC + 1
        self.take_exception(esr(ec_value, DFSC_SEA), far)

    def inject_undef(self) -> None:
        self.take_exception(esr(Ec.UNKNOWN))

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
            # permissions, so a page that forbids reads is never mapped: each store is made
            # here and the instruction stepped over; anything else is a permission fault.
            if is_write and mapping.writable:
                try:
                    offset = address & GRANULE_MASK
                    self.memory.accessor(mapping.world).write(mapping.pa + offset, value.to_bytes(size, "little"))
                    self._store_done = True
                    uc.emu_stop()
                    return False
                except GranuleProtectionFault:
                    self._fault_gpf = True
        elif mapping is not None:
            try:
                self._map_page(page, mapping)
                return True
            except GranuleProtectionFault:
                self._fault_gpf = True
        self._fault = (access, address, size, value)
        uc.emu_stop()
        return False

    def _on_forbidden(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        """An access the page's stage-2 permissions forbid: a stage-2 permission fault."""
        self._fault = (PROT_AS_UNMAPPED[access], address, size, value)
        uc.emu_stop()
        return False

    def _on_intr(self, uc: Uc, intno: int, _ud: object) -> None:
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if intno == EXCP_SMC:
            self._trap = SmcTrap(pc, [uc.reg_read(GPR_IDS[i]) for i in range(NUM_SMC_ARGS)])
        elif intno == EXCP_HVC:
            insn = self.read_insn(pc - 4) or 0
            self._trap = HvcTrap(pc, [uc.reg_read(GPR_IDS[i]) for i in range(NUM_SMC_ARGS)], (insn >> 5) & 0xFFFF)
        elif intno == EXCP_SWI:
            insn = self.read_insn(pc - 4) or 0
            self._trap = SvcTrap(pc, (insn >> 5) & 0xFFFF)
        else:
            # UNDEF (including HVC while SCR_EL3.HCE is clear): PC is the instruction itself.
            self._trap = UndefinedTrap(pc, self.read_insn(pc) or 0)
        uc.emu_stop()

    # --- running ------------------------------------------------------------------------
    def run(self) -> Trap:
        """Run from the current PC until the next trap."""
        self._trap = None
        self._fault = None
        self._fault_gpf = False
        error = ""
        if HOST_IRQ.pending:
            return IrqTrap(self.pc)
        self._store_done = True
        while self._store_done:  # a store made by _on_unmapped: step over it and go on
            self._store_done = False
            try:
                with HOST_IRQ.running(self.uc):
                    self.uc.emu_start(self.pc, 0xFFFF_FFFF_FFFF_FFFF)
            except UcError as exc:
                error = str(exc)
            if self._store_done:
                self.pc = self.pc + 4
                error = ""
        pc = self.pc
        if self._fault is not None:
            access, address, size, value = self._fault
            if access == UC_MEM_FETCH_UNMAPPED:
                return InstructionAbortTrap(pc, address)
            insn = self.read_insn(pc)
            syndrome = decode_load_store(insn) if insn is not None else None
            if syndrome is not None and syndrome.is_write:
                value = self.get_gpr(syndrome.srt) & ((1 << (8 * syndrome.size)) - 1)
            return DataAbortTrap(
                pc, address, access == UC_MEM_WRITE_UNMAPPED, size, syndrome, value, self._fault_gpf
            )
        if self._trap is not None:
            return self._trap
        if error:
            return CpuErrorTrap(pc, error)
        insn = self.read_insn(pc - 4)
        if insn in (WFI_INSN, WFE_INSN):
            return WfxTrap(pc, insn == WFE_INSN)
        if HOST_IRQ.pending:
            return IrqTrap(pc)
        return CpuErrorTrap(pc, "emulation stopped without a trap")

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
