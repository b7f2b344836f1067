"""The EL0 CPU's registers in place (machine/uc_regfile.py): found on the pinned Unicorn,
equal to what the API reads and writes, and what the SVC fast path hands the kernel."""

from __future__ import annotations

import struct

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.machine import uc_regfile
from unirealm.machine.pykernel import El0Space

from .test_el0space import CODE_VA, RAM_IPA, SVC_0, R, Stage2Cpu, X

X_IDS = [getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)] + [a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30]
MOV_X1_X0 = 0xAA0003E1  # mov x1, x0
MOV_X8_93 = 0xD2800BA8  # mov x8, #93


def engine() -> UcAArch64:
    uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(1 << 20)
    uc.mem_map(0, GRANULE_SIZE)
    return uc


def test_the_pinned_build_shows_its_register_file() -> None:
    # the SVC fast path's in-place reads depend on it: losing it must not go unnoticed
    assert uc_regfile.register_file_offsets() is not None


def test_registers_in_place_are_the_apis_both_ways_and_follow_a_context_restore() -> None:
    uc = engine()
    words = uc_regfile.locate(uc)
    assert words is not None
    for i, reg in enumerate(X_IDS):
        uc.reg_write(reg, 0x1111_0000_0000_0000 + i * 0x0101)
    uc.reg_write(a64.UC_ARM64_REG_PC, 0x8000)
    assert list(words[:31]) == [0x1111_0000_0000_0000 + i * 0x0101 for i in range(31)]
    assert words[uc_regfile.PC_INDEX] == 0x8000
    saved = uc.context_save()
    words[7] = 0xFFFF_FFFF_FFFF_FFFF
    assert uc.reg_read(a64.UC_ARM64_REG_X7) == 0xFFFF_FFFF_FFFF_FFFF
    uc.context_restore(saved)  # another thread's registers come back into the same place
    assert words[7] == 0x1111_0000_0000_0707 and uc.reg_read(a64.UC_ARM64_REG_X7) == words[7]


def test_a_located_file_is_checked_on_the_engine_itself() -> None:
    uc = engine()
    field, offset = uc_regfile.register_file_offsets() or (0, 0)
    assert uc_regfile.locate(uc, (field, offset + 8)) is None  # one word off: refused
    assert uc_regfile.locate(uc, (field, offset)) is not None


def test_the_svc_fast_path_reads_every_argument_and_its_x0_reaches_el0() -> None:
    cpu = Stage2Cpu()
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    assert space._xregs is not None  # the in-place path is the one under test
    cpu.write(RAM_IPA, struct.pack("<5I", SVC_0, MOV_X1_X0, MOV_X8_93, SVC_0, SVC_0))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)
    args = [0xA000_0000_0000_0000 | i for i in range(6)]
    for i, value in enumerate(args):
        space.set_gpr(i, value)
    space.set_gpr(8, 172)
    seen: list[tuple[int, ...]] = []

    def on_svc(nr: int, *a: int) -> bool:
        seen.append((nr, *a))
        if nr == 93:
            return False
        space.set_x0(-5)  # as a syscall's error: written as 64 bits
        return True

    space.on_svc = on_svc
    assert space.run(CODE_VA) == ("svc", CODE_VA + 16, 0)
    assert seen[0] == (172, *args)
    assert seen[1] == (93, 2**64 - 5, 2**64 - 5, *args[2:])  # x1 = the x0 the first SVC returned
    space.close()
