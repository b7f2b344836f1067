"""ACS 1.0 PMU and debug suite. This RMM offers realms no PMU and says so in RMI_FEATURES;
a realm asking for one is refused."""

from __future__ import annotations

import pytest

from unirealm.arch.rmi import RmiFid, RmiStatus, feat_reg0_get

from .acs import HOST_REALM, AcsEnv, assert_status

PMU_FLAG = 1 << 2  # RmiRealmParams.flags.pmu


def test_pmu_absent_and_advertised_absent(acs: AcsEnv) -> None:
    feat = acs.ok(RmiFid.FEATURES, 0)[1]
    assert feat_reg0_get(feat, "PMU_EN") == 0 and feat_reg0_get(feat, "PMU_NUM_CTRS") == 0
    rd, params, _ = acs.prepare_realm(**{**HOST_REALM, "flags": PMU_FLAG, "pmu_num_ctrs": 1})  # type: ignore[arg-type]
    assert_status(acs.smc(RmiFid.REALM_CREATE, rd, params), RmiStatus.ERROR_INPUT)


@pytest.mark.skip(reason="the RMM offers no PMU (FeatReg0.PMU_EN = 0): a counter overflow cannot be raised")
def test_pmu_overflow() -> None:
    raise AssertionError("not modelled")
