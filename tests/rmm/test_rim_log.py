"""The measurement functions the relying party shares with the RMM (rmm/measurement.py):
RimLog, which predicts a launch's RIM offline step by step, and the extension functions
themselves, each against the independent model of tests/rmm/test_rmi_rim.py (the
descriptor layouts of digest §4.2/§4.3 packed with struct and hashed with hashlib) and
against the RIM the RMM computes for the same build through RMI."""

from __future__ import annotations

import hashlib
import struct

import pytest

from unirealm.arch.rmi import RmiFid
from unirealm.rmm import measurement

from .conftest import L2, L3, Env
from .test_rmi_rim import Rim, slot

PARAMS = {"flags": 0, "s2sz": 40, "sve_vl": 0, "num_bps": 1, "num_wps": 1, "pmu_num_ctrs": 0}
KERNEL = bytes(range(256)) * 16
GPRS = [0x4800_0000, 1, 2, 3, 4, 5, 6, 0x77]


def realm_params(algo: int, **overrides: object) -> dict[str, object]:
    # Unmeasured fields ride along as a launch description would carry them.
    return {**PARAMS, "hash_algo": algo, "rpv": b"\x5a" * 64, "vmid": 9, "rtt_level_start": 1,
            "rtt_num_start": 2, **overrides}


@pytest.mark.parametrize("algo", [0, 1])
def test_rim_log_follows_the_model_step_by_step(algo: int) -> None:
    log = measurement.RimLog.for_realm(realm_params(algo))
    model = Rim(algo)
    assert log.algo == algo
    assert log.rim == model.slot and len(log.rim) == 64
    assert [e.kind for e in log.events] == ["realm"]
    assert log.events[0].rim == model.slot
    assert log.events[0].detail == {**PARAMS, "hash_algo": algo}  # the measured params only

    log.ripas(0, L3)
    model.ripas(0, L3, L3)
    assert log.rim == model.slot
    log.data(0, 1, KERNEL)
    model.data(0, KERNEL)
    assert log.rim == model.slot
    log.data(L3, 0, b"not measured")
    model.data(L3, None)
    assert log.rim == model.slot
    log.rec(1, 0x8_0000, GPRS)
    model.rec(1, 0x8_0000, GPRS)
    assert log.rim == model.slot

    assert [e.kind for e in log.events] == ["realm", "ripas", "data", "data", "rec"]
    assert log.events[1].detail == {"base": 0, "top": L3}
    assert log.events[2].detail == {"ipa": 0, "flags": 1}
    assert log.events[3].detail == {"ipa": L3, "flags": 0}
    assert log.events[4].detail == {"flags": 1, "pc": 0x8_0000, "gprs": GPRS}
    assert log.events[4].detail["gprs"] is not GPRS  # a copy: the caller's list may change
    # Each event keeps the RIM after its own step.
    assert len({e.rim for e in log.events}) == 5
    assert log.events[-1].rim == log.rim
    assert log.digest == model.value
    assert len(log.digest) == (32 if algo == 0 else 64)
    if algo == 0:
        assert log.rim[32:] == bytes(32)


@pytest.mark.parametrize("algo", [0, 1])
def test_rim_log_predicts_the_rmms_rim(env: Env, algo: int) -> None:
    """The same build through RMI and through RimLog gives the same RIM."""
    realm = env.create_realm(40, hash_algo=algo)
    log = measurement.RimLog.for_realm(realm_params(algo))
    assert env.realm(realm).rim == log.rim
    env.create_rtt(realm, 0, 2)
    env.create_rtt(realm, 0, 3)
    env.init_ripas(realm, 0, 4 * L3)
    for addr in range(0, 4 * L3, L3):
        log.ripas(addr, addr + L3)
    env.init_ripas(realm, L2, 2 * L2)
    log.ripas(L2, 2 * L2)
    env.data_create(realm, 0, KERNEL, measured=True)
    log.data(0, 1, KERNEL)
    env.data_create(realm, L3, b"initrd", measured=False)
    log.data(L3, 0, None)
    env.create_rec(realm, runnable=True, pc=0x1000, gprs=GPRS)
    log.rec(1, 0x1000, GPRS)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    assert env.realm(realm).rim == log.rim


def test_unmeasured_realm_params_do_not_reach_the_log() -> None:
    a = measurement.RimLog.for_realm(realm_params(0))
    b = measurement.RimLog.for_realm(realm_params(0, rpv=bytes(64), vmid=1, rtt_level_start=0, rtt_num_start=1))
    assert a.rim == b.rim
    for field, value in (("flags", 2), ("s2sz", 39), ("num_bps", 2), ("num_wps", 3), ("sve_vl", 1),
                         ("pmu_num_ctrs", 4)):
        changed = measurement.RimLog.for_realm(realm_params(0, **{field: value}))
        assert changed.rim != a.rim, field
        assert changed.rim == Rim(0, **{
            "flags": 2 if field == "flags" else 0, "s2sz": 39 if field == "s2sz" else 40,
            "sve_vl": 1 if field == "sve_vl" else 0, "bps": 2 if field == "num_bps" else 1,
            "wps": 3 if field == "num_wps" else 1, "pmu": 4 if field == "pmu_num_ctrs" else 0}).slot


def test_realm_create_rim_is_the_hash_of_the_params_page() -> None:
    for algo, h in ((0, hashlib.sha256), (1, hashlib.sha512)):
        page = bytearray(4096)
        # flags (8 bytes) @0 stay 0; s2sz @0x08, num_bps @0x18, num_wps @0x20, hash_algo @0x30.
        page[0x08], page[0x18], page[0x20], page[0x30] = 40, 1, 1, algo
        assert measurement.realm_create_rim(realm_params(algo)) == slot(h(bytes(page)).digest())


@pytest.mark.parametrize("algo", [0, 1])
def test_extend_data_descriptor(algo: int) -> None:
    """DATA: H(type 0 | len 0x100 | RIM | ipa | flags | H(content) or zeros), 256 bytes."""
    h = hashlib.sha256 if algo == 0 else hashlib.sha512
    rim = slot(h(b"previous").digest())
    ipa = 0x8765_4000
    measured = measurement.extend_data(rim, algo, ipa, 1, KERNEL)
    desc = struct.pack("<B7xQ64sQQ64s", 0, 0x100, rim, ipa, 1, slot(h(KERNEL).digest())).ljust(256, b"\0")
    assert measured == slot(h(desc).digest())
    # A view of the granule hashes as the bytes do.
    assert measurement.extend_data(rim, algo, ipa, 1, memoryview(bytearray(KERNEL))) == measured
    unmeasured = measurement.extend_data(rim, algo, ipa, 0, KERNEL)
    desc = struct.pack("<B7xQ64sQQ64s", 0, 0x100, rim, ipa, 0, bytes(64)).ljust(256, b"\0")
    assert unmeasured == slot(h(desc).digest())
    # Measured but without content: the content field stays zero, flags say measured.
    empty = measurement.extend_data(rim, algo, ipa, 1, None)
    desc = struct.pack("<B7xQ64sQQ64s", 0, 0x100, rim, ipa, 1, bytes(64)).ljust(256, b"\0")
    assert empty == slot(h(desc).digest())
    # Flags other than MEASURED do not hash the content.
    other = measurement.extend_data(rim, algo, ipa, 3, KERNEL)
    desc = struct.pack("<B7xQ64sQQ64s", 0, 0x100, rim, ipa, 3, bytes(64)).ljust(256, b"\0")
    assert other == slot(h(desc).digest())


@pytest.mark.parametrize("algo", [0, 1])
def test_extend_ripas_and_rec_descriptors(algo: int) -> None:
    h = hashlib.sha256 if algo == 0 else hashlib.sha512
    rim = slot(h(b"rim").digest())
    desc = struct.pack("<B7xQ64sQQ", 2, 0x100, rim, L2, 3 * L2).ljust(256, b"\0")
    assert measurement.extend_ripas(rim, algo, L2, 3 * L2) == slot(h(desc).digest())
    page = bytearray(4096)
    struct.pack_into("<Q", page, 0x000, 1)
    struct.pack_into("<Q", page, 0x200, 0xABC000)
    struct.pack_into("<8Q", page, 0x300, *GPRS)
    params_hash = slot(h(bytes(page)).digest())
    assert measurement.rec_params_hash(algo, 1, 0xABC000, GPRS) == params_hash
    desc = struct.pack("<B7xQ64s64s", 1, 0x100, rim, params_hash).ljust(256, b"\0")
    assert measurement.extend_rec(rim, algo, 1, 0xABC000, GPRS) == slot(h(desc).digest())


@pytest.mark.parametrize("algo", [0, 1])
def test_rem_extend(algo: int) -> None:
    """REM = H(REM[0:hash length] || value): the slot's zero padding is not hashed."""
    h = hashlib.sha256 if algo == 0 else hashlib.sha512
    size = 32 if algo == 0 else 64
    rem = slot(h(b"old").digest())
    value = bytes(range(1, 49))
    assert measurement.rem_extend(rem, algo, value) == slot(h(rem[:size] + value).digest())
    assert measurement.hash_length(algo) == size


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError):
        measurement.hash_length(2)
    with pytest.raises(ValueError):
        measurement.extend_data(bytes(64), 2, 0, 1, b"x")
