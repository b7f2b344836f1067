"""The vCPU's software walk of the guest's stage-1 tables (machine/vcpu.py VCpu.stage1),
against the CPU model's own walker: the guest runs AT S1E1R for each VA and reads PAR_EL1
(Arm ARM D8: the VMSAv8-64 translation regime of EL1&0), and every answer must match,
for 4, 16 and 64 KiB granules, TTBR0 and TTBR1, several T0SZ/T1SZ, page and block
descriptors, invalid entries at each level, and a table stage 2 cannot map."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import DataAbortTrap, HvcTrap, Mapping, VCpu

from .asm_snippet import assemble
from .test_vcpu import CODE, DATA, Guest

TABLES = 0x4100_0000  # IPA where the tables are built (mapped at stage 2 page by page)
TARGET = 0x6000_0000  # IPA range the test VAs map to (never accessed: only translated)
TG0 = {12: 0, 16: 1, 14: 2}  # TCR_EL1.TG0 encodings
TG1 = {14: 1, 12: 2, 16: 3}  # TCR_EL1.TG1 encodings
AF = 1 << 10
MAIR_NORMAL = 0xFF  # AttrIndx 0: normal memory, write-back

# Stage 1 on: MAIR_EL1, TCR_EL1 and TTBR0_EL1 from x20-x22, then SCTLR_EL1.M (x0 is scratch).
MMU_ON = """
    msr mair_el1, x20
    msr tcr_el1, x21
    msr ttbr0_el1, x22
    isb
    mrs x0, sctlr_el1
    orr x0, x0, #1
    msr sctlr_el1, x0
    isb
"""
# x21 for MMU_ON: T0SZ 16 (48-bit VAs), 4 KiB granule, IPS 48 bits, EPD1 (no TTBR1 walks)
TCR_48BIT_TTBR0 = 16 | (5 << 32) | (1 << 23)

AT_GUEST = """
    .text
_start:
    msr mair_el1, x20
    msr tcr_el1, x21
    msr ttbr0_el1, x22
    msr ttbr1_el1, x23
    isb
    mrs x0, sctlr_el1
    orr x0, x0, #1
    msr sctlr_el1, x0
    isb
    hvc #0              // the MMU is on: the test's own walk runs here
1:  cbz x26, 2f
    ldr x0, [x25]
    at s1e1r, x0
    isb
    mrs x1, par_el1
    str x1, [x25, #8]
    add x25, x25, #16
    sub x26, x26, #1
    b 1b
2:  hvc #1
"""


class BigGuest(Guest):
    """Guest with 32 MiB of physical memory: room for 64 KiB tables."""

    def __init__(self, binary: bytes) -> None:
        self.memory = PhysicalMemory(32 << 20)
        self.ns = self.memory.accessor(World.NON_SECURE)
        self.code_pa = self.memory.base
        self.data_pa = self.memory.base + 4 * GRANULE_SIZE
        self.ns.write(self.code_pa, binary)
        self.pages = {CODE: self.code_pa, DATA: self.data_pa}
        self.translations = []
        self.cpu = VCpu(self.memory, self.translate)
        self.cpu.reset(CODE)
        self.spare = self.memory.base + 0x10_0000  # PAs handed to table pages


class Tables:
    """Translation tables of one granule (`tg`: log2 of its size) and VA size, built in
    guest memory through the Guest's stage 2."""

    def __init__(self, g: BigGuest, tg: int, va_bits: int, base: int) -> None:
        self.g, self.tg, self.va_bits = g, tg, va_bits
        self.stride = tg - 3
        self.start = 4 - -(-(va_bits - tg) // self.stride)
        self.next = base
        self.root = self.table()

    def table(self) -> int:
        ipa = self.next
        self.next += 1 << self.tg
        for off in range(0, 1 << self.tg, GRANULE_SIZE):
            page = ipa + off
            if page not in self.g.pages:
                self.g.pages[page] = self.g.spare
                self.g.spare += GRANULE_SIZE
            self.g.ns.write(self.g.pages[page], bytes(GRANULE_SIZE))
        return ipa

    def shift(self, level: int) -> int:
        return self.tg + self.stride * (3 - level)

    def slot(self, table: int, va: int, level: int) -> int:
        bits = min(self.stride, self.va_bits - self.shift(level))
        return table + 8 * ((va >> self.shift(level)) & ((1 << bits) - 1))

    def read(self, ipa: int) -> int:
        page = ipa & ~(GRANULE_SIZE - 1)
        return int.from_bytes(self.g.ns.read(self.g.pages[page] + ipa - page, 8), "little")

    def write(self, ipa: int, desc: int) -> None:
        page = ipa & ~(GRANULE_SIZE - 1)
        self.g.ns.write(self.g.pages[page] + ipa - page, desc.to_bytes(8, "little"))

    def walk_to(self, va: int, level: int) -> int:
        """The slot of `va` at `level`, making the tables above it."""
        table = self.root
        for lvl in range(self.start, level):
            slot = self.slot(table, va, lvl)
            desc = self.read(slot)
            if not desc & 1:
                desc = self.table() | 3
                self.write(slot, desc)
            table = desc & ((1 << 48) - 1) & ~((1 << self.tg) - 1)
        return self.slot(table, va, level)

    def map(self, va: int, out: int, level: int = 3) -> None:
        self.write(self.walk_to(va, level), out | AF | (3 if level == 3 else 1))


def par_address(par: int) -> int | None:
    return None if par & 1 else par & 0xFFFF_FFFF_F000


CASES = [  # granule, T0SZ, T1SZ, block levels
    (12, 16, 16, (1, 2)),
    (12, 25, 34, (1, 2)),  # a 39-bit TTBR0 walk from level 1, a 30-bit TTBR1 walk from level 2
    (14, 16, 28, (2,)),
    (14, 17, 16, (2,)),  # a 47-bit walk: level 0 holds two entries
    (16, 16, 22, (2,)),
    (16, 33, 16, (2,)),  # a 31-bit walk from level 2
]


@pytest.mark.parametrize(("tg", "t0sz", "t1sz", "blocks"), CASES)
def test_the_software_walk_matches_the_cpu_models_at(tmp_path: Path, tg: int, t0sz: int, t1sz: int,
                                                      blocks: tuple[int, ...]) -> None:
    walk_matches_at(tmp_path, tg, t0sz, t1sz, blocks, TG0[tg], TG1[tg])


def test_the_reserved_tg1_encoding_walks_as_the_cpu_model_does(tmp_path: Path) -> None:
    """TCR_EL1.TG1 = 0b00 is reserved: the PE treats it as a granule size it implements
    (IMPLEMENTATION DEFINED); the CPU model's choice is 4 KiB, and the software walk must
    make the same one."""
    walk_matches_at(tmp_path, 12, 16, 16, (1, 2), TG0[12], 0b00)


def walk_matches_at(tmp_path: Path, tg: int, t0sz: int, t1sz: int, blocks: tuple[int, ...],
                    tg0_code: int, tg1_code: int) -> None:
    """The software walk against AT S1E1R for VAs at both TTBRs. Each TTBR also holds an ASID
    (bits [63:48]) and CnP (bit 0): neither is part of the table's address."""
    rng = random.Random(tg * 1000 + t0sz * 10 + t1sz)
    g = BigGuest(assemble(AT_GUEST, CODE, tmp_path, "at"))
    try:
        low, high = Tables(g, tg, 64 - t0sz, TABLES), None
        high = Tables(g, tg, 64 - t1sz, TABLES + 0x40_0000)
        granule = 1 << tg
        low.map(CODE & ~(granule - 1), CODE & ~(granule - 1))  # the code and data pages, identity
        low.map(DATA & ~(granule - 1), DATA & ~(granule - 1))
        vas: list[int] = []
        for tables, top in ((low, 0), (high, ~((1 << (64 - t1sz)) - 1) & (1 << 64) - 1)):
            span = 1 << tables.va_bits
            for i in range(12):
                va = top | (rng.randrange(span) & ~7)
                out = TARGET + rng.randrange(1 << 20) * granule
                if i < 6:
                    tables.map(va & ~(granule - 1), out)
                    vas.append(va)
                elif i < 9 and blocks:
                    level = rng.choice(blocks)
                    size = 1 << tables.shift(level)
                    if size > span // 2:
                        continue
                    tables.map(va & ~(size - 1), (TARGET & ~(size - 1)) + size * rng.randrange(4), level)
                    vas.append(va)
                    vas.append(va ^ (size >> 1))  # the other half of the same block
                else:
                    vas.append(va)  # nothing mapped: invalid at some level
            vas.append(top | (span - 8))
            # bits[1:0] = 0b01 at level 3 is reserved: an invalid descriptor, not a page
            va = top | (rng.randrange(span) & ~7)
            tables.write(tables.walk_to(va & ~(granule - 1), 3), TARGET | AF | 1)
            vas.append(va)
        tcr = t0sz | (tg0_code << 14) | (t1sz << 16) | (tg1_code << 30) | (5 << 32)  # IPS 48 bits
        asid_cnp0, asid_cnp1 = 0x5A5A << 48 | 1, 0xA5A5 << 48 | 1
        for reg, value in ((20, MAIR_NORMAL), (21, tcr), (22, low.root | asid_cnp0), (23, high.root | asid_cnp1),
                           (25, DATA), (26, len(vas))):
            g.cpu.set_gpr(reg, value)
        g.ns.write(g.data_pa, b"".join(va.to_bytes(8, "little") + bytes(8) for va in vas))
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 0, trap
        # the software walk first: it maps the table pages the CPU model's AT will read
        ours = [g.cpu.stage1(va) for va in vas]
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        raw = g.ns.read(g.data_pa, 16 * len(vas))
        pars = [int.from_bytes(raw[16 * i + 8 : 16 * i + 16], "little") for i in range(len(vas))]
        for va, (ipa, _), par in zip(vas, ours, pars, strict=True):
            model = par_address(par)
            want = None if model is None else model | (va & 0xFFF)
            assert ipa == want, f"VA {va:#x}: walk {ipa if ipa is None else hex(ipa)}, AT {par:#x}"
        for half in (0, 1):  # TTBR0's VAs, then TTBR1's: most of each map, some fault
            got = [p for va, p in zip(vas, pars, strict=True) if (va >> 55) & 1 == half]
            assert sum(p & 1 == 0 for p in got) >= 6 and sum(p & 1 for p in got) >= 1
    finally:
        g.cpu.close()


def walk_then_load(tmp_path: Path, name: str) -> bytes:
    """The MMU turned on (x20-x22: MAIR, TCR, TTBR0), HVC #0, then a load through x23 and HVC #2."""
    return assemble("""
    .text
_start:
""" + MMU_ON + """    hvc #0
    ldr x1, [x23]
    hvc #2
    """, CODE, tmp_path, name)


def test_a_table_stage_2_cannot_map_is_the_hypervisors_fault(tmp_path: Path) -> None:
    g = BigGuest(walk_then_load(tmp_path, "s1ptw"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        va = 0x7000_0000_0000
        slot = t.walk_to(va, 1)  # a level-1 entry pointing at a table outside stage 2
        missing = 0x5800_0000
        t.write(slot, missing | 3)
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root), (23, va)):
            g.cpu.set_gpr(reg, value)  # EPD1: no TTBR1 walks
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 0, trap
        assert g.cpu.stage1(va)[0] is None  # the walk stops at the missing table
        trap = g.cpu.run()
        assert isinstance(trap, DataAbortTrap), trap
        level2_index = (va >> 21) & 0x1FF
        assert trap.s1ptw and trap.ipa == missing + 8 * level2_index and not trap.is_write
        assert trap.size == 8 and trap.value == 0  # a 64-bit descriptor read: no value stored
        g.pages[missing] = g.spare  # the hypervisor maps it (zeros: invalid)
        assert g.translate(missing, False, False) == Mapping(g.spare, World.NON_SECURE)
        assert g.cpu.stage1(va)[0] is None  # now the walk reads an invalid level-2 entry
    finally:
        g.cpu.close()


class NoExecTables(BigGuest):
    """A stage 2 that maps the table pages for data accesses only: a fetch from them faults."""

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        if is_fetch and TABLES <= ipa < TARGET:
            return None
        return super().translate(ipa, is_write, is_fetch)


def test_a_table_walk_reads_its_tables_at_stage_2(tmp_path: Path) -> None:
    """The stage-1 walk's descriptor fetches are data reads for stage 2 (never instruction
    fetches): tables on pages stage 2 gives no execute permission are walked, for a data
    access and for an instruction fetch alike."""
    g = NoExecTables(assemble("""
    .text
_start:
""" + MMU_ON + """    ldr x1, [x23]
    hvc #1
    """, CODE, tmp_path, "s1read"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        g.ns.write(g.data_pa, (0x1234).to_bytes(8, "little"))
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root), (23, DATA)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 1, trap
        assert g.cpu.get_gpr(1) == 0x1234
        assert g.cpu.stage1(DATA + 8) == (DATA + 8, False)  # its tables are mapped already
    finally:
        g.cpu.close()


class WriteOnlyTables(BigGuest):
    """A stage 2 that maps the table pages without read permission (S2AP write-only)."""

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        mapping = super().translate(ipa, is_write, is_fetch)
        if mapping is not None and TABLES <= ipa < TARGET:
            return Mapping(mapping.pa, mapping.world, readable=False)
        return mapping


def test_a_table_stage_2_will_not_let_be_read_is_the_hypervisors_fault(tmp_path: Path) -> None:
    """The walk's descriptor read is checked against stage 2's read permission: a table on
    a page stage 2 makes write-only gives the hypervisor a stage-2 fault on the walk (S1PTW)
    at the entry read, and the walk reads nothing from it."""
    g = WriteOnlyTables(walk_then_load(tmp_path, "s1wo"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        t.map(DATA, DATA)
        va = 0x7000_0000_0000
        t.map(va, DATA)
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root), (23, va)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()  # the fetches after MMU_ON walk the same tables
        assert isinstance(trap, DataAbortTrap), trap
        assert trap.s1ptw and not trap.is_write and trap.ipa & ~0xFFF == t.root, trap
        assert not {p for p in g.cpu.mapped_pages() if TABLES <= p < TARGET}
    finally:
        g.cpu.close()


def test_read_insn_at_reads_through_stage_1_and_gives_none_where_it_faults(tmp_path: Path) -> None:
    """The instruction word at a VA is read through the guest's stage 1 (any VA mapping the
    code page gives the same word); a VA stage 1 does not map has none."""
    g = BigGuest(assemble("""
    .text
_start:
""" + MMU_ON + """    hvc #0
    """, CODE, tmp_path, "insnat"))
    try:
        t = Tables(g, 12, 48, TABLES)
        t.map(CODE, CODE)
        alias = 0x7000_0000_0000
        t.map(alias, CODE)  # a second VA for the code page
        for reg, value in ((20, MAIR_NORMAL), (21, TCR_48BIT_TTBR0), (22, t.root)):
            g.cpu.set_gpr(reg, value)
        trap = g.cpu.run()
        assert isinstance(trap, HvcTrap) and trap.imm == 0, trap
        hvc = 0xD4000002  # hvc #0
        assert g.cpu.read_insn_at(trap.pc - 4) == hvc
        assert g.cpu.read_insn_at(alias + trap.pc - 4 - CODE) == hvc
        assert g.cpu.read_insn_at(alias + 0x20_0000) is None  # no stage-1 translation
    finally:
        g.cpu.close()
