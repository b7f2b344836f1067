"""The EL0 address space (machine/el0space.py El0Space) on each build of the Unicorn binding
it knows: the library's hooks with the registers read in place (machine/uc_regfile.py),
the library's hooks with the registers read by call (a build that does not show its
register file), and the binding's own Python hooks (no library handle). Each stops EL0
for an SVC with the PC after it, for an undefined instruction at it and for a page the
kernel has not mapped at the access; the fast path hands the kernel x8 and x0..x5 and
puts its x0 back. Also: fault-around maps a page with its present neighbours below it
too, and a TLBI of a code page whose stage-2 mapping moved runs the code now there."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine import el0space, uc_regfile
from unirealm.machine.el0space import PHYS_BLOCK, El0Space

from .test_el0space import (
    CODE_VA,
    DATA_VA,
    RAM_IPA,
    STR_X1_X2,
    SVC_0,
    GrowingStage2Cpu,
    R,
    Stage2Cpu,
    W,
    X,
    program,
)

MOV_X1_X0 = 0xAA0003E1  # mov x1, x0
MOV_X8_93 = 0xD2800BA8  # mov x8, #93
UDF_0 = 0x00000000  # udf #0
MOVZ_X0 = 0xD2800000  # movz x0, #imm16 (imm16 << 5)
B_SELF = 0x14000000  # b .
EXCP_UDEF = 1  # QEMU's exception number for an undefined instruction


@pytest.fixture
def cpu() -> Stage2Cpu:
    return Stage2Cpu()


@pytest.fixture(params=["in place", "by call", "python hooks"])
def build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "by call":
        monkeypatch.setattr(uc_regfile, "locate", lambda uc, *a: None)
    elif request.param == "python hooks":
        monkeypatch.setattr(el0space, "_uclib", None)
    return str(request.param)


@pytest.fixture
def space(build: str) -> Iterator[tuple[Stage2Cpu, El0Space]]:
    cpu = Stage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    assert (el0._xregs is not None) == (build == "in place")
    yield cpu, el0
    el0.close()


def test_an_svc_stops_el0_after_it_and_an_undefined_instruction_at_it(space: tuple[Stage2Cpu, El0Space]) -> None:
    cpu, el0 = space
    program(cpu, el0, SVC_0 | 7 << 5, UDF_0)
    assert el0.run(CODE_VA) == ("svc", CODE_VA + 4, 0)
    assert el0.run(CODE_VA + 4) == ("undef", CODE_VA + 4, EXCP_UDEF)


def test_a_store_to_a_page_not_mapped_stops_at_the_store_and_a_mapped_one_lands(
        space: tuple[Stage2Cpu, El0Space]) -> None:
    cpu, el0 = space
    program(cpu, el0, STR_X1_X2, SVC_0)
    el0.set_gpr(2, DATA_VA + 3 * GRANULE_SIZE)  # past the three data pages
    assert el0.run(CODE_VA) == ("fault", CODE_VA, DATA_VA + 3 * GRANULE_SIZE)
    el0.set_gpr(2, DATA_VA + 8)
    assert el0.run(CODE_VA) == ("svc", CODE_VA + 8, 0)
    assert cpu.read_u64(RAM_IPA + GRANULE_SIZE + 8) == 0x1122_3344_5566_7788


def test_the_svc_fast_path_on_each_build(build: str, space: tuple[Stage2Cpu, El0Space]) -> None:
    cpu, el0 = space
    program(cpu, el0, SVC_0, MOV_X1_X0, MOV_X8_93, SVC_0, SVC_0)
    args = [0xB000_0000_0000_0000 | i << 4 for i in range(6)]
    for i, value in enumerate(args):
        el0.set_gpr(i, value)
    el0.set_gpr(8, 56)  # openat
    seen: list[tuple[int, ...]] = []

    def on_svc(nr: int, *a: int) -> bool:
        seen.append((nr, *a))
        if nr == 93:
            return False
        el0.set_x0(-2)  # -ENOENT, as 64 bits
        return True

    el0.on_svc = on_svc
    if build == "python hooks":  # no fast path: every SVC leaves run()
        assert el0.run(CODE_VA) == ("svc", CODE_VA + 4, 0) and seen == []
        el0.set_x0(-2)
        assert el0.gpr(0) == 2**64 - 2
        return
    assert el0.run(CODE_VA) == ("svc", CODE_VA + 16, 0)
    assert seen == [(56, *args), (93, 2**64 - 2, 2**64 - 2, *args[2:])]


def test_a_page_maps_with_its_present_neighbours_below_it_as_one_region() -> None:
    cpu = Stage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, STR_X1_X2, SVC_0)
        el0.unmap(CODE_VA, GRANULE_SIZE)
        code_va = DATA_VA + 3 * GRANULE_SIZE  # the code on the page above the data: IPA page 4
        cpu.write(RAM_IPA + 4 * GRANULE_SIZE, struct.pack("<2I", STR_X1_X2, SVC_0))
        el0.map(code_va, RAM_IPA + 4 * GRANULE_SIZE, GRANULE_SIZE, R | X)
        el0.set_gpr(2, DATA_VA + 16)
        assert el0.run(code_va) == ("svc", code_va + 8, 0)
        # the code page's first touch took the pages below it (present, contiguous) along, and above
        found = sorted((begin, end + 1) for begin, end, _ in el0.uc.mem_regions())
        assert found == [(RAM_IPA, RAM_IPA + PHYS_BLOCK * GRANULE_SIZE)]  # all of the block: every page present
        assert cpu.read_u64(RAM_IPA + GRANULE_SIZE + 16) == 0x1122_3344_5566_7788
        assert cpu.faults == 1  # one page faulted in; the neighbours were known already
    finally:
        el0.close()


class MovableStage2Cpu(GrowingStage2Cpu):
    """Stage 2 as in GrowingStage2Cpu (only the `present` pages), but the IPA pages in
    `moved` map to other granules."""

    def __init__(self) -> None:
        super().__init__()
        self.moved: dict[int, int] = {}

    def pa(self, ipa: int) -> int:
        page = ipa & ~(GRANULE_SIZE - 1)
        if page in self.moved:
            return self.memory.base + self.moved[page] + (ipa - page)
        return super().pa(ipa)



@pytest.mark.parametrize("build_", ["library", "python hooks"])
def test_code_whose_page_stage_2_moved_runs_from_the_new_granule_after_the_tlbi(
        monkeypatch: pytest.MonkeyPatch, build_: str) -> None:
    if build_ == "python hooks":
        monkeypatch.setattr(el0space, "_uclib", None)
    cpu = MovableStage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        cpu.present.add(RAM_IPA)  # the code page alone: its region is that page
        cpu.write(RAM_IPA, struct.pack("<2I", MOVZ_X0 | 1 << 5, SVC_0))
        el0.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
        for _ in range(2):  # run twice: translated, then from the translation
            assert el0.run(CODE_VA) == ("svc", CODE_VA + 8, 0) and el0.gpr(0) == 1
        granule = 32 * GRANULE_SIZE  # the host migrates the page (stage 2 now maps another granule)
        cpu.memory.accessor(World.NON_SECURE).write(cpu.memory.base + granule,
                                                               struct.pack("<2I", MOVZ_X0 | 2 << 5, SVC_0))
        cpu.moved[RAM_IPA] = granule
        el0.drop_ipa(RAM_IPA, GRANULE_SIZE)  # the TLBI that follows
        assert el0.run(CODE_VA) == ("svc", CODE_VA + 8, 0) and el0.gpr(0) == 2
    finally:
        el0.close()


LDR_X0_X2 = 0xF9400040  # ldr x0, [x2]


def test_mapping_a_va_again_to_another_ipa_takes_effect_at_once(cpu: Stage2Cpu) -> None:
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, LDR_X0_X2, SVC_0)
        cpu.write(RAM_IPA + GRANULE_SIZE, struct.pack("<Q", 111))
        cpu.write(RAM_IPA + 5 * GRANULE_SIZE, struct.pack("<Q", 555))
        el0.set_gpr(2, DATA_VA)
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 111  # the page is in the TLB now
        el0.map(DATA_VA, RAM_IPA + 5 * GRANULE_SIZE, GRANULE_SIZE, R | W)  # no unmap first
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 555
    finally:
        el0.close()


def test_a_region_on_other_memory_next_to_a_new_page_keeps_its_own_memory() -> None:
    """IPA page 2 lives on a granule far from page 1's: mapping page 1 next to it must
    not merge the two into one region over page 1's neighbours in host memory."""
    cpu = MovableStage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        cpu.present.update({RAM_IPA, RAM_IPA + 2 * GRANULE_SIZE})
        cpu.moved[RAM_IPA + 2 * GRANULE_SIZE] = 40 * GRANULE_SIZE
        cpu.write(RAM_IPA, struct.pack("<2I", LDR_X0_X2, SVC_0))
        cpu.write(RAM_IPA + 2 * GRANULE_SIZE, struct.pack("<Q", 0x40))  # lands in granule 40
        cpu.memory.accessor(World.NON_SECURE).write(cpu.memory.base + 2 * GRANULE_SIZE, struct.pack("<Q", 0x2))
        el0.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
        el0.map(DATA_VA, RAM_IPA + GRANULE_SIZE, 2 * GRANULE_SIZE, R | W)
        el0.set_gpr(2, DATA_VA + GRANULE_SIZE)  # IPA page 2 first
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 0x40
        cpu.present.add(RAM_IPA + GRANULE_SIZE)
        el0.set_gpr(2, DATA_VA)  # then page 1, right below it
        assert el0.run(CODE_VA)[0] == "svc"
        el0.set_gpr(2, DATA_VA + GRANULE_SIZE)
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 0x40
    finally:
        el0.close()


def test_registers_and_thread_contexts(cpu: Stage2Cpu) -> None:
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        el0.set_reg("sp", 0x7FFF_F000)
        el0.set_reg("tpidr_el0", 0x1234)
        el0.set_gpr(3, -1)
        assert (el0.reg("sp"), el0.reg("tpidr_el0"), el0.gpr(3)) == (0x7FFF_F000, 0x1234, 2**64 - 1)
        first = el0.save_context()
        el0.set_gpr(3, 7)
        el0.set_reg("tpidr_el0", 0x5678)
        second = el0.save_context()
        el0.restore_context(first)
        assert (el0.gpr(3), el0.reg("tpidr_el0")) == (2**64 - 1, 0x1234)
        el0.set_gpr(3, 9)
        assert el0.save_context(second) is second  # updated in place
        el0.restore_context(el0.save_context())
        el0.set_gpr(3, 0)
        el0.restore_context(second)
        assert el0.gpr(3) == 9
    finally:
        el0.close()


class TimerCpu(Stage2Cpu):
    """A CPU whose kernel timer fires once EL0 has run a while: due from its second look
    on; the host's interrupt (`host_interrupt`) then makes the IRQ input show it."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0
        self.stopped: list[int] = []

    def timer_due(self) -> bool:
        self.looks += 1
        return self.looks > 1 and not self.stopped

    def host_interrupt(self, pc: int) -> None:
        self.stopped.append(pc)

    def irq_signalled(self) -> bool:
        return bool(self.stopped)


def test_a_timer_found_fired_when_a_slice_ends_stops_el0_for_the_host_first() -> None:
    cpu = TimerCpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, B_SELF)
        assert el0.run(CODE_VA, count=100) == ("irq", CODE_VA, 0)
        assert cpu.stopped == [CODE_VA] and cpu.looks == 2
    finally:
        el0.close()


def test_a_slice_that_ends_with_nothing_due_is_a_count_stop(cpu: Stage2Cpu) -> None:
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, B_SELF)
        assert el0.run(CODE_VA, count=100) == ("count", CODE_VA, 0)
    finally:
        el0.close()


def test_mapping_a_range_again_flushes_the_pages_that_were_mapped_in_it(cpu: Stage2Cpu) -> None:
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, LDR_X0_X2, SVC_0)
        el0.unmap(DATA_VA, GRANULE_SIZE)  # of the range, only its second page is mapped
        cpu.write(RAM_IPA + 2 * GRANULE_SIZE, struct.pack("<Q", 222))
        cpu.write(RAM_IPA + 6 * GRANULE_SIZE, struct.pack("<Q", 666))
        el0.set_gpr(2, DATA_VA + GRANULE_SIZE)
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 222
        el0.map(DATA_VA, RAM_IPA + 5 * GRANULE_SIZE, 2 * GRANULE_SIZE, R | W)
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 666
    finally:
        el0.close()


class ReadOnlyStage2Cpu(Stage2Cpu):
    """Stage 2 maps every page read-only."""

    def probe(self, ipa: int) -> tuple[int, bool] | None:
        got = super().probe(ipa)
        return None if got is None else (got[0], False)

    peek = probe

    def host_pointer(self, ipa: int, write: bool) -> tuple[int, bool] | None:
        return self.probe(ipa)


def test_a_page_stage_2_maps_read_only_takes_no_store_from_el0() -> None:
    cpu = ReadOnlyStage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, STR_X1_X2, SVC_0)  # writable in the kernel's tables
        el0.set_gpr(2, DATA_VA + 8)
        assert el0.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)  # the page the fill refused
        assert cpu.read_u64(RAM_IPA + GRANULE_SIZE + 8) == 0
        el0.set_gpr(2, DATA_VA + 16)
        assert el0.run(CODE_VA + 4) == ("svc", CODE_VA + 8, 0)  # loads and fetches still go
        program(cpu, el0, LDR_X0_X2, SVC_0)
        el0.flush_code(CODE_VA, GRANULE_SIZE)
        cpu.memory.accessor(World.NON_SECURE).write(cpu.memory.base + GRANULE_SIZE + 16, struct.pack("<Q", 77))
        assert el0.run(CODE_VA)[0] == "svc" and el0.gpr(0) == 77
        program(cpu, el0, STR_X1_X2, SVC_0)
        el0.flush_code(CODE_VA, GRANULE_SIZE)
        assert el0.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)  # its TLB entry lets no store through
    finally:
        el0.close()


def test_a_closed_space_leaves_its_cpu(cpu: Stage2Cpu) -> None:
    first, second = El0Space(cpu, "a72"), El0Space(cpu, "a72")  # type: ignore[arg-type]
    assert cpu._spaces == [first, second]
    first.close()
    assert cpu._spaces == [second]  # a TLBI no longer goes to it
    second.close()
    assert cpu._spaces == []


def test_unmapping_a_range_takes_each_of_its_pages(cpu: Stage2Cpu) -> None:
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        program(cpu, el0, LDR_X0_X2, SVC_0)
        for n in range(3):
            el0.set_gpr(2, DATA_VA + n * GRANULE_SIZE)
            assert el0.run(CODE_VA)[0] == "svc"
        el0.unmap(DATA_VA + GRANULE_SIZE, 2 * GRANULE_SIZE)
        for n, stop in ((0, "svc"), (1, "fault"), (2, "fault")):
            el0.set_gpr(2, DATA_VA + n * GRANULE_SIZE)
            assert el0.run(CODE_VA)[0] == stop, n
    finally:
        el0.close()


def test_a_tlbi_of_adjacent_pages_takes_both_and_leaves_the_rest() -> None:
    cpu = GrowingStage2Cpu()
    el0 = El0Space(cpu, "a72")  # type: ignore[arg-type]
    try:
        cpu.present.update(RAM_IPA + n * GRANULE_SIZE for n in range(4))
        program(cpu, el0, LDR_X0_X2, SVC_0)
        el0.set_gpr(2, DATA_VA)
        assert el0.run(CODE_VA)[0] == "svc"  # IPA pages 0..3 mapped as one region
        cpu.present.difference_update({RAM_IPA + GRANULE_SIZE, RAM_IPA + 2 * GRANULE_SIZE})
        el0.drop_ipa(RAM_IPA + GRANULE_SIZE, 2 * GRANULE_SIZE)
        for n, stop in ((0, "fault"), (1, "fault"), (2, "svc")):
            el0.set_gpr(2, DATA_VA + n * GRANULE_SIZE)
            assert el0.run(CODE_VA)[0] == stop, n
    finally:
        el0.close()
