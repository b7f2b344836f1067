"""The EL0 address space: pages mapped by pointer after the stage-2 and GPT checks, merged
into few regions, data pages not executable, and a PAS change taking a page away."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.el0space import PHYS_BLOCK, El0Space
from unirealm.machine.memory import GranuleProtectionFault, PhysicalMemory

RAM_IPA = 0x8000_0000  # IPA of the first granule of physical memory in this test
R, W, X = 1, 2, 4
CODE_VA, DATA_VA = 0x40_0000, 0x50_0000
STR_X1_X2 = 0xF9000041  # str x1, [x2]
SVC_0 = 0xD4000001


class Stage2Cpu:
    """What El0Space needs of its CPU: stage 2 maps IPA RAM_IPA + n to granule n; the
    non-secure world's GPT check decides whether a page may be mapped."""

    def __init__(self) -> None:
        self.memory = PhysicalMemory(size=4 << 20)
        self._spaces: list[El0Space] = []
        self.faults = 0

    def pa(self, ipa: int) -> int:
        return self.memory.base + ipa - RAM_IPA

    def probe(self, ipa: int) -> tuple[int, bool] | None:
        try:
            return self.memory.host_pointer(World.NON_SECURE, self.pa(ipa), GRANULE_SIZE), True
        except GranuleProtectionFault:
            return None

    peek = probe  # this stage 2 is known without asking anyone

    def host_pointer(self, ipa: int, write: bool) -> tuple[int, bool] | None:
        self.faults += 1
        return self.probe(ipa)

    # no interrupt inputs
    def timer_due(self) -> bool:
        return False

    def irq_signalled(self) -> bool:
        return False

    def write(self, ipa: int, data: bytes) -> None:
        self.memory.accessor(World.NON_SECURE).write(self.pa(ipa), data)

    def read_u64(self, ipa: int) -> int:
        return self.memory.accessor(World.NON_SECURE).read_u64(self.pa(ipa))


@pytest.fixture
def cpu() -> Stage2Cpu:
    return Stage2Cpu()


def program(cpu: Stage2Cpu, space: El0Space, *insns: int, data_prot: int = R | W) -> None:
    """Code at CODE_VA (IPA page 0), data at DATA_VA (IPA pages 1..3, contiguous)."""
    cpu.write(RAM_IPA, struct.pack(f"<{len(insns)}I", *insns))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    space.map(DATA_VA, RAM_IPA + GRANULE_SIZE, 3 * GRANULE_SIZE, data_prot)
    space.set_gpr(1, 0x1122_3344_5566_7788)


def test_store_lands_in_guest_ram_and_contiguous_pages_share_one_region(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, STR_X1_X2, STR_X1_X2, SVC_0)
    space.set_gpr(2, DATA_VA + 2 * GRANULE_SIZE + 8)
    reason, pc, _ = space.run(CODE_VA)
    assert (reason, pc) == ("svc", CODE_VA + 12)
    assert cpu.read_u64(RAM_IPA + 3 * GRANULE_SIZE + 8) == 0x1122_3344_5566_7788
    assert len(list(space.uc.mem_regions())) == 1  # code and data granules: one region
    space.close()
    assert not list(space.uc.mem_regions())


def test_a_page_without_exec_permission_does_not_execute(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, SVC_0)
    cpu.write(RAM_IPA + GRANULE_SIZE, struct.pack("<I", SVC_0))
    assert space.run(DATA_VA) == ("fault", DATA_VA, DATA_VA)
    space.protect(DATA_VA, GRANULE_SIZE, R | X)
    assert space.run(DATA_VA)[:2] == ("svc", DATA_VA + 4)


def test_a_store_to_a_read_only_page_faults_at_the_store(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, STR_X1_X2, SVC_0, data_prot=R)
    space.set_gpr(2, DATA_VA + 16)
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)
    assert cpu.read_u64(RAM_IPA + GRANULE_SIZE + 16) == 0


def test_pas_change_unmaps_and_the_gpt_check_refuses_the_page(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, STR_X1_X2, SVC_0)
    space.set_gpr(2, DATA_VA)
    assert space.run(CODE_VA)[0] == "svc"
    data_pa = cpu.pa(RAM_IPA + GRANULE_SIZE)
    cpu.memory.set_pas(World.ROOT, data_pa, Pas.REALM)  # the granule leaves the non-secure PAS
    space.drop_ipa(RAM_IPA + GRANULE_SIZE, GRANULE_SIZE)  # the TLBI that follows
    space.set_gpr(1, 0xDEAD)
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)
    assert cpu.memory.accessor(World.REALM).read_u64(data_pa) == 0x1122_3344_5566_7788


def test_unmapped_page_is_demand_paged_inside_the_fill(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, STR_X1_X2, SVC_0)
    space.unmap(DATA_VA, GRANULE_SIZE)
    backed: list[int] = []

    def demand(page: int) -> bool:
        backed.append(page)
        space.map(page, RAM_IPA + 8 * GRANULE_SIZE, GRANULE_SIZE, R | W)
        return True

    space.on_fault = demand
    space.set_gpr(2, DATA_VA + 24)
    assert space.run(CODE_VA)[0] == "svc"
    assert backed == [DATA_VA]
    assert cpu.read_u64(RAM_IPA + 8 * GRANULE_SIZE + 24) == 0x1122_3344_5566_7788


class GrowingStage2Cpu(Stage2Cpu):
    """A stage 2 that maps a page only once it is `present` (as a realm's host populates
    granules one fault at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.present: set[int] = set()

    def probe(self, ipa: int) -> tuple[int, bool] | None:
        return super().probe(ipa) if ipa & ~(GRANULE_SIZE - 1) in self.present else None

    peek = probe


def regions(space: El0Space) -> list[tuple[int, int]]:
    """Unicorn's regions as [start, end) IPA pairs (its table and ours must agree)."""
    found = sorted((begin, end + 1) for begin, end, _ in space.uc.mem_regions())
    assert found == sorted((start, r[0]) for start, r in space._regions.items())
    return found


def touch_each(space: El0Space, cpu: GrowingStage2Cpu, pages: range) -> None:
    """Store to each data page in turn, each page appearing at stage 2 just before its touch."""
    for n in pages:
        cpu.present.add(RAM_IPA + n * GRANULE_SIZE)
        space.set_gpr(2, DATA_VA + (n - 1) * GRANULE_SIZE)
        assert space.run(CODE_VA)[0] == "svc"


def growing_space(data_pages: int, first: int = 1) -> tuple[GrowingStage2Cpu, El0Space]:
    """Code at IPA page 0 that has run once (its store found no data page yet), and
    `data_pages` data pages from IPA page `first`, none present at stage 2."""
    cpu = GrowingStage2Cpu()
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.present.add(RAM_IPA)
    program(cpu, space, STR_X1_X2, SVC_0)
    space.map(DATA_VA, RAM_IPA + first * GRANULE_SIZE, data_pages * GRANULE_SIZE, R | W)
    space.set_gpr(2, DATA_VA)
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)
    return cpu, space


def test_pages_that_appear_one_at_a_time_merge_into_one_region_but_code_keeps_its_own() -> None:
    cpu, space = growing_space(8)
    touch_each(space, cpu, range(1, 9))
    # the code page's region is never remapped (its translated code would go): two regions
    assert regions(space) == [(RAM_IPA, RAM_IPA + GRANULE_SIZE), (RAM_IPA + GRANULE_SIZE, RAM_IPA + 9 * GRANULE_SIZE)]
    for n in range(1, 9):
        assert cpu.read_u64(RAM_IPA + n * GRANULE_SIZE) == 0x1122_3344_5566_7788
    space.close()
    assert not list(space.uc.mem_regions())


def test_a_dropped_page_in_a_merged_region_faults_again_and_its_neighbours_stay() -> None:
    cpu, space = growing_space(6)
    touch_each(space, cpu, range(1, 7))
    middle = RAM_IPA + 3 * GRANULE_SIZE
    cpu.present.discard(middle)  # stage 2 takes the page away, then the TLBI
    space.drop_ipa(middle, GRANULE_SIZE)
    assert regions(space) == [(RAM_IPA, RAM_IPA + GRANULE_SIZE), (RAM_IPA + GRANULE_SIZE, middle),
                              (middle + GRANULE_SIZE, RAM_IPA + 7 * GRANULE_SIZE)]
    space.set_gpr(2, DATA_VA + 2 * GRANULE_SIZE)  # the dropped page: a fault, nothing mapped
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA + 2 * GRANULE_SIZE)
    for n in (2, 4):  # its neighbours on both sides are still reachable
        space.set_gpr(2, DATA_VA + (n - 1) * GRANULE_SIZE + 8)
        assert space.run(CODE_VA)[0] == "svc"
    cpu.present.add(middle)  # mapped again: the three pieces merge back into one region
    space.set_gpr(2, DATA_VA + 2 * GRANULE_SIZE)
    assert space.run(CODE_VA)[0] == "svc"
    assert regions(space) == [(RAM_IPA, RAM_IPA + GRANULE_SIZE), (RAM_IPA + GRANULE_SIZE, RAM_IPA + 7 * GRANULE_SIZE)]


def test_a_range_drop_takes_every_page_and_regions_stay_inside_their_block() -> None:
    block = PHYS_BLOCK * GRANULE_SIZE
    first = PHYS_BLOCK - 2  # data pages on both sides of a PHYS_BLOCK boundary
    cpu, space = growing_space(4, first)
    for i in range(4):
        cpu.present.add(RAM_IPA + (first + i) * GRANULE_SIZE)
        space.set_gpr(2, DATA_VA + i * GRANULE_SIZE)
        assert space.run(CODE_VA)[0] == "svc"
    assert regions(space)[1:] == [(RAM_IPA + first * GRANULE_SIZE, RAM_IPA + block),
                                  (RAM_IPA + block, RAM_IPA + block + 2 * GRANULE_SIZE)]
    cpu.present.clear()
    space.drop_ipa(RAM_IPA, 2 * block)
    assert regions(space) == []
    space.set_gpr(2, DATA_VA)
    assert space.run(CODE_VA)[0] == "fault"


# The chase: x9 walks a chain of pages whose first words point to the next page; x10 counts.
LDR_X9_X9 = 0xF9400129  # ldr x9, [x9]
SUBS_X10 = 0xF100054A  # subs x10, x10, #1
B_NE_BACK_8 = 0x54FFFFC1  # b.ne .-8
CHAIN_VA, CHAIN_PAGES = 0x60_0000, 12


def chase_space(cpu: Stage2Cpu) -> El0Space:
    """The chase at CODE_VA over CHAIN_PAGES pages at CHAIN_VA, none of them mapped yet:
    each first touch is demand-paged inside the load's TLB fill."""
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<4I", LDR_X9_X9, SUBS_X10, B_NE_BACK_8, SVC_0))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    for n in range(CHAIN_PAGES):  # IPA page 16 + n holds the address of page n + 1
        cpu.write(RAM_IPA + (16 + n) * GRANULE_SIZE, struct.pack("<Q", CHAIN_VA + (n + 1) * GRANULE_SIZE))
    space.set_gpr(9, CHAIN_VA)
    space.set_gpr(10, CHAIN_PAGES)
    return space


def test_a_stop_requested_during_a_loads_first_touch_lands_after_the_load(cpu: Stage2Cpu) -> None:
    """As the host's interrupt stops EL0 (emu_stop) while a load demand-pages its page:
    the run stops between instructions, the load made once, so resuming walks the chain
    whole. A stop that landed inside the load would rerun it from the value it loaded
    and skip a page at every stop."""
    space = chase_space(cpu)

    def demand(va: int) -> bool:
        n = (va - CHAIN_VA) // GRANULE_SIZE
        space.map(va, RAM_IPA + (16 + n) * GRANULE_SIZE, GRANULE_SIZE, R)
        space.uc.emu_stop()  # what HOST_IRQ.kick does from the VMM's watchdog
        return True

    space.on_fault = demand
    stops, pc = 0, CODE_VA
    while (stopped := space.run(pc))[0] == "count":
        stops += 1
        pc = stopped[1]
        assert pc in (CODE_VA, CODE_VA + 4, CODE_VA + 8, CODE_VA + 12)  # an instruction of the loop
        assert stops <= CHAIN_PAGES
    assert stopped[0] == "svc"
    assert stops == CHAIN_PAGES  # every first touch stopped the run once
    assert (space.gpr(9), space.gpr(10)) == (CHAIN_VA + CHAIN_PAGES * GRANULE_SIZE, 0)
    space.close()


def test_stops_from_another_thread_while_el0_loads_never_run_a_load_twice(cpu: Stage2Cpu) -> None:
    """A circular chain walked many times while another thread keeps stopping the run (the
    host's interrupt kicks): every run resumes where it stopped and the count comes out
    exact."""
    space = chase_space(cpu)
    last = RAM_IPA + (16 + CHAIN_PAGES - 1) * GRANULE_SIZE
    cpu.write(last, struct.pack("<Q", CHAIN_VA))  # the last page points back to the first
    for n in range(CHAIN_PAGES):
        space.map(CHAIN_VA + n * GRANULE_SIZE, RAM_IPA + (16 + n) * GRANULE_SIZE, GRANULE_SIZE, R)
    rounds = 200_000
    space.set_gpr(10, rounds * CHAIN_PAGES + 3)
    done, kicking = threading.Event(), threading.Event()

    def kicker() -> None:
        while not done.is_set():
            kicking.set()
            space.uc.emu_stop()
            time.sleep(50e-6)

    thread = threading.Thread(target=kicker)
    thread.start()
    kicking.wait()
    stops, pc = 0, CODE_VA
    try:
        while (stopped := space.run(pc))[0] == "count":
            stops += 1
            pc = stopped[1]
    finally:
        done.set()
        thread.join()
    assert stopped[0] == "svc"
    assert space.gpr(9) == CHAIN_VA + 3 * GRANULE_SIZE  # 3 pages past whole rounds
    assert stops > 0
    space.close()


MOVZ_X0 = 0xD2800000  # movz x0, #imm16 (imm16 << 5 added)
STR_W1_X2 = 0xB9000041  # str w1, [x2]
B_BACK_12 = 0x17FFFFFD  # b .-12
B_SELF = 0x14000000  # b .


def test_code_el0_writes_over_code_it_has_run_runs_as_written(cpu: Stage2Cpu) -> None:
    """A JIT's page (read, write and execute): the store over an instruction already
    translated, then a branch back to it, runs the new instruction."""
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<4I", MOVZ_X0 | 1 << 5, SVC_0, STR_W1_X2, B_BACK_12))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | W | X)
    space.set_gpr(1, MOVZ_X0 | 2 << 5)
    space.set_gpr(2, CODE_VA)
    seen: list[int] = []

    def on_svc(_nr: int, a0: int, *_: int) -> bool:
        seen.append(a0)
        return len(seen) < 2

    space.on_svc = on_svc
    assert space.run(CODE_VA) == ("svc", CODE_VA + 8, 0)
    assert seen == [1, 2]
    space.close()


def test_code_the_kernel_writes_runs_after_flush_code(cpu: Stage2Cpu) -> None:
    """Code written behind the CPU (the kernel's memmove into the page, as read() does) runs
    once the kernel drops the page's translated code; until then the old code runs, as on a
    PE without the instruction-cache maintenance."""
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<2I", MOVZ_X0 | 1 << 5, SVC_0))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    assert space.run(CODE_VA)[0] == "svc" and space.gpr(0) == 1
    cpu.write(RAM_IPA, struct.pack("<I", MOVZ_X0 | 3 << 5))
    space.flush_code(CODE_VA, GRANULE_SIZE)
    assert space.run(CODE_VA)[0] == "svc" and space.gpr(0) == 3
    space.close()


def test_a_page_unmapped_after_use_faults_at_its_next_touch(cpu: Stage2Cpu) -> None:
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    program(cpu, space, STR_X1_X2, SVC_0)
    space.set_gpr(2, DATA_VA + 16)
    assert space.run(CODE_VA)[0] == "svc"  # the page is in the TLB now
    space.unmap(DATA_VA, GRANULE_SIZE)
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA)  # the page the fill missed
    space.protect(DATA_VA + GRANULE_SIZE, GRANULE_SIZE, R)  # read-only now: the store faults too
    space.set_gpr(2, DATA_VA + GRANULE_SIZE)
    assert space.run(CODE_VA) == ("fault", CODE_VA, DATA_VA + GRANULE_SIZE)
    space.close()


def test_an_instruction_count_slice_ends_a_loop_that_never_leaves(cpu: Stage2Cpu) -> None:
    """A time slice (instructions counted) still stops EL0 code that makes no syscall."""
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<I", B_SELF))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    for _ in range(3):
        assert space.run(CODE_VA, count=10_000) == ("count", CODE_VA, 0)
    space.close()


SUBS_X10_ = 0xF100054A  # subs x10, x10, #1
B_NE_BACK_4 = 0x54FFFFE1  # b.ne .-4


def test_a_slice_ends_code_translated_while_el0_ran_without_slices(cpu: Stage2Cpu) -> None:
    """A lone thread runs uncounted; when a second becomes runnable its slices are counted.
    The loop's code, translated during the uncounted run, must still end the slice (Unicorn
    counts only in code translated while its counting hook exists)."""
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<3I", SUBS_X10_, B_NE_BACK_4, SVC_0))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    space.set_gpr(10, 1000)
    assert space.run(CODE_VA) == ("svc", CODE_VA + 12, 0)  # uncounted: the loop is translated
    space.set_gpr(10, 50_000_000)  # far more iterations than a slice
    assert space.run(CODE_VA, count=10_000)[0] == "count"
    assert 50_000_000 - space.gpr(10) <= 10_000  # about half a slice of two-instruction iterations
    space.set_gpr(10, 1000)
    assert space.run(CODE_VA) == ("svc", CODE_VA + 12, 0)  # uncounted again: runs to the SVC
    assert space.run(CODE_VA + 8, count=10_000) == ("svc", CODE_VA + 12, 0)  # and counted once more
    space.close()
