"""DATA_CREATE's and GRANULE_DELEGATE's short paths: the order in which their checks fail, the
RTT walk that reuses the level-3 table it found last, and the host's populate against an
independent prediction of the RIM.

A check moved, a stale table or a measurement taken before a failing check would each
show here as a wrong status, a write into a granule that is no longer an RTT, or a RIM
that is not the predicted one."""

from __future__ import annotations

import hashlib
import struct

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import GranuleState, RmiFid, RmiRipas, RmiStatus, RttEntryState
from unirealm.host.kvm import RealmConfig, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm

from .conftest import L2, L3, Env, RealmHandle, assert_status

ASSIGNED, UNASSIGNED = RttEntryState.ASSIGNED, RttEntryState.UNASSIGNED
IPA = 4 * L2
ZERO = bytes(GRANULE_SIZE)


def rim(env: Env, realm: RealmHandle) -> bytes:
    return env.realm(realm).measurements[0]


def level3_realm(env: Env) -> RealmHandle:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    return realm


# --- the order of the checks ------------------------------------------------------------
def test_data_create_checks_fail_in_tf_rmm_order_and_change_nothing(env: Env) -> None:
    """Flags and src come before data, data before rd, rd before the realm's state, the
    state before the IPA, the IPA before the walk; no failure measures or copies anything."""
    realm = level3_realm(env)
    data, src = env.delegated(), env.ns_page(b"content")
    not_ns, before = env.delegated(), rim(env, realm)
    cases = [
        # (rd, data, ipa, src, flags) -> status, index
        ((realm.rd, data, IPA, src, 2), RmiStatus.ERROR_INPUT, 0),  # bad flags, all else fine
        ((realm.rd, data, IPA + 8, not_ns, 1), RmiStatus.ERROR_INPUT, 0),  # src before the IPA
        ((env.ns_granule(), data, IPA, not_ns, 1), RmiStatus.ERROR_INPUT, 0),  # src before rd
        ((realm.rd, data, 1 << 45, src, 1), RmiStatus.ERROR_INPUT, 0),  # the IPA outside the PAR
        ((realm.rd, data, IPA + L2, src, 1), RmiStatus.ERROR_RTT, 2),  # no level-3 table there
    ]
    for args, status, index in cases:
        assert_status(env.smc(RmiFid.DATA_CREATE, *args), status, index)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    active = [
        ((realm.rd, data, IPA + 8, src, 1), RmiStatus.ERROR_REALM, 0),  # the state before the IPA
        ((realm.rd, data, IPA + L2, src, 1), RmiStatus.ERROR_REALM, 0),  # and before the walk
        ((realm.rd, data, IPA, not_ns, 1), RmiStatus.ERROR_INPUT, 0),  # src before the state
        ((realm.rd, env.ns_granule(), IPA, src, 1), RmiStatus.ERROR_INPUT, 0),  # data before the state
        ((data, data, IPA, src, 1), RmiStatus.ERROR_INPUT, 0),  # rd before the state
    ]
    for args, status, index in active:
        assert_status(env.smc(RmiFid.DATA_CREATE, *args), status, index)
    assert env.state(data) == GranuleState.DELEGATED
    assert env.realm_mem.read(data, GRANULE_SIZE) == ZERO
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RmiRipas.EMPTY)
    assert rim(env, realm) == before


def test_data_create_unknown_skips_src_and_state_checks(env: Env) -> None:
    realm = level3_realm(env)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    data = env.delegated()
    assert_status(env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA + 8), RmiStatus.ERROR_INPUT)
    before = rim(env, realm)
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, RmiRipas.EMPTY)
    assert rim(env, realm) == before  # not measured


def test_delegate_of_a_delegated_or_misaligned_granule_changes_nothing(env: Env) -> None:
    pa = env.ns_page(b"host data")
    env.ok(RmiFid.GRANULE_DELEGATE, pa)
    env.realm_mem.write(pa, b"realm")  # a DELEGATED granule the RMM would never scrub again
    for bad in (pa, pa + 8, env.m.memory.top, -GRANULE_SIZE):
        assert_status(env.smc(RmiFid.GRANULE_DELEGATE, bad), RmiStatus.ERROR_INPUT)
    assert env.realm_mem.read(pa, 5) == b"realm"
    assert env.state(pa) == GranuleState.DELEGATED


# --- the walk's level-3 table, kept across calls ------------------------------------------
def test_data_create_after_the_level3_rtt_is_destroyed_and_replaced(env: Env) -> None:
    """The RMM keeps the level-3 RTT its last walk reached; destroying that RTT and making
    another in its place must send the next DATA_CREATE to the new one."""
    realm = level3_realm(env)
    old_rtt = env.ok(RmiFid.RTT_READ_ENTRY, realm.rd, IPA, 2)[3]  # the level-2 entry's table
    env.data_create(realm, IPA, b"first")
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)[1] == old_rtt
    assert env.state(old_rtt) == GranuleState.DELEGATED
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, env.delegated(), IPA, env.ns_page(b"x"), 1),
                  RmiStatus.ERROR_RTT, 2)
    new_rtt = env.create_rtt(realm, IPA, 3)
    data = env.data_create(realm, IPA + L3, b"second")
    assert env.realm_mem.read(old_rtt, GRANULE_SIZE) == ZERO  # a DELEGATED granule holds zeros
    (entry,) = struct.unpack_from("<Q", env.realm_mem.read(new_rtt + 8, 8))
    assert entry & ~0xFFF & ((1 << 48) - 1) == data
    assert env.read_entry(realm, IPA + L3, 3) == (3, ASSIGNED, data, RmiRipas.RAM)


def test_data_create_after_the_level3_rtt_is_folded(env: Env) -> None:
    realm = level3_realm(env)
    rtt = env.ok(RmiFid.RTT_READ_ENTRY, realm.rd, IPA, 2)[3]
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RmiRipas.EMPTY)  # a walk that reached it
    assert env.ok(RmiFid.RTT_FOLD, realm.rd, IPA, 3)[1] == rtt
    data, src = env.delegated(), env.ns_page(b"x")
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_RTT, 2)
    assert env.realm_mem.read(rtt, GRANULE_SIZE) == ZERO
    assert env.read_entry(realm, IPA, 3) == (2, UNASSIGNED, 0, RmiRipas.EMPTY)


def test_level3_rtts_of_two_realms_stay_apart(env: Env) -> None:
    first, second = level3_realm(env), level3_realm(env)
    a = env.data_create(first, IPA, b"a")
    b = env.data_create(second, IPA + L3, b"b")
    assert env.read_entry(first, IPA + L3, 3)[1] == UNASSIGNED
    assert env.read_entry(second, IPA, 3)[1] == UNASSIGNED
    assert env.read_entry(first, IPA, 3)[2] == a and env.read_entry(second, IPA + L3, 3)[2] == b


# --- the monitor's registers ------------------------------------------------------------
@pytest.mark.parametrize("extra", [1 << 64, -(1 << 64)])
def test_host_registers_are_64_bit(env: Env, extra: int) -> None:
    """A value beyond 64 bits reaches the RMM as its low 64 bits, as a register holds it."""
    pa = env.ns_page(b"x")
    out = env.m.host_smc(RmiFid.GRANULE_DELEGATE + extra, pa + extra)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(pa) == GranuleState.DELEGATED
    assert_status(env.m.host_smc(RmiFid.GRANULE_DELEGATE, -1), RmiStatus.ERROR_INPUT)


# --- the host's populate against a prediction of the RIM ----------------------------------
def predicted_rim(start: bytes, ipa: int, content: bytes) -> bytes:
    """SHA-256 RIM after measured DATA_CREATEs of `content` (zero-padded) from `ipa`, from the
    DataDescriptor layout (digest §4.2) with struct and hashlib alone."""
    value = start[:32]
    padded = content.ljust(-(-len(content) // GRANULE_SIZE) * GRANULE_SIZE, b"\0")
    for off in range(0, len(padded), GRANULE_SIZE):
        content_hash = hashlib.sha256(padded[off : off + GRANULE_SIZE]).digest()
        desc = struct.pack("<QQ64sQQ64s", 0, 0x100, value, ipa + off, 1, content_hash).ljust(0x100, b"\0")
        value = hashlib.sha256(desc).digest()
    return value.ljust(64, b"\0")


def test_populate_rim_equals_the_prediction() -> None:
    machine = Machine(dram_size=64 << 20)
    rmm = Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    start = rmm.realms[vm.rd].measurements[0]
    image = bytes(range(256)) * 40 + b"tail"  # two full granules and a part
    vm.populate(0x8000_0000 + 2 * L2 - GRANULE_SIZE, image)  # across a 2 MiB boundary: two level-3 RTTs
    assert rmm.realms[vm.rd].measurements[0] == predicted_rim(start, 0x8000_0000 + 2 * L2 - GRANULE_SIZE, image)
    last = vm.data[0x8000_0000 + 2 * L2 + GRANULE_SIZE]
    assert rmm.mem.read(last, GRANULE_SIZE) == image[2 * GRANULE_SIZE :].ljust(GRANULE_SIZE, b"\0")
