"""Realm PSCI (digest §1.4 "PSCI calls from the realm", §2.1 REC_ENTER ERROR_REALM index,
§2.2 RMI_PSCI_COMPLETE): local answers, exits to the host, and completion."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.rmi import RealmState, RmiFid, RmiRecExitReason, RmiStatus

from .rsi_support import PAR_SIZE, RAM_BASE, ScriptedRealm, build_realm, run_calls, run_program

MASK64 = (1 << 64) - 1
# PSCI function IDs (DEN0022): SMC32 forms, SMC64 forms set bit 30.
PSCI_VERSION = 0x8400_0000
CPU_SUSPEND = 0x8400_0001
CPU_OFF = 0x8400_0002
CPU_ON_32 = 0x8400_0003
CPU_ON = 0xC400_0003
AFFINITY_INFO = 0xC400_0004
AFFINITY_INFO_32 = 0x8400_0004
MIGRATE = 0x8400_0005
SYSTEM_OFF = 0x8400_0008
SYSTEM_RESET = 0x8400_0009
PSCI_FEATURES = 0x8400_000A
SUCCESS = 0
NOT_SUPPORTED = MASK64  # -1
INVALID_PARAMETERS = MASK64 - 1  # -2
DENIED = MASK64 - 2  # -3
ALREADY_ON = MASK64 - 3  # -4
INVALID_ADDRESS = MASK64 - 8  # -9

ENTRY = RAM_BASE + 0x2000
CONTEXT = 0x1234_5678_9ABC_DEF0


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    """REC 0 (MPIDR 0) runnable, REC 1 (MPIDR 1) not runnable."""
    return build_realm(tmp_path, recs=(True, False))


def rec_enter_status(realm: ScriptedRealm, index: int) -> int:
    rec = realm.rec(index)
    return realm.rmi(RmiFid.REC_ENTER, rec.pa, rec.run)[0]


def test_version_and_features_are_answered_locally(realm: ScriptedRealm) -> None:
    out = run_calls(
        realm,
        [
            [PSCI_VERSION],
            [PSCI_FEATURES, CPU_ON_32],
            [PSCI_FEATURES, CPU_ON],
            [PSCI_FEATURES, SYSTEM_OFF],
            [PSCI_FEATURES, AFFINITY_INFO],
            [PSCI_FEATURES, PSCI_FEATURES],
            [PSCI_FEATURES, MIGRATE],
            [PSCI_FEATURES, 0x8400_001F],
        ],
    )
    assert out[0][0] == 0x1_0001  # PSCI 1.1
    assert [o[0] for o in out[1:6]] == [SUCCESS] * 5
    assert out[6][0] == NOT_SUPPORTED
    assert out[7][0] == NOT_SUPPORTED
    assert not any("PSCI" in line and "REC_ENTER" not in line for line in realm.trace[-3:])


@pytest.mark.parametrize("cpu_on", [CPU_ON, CPU_ON_32])
def test_cpu_on_exits_and_completes(realm: ScriptedRealm, cpu_on: int) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [cpu_on, 1, ENTRY, CONTEXT]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.PSCI
    assert ex.gprs[:4] == [cpu_on, 1, ENTRY, CONTEXT]
    # Neither REC may run until the host completes the request.
    assert rec_enter_status(realm, 0) == RmiStatus.ERROR_REC
    assert rec_enter_status(realm, 1) == RmiStatus.ERROR_REC
    assert seen == []

    out = realm.rmi(RmiFid.PSCI_COMPLETE, realm.rec(0).pa, realm.rec(1).pa, SUCCESS)
    assert out[0] == RmiStatus.SUCCESS
    target = realm.engines[1]
    assert target.pc == ENTRY
    assert target.x[0] == CONTEXT
    assert target.x[1:] == [0] * 30

    ex = realm.vm.enter(realm.rec(0))
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[0][0] == SUCCESS

    started: list[tuple[int, int]] = []

    def secondary(cpu):  # type: ignore[no-untyped-def]
        started.append((cpu.pc, cpu.x[0]))
        yield [PSCI_VERSION]

    ex = run_program(realm, secondary, rec=1)
    assert ex.reason == RmiRecExitReason.IRQ
    assert started == [(ENTRY, CONTEXT)]


@pytest.mark.parametrize(
    ("mpidr", "expected"),
    [
        (2, INVALID_PARAMETERS),  # no REC 2
        (0x10, INVALID_PARAMETERS),  # Aff0 above 15 names no REC
        (0x100, INVALID_PARAMETERS),  # REC index 16
        (1 << 32, INVALID_PARAMETERS),
        (MASK64, INVALID_PARAMETERS),
        (0, ALREADY_ON),  # the caller itself
    ],
)
def test_cpu_on_errors_return_without_exit(realm: ScriptedRealm, mpidr: int, expected: int) -> None:
    (out,) = run_calls(realm, [[CPU_ON, mpidr, ENTRY, CONTEXT]])
    assert out[0] == expected
    assert realm.engines[1].pc == RAM_BASE  # the target was not touched


def test_cpu_on_entry_outside_par_is_invalid_address(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[CPU_ON, 1, PAR_SIZE, 0]])
    assert out[0] == INVALID_ADDRESS


def test_cpu_on_denied_by_host(realm: ScriptedRealm) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [CPU_ON, 1, ENTRY, CONTEXT]))

    run_program(realm, program)
    assert realm.rmi(RmiFid.PSCI_COMPLETE, realm.rec(0).pa, realm.rec(1).pa, DENIED)[0] == RmiStatus.SUCCESS
    realm.vm.enter(realm.rec(0))
    assert seen[0][0] == DENIED
    assert rec_enter_status(realm, 1) == RmiStatus.ERROR_REC  # still not runnable


def test_affinity_info_off_then_on(realm: ScriptedRealm) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [AFFINITY_INFO, 1, 0]))
        seen.append((yield [CPU_ON, 1, ENTRY, 0]))
        seen.append((yield [AFFINITY_INFO_32, 1, 0]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.PSCI and ex.gprs[:3] == [AFFINITY_INFO, 1, 0]
    assert rec_enter_status(realm, 0) == RmiStatus.ERROR_REC
    rec0, rec1 = realm.rec(0).pa, realm.rec(1).pa
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    ex = realm.vm.enter(realm.rec(0))
    assert seen[0][0] == 1  # OFF
    assert ex.reason == RmiRecExitReason.PSCI
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    ex = realm.vm.enter(realm.rec(0))
    assert seen[1][0] == SUCCESS
    assert ex.reason == RmiRecExitReason.PSCI
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    realm.vm.enter(realm.rec(0))
    assert seen[2][0] == 0  # ON


@pytest.mark.parametrize(("mpidr", "level"), [(1, 1), (5, 0)])
def test_affinity_info_bad_arguments(realm: ScriptedRealm, mpidr: int, level: int) -> None:
    (out,) = run_calls(realm, [[AFFINITY_INFO, mpidr, level]])
    assert out[0] == INVALID_PARAMETERS


@pytest.mark.parametrize("fid", [SYSTEM_OFF, SYSTEM_RESET])
def test_system_off_stops_the_realm(realm: ScriptedRealm, fid: int) -> None:
    def program(cpu):  # type: ignore[no-untyped-def]
        yield [fid]

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.PSCI
    assert ex.gprs[0] == fid
    assert realm.realm.state == RealmState.SYSTEM_OFF
    status = rec_enter_status(realm, 0)
    assert status == RmiStatus.ERROR_REALM | (1 << 8)  # ERROR_REALM, index 1


def test_cpu_off_exits_and_the_rec_is_no_longer_runnable(realm: ScriptedRealm) -> None:
    def program(cpu):  # type: ignore[no-untyped-def]
        yield [CPU_OFF]

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.PSCI and ex.gprs[0] == CPU_OFF
    assert rec_enter_status(realm, 0) == RmiStatus.ERROR_REC


def test_cpu_suspend_exits_to_host(realm: ScriptedRealm) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [CPU_SUSPEND, 0, 0, 0]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.PSCI and ex.gprs[0] == CPU_SUSPEND
    realm.vm.enter(realm.rec(0))
    assert seen[0][0] == SUCCESS


def test_psci_complete_errors(realm: ScriptedRealm) -> None:
    rec0, rec1 = realm.rec(0).pa, realm.rec(1).pa
    # Nothing pending.
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.ERROR_INPUT

    def program(cpu):  # type: ignore[no-untyped-def]
        yield [CPU_ON, 1, ENTRY, 0]

    run_program(realm, program)
    # The target must be the REC the realm named.
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec0, SUCCESS)[0] == RmiStatus.ERROR_INPUT
    # The status must be SUCCESS or DENIED.
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, INVALID_PARAMETERS)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, 7)[0] == RmiStatus.ERROR_INPUT
    # Neither argument may be something other than a REC.
    assert realm.rmi(RmiFid.PSCI_COMPLETE, realm.rd, rec1, SUCCESS)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, realm.rd, SUCCESS)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0 + 8, rec1, SUCCESS)[0] == RmiStatus.ERROR_INPUT
    # The request is still pending and completes normally.
    assert rec_enter_status(realm, 0) == RmiStatus.ERROR_REC
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    # Completed once: a second completion has nothing to complete.
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.ERROR_INPUT


def test_psci_complete_across_realms_is_refused(tmp_path: Path) -> None:
    a = build_realm(tmp_path / "a", recs=(True, False))

    def program(cpu):  # type: ignore[no-untyped-def]
        yield [CPU_ON, 1, ENTRY, 0]

    run_program(a, program)
    # A second realm on the same machine, built with the same host.
    from unirealm.host.kvm import RealmConfig, RealmVm

    other = RealmVm(a.machine, a.vm.pages, RealmConfig(ipa_bits=33, vmid=2))
    other.create()
    other.create_rec(pc=RAM_BASE, gprs=[0] * 8, runnable=True)
    other.create_rec(pc=RAM_BASE, gprs=[0] * 8, runnable=False)
    out = a.rmi(RmiFid.PSCI_COMPLETE, a.rec(0).pa, other.recs[1].pa, SUCCESS)
    assert out[0] == RmiStatus.ERROR_INPUT


def test_cpu_on_checks_the_entry_point_before_the_target(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[CPU_ON, 5, PAR_SIZE, 0]])  # no REC 5 either
    assert out[0] == INVALID_ADDRESS


def test_affinity_info_of_the_caller_is_on_without_an_exit(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[AFFINITY_INFO, 0, 0]])
    assert out[0] == 0  # ON
    assert realm.rmi(RmiFid.PSCI_COMPLETE, realm.rec(0).pa, realm.rec(1).pa, SUCCESS)[0] == RmiStatus.ERROR_INPUT


def test_affinity_info_takes_success_only(realm: ScriptedRealm) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [AFFINITY_INFO, 1, 0]))

    run_program(realm, program)
    rec0, rec1 = realm.rec(0).pa, realm.rec(1).pa
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, DENIED)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    realm.vm.enter(realm.rec(0))
    assert seen[0][:4] == [1, 0, 0, 0]  # OFF, and x1..x3 cleared


def test_cpu_on_of_a_started_rec_is_already_on_and_a_denial_of_it_is_refused(realm: ScriptedRealm) -> None:
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [CPU_ON, 1, ENTRY, CONTEXT]))
        seen.append((yield [CPU_ON, 1, ENTRY, CONTEXT]))
        seen.append((yield [CPU_ON, 1, ENTRY, CONTEXT]))

    rec0, rec1 = realm.rec(0).pa, realm.rec(1).pa
    run_program(realm, program)
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    realm.vm.enter(realm.rec(0))
    assert seen[0][:4] == [SUCCESS, 0, 0, 0]
    # REC 1 is runnable now: SUCCESS from the host gives the realm ALREADY_ON ...
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, SUCCESS)[0] == RmiStatus.SUCCESS
    realm.vm.enter(realm.rec(0))
    assert seen[1][0] == ALREADY_ON
    # ... and a DENIED for it fails ERROR_INPUT, yet completes the call (TF-RMM).
    assert realm.rmi(RmiFid.PSCI_COMPLETE, rec0, rec1, DENIED)[0] == RmiStatus.ERROR_INPUT
    realm.vm.enter(realm.rec(0))
    assert seen[2][0] == ALREADY_ON
    assert realm.engines[1].resets.count((ENTRY, [CONTEXT])) == 1  # started once only
