"""The other traps of a running REC (rmm/run.py run_until_exit; digest §2.2, §2.3; TF-RMM
runtime/core/exit.c): instruction aborts (a SYNC exit for unmapped protected RAM, an SEA
otherwise), WFI/WFE (a SYNC exit with EC and TI only when the host asked to trap them),
SVC (taken to the realm's own EL1 with its syndrome), HVC and undefined instructions
(UNDEFINED in the realm), and a host call whose structure the host unmapped meanwhile.

ESR values are built here from the Arm ARM's EC numbers and ISS fields (D19.2.37)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecExitReason, RmiStatus
from unirealm.arch.rsi import RsiFid, RsiStatus
from unirealm.machine.vcpu import HvcTrap, InstructionAbortTrap, SvcTrap, UndefinedTrap, WfxTrap

from .conftest import L1, L2, L3, Env, RecHandle, assert_status
from .rsi_support import RAM_BASE, build_realm, run_program

EC_WFX = 0x01 << 26
EC_SVC64 = 0x15 << 26
EC_IABT = 0x20 << 26
IL = 1 << 25
TRAP_WFI, TRAP_WFE = 1 << 2, 1 << 3
RAM_IPA = 5 * L2
EMPTY_IPA = 9 * L2


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4


class Seen:
    def __init__(self, rec: RecHandle) -> None:
        self.seas: list[tuple[int, bool]] = []
        self.exceptions: list[int] = []
        self.undefs = 0

        def inject_sea(far: int, is_fetch: bool = False) -> None:
            self.seas.append((far, is_fetch))

        def take_exception(esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
            self.exceptions.append(esr_value)

        def inject_undef() -> None:
            self.undefs += 1

        rec.engine.inject_sea = inject_sea  # type: ignore[method-assign]
        rec.engine.take_exception = take_exception  # type: ignore[method-assign]
        rec.engine.inject_undef = inject_undef  # type: ignore[method-assign]


def active(env: Env) -> tuple[RecHandle, Seen]:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    env.init_ripas(realm, RAM_IPA, RAM_IPA + L2)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.idle_wfi = True
    return rec, Seen(rec)


def enter(env: Env, rec: RecHandle, flags: int = 0) -> dict:  # type: ignore[type-arg]
    out, run = env.enter(rec, flags)
    assert_status(out, RmiStatus.SUCCESS)
    return run


def test_instruction_abort_on_unmapped_protected_ram_exits(env: Env) -> None:
    rec, seen = active(env)
    rec.engine.push(InstructionAbortTrap(0x1000, ipa=RAM_IPA + 2 * L3 + 0x44))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == EC_IABT | (0x04 + 2)  # translation fault at the L2 block entry; no IL
    assert (run["exit_far"], run["exit_hpfar"]) == (0, hpfar(RAM_IPA + 2 * L3))
    assert seen.seas == []


@pytest.mark.parametrize(
    "ipa",
    [EMPTY_IPA + 0x10, (1 << 39) + 0x2000, (1 << 39) + 7 * L1, 1 << 40],  # EMPTY, unprotected, beyond
)
def test_other_instruction_aborts_are_an_sea(env: Env, ipa: int) -> None:
    rec, seen = active(env)
    rec.engine.push(InstructionAbortTrap(0x1000, ipa=ipa))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ  # the realm went on to its WFI
    assert seen.seas == [(ipa, True)]


@pytest.mark.parametrize(
    ("flags", "is_wfe", "esr"),
    [(TRAP_WFI, False, EC_WFX), (TRAP_WFE, True, EC_WFX | 1), (TRAP_WFI | TRAP_WFE, True, EC_WFX | 1),
     (TRAP_WFI | TRAP_WFE, False, EC_WFX)],
)
def test_trapped_wfx_is_a_sync_exit(env: Env, flags: int, is_wfe: bool, esr: int) -> None:
    rec, _ = active(env)
    rec.engine.push(WfxTrap(0x1000, is_wfe=is_wfe))
    run = enter(env, rec, flags)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == esr  # EC and TI only: no IL
    assert (run["exit_far"], run["exit_hpfar"]) == (0, 0)


@pytest.mark.parametrize(("flags", "is_wfe"), [(0, False), (0, True), (TRAP_WFE, False), (TRAP_WFI, True)])
def test_untrapped_wfx_waits_for_the_host(env: Env, flags: int, is_wfe: bool) -> None:
    rec, _ = active(env)
    rec.engine.push(WfxTrap(0x1000, is_wfe=is_wfe))
    run = enter(env, rec, flags)
    assert (run["exit_reason"], run["exit_esr"]) == (RmiRecExitReason.IRQ, 0)


@pytest.mark.parametrize("imm", [0, 1, 0xFFFF])
def test_svc_is_taken_to_the_realms_el1(env: Env, imm: int) -> None:
    rec, seen = active(env)
    rec.engine.push(SvcTrap(0x1000, imm=imm))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert seen.exceptions == [EC_SVC64 | IL | imm]


def test_hvc_and_undefined_are_undefined_in_the_realm(env: Env) -> None:
    rec, seen = active(env)
    rec.engine.push(HvcTrap(0x1000, imm=3), UndefinedTrap(0x1004, insn=0))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert seen.undefs == 2 and seen.exceptions == [] and seen.seas == []


def test_svc_loop_yields_to_the_host(env: Env) -> None:
    """SVCs count as injected exceptions: 64 in a row end REC_ENTER with an IRQ exit."""
    rec, seen = active(env)
    rec.engine.idle_wfi = False
    rec.engine.push(*[SvcTrap(0x1000, imm=i) for i in range(66)])
    assert enter(env, rec)["exit_reason"] == RmiRecExitReason.IRQ
    assert len(seen.exceptions) == 64


def test_host_call_whose_structure_the_host_unmapped(tmp_path: Path) -> None:
    """The host destroys the granule of the RsiHostCall before answering: nothing is written
    back and the realm sees ERROR_INPUT."""
    realm = build_realm(tmp_path)
    hc = RAM_BASE + 4 * GRANULE_SIZE
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [RsiFid.HOST_CALL, hc]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.HOST_CALL
    out = realm.rmi(RmiFid.DATA_DESTROY, realm.rd, hc)
    assert_status(out, RmiStatus.SUCCESS)
    ex = realm.vm.enter(realm.rec(0), 0, [0x77] * 31)
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[0][0] == RsiStatus.ERROR_INPUT
    assert seen[0][1] == hc  # x1 keeps its value
