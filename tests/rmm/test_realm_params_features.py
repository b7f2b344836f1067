"""REALM_CREATE's checks of the optional features against RMI_FEATURES (digest §2.2, §2.4):
SVE and PMU may be asked for only when the feature register offers them, with a vector
length and a counter count no larger than it reports. This RMM's build offers neither, so
the checks are driven here on an RMM whose feature register is set as a build offering
them would report it (SVE_EN, SVE_VL, PMU_EN, PMU_NUM_CTRS; the 1.0-rel0 packing)."""

from __future__ import annotations

import pytest

from unirealm.arch.rmi import RmiFid, RmiStatus

from .conftest import Env, assert_status

SVE, PMU = 1 << 1, 1 << 2
SVE_VL = 3
PMU_NUM_CTRS = 6


def offer(env: Env, sve: bool, pmu: bool) -> None:
    feat = env.ok(RmiFid.FEATURES, 0)[1]
    feat &= ~((1 << 9) | (0xF << 10) | (1 << 26) | (0x1F << 27))
    if sve:
        feat |= (1 << 9) | (SVE_VL << 10)  # SVE_EN [9], SVE_VL [13:10]
    if pmu:
        feat |= (1 << 26) | (PMU_NUM_CTRS << 27)  # PMU_EN [26], PMU_NUM_CTRS [31:27]
    env.rmm.feat_reg0 = feat
    assert env.ok(RmiFid.FEATURES, 0)[1] == feat


def create(env: Env, **values: int) -> list[int]:
    rd, params, _ = env.prepare_realm(40, **values)
    return env.smc(RmiFid.REALM_CREATE, rd, params)


@pytest.mark.parametrize("sve_vl", [0, 1, SVE_VL])
def test_sve_up_to_the_offered_vector_length(env: Env, sve_vl: int) -> None:
    offer(env, sve=True, pmu=False)
    assert_status(create(env, flags=SVE, sve_vl=sve_vl), RmiStatus.SUCCESS)


@pytest.mark.parametrize("sve_vl", [SVE_VL + 1, 15])
def test_sve_beyond_the_offered_vector_length(env: Env, sve_vl: int) -> None:
    offer(env, sve=True, pmu=False)
    assert_status(create(env, flags=SVE, sve_vl=sve_vl), RmiStatus.ERROR_INPUT)


def test_sve_not_offered(env: Env) -> None:
    offer(env, sve=False, pmu=True)
    assert_status(create(env, flags=SVE, sve_vl=0), RmiStatus.ERROR_INPUT)
    # Without the flag sve_vl is not looked at.
    assert_status(create(env, sve_vl=SVE_VL + 1), RmiStatus.SUCCESS)


@pytest.mark.parametrize("ctrs", [0, 1, PMU_NUM_CTRS])
def test_pmu_up_to_the_offered_counters(env: Env, ctrs: int) -> None:
    offer(env, sve=False, pmu=True)
    assert_status(create(env, flags=PMU, pmu_num_ctrs=ctrs), RmiStatus.SUCCESS)


@pytest.mark.parametrize("ctrs", [PMU_NUM_CTRS + 1, 31])
def test_pmu_beyond_the_offered_counters(env: Env, ctrs: int) -> None:
    offer(env, sve=False, pmu=True)
    assert_status(create(env, flags=PMU, pmu_num_ctrs=ctrs), RmiStatus.ERROR_INPUT)


def test_pmu_not_offered(env: Env) -> None:
    offer(env, sve=True, pmu=False)
    assert_status(create(env, flags=PMU, pmu_num_ctrs=0), RmiStatus.ERROR_INPUT)
    assert_status(create(env, pmu_num_ctrs=PMU_NUM_CTRS + 1), RmiStatus.SUCCESS)


def test_both_offered_and_asked(env: Env) -> None:
    offer(env, sve=True, pmu=True)
    assert_status(create(env, flags=SVE | PMU, sve_vl=SVE_VL, pmu_num_ctrs=PMU_NUM_CTRS), RmiStatus.SUCCESS)
    assert_status(create(env, flags=SVE | PMU, sve_vl=SVE_VL, pmu_num_ctrs=PMU_NUM_CTRS + 1),
                  RmiStatus.ERROR_INPUT)
