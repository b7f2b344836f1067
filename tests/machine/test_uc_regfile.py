"""The EL0 CPU's registers in place (machine/uc_regfile.py): found on the pinned Unicorn,
equal to what the API reads and writes, and what the SVC fast path hands the kernel."""

from __future__ import annotations

import ctypes
import struct

import pytest
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.machine import uc_regfile
from unirealm.machine.el0space import El0Space
from unirealm.machine.vcpu_stops import engine_address

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


# --- the scan itself (it runs once per process: a test re-runs it from a clean slate) ---
@pytest.fixture
def fresh_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uc_regfile._Offsets, "looked", False)
    monkeypatch.setattr(uc_regfile._Offsets, "found", None)


def api_and_place_agree(words: object, uc: UcAArch64) -> bool:
    """Whether `words` hold X0..X30 and PC as Unicorn's API reads them (own values written)."""
    values = [0x7700_0000_0000_0000 | i << 8 | 0x33 for i in range(31)]
    for reg, value in zip(X_IDS, values, strict=True):
        uc.reg_write(reg, value)
    uc.reg_write(a64.UC_ARM64_REG_PC, 0x9_0000)
    return list(words[:31]) == values and words[uc_regfile.PC_INDEX] == 0x9_0000  # type: ignore[index]


@pytest.mark.usefixtures("fresh_scan")
def test_a_fresh_scan_finds_a_place_that_holds_the_registers_of_a_new_engine() -> None:
    found = uc_regfile.register_file_offsets()
    assert found is not None
    field, offset = found
    assert field % 8 == 0 and offset % 8 == 0 and 0 <= field < uc_regfile.ENGINE_SCAN
    assert uc_regfile._Offsets.looked
    uc = engine()  # an engine the scan never saw: the pair must hold for it too
    words = uc_regfile.locate(uc, found)
    assert words is not None and api_and_place_agree(words, uc)


@pytest.mark.usefixtures("fresh_scan")
def test_the_scan_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uc_regfile.register_file_offsets()
    assert first is not None

    def no_second_scan(seed: int) -> None:
        raise AssertionError("scanned again")

    monkeypatch.setattr(uc_regfile, "_scratch", no_second_scan)
    assert uc_regfile.register_file_offsets() == first


@pytest.mark.usefixtures("fresh_scan")
def test_a_build_that_does_not_show_the_pattern_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CPU object's first word only: X0..X30 cannot all sit there
    monkeypatch.setattr(uc_regfile, "CPU_SCAN", 8)
    assert uc_regfile.register_file_offsets() is None
    assert uc_regfile.locate(engine()) is None  # the caller keeps the API calls


@pytest.mark.usefixtures("fresh_scan")
def test_a_process_without_proc_self_mem_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = uc_regfile.os.open

    def refuse(path: str, flags: int, *a: int) -> int:
        if path == "/proc/self/mem":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(uc_regfile.os, "open", refuse)
    assert uc_regfile.register_file_offsets() is None


def test_candidates_of_an_engine_show_its_own_pattern_only() -> None:
    one = uc_regfile._scratch(1)
    pairs = uc_regfile._candidates(one, 1)
    assert pairs and all(f % 8 == 0 and o % 8 == 0 for f, o in pairs)
    assert all(uc_regfile._shows(one, 1, f, o) for f, o in pairs)
    assert not any(uc_regfile._shows(one, 2, f, o) for f, o in pairs)  # another seed's pattern
    assert uc_regfile._candidates(one, 3) == []


def test_the_pattern_is_x0_to_x30_then_x31_then_pc() -> None:
    values = uc_regfile._pattern(5)
    assert len(values) == uc_regfile.PC_INDEX + 1
    assert len(set(values[:31])) == 31 and values[31] == 0
    assert uc_regfile._pattern(6)[:31] != values[:31] and uc_regfile._pattern(6)[32] != values[32]
    uc = uc_regfile._scratch(5)  # written through the API as the pattern says
    assert [uc.reg_read(r) for r in X_IDS] == values[:31]
    assert uc.reg_read(a64.UC_ARM64_REG_PC) == values[uc_regfile.PC_INDEX]
    assert uc_regfile._image(values) == struct.pack("<31Q", *values[:31])


def test_locate_puts_x0_and_pc_back_and_refuses_an_empty_pointer() -> None:
    uc = engine()
    uc.reg_write(a64.UC_ARM64_REG_X0, 0xDEAD_BEEF_0000_0001)
    uc.reg_write(a64.UC_ARM64_REG_PC, 0x2468)
    words = uc_regfile.locate(uc)
    assert words is not None and len(words) == 33  # X0..X30, X31, PC
    assert uc.reg_read(a64.UC_ARM64_REG_X0) == 0xDEAD_BEEF_0000_0001 and words[0] == 0xDEAD_BEEF_0000_0001
    assert uc.reg_read(a64.UC_ARM64_REG_PC) == 0x2468 and words[uc_regfile.PC_INDEX] == 0x2468
    struct_words = struct.unpack(f"<{uc_regfile.ENGINE_SCAN // 8}Q",
                                 ctypes.string_at(engine_address(uc), uc_regfile.ENGINE_SCAN))
    null_field = 8 * struct_words.index(0)  # a field of the engine structure that holds NULL
    assert uc_regfile.locate(uc, (null_field, 0)) is None
    assert uc.reg_read(a64.UC_ARM64_REG_X0) == 0xDEAD_BEEF_0000_0001


def test_unreadable_memory_reads_as_nothing() -> None:
    mem = uc_regfile.os.open("/proc/self/mem", uc_regfile.os.O_RDONLY)
    try:
        assert uc_regfile._read_mem(mem, 0, 8) == b""  # page 0 is never mapped
        assert uc_regfile._read_mem(mem, 1 << 64, 8) == b""  # beyond an off_t
        here = ctypes.create_string_buffer(b"abcdefgh")
        assert uc_regfile._read_mem(mem, ctypes.addressof(here), 8) == b"abcdefgh"
    finally:
        uc_regfile.os.close(mem)
