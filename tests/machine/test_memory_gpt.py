"""The granule protection table: who may touch which granule, and what delegation does to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.arch.rmi import GranuleState, RmiFid, RmiStatus
from unirealm.arch.smccc import SMCCC_NOT_SUPPORTED, RmmEl3Fid
from unirealm.machine.board import Machine
from unirealm.machine.memory import GranuleProtectionFault, PhysicalMemory
from unirealm.rmm.core import Rmm

DRAM = 16 << 20


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(dram_size=DRAM, data_dir=tmp_path)


@pytest.fixture
def rmm(machine: Machine) -> Rmm:
    return Rmm(machine.monitor)


def granule(machine: Machine, n: int) -> int:
    return machine.memory.base + n * GRANULE_SIZE


# --- the non-secure accessor --------------------------------------------------------------
def test_every_granule_starts_non_secure(machine: Machine) -> None:
    mem = machine.memory
    assert {mem.pas(pa) for pa in mem.granules()} == {Pas.NON_SECURE}
    assert sum(1 for _ in mem.granules()) == DRAM // GRANULE_SIZE


def test_ns_accessor_reads_and_writes_ns_granules(machine: Machine) -> None:
    ns = machine.ns_memory()
    pa = granule(machine, 3)
    assert ns.read(pa, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    ns.write(pa + 16, b"hello")
    ns.write_u64(pa + 64, 0x1122_3344_5566_7788)
    assert ns.read(pa + 16, 5) == b"hello"
    assert ns.read_u64(pa + 64) == 0x1122_3344_5566_7788
    assert ns.read(pa + 64, 8) == bytes.fromhex("8877665544332211")
    # An access that spans two NS granules is fine.
    ns.write(pa + GRANULE_SIZE - 2, b"abcd")
    assert ns.read(pa + GRANULE_SIZE - 2, 4) == b"abcd"
    # The last byte of DRAM is reachable.
    ns.write(machine.memory.top - 1, b"z")
    assert ns.read(machine.memory.top - 1, 1) == b"z"


@pytest.mark.parametrize("pas", [Pas.REALM, Pas.ROOT, Pas.SECURE])
def test_ns_accessor_faults_on_other_pas(machine: Machine, pas: Pas) -> None:
    ns = machine.ns_memory()
    pa = granule(machine, 5)
    ns.write(pa, b"\xaa" * 8)
    machine.memory.set_pas(World.ROOT, pa, pas)
    for offset in (0, 8, GRANULE_SIZE - 1):
        with pytest.raises(GranuleProtectionFault) as info:
            ns.read(pa + offset, 1)
        assert info.value.pa == pa
        assert info.value.world == World.NON_SECURE
        assert info.value.pas == pas
    with pytest.raises(GranuleProtectionFault):
        ns.write(pa, b"\x00")
    with pytest.raises(GranuleProtectionFault):
        ns.write_u64(pa + 8, 1)
    with pytest.raises(GranuleProtectionFault):
        ns.zero(pa, GRANULE_SIZE)
    with pytest.raises(GranuleProtectionFault):
        ns.is_zero(pa, GRANULE_SIZE)
    # The neighbours are untouched and still the host's.
    ns.read(pa - GRANULE_SIZE, GRANULE_SIZE)
    ns.read(pa + GRANULE_SIZE, GRANULE_SIZE)
    # Back to NS: the content is what it was (the GPT changes access, not data).
    machine.memory.set_pas(World.ROOT, pa, Pas.NON_SECURE)
    assert ns.read(pa, 8) == b"\xaa" * 8


def test_ns_access_straddling_into_a_protected_granule_faults_without_writing(machine: Machine) -> None:
    ns = machine.ns_memory()
    pa = granule(machine, 7)
    machine.memory.set_pas(World.ROOT, pa + GRANULE_SIZE, Pas.REALM)
    with pytest.raises(GranuleProtectionFault) as info:
        ns.write(pa + GRANULE_SIZE - 4, b"12345678")
    assert info.value.pa == pa + GRANULE_SIZE
    assert ns.read(pa + GRANULE_SIZE - 4, 4) == bytes(4)  # nothing was written
    with pytest.raises(GranuleProtectionFault):
        ns.read(pa, 2 * GRANULE_SIZE)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(-1, 1), (-GRANULE_SIZE, 8), (DRAM, 1), (DRAM - 4, 8), (DRAM + GRANULE_SIZE, 8), (-(1 << 40), 8)],
)
def test_accesses_outside_dram_fault(machine: Machine, offset: int, size: int) -> None:
    pa = machine.memory.base + offset
    for world in World:
        acc = machine.memory.accessor(world)
        with pytest.raises(GranuleProtectionFault) as info:
            acc.read(pa, size)
        assert info.value.pas is None
        assert info.value.world == world
        with pytest.raises(GranuleProtectionFault):
            acc.write(pa, bytes(size))


def test_pas_lookup_outside_dram_faults(machine: Machine) -> None:
    with pytest.raises(GranuleProtectionFault):
        machine.memory.pas(machine.memory.top)
    with pytest.raises(GranuleProtectionFault):
        machine.memory.pas(machine.memory.base - 1)


# --- the other worlds ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("world", "allowed"),
    [
        (World.NON_SECURE, {Pas.NON_SECURE}),
        (World.REALM, {Pas.REALM, Pas.NON_SECURE}),
        (World.SECURE, {Pas.SECURE, Pas.NON_SECURE}),
        (World.ROOT, set(Pas)),
    ],
)
def test_world_reaches_exactly_its_pas_set(machine: Machine, world: World, allowed: set[Pas]) -> None:
    acc = machine.memory.accessor(world)
    for n, pas in enumerate(Pas):
        pa = granule(machine, 20 + n)
        machine.memory.set_pas(World.ROOT, pa, pas)
        if pas in allowed:
            acc.write(pa, bytes([n + 1]) * 4)
            assert acc.read(pa, 4) == bytes([n + 1]) * 4
        else:
            with pytest.raises(GranuleProtectionFault):
                acc.read(pa, 4)
            with pytest.raises(GranuleProtectionFault):
                acc.write(pa, b"x")


def test_realm_accessor_reaches_realm_and_ns_memory(machine: Machine) -> None:
    realm = machine.memory.accessor(World.REALM)
    ns = machine.ns_memory()
    ns_pa, realm_pa = granule(machine, 30), granule(machine, 31)
    machine.memory.set_pas(World.ROOT, realm_pa, Pas.REALM)
    realm.write(realm_pa, b"realm")
    realm.write(ns_pa, b"shared")
    assert realm.read(realm_pa, 5) == b"realm"
    assert ns.read(ns_pa, 6) == b"shared"
    # One access covering both an NS and a realm granule is allowed for the realm world.
    assert realm.read(realm_pa - 4, 8) == bytes(4) + b"real"


@pytest.mark.parametrize("world", [World.NON_SECURE, World.SECURE, World.REALM])
def test_only_root_may_set_pas(machine: Machine, world: World) -> None:
    pa = granule(machine, 40)
    for target in Pas:
        with pytest.raises(GranuleProtectionFault):
            machine.memory.set_pas(world, pa, target)
        assert machine.memory.pas(pa) == Pas.NON_SECURE


def test_root_set_pas_validates_the_granule_and_notifies_listeners(machine: Machine) -> None:
    mem = machine.memory
    seen: list[int] = []
    mem.on_pas_change(seen.append)
    pa = granule(machine, 41)
    mem.set_pas(World.ROOT, pa, Pas.SECURE)
    assert mem.pas(pa) == Pas.SECURE
    assert mem.pas(pa + GRANULE_SIZE - 1) == Pas.SECURE
    assert mem.pas(pa + GRANULE_SIZE) == Pas.NON_SECURE
    assert seen == [pa]
    for bad in (pa + 8, mem.top, mem.base - GRANULE_SIZE):
        with pytest.raises(ValueError):
            mem.set_pas(World.ROOT, bad, Pas.REALM)
    assert seen == [pa]
    mem.remove_pas_listener(seen.append)
    mem.set_pas(World.ROOT, pa, Pas.NON_SECURE)
    assert seen == [pa]


def test_physical_memory_rejects_unaligned_geometry() -> None:
    with pytest.raises(ValueError):
        PhysicalMemory(size=GRANULE_SIZE + 1)
    with pytest.raises(ValueError):
        PhysicalMemory(size=GRANULE_SIZE, base=0x1000_0800)
    with pytest.raises(ValueError):
        PhysicalMemory(size=0)


def test_host_cannot_drive_the_gpt_through_the_monitor(machine: Machine, rmm: Rmm) -> None:
    """GTSI is the RMM's interface to EL3; from the normal world it does not exist."""
    pa = granule(machine, 50)
    for fid in (RmmEl3Fid.GTSI_DELEGATE, RmmEl3Fid.GTSI_UNDELEGATE):
        out = machine.host_smc(fid, pa)
        assert out[0] == SMCCC_NOT_SUPPORTED
        assert machine.memory.pas(pa) == Pas.NON_SECURE


# --- delegation through the RMM -----------------------------------------------------------
def test_delegated_granule_is_unreachable_by_the_host_and_zero(machine: Machine, rmm: Rmm) -> None:
    ns = machine.ns_memory()
    pa = granule(machine, 60)
    ns.write(pa, b"\xff" * GRANULE_SIZE)
    out = machine.host_smc(RmiFid.GRANULE_DELEGATE, pa)
    assert out[0] == RmiStatus.SUCCESS
    assert rmm.granule_state(pa) == GranuleState.DELEGATED
    assert machine.memory.pas(pa) == Pas.REALM
    for offset in (0, 0x800, GRANULE_SIZE - 8):
        with pytest.raises(GranuleProtectionFault):
            ns.read(pa + offset, 8)
        with pytest.raises(GranuleProtectionFault):
            ns.write(pa + offset, b"\x01")
    realm = machine.memory.accessor(World.REALM)
    assert realm.read(pa, GRANULE_SIZE) == bytes(GRANULE_SIZE)  # scrubbed on delegation
    # The neighbours stay the host's.
    assert machine.memory.pas(pa - GRANULE_SIZE) == Pas.NON_SECURE
    assert machine.memory.pas(pa + GRANULE_SIZE) == Pas.NON_SECURE


def test_undelegate_returns_a_zeroed_readable_granule(machine: Machine, rmm: Rmm) -> None:
    ns = machine.ns_memory()
    realm = machine.memory.accessor(World.REALM)
    pa = granule(machine, 61)
    assert machine.host_smc(RmiFid.GRANULE_DELEGATE, pa)[0] == RmiStatus.SUCCESS
    # Whatever realm-world software left in the granule must not reach the host.
    realm.write(pa, b"realm secret".ljust(GRANULE_SIZE, b"\x5a"))
    assert machine.host_smc(RmiFid.GRANULE_UNDELEGATE, pa)[0] == RmiStatus.SUCCESS
    assert rmm.granule_state(pa) == GranuleState.UNDELEGATED
    assert machine.memory.pas(pa) == Pas.NON_SECURE
    assert ns.read(pa, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    ns.write(pa, b"host again")
    assert ns.read(pa, 10) == b"host again"


def test_failed_delegation_leaves_pas_and_content_alone(machine: Machine, rmm: Rmm) -> None:
    ns = machine.ns_memory()
    pa = granule(machine, 62)
    ns.write(pa, b"keep")
    # Not delegated: UNDELEGATE fails and changes nothing.
    out = machine.host_smc(RmiFid.GRANULE_UNDELEGATE, pa)
    assert out[0] == RmiStatus.ERROR_INPUT
    assert ns.read(pa, 4) == b"keep"
    # A secure granule cannot be delegated: EL3 refuses the transition.
    sec = granule(machine, 63)
    machine.memory.set_pas(World.ROOT, sec, Pas.SECURE)
    out = machine.host_smc(RmiFid.GRANULE_DELEGATE, sec)
    assert out[0] == RmiStatus.ERROR_INPUT
    assert machine.memory.pas(sec) == Pas.SECURE
    assert rmm.granule_state(sec) == GranuleState.UNDELEGATED


def test_view_and_copy_are_gpt_checked_and_copy_in_place() -> None:
    mem = PhysicalMemory(size=1 << 20)
    ns, realm = mem.accessor(World.NON_SECURE), mem.accessor(World.REALM)
    src, dst = mem.base, mem.base + GRANULE_SIZE
    ns.write(src, b"granule" * 100)
    mem.set_pas(World.ROOT, dst, Pas.REALM)
    realm.copy(dst, src, GRANULE_SIZE)  # the realm world reaches both PAS
    assert bytes(realm.view(dst, 700)) == b"granule" * 100
    with pytest.raises(GranuleProtectionFault):
        ns.view(dst, 8)
    with pytest.raises(GranuleProtectionFault):
        ns.copy(src, dst, GRANULE_SIZE)
    with pytest.raises(TypeError):
        realm.view(dst, 8)[0] = 1  # type: ignore[index]
