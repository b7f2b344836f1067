"""ACS 1.0 command suite: each RMI/RSI/PSCI command's failure conditions in the spec's
priority order, then its success. Host-side realms are the ACS's: s2sz 40, start level 0,
one root table; realms that run are its default (s2sz 32, level 1, one root)."""

from __future__ import annotations

import threading

from unirealm.arch.rmi import (
    RMI_ABI_VERSION,
    GranuleState,
    RmiFid,
    RmiRecExitReason,
    RmiStatus,
    RttEntryState,
    feat_reg0_get,
)
from unirealm.arch.rsi import RSI_ABI_VERSION, RsiFid

from .acs import REC_AUX_COUNT, AcsEnv, assert_status

MISALIGNED = 0x800
OUTSIDE_PA = 1 << 52  # no granule there
L1, L2, L3 = 1 << 30, 1 << 21, 1 << 12
INPUT, REALM, REC, RTT = RmiStatus.ERROR_INPUT, RmiStatus.ERROR_REALM, RmiStatus.ERROR_REC, RmiStatus.ERROR_RTT
PSCI_VERSION, PSCI_FEATURES = 0x8400_0000, 0x8400_000A
PSCI_CPU_SUSPEND, PSCI_CPU_OFF, PSCI_CPU_ON = 0xC400_0001, 0x8400_0002, 0xC400_0003
PSCI_AFFINITY_INFO, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET = 0xC400_0004, 0x8400_0008, 0x8400_0009


def bad_granules(acs: AcsEnv) -> list[int]:
    """Addresses every granule argument must refuse with ERROR_INPUT: misaligned, outside
    DRAM, in the Secure PAS."""
    return [acs.ns_granule() + MISALIGNED, OUTSIDE_PA, acs.secure_granule()]


def test_cmd_rmi_version(acs: AcsEnv) -> None:
    assert acs.ok(RmiFid.VERSION, RMI_ABI_VERSION)[1:3] == [RMI_ABI_VERSION, RMI_ABI_VERSION]
    out = acs.fails(INPUT, RmiFid.VERSION, 2 << 16)
    assert out[1:3] == [RMI_ABI_VERSION, RMI_ABI_VERSION]


def test_cmd_granule_delegate(acs: AcsEnv) -> None:
    for pa in bad_granules(acs):
        acs.fails(INPUT, RmiFid.GRANULE_DELEGATE, pa)
    realm = acs.host_realm()
    acs.fails(INPUT, RmiFid.GRANULE_DELEGATE, realm.rd)  # RD, not UNDELEGATED
    acs.fails(INPUT, RmiFid.GRANULE_DELEGATE, acs.delegated())
    pa = acs.ns_granule()
    acs.ok(RmiFid.GRANULE_DELEGATE, pa)
    assert acs.state(pa) == GranuleState.DELEGATED


def test_cmd_granule_undelegate(acs: AcsEnv) -> None:
    for pa in bad_granules(acs):
        acs.fails(INPUT, RmiFid.GRANULE_UNDELEGATE, pa)
    realm = acs.host_realm()
    for pa in (acs.ns_granule(), realm.rd, realm.roots[0]):
        acs.fails(INPUT, RmiFid.GRANULE_UNDELEGATE, pa)
    pa = acs.delegated()
    acs.ok(RmiFid.GRANULE_UNDELEGATE, pa)
    assert acs.state(pa) == GranuleState.UNDELEGATED


def test_cmd_realm_create(acs: AcsEnv) -> None:
    rd, params, values = acs.prepare_realm(40, rtt_level_start=0, rtt_num_start=1)
    for bad in bad_granules(acs):
        acs.fails(INPUT, RmiFid.REALM_CREATE, rd, bad)  # params
    for bad in [*bad_granules(acs), acs.ns_granule()]:
        acs.fails(INPUT, RmiFid.REALM_CREATE, bad, params)  # rd
    for field, value in (("s2sz", 52), ("s2sz", 31), ("num_bps", 0), ("hash_algo", 2), ("rtt_num_start", 2),
                         ("rtt_level_start", 2), ("flags", 1 << 2)):  # flags: PMU, which is not offered
        bad_params = acs.params_page({**values, field: value})
        acs.fails(INPUT, RmiFid.REALM_CREATE, rd, bad_params)
    acs.fails(INPUT, RmiFid.REALM_CREATE, rd, acs.params_page({**values, "rtt_base": rd}))  # alias
    acs.ok(RmiFid.REALM_CREATE, rd, params)
    rd2, _, _ = acs.prepare_realm(40)
    acs.fails(INPUT, RmiFid.REALM_CREATE, rd2, acs.params_page({**values, "rtt_base": acs.delegated()}))  # VMID used
    assert acs.state(rd) == GranuleState.RD and acs.state(values["rtt_base"]) == GranuleState.RTT


def test_cmd_rsi_version(acs: AcsEnv) -> None:
    realm = acs.default_realm()
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.push([RsiFid.VERSION, RSI_ABI_VERSION], [RsiFid.VERSION, 2 << 16])
    acs.enter(rec)
    ok, bad = (r.out for r in rec.engine.log[:2])
    assert ok is not None and ok[:3] == [0, RSI_ABI_VERSION, RSI_ABI_VERSION]
    assert bad is not None and bad[:3] == [1, RSI_ABI_VERSION, RSI_ABI_VERSION]


def test_cmd_realm_activate(acs: AcsEnv) -> None:
    for bad in [*bad_granules(acs), acs.delegated()]:
        acs.fails(INPUT, RmiFid.REALM_ACTIVATE, bad)
    realm = acs.host_realm()
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    acs.fails(REALM, RmiFid.REALM_ACTIVATE, realm.rd)


def test_cmd_rtt_read_entry(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    out = acs.fails(INPUT, RmiFid.RTT_READ_ENTRY, acs.delegated(), 0, 0)
    assert out[1:5] == [0, 0, 0, 0]  # a zeroed result set on failure
    acs.fails(INPUT, RmiFid.RTT_READ_ENTRY, realm.rd, 0, 4)  # level
    acs.fails(INPUT, RmiFid.RTT_READ_ENTRY, realm.rd, L3, 2)  # not aligned to the level
    acs.fails(INPUT, RmiFid.RTT_READ_ENTRY, realm.rd, 1 << 40, 0)  # outside the IPA space
    assert acs.read_entry(realm, 0, 3) == (0, RttEntryState.UNASSIGNED, 0, 0)
    assert acs.read_entry(realm, 1 << 39, 0)[:2] == (0, RttEntryState.UNASSIGNED)  # unprotected


def test_cmd_rtt_init_ripas(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    acs.fails(INPUT, RmiFid.RTT_INIT_RIPAS, acs.delegated(), 0, L3)
    acs.fails(INPUT, RmiFid.RTT_INIT_RIPAS, realm.rd, MISALIGNED, L3)
    acs.fails(INPUT, RmiFid.RTT_INIT_RIPAS, realm.rd, L3, L3)  # top <= base
    acs.fails(INPUT, RmiFid.RTT_INIT_RIPAS, realm.rd, 1 << 39, (1 << 39) + L3)  # outside the PAR
    acs.fails(RTT, RmiFid.RTT_INIT_RIPAS, realm.rd, L3, 2 * L3, index=0)  # the walk ends at level 0
    acs.ensure_rtts(realm, 0, 3)
    assert acs.init_ripas(realm, 0, 4 * L3) == 4 * L3
    assert acs.read_entry(realm, 0, 3)[3] == 1  # RAM
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    acs.fails(REALM, RmiFid.RTT_INIT_RIPAS, realm.rd, 4 * L3, 5 * L3)


def test_cmd_rtt_create(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rtt = acs.delegated()
    for bad in [*bad_granules(acs), acs.ns_granule()]:
        acs.fails(INPUT, RmiFid.RTT_CREATE, realm.rd, bad, 0, 1)
    acs.fails(INPUT, RmiFid.RTT_CREATE, rtt, acs.delegated(), 0, 1)  # rd is not an RD
    acs.fails(INPUT, RmiFid.RTT_CREATE, realm.rd, rtt, 0, 0)  # the start level has no parent
    acs.fails(INPUT, RmiFid.RTT_CREATE, realm.rd, rtt, L2, 2)  # not aligned to level 1
    acs.fails(RTT, RmiFid.RTT_CREATE, realm.rd, rtt, 0, 2, index=0)  # no level-1 table yet
    acs.ok(RmiFid.RTT_CREATE, realm.rd, rtt, 0, 1)
    acs.fails(RTT, RmiFid.RTT_CREATE, realm.rd, acs.delegated(), 0, 1, index=0)  # already a table
    assert acs.read_entry(realm, 0, 0)[1] == RttEntryState.TABLE


def test_cmd_data_create(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    acs.ensure_rtts(realm, 0, 3)
    data, src = acs.delegated(), acs.ns_page(b"acs")
    for bad in bad_granules(acs):
        acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, data, 0, bad, 1)  # src
        acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, bad, 0, src, 1)  # data
    acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, data, 0, src, 2)  # flags
    acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, data, MISALIGNED, src, 1)
    acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, data, 1 << 39, src, 1)  # not protected
    acs.fails(RTT, RmiFid.DATA_CREATE, realm.rd, data, L1, src, 1, index=1)  # walk stops at level 1
    acs.ok(RmiFid.DATA_CREATE, realm.rd, data, 0, src, 1)
    acs.fails(RTT, RmiFid.DATA_CREATE, realm.rd, acs.delegated(), 0, src, 1, index=3)  # not UNASSIGNED
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    acs.fails(REALM, RmiFid.DATA_CREATE, realm.rd, acs.delegated(), L3, src, 1)


def test_cmd_data_create_unknown(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    acs.ensure_rtts(realm, 0, 3)
    data = acs.delegated()
    for bad in [*bad_granules(acs), acs.ns_granule()]:
        acs.fails(INPUT, RmiFid.DATA_CREATE_UNKNOWN, realm.rd, bad, 0)
    acs.fails(INPUT, RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, 1 << 39)
    acs.fails(RTT, RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, L1, index=1)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)  # any realm state
    acs.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, 0)
    assert acs.read_entry(realm, 0, 3)[1:] == (RttEntryState.ASSIGNED, data, 0)  # RIPAS unchanged: EMPTY


def test_cmd_rtt_map_unprotected(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    ipa = 1 << 39
    acs.ensure_rtts(realm, ipa, 3)
    desc = acs.ns_granule() | (0b11 << 6) | (0b0101 << 2)
    acs.fails(INPUT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 0, desc)  # level 0: no blocks
    acs.fails(INPUT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa + MISALIGNED, 3, desc)
    acs.fails(INPUT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, 0, 3, desc)  # protected
    acs.fails(INPUT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc & ~(0b0001 << 2))  # MemAttr 0b0100: reserved
    acs.fails(INPUT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc | 1)  # not OA/MemAttr/S2AP
    acs.fails(RTT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa + L1, 3, desc, index=1)
    acs.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc)
    acs.fails(RTT, RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc, index=3)
    assert acs.read_entry(realm, ipa, 3)[1:3] == (RttEntryState.ASSIGNED, desc)


def test_cmd_rec_create(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rec, params, values = acs.prepare_rec(realm)
    for bad in bad_granules(acs):
        acs.fails(INPUT, RmiFid.REC_CREATE, realm.rd, rec, bad)  # params
        acs.fails(INPUT, RmiFid.REC_CREATE, realm.rd, bad, params)  # rec
    acs.fails(INPUT, RmiFid.REC_CREATE, acs.delegated(), rec, params)  # rd
    for field, value in (("mpidr", 1), ("num_rec_aux", REC_AUX_COUNT - 1), ("aux", [rec] * 16)):
        acs.fails(INPUT, RmiFid.REC_CREATE, realm.rd, rec, acs.rec_params_page({**values, field: value}))
    acs.ok(RmiFid.REC_CREATE, realm.rd, rec, params)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec2, params2, _ = acs.prepare_rec(realm)
    acs.fails(REALM, RmiFid.REC_CREATE, realm.rd, rec2, params2)


def test_cmd_rec_enter(acs: AcsEnv) -> None:
    realm = acs.default_realm()
    rec = acs.create_rec(realm)
    new_realm_status = acs.smc(RmiFid.REC_ENTER, rec.rec, rec.run)
    for bad in bad_granules(acs):
        acs.fails(INPUT, RmiFid.REC_ENTER, rec.rec, bad)  # run, before the REC or realm state
        acs.fails(INPUT, RmiFid.REC_ENTER, bad, rec.run)
    acs.fails(INPUT, RmiFid.REC_ENTER, rec.rec, realm.rd)  # run in the Realm PAS
    acs.fails(INPUT, RmiFid.REC_ENTER, realm.rd, rec.run)  # not a REC
    assert_status(new_realm_status, REALM, 0)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.push([PSCI_SYSTEM_OFF])
    _, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    acs.fails(REALM, RmiFid.REC_ENTER, rec.rec, rec.run, index=1)  # SYSTEM_OFF


def test_cmd_rsi_features(acs: AcsEnv) -> None:
    realm = acs.default_realm()
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.push([RsiFid.FEATURES, 0], [RsiFid.FEATURES, 1])
    acs.enter(rec)
    assert [r.out[:2] for r in rec.engine.log[:2] if r.out] == [[0, 0], [0, 0]]


def test_cmd_rmi_features(acs: AcsEnv) -> None:
    feat = acs.ok(RmiFid.FEATURES, 0)[1]
    assert feat_reg0_get(feat, "S2SZ") == 48
    assert feat_reg0_get(feat, "PMU_EN") == 0 and feat_reg0_get(feat, "PMU_NUM_CTRS") == 0  # no PMU
    assert feat_reg0_get(feat, "HASH_SHA_256") == feat_reg0_get(feat, "HASH_SHA_512") == 1
    assert acs.ok(RmiFid.FEATURES, 1)[1] == 0


def test_cmd_rec_aux_count(acs: AcsEnv) -> None:
    for bad in [*bad_granules(acs), acs.delegated()]:
        acs.fails(INPUT, RmiFid.REC_AUX_COUNT, bad)
    assert acs.ok(RmiFid.REC_AUX_COUNT, acs.host_realm().rd)[1] == REC_AUX_COUNT


def test_cmd_data_destroy(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    acs.ensure_rtts(realm, 0, 3)
    data = acs.data_create(realm, 0, b"x")
    acs.fails(INPUT, RmiFid.DATA_DESTROY, acs.delegated(), 0)
    acs.fails(INPUT, RmiFid.DATA_DESTROY, realm.rd, MISALIGNED)
    acs.fails(INPUT, RmiFid.DATA_DESTROY, realm.rd, 1 << 39)
    out = acs.fails(RTT, RmiFid.DATA_DESTROY, realm.rd, L1, index=1)
    assert out[1] == 0 and out[2] > L1  # X2 = top; X1 zero
    out = acs.fails(RTT, RmiFid.DATA_DESTROY, realm.rd, L3, index=3)
    out = acs.ok(RmiFid.DATA_DESTROY, realm.rd, 0)
    assert out[1] == data and acs.state(data) == GranuleState.DELEGATED
    assert acs.read_entry(realm, 0, 3)[1:] == (RttEntryState.UNASSIGNED, 0, 2)  # RIPAS DESTROYED


def test_cmd_realm_destroy(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rec = acs.create_rec(realm)
    for bad in [*bad_granules(acs), acs.delegated()]:
        acs.fails(INPUT, RmiFid.REALM_DESTROY, bad)
    acs.fails(REALM, RmiFid.REALM_DESTROY, realm.rd)  # a REC is alive
    acs.ok(RmiFid.REC_DESTROY, rec.rec)
    rtts = acs.ensure_rtts(realm, 0, 1)
    acs.fails(REALM, RmiFid.REALM_DESTROY, realm.rd)  # a live RTT
    acs.ok(RmiFid.RTT_DESTROY, realm.rd, 0, 1)
    acs.ok(RmiFid.REALM_DESTROY, realm.rd)
    assert [acs.state(g) for g in (realm.rd, *realm.roots, *rtts)] == [GranuleState.DELEGATED] * 3


def test_cmd_rec_destroy(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rec = acs.create_rec(realm)
    for bad in [*bad_granules(acs), acs.delegated(), realm.rd]:
        acs.fails(INPUT, RmiFid.REC_DESTROY, bad)
    acs.ok(RmiFid.REC_DESTROY, rec.rec)
    assert all(acs.state(g) == GranuleState.DELEGATED for g in (rec.rec, *rec.aux))


def test_cmd_rtt_destroy(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rtt1, rtt2, rtt3 = acs.ensure_rtts(realm, 0, 3)
    acs.data_create(realm, 0)
    acs.fails(INPUT, RmiFid.RTT_DESTROY, acs.delegated(), 0, 3)
    acs.fails(INPUT, RmiFid.RTT_DESTROY, realm.rd, 0, 0)  # the root cannot go
    acs.fails(INPUT, RmiFid.RTT_DESTROY, realm.rd, L3, 3)  # not aligned to level 2
    out = acs.fails(RTT, RmiFid.RTT_DESTROY, realm.rd, 0, 3, index=3)  # live entries
    assert out[1] == 0
    acs.fails(RTT, RmiFid.RTT_DESTROY, realm.rd, L1, 2, index=1)  # no such table
    acs.ok(RmiFid.DATA_DESTROY, realm.rd, 0)
    out = acs.ok(RmiFid.RTT_DESTROY, realm.rd, 0, 3)
    assert out[1] == rtt3 and acs.state(rtt3) == GranuleState.DELEGATED
    assert acs.read_entry(realm, 0, 2)[1:] == (RttEntryState.UNASSIGNED, 0, 2)  # DESTROYED
    assert rtt1 and rtt2


def test_cmd_rtt_unmap_unprotected(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    ipa = 1 << 39
    acs.ensure_rtts(realm, ipa, 3)
    acs.fails(INPUT, RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, 0, 3)  # protected
    acs.fails(INPUT, RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 0)
    out = acs.fails(RTT, RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 3, index=3)  # not mapped
    assert out[1] > ipa  # X1 = top
    acs.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, acs.ns_granule())
    acs.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 3)
    assert acs.read_entry(realm, ipa, 3)[1] == RttEntryState.UNASSIGNED


def _psci_realm(acs: AcsEnv, recs: int = 1):  # type: ignore[no-untyped-def]
    realm = acs.default_realm()
    handles = [acs.create_rec(realm, runnable=i == 0) for i in range(recs)]
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return realm, handles


def _calls(acs: AcsEnv, rec, *calls: list[int]) -> tuple[list[list[int]], dict]:  # type: ignore[no-untyped-def,type-arg]
    start = len(rec.engine.log)
    rec.engine.push(*calls)
    _, run = acs.enter(rec)
    return [r.out for r in rec.engine.log[start : start + len(calls)] if r.out is not None], run


def test_cmd_psci_version(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, _ = _calls(acs, rec, [PSCI_VERSION], [PSCI_VERSION])
    assert outs[0][0] == 0x1_0001  # PSCI 1.1


def test_cmd_psci_features(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    asked = [PSCI_CPU_SUSPEND, PSCI_CPU_OFF, PSCI_CPU_ON, PSCI_AFFINITY_INFO, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET,
             PSCI_FEATURES, 0x8000_0000, 0x8400_0005, 0xC400_0012]
    outs, _ = _calls(acs, rec, *([PSCI_FEATURES, f] for f in asked), [PSCI_VERSION])
    assert [o[0] for o in outs[: len(asked)]] == [0] * 8 + [(1 << 64) - 1] * 2


def _power_call(acs: AcsEnv, fid: int) -> dict:  # type: ignore[type-arg]
    _, (rec,) = _psci_realm(acs)
    rec.engine.push([fid, 0x11, 0x22, 0x33])
    _, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert list(run["exit_gprs"][:4]) == [fid, 0x11, 0x22, 0x33]
    out = acs.smc(RmiFid.REC_ENTER, rec.rec, rec.run)
    return {"rec": rec, "out": out}


def test_cmd_cpu_off(acs: AcsEnv) -> None:
    assert_status(_power_call(acs, PSCI_CPU_OFF)["out"], REC)  # the REC is no longer runnable


def test_cmd_cpu_suspend(acs: AcsEnv) -> None:
    result = _power_call(acs, PSCI_CPU_SUSPEND)
    assert_status(result["out"], RmiStatus.SUCCESS)
    assert result["rec"].engine.log[0].out[0] == 0  # PSCI_SUCCESS on resume


def test_cmd_system_off(acs: AcsEnv) -> None:
    assert_status(_power_call(acs, PSCI_SYSTEM_OFF)["out"], REALM, 1)


def test_cmd_system_reset(acs: AcsEnv) -> None:
    assert_status(_power_call(acs, PSCI_SYSTEM_RESET)["out"], REALM, 1)


def test_cmd_measurement_read(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.MEASUREMENT_READ, 0], [RsiFid.MEASUREMENT_READ, 1],
                     [RsiFid.MEASUREMENT_READ, 5])
    assert outs[0][0] == 0 and any(outs[0][1:9])  # the RIM
    assert outs[1][:9] == [0] * 9  # REM 1 starts at zero
    assert outs[2][0] == 1  # ERROR_INPUT


def test_cmd_measurement_extend(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.MEASUREMENT_EXTEND, 0, 8, 1], [RsiFid.MEASUREMENT_EXTEND, 5, 8, 1],
                     [RsiFid.MEASUREMENT_EXTEND, 1, 65, 1], [RsiFid.MEASUREMENT_EXTEND, 1, 8, 1],
                     [RsiFid.MEASUREMENT_READ, 1])
    assert [o[0] for o in outs[:4]] == [1, 1, 1, 0]
    assert any(outs[4][1:9])


def test_cmd_attestation_token_init(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.ATTESTATION_TOKEN_CONTINUE, 0, 0, 0x1000],
                     [RsiFid.ATTESTATION_TOKEN_INIT, *range(1, 9)])
    assert outs[0][0] == 2  # ERROR_STATE: no token in progress
    assert outs[1][0] == 0 and outs[1][1] > 0  # an upper bound of the token size


def test_cmd_attestation_token_continue(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.ATTESTATION_TOKEN_INIT, *range(1, 9)],
                     [RsiFid.ATTESTATION_TOKEN_CONTINUE, MISALIGNED, 0, 0x1000],
                     [RsiFid.ATTESTATION_TOKEN_CONTINUE, 0, 0x1000, 1],
                     [RsiFid.ATTESTATION_TOKEN_CONTINUE, 1 << 31, 0, 0x1000])
    assert [o[0] for o in outs[1:4]] == [1, 1, 1]  # misaligned, offset past the granule, unprotected


def test_cmd_host_call(acs: AcsEnv) -> None:
    _, (rec,) = _psci_realm(acs)
    outs, run = _calls(acs, rec, [RsiFid.HOST_CALL, 0x100 + 8], [RsiFid.HOST_CALL, 1 << 31])
    assert [o[0] for o in outs] == [1, 1]  # misaligned; outside the PAR
    assert run["exit_reason"] == RmiRecExitReason.PSCI  # no host call exit happened


def test_cmd_affinity_info(acs: AcsEnv) -> None:
    _realm, (rec0, rec1) = _psci_realm(acs, 2)
    outs, run = _calls(acs, rec0, [PSCI_AFFINITY_INFO, 7, 0], [PSCI_AFFINITY_INFO, rec1.mpidr, 1],
                       [PSCI_AFFINITY_INFO, rec1.mpidr, 0])
    assert [o[0] for o in outs[:2]] == [(1 << 64) - 2] * 2  # INVALID_PARAMETERS
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    acs.ok(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)
    acs.enter(rec0)
    assert rec0.engine.log[2].out is not None and rec0.engine.log[2].out[0] == 1  # OFF


def test_cmd_cpu_on(acs: AcsEnv) -> None:
    _realm, (rec0, rec1) = _psci_realm(acs, 2)
    outs, run = _calls(acs, rec0, [PSCI_CPU_ON, rec1.mpidr, 1 << 31, 0], [PSCI_CPU_ON, rec0.mpidr, 0x1000, 0],
                       [PSCI_CPU_ON, rec1.mpidr, 0x1000, 0x77])
    assert [o[0] for o in outs[:2]] == [(1 << 64) - 9, (1 << 64) - 4]  # INVALID_ADDRESS, ALREADY_ON
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    acs.fails(REC, RmiFid.REC_ENTER, rec0.rec, rec0.run)  # PSCI pending
    acs.ok(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)
    acs.enter(rec0)
    assert rec0.engine.log[2].out is not None and rec0.engine.log[2].out[0] == 0
    assert rec1.engine.resets[-1] == (0x1000, [0x77])


def test_cmd_psci_complete(acs: AcsEnv) -> None:
    realm, (rec0, rec1) = _psci_realm(acs, 2)
    acs.fails(INPUT, RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)  # no request pending
    rec0.engine.push([PSCI_CPU_ON, rec1.mpidr, 0x1000, 0])
    acs.enter(rec0)
    acs.fails(INPUT, RmiFid.PSCI_COMPLETE, realm.rd, rec1.rec, 0)
    acs.fails(INPUT, RmiFid.PSCI_COMPLETE, rec0.rec, rec0.rec, 0)  # not the target
    acs.fails(INPUT, RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 5)  # not SUCCESS or DENIED
    acs.ok(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)


def test_cmd_rtt_set_ripas(acs: AcsEnv) -> None:
    realm = acs.default_realm()
    acs.ensure_rtts(realm, 0, 3)
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    acs.fails(INPUT, RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, 0, L3)  # no request
    rec.engine.push([RsiFid.IPA_STATE_SET, 0, 2 * L3, 1, 0])
    acs.enter(rec)
    acs.fails(INPUT, RmiFid.RTT_SET_RIPAS, acs.delegated(), rec.rec, 0, L3)
    acs.fails(INPUT, RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, L3, 2 * L3)  # not the request's base
    acs.fails(INPUT, RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, 0, 3 * L3)  # beyond its top
    assert acs.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, 0, 2 * L3)[1] == 2 * L3
    assert acs.read_entry(realm, L3, 3)[3] == 1


def test_cmd_rtt_fold(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    rtt = acs.ensure_rtts(realm, 0, 3)[-1]
    acs.data_create(realm, 0)
    acs.fails(INPUT, RmiFid.RTT_FOLD, realm.rd, 0, 0)
    acs.fails(RTT, RmiFid.RTT_FOLD, realm.rd, 0, 3, index=3)  # not homogeneous
    acs.ok(RmiFid.DATA_DESTROY, realm.rd, 0)
    acs.fails(RTT, RmiFid.RTT_FOLD, realm.rd, 0, 3, index=3)  # one DESTROYED among EMPTY entries
    other = acs.ensure_rtts(realm, L2, 3)[-1]
    assert acs.ok(RmiFid.RTT_FOLD, realm.rd, L2, 3)[1] == other
    assert acs.state(other) == GranuleState.DELEGATED and rtt


def test_cmd_multithread_realm_mp(acs: AcsEnv) -> None:
    """The ACS's MP flow: REC 0 starts REC 1 with CPU_ON; the host completes it and a second
    host CPU (a thread here) enters REC 1, which runs to CPU_OFF, while the first waits; then
    REC 0 resumes to its host call. While REC 1 is inside REC_ENTER on the other CPU, REC 0
    cannot run there and PSCI_COMPLETE has nothing pending."""
    realm = acs.default_realm()
    acs.ensure_rtts(realm, 0x20_0000, 3)
    acs.data_create(realm, 0x20_0000)  # the RsiHostCall of REC 0's return to the host
    rec0, rec1 = (acs.create_rec(realm, runnable=i == 0) for i in range(2))
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec0.engine.push([PSCI_CPU_ON, rec1.mpidr, 0x2000, 0], [RsiFid.HOST_CALL, 0x20_0000])
    _, run = acs.enter(rec0)
    assert run["exit_reason"] == RmiRecExitReason.PSCI and run["exit_gprs"][0] == PSCI_CPU_ON
    acs.ok(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)
    inside: list[list[int]] = []
    secondary_exit: list[dict] = []  # type: ignore[type-arg]

    run_rec1 = rec1.engine.run

    def while_rec1_runs():  # type: ignore[no-untyped-def]
        if not inside:  # the first CPU's view while REC 1 runs on the second
            inside.append(acs.smc(RmiFid.REC_ENTER, rec1.rec, rec1.run))
            inside.append(acs.smc(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0))
        return run_rec1()

    rec1.engine.run = while_rec1_runs  # type: ignore[method-assign]
    rec1.engine.push([PSCI_CPU_OFF])
    secondary = threading.Thread(target=lambda: secondary_exit.append(acs.enter(rec1)[1]))
    secondary.start()
    secondary.join(timeout=60)
    assert not secondary.is_alive() and secondary_exit
    assert secondary_exit[0]["exit_reason"] == RmiRecExitReason.PSCI
    assert secondary_exit[0]["exit_gprs"][0] == PSCI_CPU_OFF
    assert_status(inside[0], RmiStatus.ERROR_REC)
    assert_status(inside[1], RmiStatus.ERROR_INPUT)
    _, run = acs.enter(rec0)
    assert run["exit_reason"] == RmiRecExitReason.HOST_CALL


def test_cmd_multithread_realm_up(acs: AcsEnv) -> None:
    """Several RECs of one realm entered in turn from one CPU."""
    _realm, (rec0, rec1) = _psci_realm(acs, 2)
    rec0.engine.push([PSCI_CPU_ON, rec1.mpidr, 0x2000, 0])
    acs.enter(rec0)
    acs.ok(RmiFid.PSCI_COMPLETE, rec0.rec, rec1.rec, 0)
    rec1.engine.push([RsiFid.VERSION, RSI_ABI_VERSION], [PSCI_CPU_OFF])
    _, run = acs.enter(rec1)
    assert run["exit_reason"] == RmiRecExitReason.PSCI and rec1.engine.log[0].out[0] == 0


def test_cmd_secure_test(acs: AcsEnv) -> None:
    """A Secure-PAS granule: the host cannot delegate it, the RMM cannot use it for anything."""
    pa = acs.secure_granule()
    acs.fails(INPUT, RmiFid.GRANULE_DELEGATE, pa)
    acs.fails(INPUT, RmiFid.GRANULE_UNDELEGATE, pa)
    realm = acs.host_realm()
    acs.ensure_rtts(realm, 0, 3)
    acs.fails(INPUT, RmiFid.DATA_CREATE, realm.rd, acs.delegated(), 0, pa, 0)
    acs.fails(INPUT, RmiFid.REALM_CREATE, acs.delegated(), pa)


def _rsi_realm(acs: AcsEnv):  # type: ignore[no-untyped-def]
    realm = acs.default_realm()
    acs.ensure_rtts(realm, 0x10_0000, 3)
    acs.data_create(realm, 0x10_0000)
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return realm, rec


def test_cmd_realm_config(acs: AcsEnv) -> None:
    realm, rec = _rsi_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.REALM_CONFIG, 0x10_0000 + 8], [RsiFid.REALM_CONFIG, 1 << 31],
                     [RsiFid.REALM_CONFIG, 0x20_0000], [RsiFid.REALM_CONFIG, 0x10_0000])
    assert [o[0] for o in outs] == [1, 1, 1, 0]  # misaligned, unprotected, RIPAS EMPTY; then SUCCESS
    data = acs.rmm.stage2_translate(acs.realm(realm), 0x10_0000)
    assert data is not None and acs.realm_mem.read_u64(data.pa) == 32  # ipa_width


def test_cmd_ipa_state_get(acs: AcsEnv) -> None:
    _, rec = _rsi_realm(acs)
    outs, _ = _calls(acs, rec, [RsiFid.IPA_STATE_GET, 0x10_0000 + 8, 0x10_1000],
                     [RsiFid.IPA_STATE_GET, 0x10_1000, 0x10_1000], [RsiFid.IPA_STATE_GET, 1 << 31, (1 << 31) + L3],
                     [RsiFid.IPA_STATE_GET, 0x10_0000, 0x10_2000])
    assert [o[0] for o in outs] == [1, 1, 1, 0]
    assert outs[3][1:3] == [0x10_1000, 1]  # RAM up to where EMPTY begins


def test_cmd_ipa_state_set(acs: AcsEnv) -> None:
    _, rec = _rsi_realm(acs)
    outs, run = _calls(acs, rec, [RsiFid.IPA_STATE_SET, 0, L3, 2, 0], [RsiFid.IPA_STATE_SET, 8, L3, 1, 0],
                       [RsiFid.IPA_STATE_SET, L3, L3, 1, 0], [RsiFid.IPA_STATE_SET, 0, (1 << 31) + L3, 1, 0],
                       [RsiFid.IPA_STATE_SET, 0, 2 * L3, 1, 0])
    assert [o[0] for o in outs[:4]] == [1, 1, 1, 1]  # bad RIPAS, misaligned, empty range, beyond the PAR
    assert run["exit_reason"] == RmiRecExitReason.RIPAS_CHANGE
    assert (run["exit_ripas_base"], run["exit_ripas_top"], run["exit_ripas_value"]) == (0, 2 * L3, 1)
