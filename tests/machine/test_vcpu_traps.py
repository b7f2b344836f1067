"""What the vCPU (machine/vcpu.py) hands its hypervisor, and what it keeps for the guest:
an MRS that HCR_EL2.TID3 traps comes out as a SysRegTrap whose access is the ESR's ISS
(Arm ARM D24.2.173, EC 0x18) at the MRS's own PC; a stage-1 translation fault with every
table mapped is the guest's own (a Data Abort taken from the current EL, FAR = the VA); a
page stage 2 makes write-only takes stores (each made for the guest, the registers after
them as the architecture leaves them) and refuses loads with a permission fault, and a
store to one the GPT refuses is a granule protection fault at the store's own address; a page
with no data access refuses stores too; CPTR_EL2.TZ hands SVE to the hypervisor; a stage-2
fault's VA is worked out from the instruction with the MMU on and is the IPA with it off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unirealm.arch import sysreg
from unirealm.arch.esr import SysRegAccess
from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.vcpu import (
    DataAbortTrap,
    El2Context,
    HvcTrap,
    InstructionAbortTrap,
    IrqTrap,
    Mapping,
    SysRegTrap,
    UndefinedTrap,
    VCpu,
)

from .asm_snippet import assemble
from .test_vcpu import CODE, DATA, MMIO, Guest
from .test_vcpu_stage1 import MAIR_NORMAL, MMU_ON, TABLES, TCR_48BIT_TTBR0, TG1, BigGuest, Tables


def test_a_trapped_id_register_read_gives_its_access_at_its_pc(tmp_path: Path) -> None:
    g = Guest(assemble("""
    .text
    nop
    mrs x7, id_aa64mmfr0_el1
    hvc #1
    """, CODE, tmp_path, "tid3"))
    g.cpu.close()
    g.cpu = VCpu(g.memory, g.translate, context=El2Context(trap_id_registers=True))
    g.cpu.reset(CODE)
    try:
        trap = g.cpu.run()
        assert isinstance(trap, SysRegTrap), trap
        assert trap.pc == CODE + 4
        # ID_AA64MMFR0_EL1: op0 3, op1 0, CRn 0, CRm 7, op2 0; Rt 7; a read
        assert trap.access == SysRegAccess(op0=3, op1=0, crn=0, crm=7, op2=0, rt=7, is_read=True)
        g.cpu.set_gpr(7, 0x1122)  # the hypervisor's answer
        g.cpu.skip_instruction()
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1 and g.cpu.get_gpr(7) == 0x1122
    finally:
        g.cpu.close()


# A vector table whose every entry reports the exception to the test: x5 = ESR_EL1, x6 = FAR_EL1,
# x7 = ELR_EL1, then HVC #9; execution starts past it with VBAR_EL1 pointing at it.
REPORTING_VECTORS = """
    .text
_start:
    b start
    .balign 2048
vectors:
    .rept 16
    .balign 128
    mrs x5, esr_el1
    mrs x6, far_el1
    mrs x7, elr_el1
    hvc #9
    .endr
start:
    adr x0, vectors
    msr vbar_el1, x0
"""


def test_a_translation_fault_with_its_tables_mapped_is_the_guests(tmp_path: Path) -> None:
    g = BigGuest(assemble(REPORTING_VECTORS + MMU_ON + """fault:
    ldr x1, [x23]
    hvc #2
    """, CODE, tmp_path, "s1fault"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        va = CODE + 0x20_0000  # same level-1 and level-2 tables as the code: a level-3 miss
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root), (23, va + 0x18)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 9, trap
        esr, far, elr = g.cpu.get_gpr(5), g.cpu.get_gpr(6), g.cpu.get_gpr(7)
        assert esr >> 26 == 0x25  # Data Abort, current EL
        assert esr & 0x3F in (0x04, 0x05, 0x06, 0x07)  # a translation fault, levels 0-3
        assert far == va + 0x18
        assert g.cpu.read_insn_at(elr) == 0xF94002E1  # ldr x1, [x23]
    finally:
        g.cpu.close()


class WriteOnlyGuest(Guest):
    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        if ipa == DATA:
            return Mapping(self.data_pa, World.NON_SECURE, writable=True, readable=False)
        return super().translate(ipa, is_write, is_fetch)


def test_a_write_only_page_takes_stores_and_refuses_loads(tmp_path: Path) -> None:
    g = WriteOnlyGuest(assemble("""
    .text
    str x1, [x2]
    strh w3, [x2, #10]
    stp x4, x5, [x2, #16]!
    add x9, x9, #1
    hvc #1
    ldr x6, [x2]
    hvc #2
    """, CODE, tmp_path, "wo"))
    try:
        for reg, value in ((1, 0x1111_2222_3333_4444), (2, DATA), (3, 0xABCD_5678), (4, 7), (5, 8), (9, 41)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        mem = g.ns.read(g.data_pa, 32)
        assert mem[:8] == (0x1111_2222_3333_4444).to_bytes(8, "little")
        assert mem[10:12] == (0x5678).to_bytes(2, "little") and mem[8:10] == b"\0\0"
        assert mem[16:32] == (7).to_bytes(8, "little") + (8).to_bytes(8, "little")
        assert g.cpu.get_gpr(2) == DATA + 16  # the pre-index writeback happened once
        assert g.cpu.get_gpr(9) == 42  # the instructions after the stores ran once
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and not trap.is_write and trap.ipa == DATA + 16, trap
    finally:
        g.cpu.close()


class TwoWriteOnlyPages(Guest):
    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        if ipa in (DATA, DATA + 0x1000):
            return Mapping(self.data_pa + ipa - DATA, World.NON_SECURE, writable=True, readable=False)
        return super().translate(ipa, is_write, is_fetch)


def test_a_store_pair_across_two_write_only_pages_is_made_whole(tmp_path: Path) -> None:
    g = TwoWriteOnlyPages(assemble("""
    .text
    stp x4, x5, [x2, #-8]
    str x6, [x2, #64]
    hvc #1
    """, CODE, tmp_path, "wo2"))
    try:
        for reg, value in ((2, DATA + 0x1000), (4, 0x0102_0304_0506_0708), (5, 0x1112_1314_1516_1718), (6, 99)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        mem = g.ns.read(g.data_pa + 0x1000 - 8, 80)
        assert mem[:8] == (0x0102_0304_0506_0708).to_bytes(8, "little")  # the end of the first page
        assert mem[8:16] == (0x1112_1314_1516_1718).to_bytes(8, "little")  # the start of the second
        assert mem[72:80] == (99).to_bytes(8, "little")
    finally:
        g.cpu.close()


def test_nothing_after_a_refused_store_runs_even_with_valid_tables_at_ttbr0(tmp_path: Path) -> None:
    """The MMU is off, but TTBR0_EL1/TCR_EL1 hold a valid identity map: a store stage 2
    refuses (MMIO) must still end the block there, with the store after it not made."""
    g = BigGuest(assemble("""
    .text
    msr mair_el1, x20
    msr tcr_el1, x21
    msr ttbr0_el1, x22
    isb
    str x1, [x3]        // MMIO: the hypervisor's
    str x2, [x4]        // same block: must not happen before the MMIO completes
    hvc #1
    """, CODE, tmp_path, "refused"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root),
                           (1, 0xAA), (2, 0xBB), (3, MMIO), (4, DATA)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.ipa == MMIO and trap.is_write, trap
        assert g.ns.read(g.data_pa, 8) == bytes(8)
        g.cpu.skip_instruction()  # the MMIO write emulated
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.ns.read(g.data_pa, 8) == (0xBB).to_bytes(8, "little")
    finally:
        g.cpu.close()


@pytest.mark.parametrize("ttbr", [0, 1])
def test_nothing_after_a_refused_store_runs_with_its_tables_mapped(tmp_path: Path, ttbr: int) -> None:
    """The same with both TTBR0_EL1 and TTBR1_EL1 walks enabled (TCR_EL1.EPD0 and EPD1
    clear), every table page already mapped at stage 2, and the store after the refused one
    to a VA that TTBRn maps onto DATA (a TTBR1 VA has its top 16 bits ones: T1SZ 16)."""
    g = BigGuest(assemble("""
    .text
    msr mair_el1, x20
    msr tcr_el1, x21
    msr ttbr0_el1, x22
    msr ttbr1_el1, x23
    isb
1:  ldr x9, [x10]       // each table page touched: mapped at stage 2
    add x10, x10, #0x1000
    subs x11, x11, #1
    b.ne 1b
    str x1, [x3]        // MMIO: the hypervisor's
    str x2, [x4]        // same block, through TTBRn were stage 1 on
    hvc #1
    """, CODE, tmp_path, "refusedn"))
    try:
        low = Tables(g, 12, 48, TABLES)
        low.map(CODE, CODE)
        high = Tables(g, 12, 48, low.next)
        va = 0xFFFF_0000_1234_5000 if ttbr else 0x1234_5000
        (high if ttbr else low).map(va, DATA)
        tcr = 16 | (16 << 16) | (TG1[12] << 30) | (5 << 32)  # T0SZ, T1SZ 16; 4 KiB granules; IPS 48 bits
        for reg, value in ((20, MAIR_NORMAL), (21, tcr), (22, low.root), (23, high.root),
                           (1, 0xAA), (2, 0xBB), (3, MMIO), (4, va),
                           (10, TABLES), (11, ((high if ttbr else low).next - TABLES) // GRANULE_SIZE)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.ipa == MMIO and trap.is_write, trap
        assert trap.pc == CODE + 36
        assert {TABLES, high.root} <= set(g.cpu.mapped_pages())
        assert g.ns.read(g.data_pa, 8) == bytes(8)
    finally:
        g.cpu.close()


SVE_ON = """
    .arch armv8.2-a+sve
    .text
    mov x0, #(3 << 16)  // CPACR_EL1.ZEN: no EL1/EL0 trap
    orr x0, x0, #(3 << 20)  // FPEN too
    msr cpacr_el1, x0
    isb
"""
SVE_GUEST = SVE_ON + """    rdvl x1, #1
    hvc #1
"""


def sve_vcpu(g: Guest, trap_sve: bool) -> VCpu:
    g.cpu.close()
    cpu = VCpu(g.memory, g.translate, context=El2Context(trap_sve=trap_sve))
    cpu.reset(CODE)
    return cpu


def test_sve_under_cptr_el2_tz_is_the_hypervisors(tmp_path: Path) -> None:
    """CPTR_EL2.TZ (as the RMM sets it for a realm without SVE): an SVE instruction EL1 may
    run (CPACR_EL1.ZEN = 0b11) is not taken at EL1 but handed over with EC 0x19, at its PC,
    although EL3 enables SVE below it."""
    g = Guest(assemble(SVE_GUEST, CODE, tmp_path, "sve"))
    g.cpu = sve_vcpu(g, True)
    try:
        assert g.cpu.read_sysreg(sysreg.CPTR_EL3) & sysreg.CPTR_EL3_EZ
        trap = g.cpu.run()
        assert isinstance(trap, UndefinedTrap) and trap.esr >> 26 == 0x19, trap
        assert trap.pc == CODE + 16 and trap.insn == 0x04BF5021  # rdvl x1, #1
        assert g.cpu.exceptions_taken == 0
    finally:
        g.cpu.close()


SVE_VL_GUEST = SVE_ON + """    rdvl x1, #1  // ZCR_EL1.LEN at reset: 0
    mov x0, #1
    msr s3_0_c1_c2_0, x0  // ZCR_EL1.LEN = 1: 256 bits
    isb
    rdvl x2, #1
    mov x0, #0xf
    msr s3_0_c1_c2_0, x0  // the largest the implementation has
    isb
    rdvl x3, #1
    hvc #1
"""


def test_a_plain_vms_el1_owns_sve_as_kvm_leaves_it(tmp_path: Path) -> None:
    """The CPU model says SVE (ID_AA64PFR0_EL1.SVE 1, which a plain VM reads unchanged), so EL3
    enables it below (CPTR_EL3.EZ, ZCR_EL3 at the largest length) and KVM's vCPU leaves it to
    EL1 (CPTR_EL2.TZ clear, ZCR_EL2 at the largest): RDVL gives the length ZCR_EL1.LEN asks,
    (LEN + 1) x 16 bytes, up to the implementation's largest, a multiple of 16 up to 256."""
    g = Guest(assemble(SVE_VL_GUEST, CODE, tmp_path, "svevl"))
    g.cpu = sve_vcpu(g, False)
    try:
        assert (g.cpu.read_sysreg(sysreg.ID_AA64PFR0_EL1) >> 32) & 0xF == 1
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.cpu.get_gpr(1) == 16 and g.cpu.get_gpr(2) == 32
        largest = g.cpu.get_gpr(3)
        assert largest % 16 == 0 and 32 <= largest <= 256
        assert g.cpu.exceptions_taken == 0
    finally:
        g.cpu.close()


def test_a_stage_2_fault_with_the_mmu_on_reports_the_va(tmp_path: Path) -> None:
    """FAR for the hypervisor (HPFAR holds the IPA): the VA of the faulting part of the access,
    found from the instruction when the MMU is on (the SP's for base register 31); a load
    crossing into the faulting page gives the address where that page starts."""
    g = BigGuest(assemble("""
    .text
""" + MMU_ON + """    ldr x1, [x3]
    ldr x1, [x4]
    ldr x1, [sp, #8]
    hvc #1
    """, CODE, tmp_path, "farva"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        mmio_va = 0x1234_5000
        t.map(mmio_va, MMIO & ~0xFFF)  # stage 1 maps it; stage 2 does not
        t.map(mmio_va - 0x1000, DATA)  # the page before it is RAM
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root),
                           (3, mmio_va + 0x10), (4, mmio_va - 4)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap), trap
        assert trap.ipa == (MMIO & ~0xFFF) + 0x10 and trap.va == mmio_va + 0x10
        g.cpu.skip_instruction()
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap), trap
        assert trap.ipa == MMIO & ~0xFFF and trap.va == mmio_va  # the second half's first byte
        g.cpu.skip_instruction()
        g.cpu.sp = mmio_va + 0x20  # SP_EL1, 16-byte aligned
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap), trap
        assert trap.ipa == (MMIO & ~0xFFF) + 0x28 and trap.va == mmio_va + 0x28  # Rn = 31: the SP
    finally:
        g.cpu.close()


class NoAccessGuest(Guest):
    """DATA mapped at stage 2 with no data access and no execution (S2AP 0b00, XN)."""

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        if ipa == DATA:
            return Mapping(self.data_pa, World.NON_SECURE, writable=False, executable=False, readable=False)
        return super().translate(ipa, is_write, is_fetch)


def test_a_page_with_no_data_access_refuses_stores_and_loads(tmp_path: Path) -> None:
    """S2AP 0b00: a store is a stage-2 permission fault like a load, with nothing written
    and the store's register value given to the hypervisor."""
    g = NoAccessGuest(assemble("""
    .text
    str x1, [x2, #8]
    ldr x3, [x2]
    hvc #1
    """, CODE, tmp_path, "noaccess"))
    try:
        g.ns.write(g.data_pa, bytes(range(1, 17)))
        for reg, value in ((1, 0x1111_2222_3333_4444), (2, DATA), (3, 5)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.pc == CODE, trap
        assert (trap.ipa, trap.is_write, trap.size, trap.value) == (DATA + 8, True, 8, 0x1111_2222_3333_4444)
        assert g.ns.read(g.data_pa, 16) == bytes(range(1, 17))
        g.cpu.skip_instruction()  # the hypervisor does not emulate it
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.pc == CODE + 4, trap
        assert (trap.ipa, trap.is_write, trap.size) == (DATA, False, 8)
        assert g.cpu.get_gpr(3) == 5  # the load did not complete
        assert g.ns.read(g.data_pa, 16) == bytes(range(1, 17))
    finally:
        g.cpu.close()


def test_a_stage_2_fault_with_the_mmu_off_reports_the_ipa_as_the_va(tmp_path: Path) -> None:
    """Stage 1 off: the VA is the IPA (the Arm ARM's flat mapping of a disabled stage 1), for
    any access, even one whose address the vCPU cannot work out from the instruction (an
    SIMD structure load)."""
    g = Guest(assemble("""
    .text
    mov x0, #(3 << 20)  // CPACR_EL1.FPEN: no SIMD&FP trap
    msr cpacr_el1, x0
    isb
    ld1 {v0.16b}, [x2]
    ldr x1, [x3, #8]
    hvc #1
    """, CODE, tmp_path, "farmmuoff"))
    try:
        g.cpu.set_gpr(2, MMIO)
        g.cpu.set_gpr(3, MMIO + 0x100)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.pc == CODE + 12, trap
        assert trap.syndrome is None and trap.ipa == MMIO and trap.va == MMIO
        g.cpu.skip_instruction()
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.pc == CODE + 16, trap
        assert trap.ipa == MMIO + 0x108 and trap.va == MMIO + 0x108
    finally:
        g.cpu.close()


def test_a_store_to_a_write_only_page_the_gpt_refuses_is_a_granule_protection_fault(tmp_path: Path) -> None:
    """Stage 2 maps DATA write-only in the non-secure PAS, but its granule is realm PAS: the
    GPT refuses the store's access (a GPF the hypervisor sees, at the store's own address and
    size, FAR = that address with the MMU off), nothing is written and the next instruction
    has not run; once the granule is non-secure again the store is made."""
    g = WriteOnlyGuest(assemble("""
    .text
    strh w1, [x2, #10]
    add x9, x9, #1
    hvc #1
    """, CODE, tmp_path, "wogpf"))
    try:
        for reg, value in ((1, 0x0102_0304_0506_0708), (2, DATA)):
            g.cpu.set_gpr(reg, value)
        g.memory.set_pas(World.ROOT, g.data_pa, Pas.REALM)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.gpf and trap.is_write, trap
        assert trap.pc == CODE and (trap.ipa, trap.size, trap.value) == (DATA + 10, 2, 0x0708)
        assert trap.va == DATA + 10
        assert g.cpu.get_gpr(9) == 0
        g.memory.set_pas(World.ROOT, g.data_pa, Pas.NON_SECURE)
        assert g.ns.read(g.data_pa, 16) == bytes(16)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.ns.read(g.data_pa, 16) == bytes(10) + b"\x08\x07" + bytes(4)
        assert g.cpu.get_gpr(9) == 1
    finally:
        g.cpu.close()


def test_a_store_pair_whose_second_write_only_page_the_gpt_refuses_faults_there(tmp_path: Path) -> None:
    """A store pair across two write-only pages, the second one's granule realm PAS: the GPF
    is at the first byte of the second page, the base register is not written back, and once
    the granule is non-secure again the pair is made whole."""
    g = TwoWriteOnlyPages(assemble("""
    .text
    stp x4, x5, [x2, #-8]!
    hvc #1
    """, CODE, tmp_path, "wo2gpf"))
    try:
        for reg, value in ((2, DATA + 0x1000), (4, 0x0102_0304_0506_0708), (5, 0x1112_1314_1516_1718)):
            g.cpu.set_gpr(reg, value)
        g.memory.set_pas(World.ROOT, g.data_pa + 0x1000, Pas.REALM)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.gpf and trap.is_write, trap
        assert trap.pc == CODE and trap.ipa == DATA + 0x1000 and trap.va == DATA + 0x1000
        assert g.cpu.get_gpr(2) == DATA + 0x1000
        g.memory.set_pas(World.ROOT, g.data_pa + 0x1000, Pas.NON_SECURE)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        mem = g.ns.read(g.data_pa + 0x1000 - 8, 16)
        assert mem == (0x0102_0304_0506_0708).to_bytes(8, "little") + (0x1112_1314_1516_1718).to_bytes(8, "little")
        assert g.cpu.get_gpr(2) == DATA + 0x1000 - 8
    finally:
        g.cpu.close()


class ReadOnlyGuest(Guest):
    """DATA read-only at stage 2 (S2AP 0b01), the page after it read-write."""

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        if ipa == DATA:
            return Mapping(self.data_pa, World.NON_SECURE, writable=False)
        if ipa == DATA + GRANULE_SIZE:
            return Mapping(self.data_pa + GRANULE_SIZE, World.NON_SECURE)
        return super().translate(ipa, is_write, is_fetch)


def test_a_store_to_a_read_only_page_is_a_permission_fault_and_ends_its_block(tmp_path: Path) -> None:
    """A store S2AP forbids faults at its own PC with nothing written, and the store after
    it in the same block is not made before the hypervisor has handled the fault; a load
    from the page is made."""
    g = ReadOnlyGuest(assemble("""
    .text
    ldr x7, [x2]
    str x1, [x2, #8]
    str x3, [x4]
    hvc #1
    """, CODE, tmp_path, "ro"))
    try:
        g.ns.write_u64(g.data_pa, 0x77)
        for reg, value in ((1, 0xAA), (2, DATA), (3, 0xBB), (4, DATA + GRANULE_SIZE)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.is_write and not trap.gpf, trap
        assert (trap.pc, trap.ipa, trap.value) == (CODE + 4, DATA + 8, 0xAA)
        assert g.cpu.get_gpr(7) == 0x77
        assert g.ns.read(g.data_pa + 8, 8) == bytes(8) and g.ns.read(g.data_pa + GRANULE_SIZE, 8) == bytes(8)
        g.cpu.skip_instruction()  # the hypervisor ignores the store
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.ns.read_u64(g.data_pa + GRANULE_SIZE) == 0xBB and g.ns.read(g.data_pa + 8, 8) == bytes(8)
    finally:
        g.cpu.close()


@pytest.mark.parametrize("store", [True, False])
def test_an_mmio_access_after_a_first_touch_in_a_new_code_page_traps_at_itself(tmp_path: Path,
                                                                              store: bool) -> None:
    """The first block of a code page stage 2 has just mapped: a load maps its data page,
    then an MMIO access in the same block traps with its own PC and syndrome (the ISS's SRT,
    WnR), the load before it made once."""
    access = "str x1, [x5]" if store else "ldr x1, [x5]"
    g = Guest(assemble(f"""
    .text
    ldr x7, [x4]
    add x9, x9, #1
    {access}
    hvc #1
    """, CODE, tmp_path, "firsttouch"))
    try:
        g.ns.write_u64(g.data_pa, 0x77)
        for reg, value in ((1, 0xAA), (4, DATA), (5, MMIO)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.pc == CODE + 8, trap
        assert trap.ipa == MMIO and trap.is_write == store
        assert trap.syndrome is not None and (trap.syndrome.srt, trap.syndrome.is_write) == (1, store)
        assert (g.cpu.get_gpr(7), g.cpu.get_gpr(9)) == (0x77, 1)
        if store:
            assert trap.value == 0xAA
            g.cpu.skip_instruction()
        else:
            g.cpu.complete_mmio_read(trap.syndrome, 0x1234)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert (g.cpu.get_gpr(1), g.cpu.get_gpr(7), g.cpu.get_gpr(9)) == (0xAA if store else 0x1234, 0x77, 1)
    finally:
        g.cpu.close()


def test_an_mmio_load_to_xzr_discards_the_value(tmp_path: Path) -> None:
    """Rt = 31 in a load is XZR (the Arm ARM's zero register: a write to it is ignored): the
    hypervisor's completion of `ldr xzr, [x5]` writes no register and steps past it."""
    g = Guest(assemble("""
    .text
    ldr xzr, [x5]
    hvc #1
    """, CODE, tmp_path, "xzr"))
    try:
        g.cpu.set_gpr(5, MMIO)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.syndrome is not None and trap.syndrome.srt == 31, trap
        before = g.cpu.get_gprs()
        g.cpu.complete_mmio_read(trap.syndrome, 0x1234)
        assert g.cpu.pc == CODE + 4 and g.cpu.get_gprs() == before and g.cpu.get_gpr(31) == 0
        g.cpu.set_gpr(31, 0x99)  # as for any write to XZR
        assert g.cpu.get_gpr(31) == 0 and g.cpu.get_gprs() == before
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
    finally:
        g.cpu.close()


def test_a_run_whose_time_is_already_up_stops_at_once(tmp_path: Path) -> None:
    """`until` already past: the host's interrupt is taken before the first instruction, at
    the PC the run would have started from."""
    g = Guest(assemble("""
    .text
    add x9, x9, #1
    hvc #1
    """, CODE, tmp_path, "late"))
    try:
        trap = g.cpu.run(until=time.monotonic() - 1)
        assert isinstance(trap, IrqTrap) and trap.pc == CODE and g.cpu.get_gpr(9) == 0, trap
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1 and g.cpu.get_gpr(9) == 1, trap
    finally:
        g.cpu.close()


def test_a_load_right_after_a_store_to_a_write_only_page_faults(tmp_path: Path) -> None:
    """The store is made, and the load after it in the same block is refused as every load
    from the page is: stage 2 still forbids reads once the store has written it."""
    g = WriteOnlyGuest(assemble("""
    .text
    str x1, [x2]
    ldr x6, [x2]
    hvc #1
    """, CODE, tmp_path, "wold"))
    try:
        for reg, value in ((1, 0x5555), (2, DATA), (6, 7)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and not trap.is_write and trap.ipa == DATA, trap
        assert trap.pc == CODE + 4 and g.cpu.get_gpr(6) == 7
        assert g.ns.read_u64(g.data_pa) == 0x5555
    finally:
        g.cpu.close()


@pytest.mark.parametrize("gpt_refuses", [False, True])
def test_a_branch_to_code_stage_2_cannot_give_is_an_instruction_abort_at_its_target(tmp_path: Path,
                                                                                   gpt_refuses: bool) -> None:
    """An instruction fetch stage 2 does not map (or maps onto a granule the GPT refuses):
    an Instruction Abort for the hypervisor whose preferred return address and IPA are the
    branch target, nothing run there; mapped afterwards, the code runs from it."""
    target = DATA + 0x40
    g = Guest(assemble("""
    .text
    br x0
    """, CODE, tmp_path, "iabt"))
    try:
        g.ns.write(g.data_pa + 0x40, (0xD4000022).to_bytes(4, "little"))  # hvc #1
        if gpt_refuses:
            g.memory.set_pas(World.ROOT, g.data_pa, Pas.REALM)
        else:
            del g.pages[DATA]
        g.cpu.set_gpr(0, target)
        trap = g.cpu.run()
        assert isinstance(trap, InstructionAbortTrap) and (trap.pc, trap.ipa) == (target, target), trap
        assert DATA not in g.cpu.mapped_pages()
        if gpt_refuses:
            g.memory.set_pas(World.ROOT, g.data_pa, Pas.NON_SECURE)
        else:
            g.pages[DATA] = g.data_pa
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1 and trap.pc == target + 4, trap
    finally:
        g.cpu.close()


class WriteOnlyBigGuest(BigGuest):
    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        mapping = super().translate(ipa, is_write, is_fetch)
        if ipa == DATA and mapping is not None:
            return Mapping(mapping.pa, World.NON_SECURE, readable=False)
        return mapping


def test_a_store_pair_from_a_write_only_page_into_no_stage_1_mapping_is_the_guests_abort(tmp_path: Path) -> None:
    """A store pair whose first half goes to a page stage 2 makes write-only and whose second
    half's VA stage 1 does not map: a Data Abort from the current EL (a translation fault)
    that the guest takes, with FAR in the second half."""
    g = WriteOnlyBigGuest(assemble(REPORTING_VECTORS + MMU_ON + """    stp x3, x4, [x2, #-8]
    hvc #2
    """, CODE, tmp_path, "wostp"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        va = 0x1234_5000
        t.map(va, DATA)  # the page after it has no stage-1 translation
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root), (2, va + 0x1000),
                           (3, 0x33), (4, 0x44)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 9, trap
        esr, far = g.cpu.get_gpr(5), g.cpu.get_gpr(6)
        assert esr >> 26 == 0x25 and esr & 0x3F in (0x04, 0x05, 0x06, 0x07), hex(esr)
        assert va + 0x1000 <= far < va + 0x1008
    finally:
        g.cpu.close()
