"""The EL0 address space: pages mapped by pointer after the stage-2 and GPT checks, merged
into few regions, data pages not executable, and a PAS change taking a page away."""

from __future__ import annotations

import struct

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.memory import GranuleProtectionFault, PhysicalMemory
from unirealm.machine.pykernel import El0Space

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
