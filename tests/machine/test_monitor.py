"""The EL3 monitor (machine/monitor.py): SMC routing by caller (digest §1.1 SMCCC rules),
the GTSI granule transitions, and the RMI trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.board import Machine
from unirealm.machine.monitor import Caller
from unirealm.rmm.core import Rmm

NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF
SMCCC_VERSION = 0x8000_0000
SMCCC_ARCH_FEATURES = 0x8000_0001
RMI_VERSION = 0xC400_0150
RMI_GRANULE_DELEGATE = 0xC400_0151
RMI_GRANULE_UNDELEGATE = 0xC400_0152
RMI_FEATURES = 0xC400_0165
RSI_VERSION = 0xC400_0190
GTSI_DELEGATE = 0xC400_01B0
GTSI_UNDELEGATE = 0xC400_01B1
EL3_OK, EL3_BAD_ADDR, EL3_BAD_PAS = 0, (1 << 64) - 2, (1 << 64) - 3


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(dram_size=8 << 20, data_dir=tmp_path)
    Rmm(m.monitor)
    return m


def smc(machine: Machine, caller: Caller, *regs: int) -> list[int]:
    out = machine.monitor.smc(caller, list(regs))
    assert isinstance(out, list)
    assert len(out) == 18
    return out


def test_rmi_from_the_host_reaches_the_rmm(machine: Machine) -> None:
    out = smc(machine, Caller.NS_EL2, RMI_VERSION, 0x1_0000, 0, 0, 0, 0x55)
    assert out[:3] == [0, 0x1_0000, 0x1_0000]
    assert out[5] == 0x55  # undefined result registers keep their input values
    pa = machine.memory.base + 5 * GRANULE_SIZE
    out = smc(machine, Caller.NS_EL2, RMI_GRANULE_DELEGATE, pa)
    assert out[0] == 0
    assert machine.memory.pas(pa) == Pas.REALM
    out = smc(machine, Caller.NS_EL2, RMI_GRANULE_UNDELEGATE, pa)
    assert out[0] == 0
    assert machine.memory.pas(pa) == Pas.NON_SECURE


def test_unassigned_rmi_number_is_not_supported(machine: Machine) -> None:
    for fid in (0xC400_0156, 0xC400_0160, 0xC400_016F):
        assert smc(machine, Caller.NS_EL2, fid, 1)[:2] == [NOT_SUPPORTED, 1]


@pytest.mark.parametrize("fid", [RMI_VERSION, RMI_GRANULE_DELEGATE, RMI_FEATURES])
def test_rmi_from_a_realm_is_not_supported(machine: Machine, fid: int) -> None:
    pa = machine.memory.base + 7 * GRANULE_SIZE
    out = smc(machine, Caller.R_EL1, fid, pa)
    assert out[0] == NOT_SUPPORTED
    assert out[1] == pa
    assert machine.memory.pas(pa) == Pas.NON_SECURE


def test_rmi_from_the_rmm_is_not_supported(machine: Machine) -> None:
    assert smc(machine, Caller.R_EL2, RMI_VERSION, 0x1_0000)[0] == NOT_SUPPORTED


@pytest.mark.parametrize("fid", [RSI_VERSION, 0xC400_0196, 0xC400_0199, 0x8400_0000])
def test_rsi_and_psci_from_the_host_are_not_supported(machine: Machine, fid: int) -> None:
    out = smc(machine, Caller.NS_EL2, fid, 0x1_0000)
    assert out[:2] == [NOT_SUPPORTED, 0x1_0000]


def test_rsi_outside_a_rec_is_not_supported(machine: Machine) -> None:
    # A realm call while no REC is running (no current REC) has nobody to answer it.
    assert smc(machine, Caller.R_EL1, RSI_VERSION, 0x1_0000)[0] == NOT_SUPPORTED


@pytest.mark.parametrize("caller", list(Caller))
def test_smccc_version_and_arch_features(machine: Machine, caller: Caller) -> None:
    assert smc(machine, caller, SMCCC_VERSION)[0] == 0x1_0002
    assert smc(machine, caller, SMCCC_ARCH_FEATURES, SMCCC_VERSION)[0] == 0
    assert smc(machine, caller, SMCCC_ARCH_FEATURES, SMCCC_ARCH_FEATURES)[0] == 0
    assert smc(machine, caller, SMCCC_ARCH_FEATURES, 0x8000_7FFF)[0] == NOT_SUPPORTED


def test_without_rme_rmi_is_not_supported(tmp_path: Path) -> None:
    m = Machine(dram_size=4 << 20, rme=False, data_dir=tmp_path)
    assert m.rot is None
    out = m.host_smc(RMI_VERSION, 0x1_0000)
    assert out[:2] == [NOT_SUPPORTED, 0x1_0000]
    pa = m.memory.base
    assert m.host_smc(RMI_GRANULE_DELEGATE, pa)[0] == NOT_SUPPORTED
    assert m.memory.pas(pa) == Pas.NON_SECURE
    assert m.host_smc(SMCCC_VERSION)[0] == 0x1_0002
    assert not (tmp_path / "platform").exists()  # no root of trust, no identity


# --- GTSI ----------------------------------------------------------------------------------
def test_gtsi_only_from_the_rmm(machine: Machine) -> None:
    pa = machine.memory.base + 3 * GRANULE_SIZE
    for caller in (Caller.NS_EL2, Caller.R_EL1):
        assert smc(machine, caller, GTSI_DELEGATE, pa)[0] == NOT_SUPPORTED
        assert machine.memory.pas(pa) == Pas.NON_SECURE
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, pa)[0] == EL3_OK
    assert machine.memory.pas(pa) == Pas.REALM
    for caller in (Caller.NS_EL2, Caller.R_EL1):
        assert smc(machine, caller, GTSI_UNDELEGATE, pa)[0] == NOT_SUPPORTED
        assert machine.memory.pas(pa) == Pas.REALM
    assert smc(machine, Caller.R_EL2, GTSI_UNDELEGATE, pa)[0] == EL3_OK
    assert machine.memory.pas(pa) == Pas.NON_SECURE


def test_gtsi_only_between_non_secure_and_realm(machine: Machine) -> None:
    mem = machine.memory
    pa = mem.base + 2 * GRANULE_SIZE
    # Wrong starting PAS.
    assert smc(machine, Caller.R_EL2, GTSI_UNDELEGATE, pa)[0] == EL3_BAD_PAS
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, pa)[0] == EL3_OK
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, pa)[0] == EL3_BAD_PAS
    assert mem.pas(pa) == Pas.REALM
    # Secure and root granules never move.
    for pas in (Pas.SECURE, Pas.ROOT):
        other = mem.base + (10 + pas) * GRANULE_SIZE
        mem.set_pas(World.ROOT, other, pas)
        assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, other)[0] == EL3_BAD_PAS
        assert smc(machine, Caller.R_EL2, GTSI_UNDELEGATE, other)[0] == EL3_BAD_PAS
        assert mem.pas(other) == pas
    # Not a granule of this machine.
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, pa + 8)[0] == EL3_BAD_ADDR
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, mem.top)[0] == EL3_BAD_ADDR
    assert smc(machine, Caller.R_EL2, GTSI_DELEGATE, mem.base - GRANULE_SIZE)[0] == EL3_BAD_ADDR


def test_rmi_delegate_of_a_secure_granule_fails(machine: Machine) -> None:
    pa = machine.memory.base + 20 * GRANULE_SIZE
    machine.memory.set_pas(World.ROOT, pa, Pas.SECURE)
    assert smc(machine, Caller.NS_EL2, RMI_GRANULE_DELEGATE, pa)[0] == 1  # RMI ERROR_INPUT
    assert machine.memory.pas(pa) == Pas.SECURE


# --- trace ---------------------------------------------------------------------------------
def test_trace_gets_one_decoded_line_per_rmi_call(machine: Machine) -> None:
    lines: list[str] = []
    machine.monitor.trace = lines.append
    pa = machine.memory.base + 4 * GRANULE_SIZE
    smc(machine, Caller.NS_EL2, RMI_VERSION, 0x1_0000)
    smc(machine, Caller.NS_EL2, RMI_GRANULE_DELEGATE, pa)  # makes a GTSI call: not traced
    smc(machine, Caller.NS_EL2, RMI_GRANULE_DELEGATE, pa)  # fails
    smc(machine, Caller.NS_EL2, SMCCC_VERSION)  # not an RMI call
    smc(machine, Caller.R_EL2, GTSI_UNDELEGATE, pa)  # not an RMI call
    assert len(lines) == 3
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith("RMI_VERSION(req=0x10000) -> SUCCESS")
    assert "lower=0x10000" in lines[0] and "higher=0x10000" in lines[0]
    assert lines[1] == f"RMI_GRANULE_DELEGATE(pa={pa:#x}) -> SUCCESS"
    assert lines[2].startswith(f"RMI_GRANULE_DELEGATE(pa={pa:#x}) -> ERROR_INPUT")
    machine.monitor.trace = None
    smc(machine, Caller.NS_EL2, RMI_VERSION, 0x1_0000)
    assert len(lines) == 3
