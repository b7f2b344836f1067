"""The machine a host boots on (machine/board.py) and the register file the Python kernel's
engines keep (machine/regfile.py), against the Arm ARM's register rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.esr import AccessSyndrome
from unirealm.machine.board import Machine
from unirealm.machine.regfile import RegisterFile

from .test_platform import verify_es384


# --- Machine -------------------------------------------------------------------------------
def test_an_rme_machine_has_its_root_of_trust_in_the_given_directory(tmp_path: Path) -> None:
    m = Machine(dram_size=4 << 20, rme=True, data_dir=tmp_path)
    assert m.rot is not None and m.monitor.rot is m.rot
    assert (tmp_path / "platform" / "cpak.pem").is_file()
    token = m.monitor.attest_platform_token(bytes(range(64)))  # RMM_ATTEST_GET_PLAT_TOKEN's service
    claims = verify_es384(m.rot.identity.cpak_public_pem, token)
    assert bytes(range(64)) in claims.values()


def test_a_machine_is_an_rme_machine_unless_told(tmp_path: Path) -> None:
    assert Machine(dram_size=4 << 20, data_dir=tmp_path).rot is not None


def test_a_machine_without_rme_has_no_root_of_trust(tmp_path: Path) -> None:
    m = Machine(dram_size=4 << 20, rme=False, data_dir=tmp_path)
    assert m.rot is None and m.monitor.rot is None
    with pytest.raises(RuntimeError, match="no root of trust"):
        m.monitor.attest_platform_token(bytes(64))


# --- RegisterFile --------------------------------------------------------------------------
def regfile(pc: int = 0x8000_0000, gprs: tuple[int, ...] = ()) -> RegisterFile:
    r = RegisterFile()
    r.reset(pc, gprs)
    return r


def test_reset_sets_the_pc_and_the_given_registers_and_clears_the_rest() -> None:
    r = regfile()
    r.regs[5] = 55
    r.reset(0x8008_0000, (1, 2, 3))
    assert r.pc == 0x8008_0000
    assert r.get_gprs() == [1, 2, 3] + [0] * 28
    assert r.get_gprs(2) == [1, 2]


def test_register_31_is_the_zero_register() -> None:
    """In a load/store's Rt and a data-processing Rd, 31 encodes XZR: reads zero, writes ignored."""
    r = regfile(gprs=tuple(range(100, 131)))
    assert r.get_gpr(31) == 0
    assert r.get_gpr(30) == 130 and r.get_gpr(0) == 100
    r.set_gpr(31, 0x1234)
    assert r.get_gpr(31) == 0 and r.get_gprs() == list(range(100, 131))


def test_writes_keep_64_bits() -> None:
    r = regfile()
    r.set_gpr(3, (1 << 64) + 7)
    assert r.get_gpr(3) == 7
    r.set_gpr(3, -1)
    assert r.get_gpr(3) == 0xFFFF_FFFF_FFFF_FFFF


def test_skipping_an_instruction_moves_the_pc_by_one_a64_instruction() -> None:
    r = regfile(pc=0x1000)
    r.skip_instruction()
    assert r.pc == 0x1004


@pytest.mark.parametrize(("size", "expected"), [(1, 0xEF), (2, 0xBEEF), (4, 0xDEAD_BEEF),
                                                 (8, 0x0123_4567_DEAD_BEEF)])
def test_an_emulated_load_completes_at_its_size(size: int, expected: int) -> None:
    """The value lands in Rt zero-extended from the access size (ISS.SAS), and the PC moves past
    the load (the hypervisor's emulation of an ISV=1 data abort)."""
    r = regfile(pc=0x2000, gprs=(0xFFFF_FFFF_FFFF_FFFF,) * 31)
    r.complete_mmio_read(AccessSyndrome(is_write=False, size=size, srt=7), 0xFFFF_0123_4567_DEAD_BEEF)
    assert r.get_gpr(7) == expected and r.pc == 0x2004
    assert r.get_gpr(6) == 0xFFFF_FFFF_FFFF_FFFF  # no other register


def test_an_emulated_load_to_xzr_only_moves_the_pc() -> None:
    r = regfile(pc=0x2000, gprs=(9,) * 31)
    r.complete_mmio_read(AccessSyndrome(is_write=False, size=4, srt=31), 0x55)
    assert r.get_gpr(31) == 0 and r.get_gprs() == [9] * 31 and r.pc == 0x2004
