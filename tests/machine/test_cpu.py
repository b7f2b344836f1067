"""The engine a REC or VM vCPU gets (machine/cpu.py): before its first run it keeps the
reset state; at the first use it becomes a machine-code vCPU, or the Python kernel when the
bytes at PC + 0x40 are the unirealm image magic; afterwards every call reaches that engine.
Exception entry is checked from the guest's side against the Arm ARM (D1.10 exception
entry, ESR_ELx): ESR_EL1 = EC:IL:ISS, FAR_EL1, ELR_EL1 = the preferred return address,
SPSR_EL1 = the PSTATE left, PSTATE.DAIF all set, PC = VBAR_EL1 + 0x200 (current EL with
SP_ELx, synchronous) or + 0x280 (IRQ)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.arch.sysreg import SysReg
from unirealm.machine.cpu import Cpu
from unirealm.machine.irq import PENDING_IRQ
from unirealm.machine.kernel_process import OVERHEAD, KernelProcess
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.pykernel import PyKernelEngine
from unirealm.machine.vcpu import (
    DataAbortTrap,
    El2Context,
    HvcTrap,
    IrqTrap,
    Mapping,
    SysRegTrap,
    VCpu,
)

from .asm_snippet import assemble

CODE = 0x4000_0000
MMIO = 0x5000_0010  # stage 2 maps nothing here
IN_PROCESS = "UNIREALM_IN_PROCESS_KERNEL"
MAGIC_AT = 0x40  # the unirealm image header: "UNIREALM" at the image's offset 0x40
IL = 1 << 25  # ESR_ELx.IL: a 32-bit instruction
EC_UNKNOWN, EC_IABT_CUR, EC_DABT_CUR = 0x00, 0x21, 0x25
FSC_SEA = 0x10  # synchronous external abort, not on a table walk
DAIF = 0xF << 6
VMPIDR_EL2 = SysReg(3, 4, 0, 0, 5)
ESR_EL1 = SysReg(3, 0, 5, 2, 0)
MIDR_A72 = 0x410F_D083  # Cortex-A72 r0p3 (its TRM's MIDR_EL1)

# Vectors at CODE + 0x800: every slot reports its own offset in x0 and the exception
# registers in x1..x6, then makes an HVC #0x80 to the host.
PROGRAM = """
_start:
    adr x9, vectors
    msr vbar_el1, x9
    isb
    mrs x3, mpidr_el1
    mrs x4, midr_el1
    hvc #1
    nop
    hvc #2
    ldr w7, [x10]
    hvc #3
    msr daifclr, #2
spin:
    b spin
    .balign 2048
vectors:
    .irp slot, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    mov x0, #(\\slot * 0x80)
    mrs x1, esr_el1
    mrs x2, far_el1
    mrs x3, elr_el1
    mrs x4, spsr_el1
    mrs x5, currentel
    mrs x6, daif
    hvc #0x80
    .balign 0x80
    .endr
"""


class Board:
    """Stage 2 maps CODE onto one non-secure granule; every lookup is recorded."""

    def __init__(self) -> None:
        self.memory = PhysicalMemory(4 << 20)
        self.ns = self.memory.accessor(World.NON_SECURE)
        self.pa = self.memory.base + 2 * GRANULE_SIZE
        self.pages = {CODE: Mapping(self.pa, World.NON_SECURE)}
        self.lookups: list[tuple[int, bool, bool]] = []

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        self.lookups.append((ipa, is_write, is_fetch))
        return self.pages.get(ipa)

    def cpu(self, **kw: object) -> Cpu:
        return Cpu(self.memory, self.translate, **kw)  # type: ignore[arg-type]


@pytest.fixture
def board(tmp_path: Path) -> Board:
    b = Board()
    b.ns.write(b.pa, assemble(PROGRAM, CODE, tmp_path, "cpu"))
    return b


def hvc(trap: object, imm: int) -> HvcTrap:
    assert isinstance(trap, HvcTrap) and trap.imm == imm, trap
    return trap


# --- before the first run ---------------------------------------------------------------
def test_before_its_first_use_it_keeps_the_reset_state_and_looks_at_no_memory() -> None:
    b = Board()
    cpu = b.cpu()
    assert cpu.pc == 0 and cpu.get_gpr(0) == 0
    cpu.reset(CODE, (5, 6, 7))
    assert cpu.pc == CODE
    assert [cpu.get_gpr(n) for n in range(5)] == [5, 6, 7, 0, 0]
    cpu.pc = CODE + 8
    assert cpu.pc == CODE + 8
    cpu.kick()
    cpu.invalidate(CODE, GRANULE_SIZE)
    cpu.close()
    assert not cpu.is_python_kernel
    assert b.lookups == []  # no engine was made


def test_the_first_use_makes_a_vcpu_at_the_reset_pc_with_the_reset_registers(board: Board) -> None:
    cpu = board.cpu(cpu_model="a72")
    cpu.reset(CODE + 4, [0x11, 0x22, 0x33])
    cpu.reset(CODE, [0xA0, 0xA1, 0xA2])  # the last reset counts
    cpu.mpidr = 0x01_0203  # Aff2 1, Aff1 2, Aff0 3
    trap = hvc(cpu.run(), 1)
    assert isinstance(cpu.impl, VCpu) and not cpu.is_python_kernel
    assert board.lookups[0] == (CODE, False, False)  # the image check reads, it does not write
    assert trap.regs[:3] == [0xA0, 0xA1, 0xA2]
    assert trap.regs[3] == 0x01_0203 | 1 << 31  # MPIDR_EL1 bit 31 is RES1
    assert trap.regs[4] == MIDR_A72
    assert cpu.read_sysreg(VMPIDR_EL2) == 0x01_0203 | 1 << 31
    cpu.close()


def test_without_an_mpidr_the_model_keeps_its_own(board: Board) -> None:
    cpu = board.cpu()
    cpu.reset(CODE)
    trap = hvc(cpu.run(), 1)
    assert trap.regs[3] & 1 << 31 and trap.regs[3] == cpu.read_sysreg(VMPIDR_EL2)
    assert trap.regs[4] != MIDR_A72  # the "max" model by default
    cpu.close()


def test_registers_set_before_the_first_run_reach_the_vcpu(board: Board) -> None:
    cpu = board.cpu()
    cpu.reset(CODE, [1])
    cpu.set_gpr(2, 0x2222)  # makes the engine
    assert cpu.get_gprs(3) == [1, 0, 0x2222]
    assert len(cpu.get_gprs()) == 31  # x0..x30
    assert cpu.get_gpr(2) == 0x2222
    trap = hvc(cpu.run(), 1)
    assert trap.regs[:3] == [1, 0, 0x2222]
    cpu.reset(CODE, [9, 8])  # now the engine's reset
    assert cpu.pc == CODE and cpu.get_gprs(3) == [9, 8, 0]
    cpu.close()


def test_the_el2_context_reaches_the_vcpu(board: Board) -> None:
    cpu = board.cpu(context=El2Context(trap_id_registers=True))  # HCR_EL2.TID3
    cpu.reset(CODE)
    trap = cpu.run()  # MIDR_EL1 is not a group-3 ID register: the first trap is still the HVC
    hvc(trap, 1)
    cpu.close()
    b = Board()
    b.ns.write(b.pa, (0xD538_0400).to_bytes(4, "little"))  # mrs x0, id_aa64pfr0_el1 (group 3)
    cpu = b.cpu(context=El2Context(trap_id_registers=True))
    cpu.reset(CODE)
    assert isinstance(cpu.run(), SysRegTrap)
    cpu.close()


# --- exception entry through the engine -------------------------------------------------
def at_the_nop(board: Board) -> Cpu:
    cpu = board.cpu()
    cpu.reset(CODE)
    hvc(cpu.run(), 1)
    assert cpu.pc == CODE + 6 * 4  # the nop after HVC #1
    return cpu


def test_an_injected_data_abort_enters_el1_at_the_sync_vector(board: Board) -> None:
    cpu = at_the_nop(board)
    nop = cpu.pc
    cpu.inject_sea(0xDEAD_0000)
    assert cpu.pc == CODE + 0x800 + 0x200
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[0] == 0x200
    assert trap.regs[1] == EC_DABT_CUR << 26 | IL | FSC_SEA
    assert trap.regs[2] == 0xDEAD_0000 and trap.regs[3] == nop
    assert trap.regs[4] & 0xF == 0b0101  # SPSR.M: EL1h
    assert trap.regs[5] == 1 << 2 and trap.regs[6] == DAIF
    cpu.close()


def test_an_injected_instruction_abort_has_its_own_class(board: Board) -> None:
    cpu = at_the_nop(board)
    cpu.inject_sea(CODE + 0x24, is_fetch=True)
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[1] == EC_IABT_CUR << 26 | IL | FSC_SEA and trap.regs[2] == CODE + 0x24
    cpu.close()


def test_an_injected_undef_leaves_far_as_it_was(board: Board) -> None:
    cpu = at_the_nop(board)
    cpu.inject_sea(0x1234_5000)
    hvc(cpu.run(), 0x80)
    cpu.pc = CODE + 6 * 4
    cpu.inject_undef()
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[1] == EC_UNKNOWN << 26 | IL and trap.regs[2] == 0x1234_5000
    assert trap.regs[3] == CODE + 6 * 4
    cpu.close()


def test_take_exception_gives_esr_far_and_the_return_address(board: Board) -> None:
    cpu = at_the_nop(board)
    syndrome = 0x15 << 26 | IL | 0x42  # an SVC #0x42's, as a hypervisor would forward it
    cpu.take_exception(syndrome, 0x7000, preferred_return=CODE + 0x40)
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[1:4] == [syndrome, 0x7000, CODE + 0x40]
    cpu.pc = CODE + 6 * 4
    cpu.take_exception(IL)  # FAR 0 and the current PC unless told
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[1:4] == [IL, 0, CODE + 6 * 4]
    cpu.close()


def test_skip_and_an_emulated_load_move_on(board: Board) -> None:
    cpu = at_the_nop(board)
    cpu.set_gpr(10, MMIO)
    cpu.skip_instruction()  # over the nop
    hvc(cpu.run(), 2)
    trap = cpu.run()
    assert isinstance(trap, DataAbortTrap) and trap.ipa == MMIO and trap.syndrome is not None
    cpu.complete_mmio_read(trap.syndrome, 0x1_8765_4321)  # a 32-bit load: the low word only
    trap = hvc(cpu.run(), 3)
    assert trap.regs[7] == 0x8765_4321
    cpu.close()


def test_an_invalidated_page_is_looked_up_again(board: Board, tmp_path: Path) -> None:
    cpu = board.cpu()
    cpu.reset(CODE)
    hvc(cpu.run(), 1)
    other = board.memory.base + 5 * GRANULE_SIZE
    board.ns.write(other, assemble("hvc #7", CODE, tmp_path, "other"))
    board.pages[CODE] = Mapping(other, World.NON_SECURE)
    cpu.pc = CODE
    hvc(cpu.run(), 1)  # the old mapping and its code are still in use
    cpu.invalidate(CODE, GRANULE_SIZE)
    cpu.pc = CODE
    hvc(cpu.run(), 7)
    cpu.close()


# --- interrupts and stops ---------------------------------------------------------------
class Signal:
    """An interrupt controller that signals IRQ until the vCPU takes it."""

    def __init__(self) -> None:
        self.signal = PENDING_IRQ

    def pending(self) -> int:
        return self.signal

    def next_deadline(self) -> float | None:
        return None

    def read_sysreg(self, key: int) -> int | None:
        return None

    def write_sysreg(self, key: int, value: int) -> bool:
        return False


def test_the_lines_and_the_entry_notice_reach_the_vcpu(board: Board) -> None:
    lines = Signal()
    told: list[int] = []

    def on_interrupt(kind: int) -> None:
        told.append(kind)
        lines.signal = 0

    cpu = board.cpu()
    cpu.interrupts = lines  # type: ignore[assignment]
    cpu.on_interrupt = on_interrupt
    cpu.reset(CODE, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, MMIO])
    hvc(cpu.run(), 1)  # reset masks DAIF: the IRQ waits
    hvc(cpu.run(), 2)
    assert told == []
    trap = cpu.run()
    assert isinstance(trap, DataAbortTrap) and trap.syndrome is not None
    cpu.complete_mmio_read(trap.syndrome, 0)
    hvc(cpu.run(), 3)
    before = cpu.read_sysreg(ESR_EL1)
    trap = hvc(cpu.run(), 0x80)  # msr daifclr, #2 lets it in
    assert told == [PENDING_IRQ]
    assert trap.regs[0] == 0x280 and trap.regs[1] == before  # ESR_EL1 is not written for an IRQ
    assert trap.regs[3] == CODE + 0x2C  # ELR: the next instruction, the loop's
    cpu.close()


def test_an_irq_is_taken_without_an_entry_notice(board: Board) -> None:
    cpu = board.cpu()
    cpu.interrupts = Signal()  # type: ignore[assignment]
    cpu.reset(CODE)
    hvc(cpu.run(), 1)  # VBAR_EL1 set
    cpu.pc = CODE + 0x28  # msr daifclr, #2
    trap = hvc(cpu.run(), 0x80)
    assert trap.regs[0] == 0x280 and trap.regs[3] == CODE + 0x2C
    assert trap.regs[4] & DAIF == DAIF ^ 1 << 7  # SPSR: D, A and F still masked, I cleared
    cpu.close()


def test_a_run_ends_by_its_deadline_and_at_a_kick(board: Board) -> None:
    cpu = board.cpu()
    cpu.reset(CODE + 0x2C)  # the spin loop
    assert board.ns.read(board.pa + 0x2C, 4) == (0x1400_0000).to_bytes(4, "little")  # b .
    start = time.monotonic()
    assert isinstance(cpu.run(until=start + 0.05), IrqTrap)
    assert time.monotonic() - start < 5
    timer = threading.Timer(0.05, cpu.kick)
    timer.start()
    assert isinstance(cpu.run(until=time.monotonic() + 30), IrqTrap)
    timer.join()
    assert time.monotonic() - start < 10  # the kick ended it, not the deadline
    assert cpu.pc == CODE + 0x2C
    cpu.close()


# --- the Python kernel ------------------------------------------------------------------
def kernel_board(pc_offset: int = 0) -> Board:
    b = Board()
    b.ns.write(b.pa + pc_offset + MAGIC_AT, b"UNIREALM")
    return b


def test_the_image_magic_at_pc_makes_a_kernel_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IN_PROCESS, raising=False)
    b = kernel_board()
    lines = Signal()
    cpu = Cpu(b.memory, b.translate, "a53", ram_size=64 << 20)
    cpu.interrupts = lines  # type: ignore[assignment]
    cpu.reset(CODE, [3, 4])
    impl = cpu.impl
    assert isinstance(impl, KernelProcess) and cpu.is_python_kernel
    assert impl.limit == (64 << 20) + OVERHEAD and impl.cpu_model == "a53"
    assert impl.interrupts is lines
    assert cpu.pc == CODE and cpu.get_gprs(3) == [3, 4, 0] and cpu.get_gpr(1) == 4
    cpu.kick()  # nothing to stop: the kernel runs to its next trap
    with pytest.raises(TypeError, match=r"^system registers are read only on a machine-code vCPU$"):
        cpu.read_sysreg(VMPIDR_EL2)
    cpu.close()
    whole = Cpu(b.memory, b.translate)
    whole.reset(CODE)
    assert isinstance(whole.impl, KernelProcess) and whole.impl.limit == b.memory.size + OVERHEAD
    whole.close()


def test_the_in_process_setting_keeps_the_kernel_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IN_PROCESS, "1")
    b = kernel_board()
    lines = Signal()
    cpu = Cpu(b.memory, b.translate, "a53")
    cpu.interrupts = lines  # type: ignore[assignment]
    cpu.reset(CODE, [7])
    impl = cpu.impl
    assert isinstance(impl, PyKernelEngine) and cpu.is_python_kernel
    assert impl.cpu_model == "a53" and impl.interrupts is lines
    assert cpu.pc == CODE and cpu.get_gpr(0) == 7
    cpu.close()
    monkeypatch.setenv(IN_PROCESS, "0")
    other = Cpu(b.memory, b.translate)
    other.reset(CODE)
    assert isinstance(other.impl, KernelProcess)
    other.close()


def test_a_header_that_ends_the_page_is_seen_and_one_that_leaves_it_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IN_PROCESS, "1")
    last = GRANULE_SIZE - MAGIC_AT - 8  # "UNIREALM" in the page's last 8 bytes
    b = kernel_board(last)
    cpu = b.cpu()
    cpu.reset(CODE + last)
    assert isinstance(cpu.impl, PyKernelEngine)
    cpu.close()
    # One byte further: its last byte would be at the next IPA page, which stage 2 does not
    # map (the next granule of PA memory, which holds the rest of the magic, is not it).
    b = Board()
    b.ns.write(b.pa + GRANULE_SIZE - 7, b"UNIREALM")
    cpu = b.cpu()
    cpu.reset(CODE + last + 1)
    assert isinstance(cpu.impl, VCpu)
    cpu.close()


def test_no_image_where_stage_2_maps_nothing_or_the_gpt_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IN_PROCESS, "1")
    b = kernel_board()
    b.memory.set_pas(World.ROOT, b.pa, Pas.REALM)  # a non-secure access to it faults
    cpu = b.cpu()
    cpu.reset(CODE)
    assert isinstance(cpu.impl, VCpu)
    cpu.close()
    b = kernel_board()
    cpu = b.cpu()
    cpu.reset(CODE + GRANULE_SIZE)  # an unmapped page
    assert isinstance(cpu.impl, VCpu)
    cpu.close()
    b.pages[CODE] = Mapping(b.pa, World.REALM)  # a realm access reaches a non-secure granule
    cpu = b.cpu()
    cpu.reset(CODE)
    assert isinstance(cpu.impl, PyKernelEngine)
    cpu.close()
