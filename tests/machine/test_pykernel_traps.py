"""The Python kernel's events as Traps (machine/pykernel.py PyKernelEngine), with the PC
rules of machine/vcpu.py: an SMC or HVC traps with the PC after it and returns what the
hypervisor left in x0..x17 (a rewound call is issued again), a stage-2 fault on RAM traps at
the access and retries it once the hypervisor returns, an emulated MMIO load completes
into the register its syndrome names (ISV = 1, SRT), an access the hypervisor mapped
instead of emulating is retried, and what the hypervisor injects reaches the kernel as a
GuestFault. Stage 2 is the test's; each kernel is a function of the test run in the
kernel's greenlet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.pykernel import GuestCpu, GuestFault
from unirealm.machine.vcpu import DataAbortTrap, HvcTrap, Mapping, SmcTrap, WfxTrap

from .pykernel_support import DEVICE_IPA, RAM_IPA, Machine, register

MASK64 = (1 << 64) - 1
DATA_IPA = RAM_IPA + 8 * GRANULE_SIZE  # past the image (two granules)
PSCI_VERSION = 0x8400_0000
REPORT = 0xC600_0000  # an HVC the kernels here end with: their results are in `seen`


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine()
    yield m
    m.close()


def fault(exc: GuestFault) -> tuple[str, int]:
    return exc.kind, exc.address


def then_report(seen: list[Any], access: Callable[[GuestCpu], object]) -> Callable[[GuestCpu], None]:
    """A kernel: `access`, its result kept in `seen`, then an HVC."""
    def kernel(cpu: GuestCpu) -> None:
        seen.append(access(cpu))
        cpu.hvc(REPORT)
    return kernel


# --- SMC / HVC -------------------------------------------------------------------------


def test_an_smc_traps_with_the_pc_after_it_and_returns_what_the_hypervisor_left(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.smc(PSCI_VERSION, 1, -1, 1 << 64 | 5))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, SmcTrap)
    assert trap.pc == RAM_IPA + 4  # after the SMC, as an SMC's trap leaves it
    # x0..x17: the arguments as 64-bit registers, the rest zero
    assert trap.regs == [PSCI_VERSION, 1, MASK64, 5] + [0] * 14
    assert machine.engine.get_gprs(4) == [PSCI_VERSION, 1, MASK64, 5]
    machine.engine.set_gpr(0, 0x1_0002)  # PSCI 1.2
    machine.engine.set_gpr(17, 0x77)
    trap = machine.run()
    assert isinstance(trap, HvcTrap) and trap.pc == RAM_IPA + 4 and trap.regs[0] == REPORT
    assert seen == [[0x1_0002, 1, MASK64, 5] + [0] * 13 + [0x77]]


def test_an_smc_takes_x0_to_x17_only(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, lambda cpu: cpu.smc(*range(1, 21)))
    trap = machine.run()
    assert isinstance(trap, SmcTrap) and trap.regs == list(range(1, 19))


def test_a_rewound_smc_is_issued_again_with_its_own_arguments(machine: Machine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.smc(0xC400_0190, 0xAB))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    first = machine.run()
    assert isinstance(first, SmcTrap)
    machine.engine.set_gpr(0, 0xDEAD)  # what the hypervisor had begun to return
    machine.engine.pc = first.pc - 4  # it rewinds the call (the RMM does, for a host call to finish)
    again = machine.run()
    assert isinstance(again, SmcTrap) and again.pc == RAM_IPA + 4 and again.regs == first.regs
    assert seen == []
    machine.engine.set_gpr(0, 3)
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [[3, 0xAB] + [0] * 16]


def test_an_hvc_traps_as_an_hvc(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []
    register(monkeypatch, lambda cpu: seen.append(cpu.hvc(1, 2, 3)))
    trap = machine.run()
    assert isinstance(trap, HvcTrap) and not isinstance(trap, SmcTrap)
    assert (trap.pc, trap.regs, trap.imm) == (RAM_IPA + 4, [1, 2, 3] + [0] * 15, 0)
    machine.engine.set_gpr(1, 9)
    assert isinstance(machine.run(), WfxTrap)  # the kernel returned
    assert seen == [[1, 9, 3] + [0] * 15]


def test_wfi_traps_as_wfi(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []

    def kernel(cpu: GuestCpu) -> None:
        cpu.wfi()
        steps.append("woke")
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, WfxTrap) and not trap.is_wfe and steps == []
    assert isinstance(machine.run(), HvcTrap) and steps == ["woke"]


# --- stage-2 faults on RAM ------------------------------------------------------------


def test_a_load_from_an_unmapped_ram_page_traps_at_the_access_and_retries(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    register(monkeypatch, then_report(seen, lambda cpu: cpu.read_u64(DATA_IPA + 0x18)))
    mapping = machine.stage2.pop(DATA_IPA)
    machine.ram.write_u64(mapping.pa + 0x18, 0x0123_4567_89AB_CDEF)
    for _ in range(2):  # the hypervisor returns without mapping: the same fault again
        trap = machine.run()
        assert isinstance(trap, DataAbortTrap)
        assert (trap.pc, trap.ipa, trap.is_write, trap.gpf, trap.value) == (RAM_IPA, DATA_IPA + 0x18, False, False, 0)
        # the kernel's loads and stores are LDR/STR Xt: 8 bytes, a 64-bit register
        assert trap.syndrome is not None and not trap.syndrome.is_write
        assert (trap.size, trap.syndrome.size, trap.syndrome.sixty_four) == (8, 8, True)
        assert machine.engine.pc == RAM_IPA  # at the faulting access
        assert seen == []
    machine.stage2[DATA_IPA] = mapping  # the hypervisor maps the page: the load completes
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [0x0123_4567_89AB_CDEF]


def test_a_store_to_a_read_only_page_traps_as_a_write_and_lands_once_writable(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.read(DATA_IPA, 4))  # readable: no trap
        cpu.write_u64(DATA_IPA + 8, -2)
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    pa = machine.stage2[DATA_IPA].pa
    machine.ram.write(pa, b"ro!!")
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE, writable=False)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.is_write and trap.ipa == DATA_IPA + 8 and trap.pc == RAM_IPA
    assert trap.syndrome is not None and trap.syndrome.is_write
    assert seen == [b"ro!!"] and machine.ram.read_u64(pa + 8) == 0
    machine.engine.skip_instruction()  # a hypervisor that moves the PC on: the store is still retried
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.pc == RAM_IPA and trap.is_write
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE)
    assert isinstance(machine.run(), HvcTrap)
    assert machine.ram.read_u64(pa + 8) == MASK64 - 1


def test_a_write_only_page_takes_stores_but_faults_every_load(machine: Machine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def kernel(cpu: GuestCpu) -> None:
        cpu.write(DATA_IPA, b"wo")
        cpu.write(DATA_IPA + 2, b"!!")
        seen.append(cpu.read(DATA_IPA, 4))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    pa = machine.stage2[DATA_IPA].pa
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE, readable=False)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and not trap.is_write and trap.ipa == DATA_IPA
    assert machine.ram.read(pa, 4) == b"wo!!"
    trap = machine.run()  # still not readable: the store's translation did not make it so
    assert isinstance(trap, DataAbortTrap) and not trap.is_write
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE)
    assert isinstance(machine.run(), HvcTrap) and seen == [b"wo!!"]


def test_an_access_across_pages_faults_on_the_page_that_is_not_mapped(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    register(monkeypatch, then_report(seen, lambda cpu: cpu.read(DATA_IPA + GRANULE_SIZE - 2, 4)))
    second = machine.stage2.pop(DATA_IPA + GRANULE_SIZE)
    machine.ram.write(machine.pa(DATA_IPA + GRANULE_SIZE - 2), b"ab")
    machine.ram.write(second.pa, b"cd")
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == DATA_IPA + GRANULE_SIZE
    machine.stage2[DATA_IPA + GRANULE_SIZE] = second
    assert isinstance(machine.run(), HvcTrap) and seen == [b"abcd"]


def test_a_granule_outside_the_worlds_pas_is_a_granule_protection_fault(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []

    def kernel(cpu: GuestCpu) -> None:
        for access in (lambda: cpu.read(DATA_IPA + 0x10, 8), lambda: cpu.write(DATA_IPA + 0x20, b"x")):
            try:
                access()
            except GuestFault as exc:
                seen.append(fault(exc))
        seen.append(("probe", int(cpu.probe(DATA_IPA) is None)))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    machine.memory.set_pas(World.ROOT, machine.pa(DATA_IPA), Pas.REALM)
    assert isinstance(machine.run(), HvcTrap)  # no stage-2 fault: stage 2 maps it
    assert seen == [("granule protection fault", DATA_IPA + 0x10), ("granule protection fault", DATA_IPA + 0x20),
                    ("probe", 1)]


def test_a_pas_change_takes_a_page_the_kernel_has_used_away(machine: Machine,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.read_u64(DATA_IPA))
        cpu.hvc(REPORT)
        try:
            seen.append(cpu.read_u64(DATA_IPA))
        except GuestFault as exc:
            seen.append(fault(exc))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    machine.ram.write_u64(machine.pa(DATA_IPA), 41)
    assert isinstance(machine.run(), HvcTrap) and seen == [41]
    machine.memory.set_pas(World.ROOT, machine.pa(DATA_IPA), Pas.REALM)  # e.g. delegated to the realm world
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [41, ("granule protection fault", DATA_IPA)]


def test_invalidate_is_the_tlbi_a_stage_2_change_needs(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def kernel(cpu: GuestCpu) -> None:
        for _ in range(4):
            seen.append(cpu.read_u64(DATA_IPA) + cpu.read_u64(DATA_IPA + GRANULE_SIZE))
            cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    first, second = machine.stage2[DATA_IPA], machine.stage2[DATA_IPA + GRANULE_SIZE]
    other = machine.pa(RAM_IPA + 12 * GRANULE_SIZE)
    machine.ram.write_u64(first.pa, 1)
    machine.ram.write_u64(second.pa, 10)
    machine.ram.write_u64(other, 100)
    machine.run()
    machine.stage2[DATA_IPA] = machine.stage2[DATA_IPA + GRANULE_SIZE] = Mapping(other, World.NON_SECURE)
    machine.engine.invalidate(DATA_IPA + GRANULE_SIZE, GRANULE_SIZE)  # the second page only
    machine.run()
    machine.engine.invalidate(DATA_IPA, 2 * GRANULE_SIZE)
    machine.run()
    machine.stage2.pop(DATA_IPA)
    machine.engine.invalidate(0, 1 << 48)  # all of the IPA space
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == DATA_IPA
    assert seen == [11, 101, 200]


def test_an_invalidation_drops_its_own_range_only(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TLBI of [ipa, ipa + size): the page at ipa + size keeps its translation, whether
    the range is walked (small) or the cached pages are scanned (a range larger than them)."""

    def kernel(cpu: GuestCpu) -> None:
        while True:
            cpu.read_u64(DATA_IPA)
            cpu.read_u64(DATA_IPA + GRANULE_SIZE)
            cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    machine.run()
    for start in (DATA_IPA, RAM_IPA - 64 * GRANULE_SIZE):
        machine.lookups.clear()
        machine.engine.invalidate(start, DATA_IPA + GRANULE_SIZE - start)  # ends where the second page begins
        machine.run()
        assert [ipa for ipa, _ in machine.lookups] == [DATA_IPA]


def test_a_pas_change_drops_the_pages_that_map_that_granule_now(machine: Machine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A page whose stage-2 mapping moved (invalidated, then translated again) no longer
    depends on its old granule: a PAS change there leaves its translation alone."""

    def kernel(cpu: GuestCpu) -> None:
        while True:
            cpu.read_u64(DATA_IPA)
            cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    old = machine.stage2[DATA_IPA].pa
    machine.run()
    machine.stage2[DATA_IPA] = Mapping(machine.pa(RAM_IPA + 12 * GRANULE_SIZE), World.NON_SECURE)
    machine.engine.invalidate(DATA_IPA, GRANULE_SIZE)
    machine.run()  # translated again, to the new granule
    machine.lookups.clear()
    machine.memory.set_pas(World.ROOT, old, Pas.REALM)
    machine.run()
    assert machine.lookups == []
    machine.memory.set_pas(World.ROOT, machine.stage2[DATA_IPA].pa, Pas.REALM)  # its granule now: dropped
    machine.memory.set_pas(World.ROOT, machine.stage2[DATA_IPA].pa, Pas.NON_SECURE)
    machine.run()
    assert machine.lookups == [(DATA_IPA, False)]


# --- MMIO -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_an_emulated_mmio_load_completes_into_the_register_its_syndrome_names(
        machine: Machine, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    seen: list[int] = []
    register(monkeypatch, then_report(seen, lambda cpu: cpu.mmio_read(DEVICE_IPA + 0x10, size)))
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap)
    assert (trap.pc, trap.ipa, trap.is_write, trap.size) == (RAM_IPA, DEVICE_IPA + 0x10, False, size)
    # an LDR Wt/Xt: valid syndrome, of the access's size
    assert trap.syndrome is not None
    assert (trap.syndrome.is_write, trap.syndrome.size, trap.syndrome.sixty_four) == (False, size, size == 8)
    machine.engine.complete_mmio_read(trap.syndrome, 0xF1E2_D3C4_B5A6_9788)  # as the host's MMIO exit does
    trap = machine.run()
    assert isinstance(trap, HvcTrap) and trap.pc == RAM_IPA + 4  # the PC went back to the kernel's
    assert seen == [0xF1E2_D3C4_B5A6_9788 & ((1 << (8 * size)) - 1)]


def test_an_emulated_mmio_store_traps_with_its_value_at_its_size(machine: Machine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []

    def kernel(cpu: GuestCpu) -> None:
        cpu.mmio_write(DEVICE_IPA + 4, 4, 0x1_2345_6789)  # STR Wt: the register's low 32 bits
        cpu.mmio_write(DEVICE_IPA + 8, 2, -1)
        done.append("stored")
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.is_write and trap.syndrome is not None
    assert (trap.pc, trap.ipa, trap.size, trap.value) == (RAM_IPA, DEVICE_IPA + 4, 4, 0x2345_6789)
    assert (trap.syndrome.is_write, trap.syndrome.size, trap.syndrome.sixty_four) == (True, 4, False)
    machine.engine.skip_instruction()  # emulated: the host moves the PC past the store
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and (trap.ipa, trap.size, trap.value) == (DEVICE_IPA + 8, 2, 0xFFFF)
    machine.engine.skip_instruction()
    trap = machine.run()
    assert isinstance(trap, HvcTrap) and trap.pc == RAM_IPA + 4 and done == ["stored"]


def test_an_mmio_access_the_hypervisor_maps_instead_is_retried_on_memory(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def kernel(cpu: GuestCpu) -> None:
        seen.append(cpu.mmio_read(DEVICE_IPA + 0x20, 4))
        cpu.mmio_write(DEVICE_IPA + 0x30, 2, 0xABCD_EF01)
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    backing = machine.pa(RAM_IPA + 12 * GRANULE_SIZE)
    machine.ram.write(backing + 0x20, (0x5566_7788).to_bytes(4, "little"))
    machine.ram.write(backing + 0x30, b"\x11\x22\x33\x44")
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and not trap.is_write
    machine.stage2[DEVICE_IPA] = Mapping(backing, World.NON_SECURE)  # RAM after all; the PC stays at the load
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [0x5566_7788]
    assert machine.ram.read(backing + 0x30, 4) == b"\x01\xef\x33\x44"  # the store's two bytes only
    assert machine.fetches == []  # data accesses, never instruction fetches


def test_an_mmio_store_the_hypervisor_maps_instead_is_retried_as_a_store(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, then_report([], lambda cpu: cpu.mmio_write(DEVICE_IPA + 0x40, 4, 0xCAFE_F00D)))
    backing = machine.pa(RAM_IPA + 12 * GRANULE_SIZE)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap) and trap.is_write
    machine.stage2[DEVICE_IPA] = Mapping(backing, World.NON_SECURE)
    assert isinstance(machine.run(), HvcTrap)
    assert machine.ram.read(backing + 0x40, 4) == (0xCAFE_F00D).to_bytes(4, "little")


def test_a_page_translated_once_is_not_walked_again(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a TLBI: a read-only page for its loads, a writable page for loads and stores."""

    def kernel(cpu: GuestCpu) -> None:
        for _ in range(3):
            cpu.read(DATA_IPA, 8)
            cpu.write(DATA_IPA + GRANULE_SIZE, b"x")
            cpu.read(DATA_IPA + GRANULE_SIZE, 8)
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    machine.stage2[DATA_IPA] = Mapping(machine.pa(DATA_IPA), World.NON_SECURE, writable=False)
    machine.run()
    pages = [ipa for ipa, _ in machine.lookups if ipa >= DATA_IPA]
    assert pages == [DATA_IPA, DATA_IPA + GRANULE_SIZE]


def test_an_mmio_store_to_a_read_only_page_is_emulated(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel(cpu: GuestCpu) -> None:
        cpu.mmio_read(DATA_IPA, 8)
        cpu.mmio_write(DATA_IPA, 8, 5)

    register(monkeypatch, kernel)
    pa = machine.stage2[DATA_IPA].pa
    machine.stage2[DATA_IPA] = Mapping(pa, World.NON_SECURE, writable=False)
    trap = machine.run()  # the load reads the memory; the store traps
    assert isinstance(trap, DataAbortTrap) and trap.is_write and (trap.size, trap.value) == (8, 5)
    assert trap.syndrome is not None and trap.syndrome.sixty_four
    assert machine.ram.read_u64(pa) == 0


# --- what the hypervisor injects ---------------------------------------------------------


@pytest.mark.parametrize("inject", ["sea", "undef", "exception"])
def test_an_injected_exception_reaches_the_kernel_at_its_access(machine: Machine, monkeypatch: pytest.MonkeyPatch,
                                                                 inject: str) -> None:
    seen: list[tuple[str, int]] = []

    def kernel(cpu: GuestCpu) -> None:
        try:
            cpu.mmio_read(DEVICE_IPA, 4)
        except GuestFault as exc:
            seen.append(fault(exc))
        cpu.hvc(REPORT)

    register(monkeypatch, kernel)
    trap = machine.run()
    assert isinstance(trap, DataAbortTrap)
    if inject == "sea":
        machine.engine.inject_sea(DEVICE_IPA + 0x40)
        want = ("synchronous external abort", DEVICE_IPA + 0x40)
    elif inject == "undef":
        machine.engine.inject_undef()
        want = ("undefined instruction", RAM_IPA)
    else:
        machine.engine.take_exception(0x9600_0010, DEVICE_IPA + 0x44)
        want = ("exception (ESR 0x96000010)", DEVICE_IPA + 0x44)
    assert isinstance(machine.run(), HvcTrap)
    assert seen == [want]
    assert isinstance(machine.run(), WfxTrap)  # injected once: nothing left for the next trap


# --- the kernel's end ---------------------------------------------------------------------


def test_a_kernel_that_returns_stops_its_cpu(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, lambda cpu: None)
    for _ in range(3):  # a WFI, never a WFE: its owner waits for an interrupt rather than spin
        trap = machine.run()
        assert trap == WfxTrap(RAM_IPA, is_wfe=False)
    assert machine.engine.finished is None


def test_a_kernel_that_raises_stops_its_cpu_and_keeps_the_reason(machine: Machine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel(cpu: GuestCpu) -> None:
        cpu.hvc(REPORT)
        raise ZeroDivisionError("the kernel's own bug")

    register(monkeypatch, kernel)
    assert isinstance(machine.run(), HvcTrap) and machine.engine.finished is None
    assert isinstance(machine.run(), WfxTrap)
    assert isinstance(machine.engine.finished, ZeroDivisionError)
    assert isinstance(machine.run(), WfxTrap)


def test_closing_the_vcpu_ends_the_kernel_with_kernel_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[str] = []

    def kernel(cpu: GuestCpu) -> None:
        try:
            while True:
                cpu.wfi()
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise

    register(monkeypatch, kernel)
    machine = Machine()
    assert isinstance(machine.run(), WfxTrap)
    machine.close()
    assert ended == ["KernelExit"] and machine.engine.finished is None
    machine.close()  # a second close finds the kernel gone
    assert ended == ["KernelExit"]


def test_a_closed_engine_leaves_the_memorys_pas_changes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, lambda cpu: (cpu.read_u64(DATA_IPA), cpu.hvc(REPORT)))
    machine = Machine()
    machine.run()
    machine.close()
    machine.memory.set_pas(World.ROOT, machine.pa(DATA_IPA), Pas.REALM)
    assert machine.engine._tlb  # what it had cached is no longer kept up to date: nothing calls it


def test_the_boot_registers_and_pc_are_the_vcpus_at_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    register(monkeypatch, lambda cpu: seen.extend([cpu.boot_registers, cpu.boot_pc]))
    machine = Machine(gprs=[0x4800_0000, 1, 2, 3, 4, 5])  # x0: the DTB, as Linux's boot protocol has it
    machine.run()
    machine.close()
    assert seen == [[0x4800_0000, 1, 2, 3], RAM_IPA]


def test_a_guest_fault_without_an_address_is_at_zero() -> None:
    exc = GuestFault("undefined instruction")
    assert fault(exc) == ("undefined instruction", 0) and str(exc) == "undefined instruction at 0x0"


def test_mmio_on_memory_is_a_plain_access_and_a_store_gives_zero(machine: Machine) -> None:
    # as the kernel process's engine (kernel_child ChildEngine.mmio): a store's result is 0
    backing = machine.pa(DATA_IPA)
    machine.ram.write(backing + 0x10, b"\x11\x22\x33\x44")
    assert machine.engine.mmio(DATA_IPA + 0x10, 4, None) == 0x4433_2211
    assert machine.engine.mmio(DATA_IPA + 0x12, 2, 0xBEEF) == 0
    assert machine.ram.read(backing + 0x10, 4) == b"\x11\x22\xef\xbe"
