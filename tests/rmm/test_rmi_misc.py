"""RMI_VERSION, RMI_FEATURES, the status encoding and the SMC conduit (digest §1.1, §1.2, §2.1, §2.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.rmi import RmiFid, RmiStatus
from unirealm.arch.smccc import SMCCC_NOT_SUPPORTED
from unirealm.machine.board import Machine

from .conftest import Env, assert_status

RMI_1_0 = 0x1_0000
MASK64 = (1 << 64) - 1


def test_version_supported(env: Env) -> None:
    out = env.smc(RmiFid.VERSION, RMI_1_0)
    assert out[0] == 0
    assert (out[1], out[2]) == (RMI_1_0, RMI_1_0)


@pytest.mark.parametrize("req", [0, 1, 0x1_0001, 0x2_0000, 0x8001_0000, MASK64])
def test_version_unsupported(env: Env, req: int) -> None:
    out = env.smc(RmiFid.VERSION, req)
    assert_status(out, RmiStatus.ERROR_INPUT)
    assert out[2] == RMI_1_0  # "higher": the highest revision supported


def test_features_register0(env: Env) -> None:
    out = env.smc(RmiFid.FEATURES, 0)
    assert_status(out, RmiStatus.SUCCESS)
    reg = out[1]

    def field(lsb: int, width: int) -> int:
        return (reg >> lsb) & ((1 << width) - 1)

    assert field(0, 8) == 48  # S2SZ
    assert field(8, 1) == 0  # LPA2
    assert field(9, 1) == 0  # SVE_EN
    assert 1 <= field(14, 6) <= 15  # NUM_BPS (count - 1)
    assert 1 <= field(20, 6) <= 15  # NUM_WPS (count - 1)
    assert field(26, 1) == 0  # PMU_EN
    assert field(32, 1) == 1  # SHA-256
    assert field(33, 1) == 1  # SHA-512
    assert field(34, 4) == 15  # GICV3_NUM_LRS: 16 list registers
    assert field(38, 4) == 10  # MAX_RECS_ORDER
    assert reg >> 42 == 0  # nothing else defined in 1.0-rel0


@pytest.mark.parametrize("index", [1, 2, 4, 0xFF, 1 << 32, MASK64])
def test_features_other_indices_are_zero(env: Env, index: int) -> None:
    out = env.smc(RmiFid.FEATURES, index)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == 0


@pytest.mark.parametrize("fnum", [0x156, 0x160, 0x163, 0x16A, 0x16F])
def test_unassigned_rmi_function_numbers(env: Env, fnum: int) -> None:
    args = [0xC400_0000 | fnum, 1, 2, 3, 4, 5]
    out = env.smc(*args)
    assert out[0] == SMCCC_NOT_SUPPORTED
    assert out[1:6] == [1, 2, 3, 4, 5]


def test_results_come_from_a_zeroed_result_set(env: Env) -> None:
    """X1..X4 are the command's results or zero, on success and on failure; X5.. keep their values."""
    pa = env.ns_granule()
    regs = [pa] + [0x1111 * i for i in range(1, 17)]
    out = env.smc(RmiFid.GRANULE_DELEGATE, *regs)
    assert out[0] == 0
    assert out[1:5] == [0, 0, 0, 0]
    assert out[5:] == regs[4:]
    out = env.smc(RmiFid.FEATURES, 0, 0xAAAA, 0xBBBB)
    assert out[1] == env.rmm.feat_reg0 and out[2:4] == [0, 0]
    assert len(out) == 18
    out = env.smc(RmiFid.RTT_READ_ENTRY, pa, 0x1000, 3, 0xCCCC)  # pa is not an RD
    assert_status(out, RmiStatus.ERROR_INPUT)
    assert out[1:5] == [0, 0, 0, 0]


def test_status_and_index_packing(env: Env) -> None:
    """X0 = status | index << 8: an RTT error carries its level in bits [15:8]."""
    realm = env.create_realm(40)
    out = env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, env.delegated(), 0)
    assert out[0] == RmiStatus.ERROR_RTT | (1 << 8)
    assert out[0] >> 16 == 0


def test_arguments_are_64_bit(env: Env) -> None:
    """Values wider than 64 bits are truncated by the conduit; negative ones wrap."""
    out = env.smc(RmiFid.FEATURES, 1 << 64)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == env.smc(RmiFid.FEATURES, 0)[1]
    assert_status(env.smc(RmiFid.GRANULE_DELEGATE, -1), RmiStatus.ERROR_INPUT)


def test_no_rmi_without_rme(tmp_path: Path) -> None:
    m = Machine(dram_size=1 << 20, rme=False, data_dir=tmp_path)
    for fid in (RmiFid.VERSION, RmiFid.GRANULE_DELEGATE, RmiFid.FEATURES):
        assert m.host_smc(fid, RMI_1_0)[0] == SMCCC_NOT_SUPPORTED


def test_rmi_without_an_rmm_is_not_supported(tmp_path: Path) -> None:
    m = Machine(dram_size=1 << 20, data_dir=tmp_path)
    assert m.host_smc(RmiFid.VERSION, RMI_1_0)[0] == SMCCC_NOT_SUPPORTED


def test_smccc_version_from_the_host(env: Env) -> None:
    assert env.smc(0x8000_0000)[0] == 0x1_0002
