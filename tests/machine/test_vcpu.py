"""The Unicorn AArch64 vCPU (machine/vcpu.py) running real assembled guest code, and the
load/store syndrome decoder (arch/esr.py) against instruction words encoded by hand from
the Arm ARM (C4.1 "Loads and Stores" encodings; ISS of ESR_ELx for a Data Abort: ISV[24],
SAS[23:22], SSE[21], SRT[20:16], SF[15], AR[14], WnR[6], DFSC[5:0])."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from unirealm.arch.esr import AccessSyndrome, decode_load_store
from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import (
    DataAbortTrap,
    HvcTrap,
    Mapping,
    SmcTrap,
    VCpu,
    WfxTrap,
)

from .asm_snippet import asm_file, assemble

MASK64 = (1 << 64) - 1
CODE = 0x4000_0000  # guest IPA of the code page
DATA = 0x4000_1000  # guest IPA of a data page
MMIO = 0x5000_0010  # an IPA stage 2 never maps


class Guest:
    """A vCPU whose stage 2 maps CODE and DATA onto two non-secure granules."""

    def __init__(self, binary: bytes) -> None:
        self.memory = PhysicalMemory(4 << 20)
        self.ns = self.memory.accessor(World.NON_SECURE)
        self.code_pa = self.memory.base
        self.data_pa = self.memory.base + 4 * GRANULE_SIZE
        assert len(binary) <= GRANULE_SIZE
        self.ns.write(self.code_pa, binary)
        self.pages = {CODE: self.code_pa, DATA: self.data_pa}
        self.translations: list[int] = []
        self.cpu = VCpu(self.memory, self.translate)
        self.cpu.reset(CODE)

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        self.translations.append(ipa)
        pa = self.pages.get(ipa)
        return None if pa is None else Mapping(pa, World.NON_SECURE)


def load(tmp_path: Path, name: str) -> Guest:
    return Guest(assemble(asm_file(name), CODE, tmp_path, Path(name).stem))


@pytest.fixture
def guests(tmp_path: Path) -> Iterator[list[Guest]]:
    made: list[Guest] = []
    yield made
    for g in made:
        g.cpu.close()


# --- SMC --------------------------------------------------------------------------------
SMC_ARGS = [((0x0F1E2D3C4B5A6978 ^ (i * 0x9E3779B97F4A7C15)) & MASK64) for i in range(18)]


def test_smc_traps_with_x0_to_x17_and_results_reach_the_guest(tmp_path: Path) -> None:
    g = load(tmp_path, "smc_args.S")
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap)
    assert trap.regs == SMC_ARGS
    smc_pc = trap.pc
    assert g.ns.read(g.code_pa + smc_pc - 4 - CODE, 4) == (0xD400_0003).to_bytes(4, "little")  # smc #0
    results = [0x10, 0xFFFF_FFFF_FFFF_FFFF, 0x2222, 0x3333_0000_0000_0001, 0x4444]
    for i, value in enumerate(results):
        g.cpu.set_gpr(i, value)
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap)
    assert trap.pc == smc_pc + 16  # resumed right after the first smc (three stp, then smc)
    stored = [int.from_bytes(g.ns.read(g.data_pa + 8 * i, 8), "little") for i in range(6)]
    assert stored == [*results, SMC_ARGS[5]]  # x5 was not written: it keeps its value
    assert isinstance(g.cpu.run(), WfxTrap)
    g.cpu.close()


# --- stage-2 data aborts ----------------------------------------------------------------
ESR_ISV, ESR_SSE, ESR_SF, ESR_WNR = 1 << 24, 1 << 21, 1 << 15, 1 << 6


def test_mmio_aborts_syndromes_and_completion(tmp_path: Path) -> None:
    g = load(tmp_path, "mmio.S")
    g.cpu.set_gpr(3, 0xAAAA_BBBB_DEAD_BEEF)
    g.cpu.set_gpr(4, 0x1234_5681)
    g.cpu.set_gpr(5, 0xFFFF_8765)
    # (ipa, is_write, size, Rt, ISS at a level-3 translation fault typed from the Arm ARM,
    #  store value, value the emulated device returns for a load, expected Rt afterwards)
    steps = [
        (MMIO, False, 8, 1, 0x01C1_8007, None, 0x0123_4567_89AB_CDEF, 0x0123_4567_89AB_CDEF),
        (MMIO + 8, True, 4, 3, 0x0183_0047, 0xDEAD_BEEF, None, None),
        (MMIO, True, 1, 4, 0x0104_0047, 0x81, None, None),
        (MMIO + 2, True, 2, 5, 0x0145_0047, 0x8765, None, None),
        (MMIO, False, 1, 6, 0x0126_8007, None, 0x80, 0xFFFF_FFFF_FFFF_FF80),  # LDRSB Xt
        (MMIO, False, 1, 7, 0x0127_0007, None, 0x80, 0x0000_0000_FFFF_FF80),  # LDRSB Wt
        (MMIO, False, 2, 8, 0x0168_8007, None, 0x8001, 0xFFFF_FFFF_FFFF_8001),  # LDRSH Xt
        (MMIO, False, 2, 9, 0x0169_0007, None, 0x8001, 0x0000_0000_FFFF_8001),  # LDRSH Wt
        (MMIO, False, 4, 10, 0x01AA_8007, None, 0x8000_0000, 0xFFFF_FFFF_8000_0000),  # LDRSW
        (MMIO, False, 1, 11, 0x010B_0007, None, 0xFF, 0xFF),  # LDRB: zero-extended
        (MMIO, False, 2, 12, 0x014C_0007, None, 0xFFFF, 0xFFFF),
        (MMIO, False, 4, 13, 0x018D_0007, None, 0xFFFF_FFFF_1234_5678, 0x1234_5678),  # only 32 bits
    ]
    for ipa, is_write, size, rt, iss, store_value, device_value, expected in steps:
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap), trap
        insn_pc = trap.pc
        assert (trap.ipa, trap.is_write, trap.size) == (ipa, is_write, size)
        assert trap.syndrome is not None and not trap.gpf
        assert trap.syndrome.srt == rt
        assert trap.syndrome.iss(3) == iss
        assert trap.syndrome.iss(2) == iss - 1  # DFSC follows the level
        if is_write:
            assert trap.value == store_value
            g.cpu.skip_instruction()
        else:
            g.cpu.complete_mmio_read(trap.syndrome, device_value)
            assert g.cpu.get_gpr(rt) == expected
        assert g.cpu.pc == insn_pc + 4
    # LDP: no syndrome; the hypervisor cannot emulate it.
    trap = g.cpu.run()
    assert isinstance(trap, DataAbortTrap) and trap.syndrome is None and not trap.is_write
    assert trap.ipa == MMIO
    g.cpu.skip_instruction()
    # STR XZR: Rt = 31 and the value 0.
    trap = g.cpu.run()
    assert isinstance(trap, DataAbortTrap)
    assert trap.syndrome is not None and trap.syndrome.srt == 31
    assert trap.syndrome.iss(3) == 0x01DF_8047
    assert (trap.ipa, trap.value, trap.size) == (MMIO + 16, 0, 8)
    g.cpu.skip_instruction()
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap)
    assert trap.regs[1] == 0x0123_4567_89AB_CDEF
    assert trap.regs[6:14] == [s[7] for s in steps[4:12]]
    g.cpu.close()


def test_faulting_access_is_retried_until_completed(tmp_path: Path) -> None:
    g = load(tmp_path, "mmio.S")
    first = g.cpu.run()
    again = g.cpu.run()  # not completed: the same load faults again
    assert isinstance(first, DataAbortTrap) and isinstance(again, DataAbortTrap)
    assert (first.pc, first.ipa, first.syndrome) == (again.pc, again.ipa, again.syndrome)
    g.cpu.close()


@pytest.mark.parametrize(("size", "sixty_four", "value", "expected"), [
    (1, True, 0x7F, 0x7F),  # LDRSB Xt of a positive byte: unchanged
    (1, False, 0x7F, 0x7F),
    (2, True, 0x7FFF, 0x7FFF),  # LDRSH Xt
    (4, True, 0x7FFF_FFFF, 0x7FFF_FFFF),  # LDRSW
    (1, True, 0x180, 0xFFFF_FFFF_FFFF_FF80),  # only the access's byte counts, then its sign
    (2, False, 0x1_0001, 0x1),
])
def test_a_sign_extending_mmio_load_extends_only_negative_values(tmp_path: Path, size: int, sixty_four: bool,
                                                                 value: int, expected: int) -> None:
    """SignExtend (Arm ARM pseudocode) copies the access's top bit: a value whose top bit is
    clear is zero-extended, the device's bits above the access size ignored."""
    g = load(tmp_path, "wfx_hvc.S")
    try:
        g.cpu.complete_mmio_read(AccessSyndrome(False, size, 3, True, sixty_four), value)
        assert g.cpu.get_gpr(3) == expected and g.cpu.pc == CODE + 4
    finally:
        g.cpu.close()


# --- WFI / WFE / HVC --------------------------------------------------------------------
def test_wfi_and_hvc(tmp_path: Path) -> None:
    g = load(tmp_path, "wfx_hvc.S")
    trap = g.cpu.run()
    assert isinstance(trap, WfxTrap) and not trap.is_wfe and trap.pc == CODE + 4
    trap = g.cpu.run()
    # SCR_EL3.HCE is set as EL3 firmware sets it: HVC is a hypervisor call with its
    # immediate, and the PC is after it (the preferred return address).
    assert isinstance(trap, HvcTrap)
    assert trap.pc == CODE + 8 and trap.imm == 0x42
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap) and trap.pc == CODE + 12
    g.cpu.close()


# --- lazy mappings, invalidation, PAS changes -------------------------------------------
def test_pages_map_lazily_share_memory_and_invalidate(tmp_path: Path) -> None:
    g = load(tmp_path, "lazy_map.S")
    assert g.cpu.mapped_pages() == {}
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap)
    assert g.cpu.mapped_pages() == {CODE: g.code_pa, DATA: g.data_pa}
    assert g.translations.count(DATA) == 1
    # The guest's store is in physical memory now, without any copy-back.
    assert g.ns.read_u64(g.data_pa) == 0xCAFE_F00D_1234_5678
    # And a host write is visible to the guest on its next load.
    g.ns.write_u64(g.data_pa + 8, 0x0BAD_C0DE_0000_0001)
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap) and trap.regs[2] == 0x0BAD_C0DE_0000_0001
    assert g.translations.count(DATA) == 1  # still mapped: no new translation

    # TLBI: the mapping goes; the next access faults to the owner's stage 2 again.
    g.cpu.invalidate(DATA, GRANULE_SIZE)
    assert DATA not in g.cpu.mapped_pages() and CODE in g.cpu.mapped_pages()
    del g.pages[DATA]
    trap = g.cpu.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == DATA and not trap.gpf
    assert g.translations.count(DATA) == 2
    g.pages[DATA] = g.data_pa
    trap = g.cpu.run()  # the same load, now mapped again
    assert isinstance(trap, SmcTrap) and trap.regs[3] == 0xCAFE_F00D_1234_5678
    assert g.translations.count(DATA) == 3

    # A PAS change of a mapped granule drops its mapping; the GPT then refuses the access.
    g.memory.set_pas(World.ROOT, g.data_pa, Pas.REALM)
    assert DATA not in g.cpu.mapped_pages()
    trap = g.cpu.run()
    assert isinstance(trap, DataAbortTrap)
    assert trap.ipa == DATA and trap.gpf
    g.memory.set_pas(World.ROOT, g.data_pa, Pas.NON_SECURE)
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap) and trap.regs[4] == 0xCAFE_F00D_1234_5678
    g.cpu.close()
    assert g.cpu.mapped_pages() == {}


def test_pas_change_of_an_unrelated_granule_keeps_mappings(tmp_path: Path) -> None:
    g = load(tmp_path, "lazy_map.S")
    g.cpu.run()
    g.memory.set_pas(World.ROOT, g.data_pa + GRANULE_SIZE, Pas.REALM)
    assert g.cpu.mapped_pages() == {CODE: g.code_pa, DATA: g.data_pa}
    g.cpu.close()


def test_reset_sets_pc_gprs_and_el1h(tmp_path: Path) -> None:
    g = load(tmp_path, "wfx_hvc.S")
    g.cpu.set_gpr(9, 99)
    g.cpu.reset(CODE + 8, [7, 8])
    assert g.cpu.pc == CODE + 8
    assert g.cpu.get_gprs(10) == [7, 8, 0, 0, 0, 0, 0, 0, 0, 0]
    assert g.cpu.pstate & 0xF == 0b0101  # EL1h
    assert g.cpu.pstate & 0x3C0 == 0x3C0  # D, A, I, F masked
    trap = g.cpu.run()
    assert isinstance(trap, SmcTrap) and trap.regs[:2] == [7, 8]
    g.cpu.close()


ALIAS = DATA + GRANULE_SIZE  # a second IPA page the test maps onto DATA's granule


def test_a_pas_change_drops_every_ipa_mapping_the_granule(tmp_path: Path) -> None:
    """Two IPA pages aliasing one granule: once one is invalidated, a PAS change of the granule
    still drops the other (a GPT change reaches every translation to it), whose next access
    is then refused by the GPT."""
    g = Guest(assemble("""
    .text
    ldr x1, [x2]
    ldr x3, [x4]
    smc #0
    ldr x5, [x4]
    smc #0
    """, CODE, tmp_path, "alias"))
    try:
        g.pages[ALIAS] = g.data_pa
        g.ns.write_u64(g.data_pa, 0x1234)
        g.cpu.set_gpr(2, DATA)
        g.cpu.set_gpr(4, ALIAS)
        trap = g.cpu.run()
        assert isinstance(trap, SmcTrap) and trap.regs[1] == trap.regs[3] == 0x1234, trap
        assert g.cpu.mapped_pages() == {CODE: g.code_pa, DATA: g.data_pa, ALIAS: g.data_pa}
        g.cpu.invalidate(DATA, GRANULE_SIZE)
        assert g.cpu.mapped_pages() == {CODE: g.code_pa, ALIAS: g.data_pa}
        g.memory.set_pas(World.ROOT, g.data_pa, Pas.REALM)
        assert g.cpu.mapped_pages() == {CODE: g.code_pa}
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap) and trap.gpf and trap.ipa == ALIAS, trap
    finally:
        g.cpu.close()


# --- the decoder, on hand-encoded instruction words -------------------------------------
def ldst_uimm(size: int, opc: int, imm12: int, rn: int, rt: int) -> int:
    """LDR/STR (immediate, unsigned offset): size 111 0 01 opc imm12 Rn Rt."""
    return (size << 30) | (0b111001 << 24) | (opc << 22) | (imm12 << 10) | (rn << 5) | rt


def ldst_imm9(size: int, opc: int, imm9: int, idx: int, rn: int, rt: int) -> int:
    """LDUR/STUR (idx 00), post-index (01), LDTR/STTR (10), pre-index (11)."""
    return (size << 30) | (0b111000 << 24) | (opc << 22) | ((imm9 & 0x1FF) << 12) | (idx << 10) | (rn << 5) | rt


def ldst_reg(size: int, opc: int, rm: int, option: int, s: int, rn: int, rt: int) -> int:
    """LDR/STR (register): size 111 0 00 opc 1 Rm option S 10 Rn Rt."""
    return (
        (size << 30) | (0b111000 << 24) | (opc << 22) | (1 << 21) | (rm << 16)
        | (option << 13) | (s << 12) | (0b10 << 10) | (rn << 5) | rt
    )  # fmt: skip


S = AccessSyndrome


@pytest.mark.parametrize(
    ("insn", "expected"),
    [
        (0xF940_0041, S(False, 8, 1, False, True)),  # ldr x1, [x2]
        (ldst_uimm(3, 1, 0x1FF, 3, 30), S(False, 8, 30, False, True)),  # ldr x30, [x3, #4088]
        (0xF900_0041, S(True, 8, 1, False, True)),  # str x1, [x2]
        (ldst_uimm(2, 1, 1, 0, 7), S(False, 4, 7)),  # ldr w7, [x0, #4]
        (0xB900_0003, S(True, 4, 3)),  # str w3, [x0]
        (ldst_uimm(0, 1, 0, 1, 2), S(False, 1, 2)),  # ldrb w2, [x1]
        (ldst_uimm(0, 0, 5, 1, 2), S(True, 1, 2)),  # strb w2, [x1, #5]
        (ldst_uimm(1, 1, 0, 1, 2), S(False, 2, 2)),  # ldrh
        (ldst_uimm(1, 0, 0, 1, 2), S(True, 2, 2)),  # strh
        (0x3980_0020, S(False, 1, 0, True, True)),  # ldrsb x0, [x1]
        (0x39C0_0020, S(False, 1, 0, True, False)),  # ldrsb w0, [x1]
        (0x7980_0020, S(False, 2, 0, True, True)),  # ldrsh x0, [x1]
        (0x79C0_0020, S(False, 2, 0, True, False)),  # ldrsh w0, [x1]
        (0xB980_0020, S(False, 4, 0, True, True)),  # ldrsw x0, [x1]
        (ldst_imm9(3, 1, -8, 0b00, 2, 1), S(False, 8, 1, False, True)),  # ldur x1, [x2, #-8]
        (ldst_imm9(2, 0, 3, 0b00, 2, 1), S(True, 4, 1)),  # stur w1, [x2, #3]
        (ldst_imm9(0, 2, 1, 0b00, 2, 1), S(False, 1, 1, True, True)),  # ldursb x1
        (ldst_imm9(3, 1, 0, 0b10, 2, 1), S(False, 8, 1, False, True)),  # ldtr x1, [x2]
        (ldst_reg(3, 1, 5, 0b011, 0, 2, 1), S(False, 8, 1, False, True)),  # ldr x1, [x2, x5]
        (ldst_reg(3, 0, 5, 0b011, 1, 2, 1), S(True, 8, 1, False, True)),  # str x1, [x2, x5, lsl #3]
        (ldst_reg(2, 2, 5, 0b110, 1, 2, 9), S(False, 4, 9, True, True)),  # ldrsw x9, [x2, w5, sxtw #2]
        (ldst_reg(0, 3, 5, 0b011, 0, 2, 9), S(False, 1, 9, True, False)),  # ldrsb w9, [x2, x5]
        (0xF900_001F, S(True, 8, 31, False, True)),  # str xzr, [x0]
    ],
)
def test_decode_single_register_load_store(insn: int, expected: AccessSyndrome) -> None:
    assert decode_load_store(insn) == expected


@pytest.mark.parametrize(
    "insn",
    [
        0xA900_0441,  # stp x1, x1, [x2]
        0xA940_0441,  # ldp x1, x1, [x2]
        0x2900_0441,  # stp w1, w1, [x2]
        ldst_imm9(3, 1, 8, 0b01, 2, 1),  # ldr x1, [x2], #8   (post-index)
        ldst_imm9(3, 1, -8, 0b11, 2, 1),  # ldr x1, [x2, #-8]! (pre-index)
        ldst_imm9(3, 0, 16, 0b11, 2, 1),  # str x1, [x2, #16]!
        ldst_imm9(0, 1, 1, 0b01, 2, 1),  # ldrb w1, [x2], #1
        0xFD40_0020,  # ldr d0, [x1]     (SIMD&FP)
        0x3DC0_0020,  # ldr q0, [x1]
        0xC85F_7C41,  # ldxr x1, [x2]    (exclusive)
        0xF820_0041,  # ldadd x0, x1, [x2] (atomic)
        ldst_uimm(3, 2, 0, 2, 0),  # prfm pldl1keep, [x2]
        ldst_uimm(2, 3, 0, 2, 0),  # size 10 opc 11: unallocated
        0xD503_207F,  # wfi
        0x8B02_0020,  # add x0, x1, x2
    ],
)
def test_decode_gives_none_without_a_valid_syndrome(insn: int) -> None:
    assert decode_load_store(insn) is None
