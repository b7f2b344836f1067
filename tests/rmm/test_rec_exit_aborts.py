"""Stage-2 data aborts of a REC (rmm/run.py data_abort) and what the next REC_ENTER does
with them (digest §2.3 "Realm access faults", §2.2 REC_ENTER; TF-RMM runtime/core/exit.c
handle_data_abort):

- an IPA beyond the IPA space, a GPT refusal, or a protected IPA with RIPAS EMPTY: an SEA
  is injected into the realm (FAR_EL1 = the VA), no exit;
- an unmapped protected IPA of RIPAS RAM: exit SYNC, non-emulatable ESR, HPFAR, no FAR;
- an unprotected IPA: exit SYNC with an emulatable ESR (EC, ISV, SAS, SF, WnR, DFSC only),
  FAR = the page offset, HPFAR, and for a write the value in gprs[0]; mapped (a permission
  fault) or without a syndrome it is non-emulatable;
- the host completes an emulatable read with EMULATED_MMIO and gprs[0], or injects an SEA
  at the access's VA with INJECT_SEA; either flag after any other exit is ERROR_REC.

ESR values are built here from the Arm ARM's ISS bit positions (D19.2.37 ESR_EL2)."""

from __future__ import annotations

import pytest

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.rmi import RmiFid, RmiRecExitReason, RmiStatus
from unirealm.machine.vcpu import DataAbortTrap

from .conftest import L1, L2, L3, Env, RealmHandle, RecHandle, assert_status
from .test_rmi_rtt import NS_DESC, S2AP_RO

EC_DABT = 0x24 << 26
IL = 1 << 25
ISV = 1 << 24
SAS_SHIFT = 22
SSE = 1 << 21
SRT_SHIFT = 16
SF = 1 << 15
WNR = 1 << 6
TRANSLATION = 0x04  # + level
PERMISSION = 0x0C  # + level

EMULATED_MMIO, INJECT_SEA = 1 << 0, 1 << 1
RAM_IPA = 5 * L2  # RIPAS RAM, no data granule
EMPTY_IPA = 9 * L2  # RIPAS EMPTY
VA = 0xFFFF_8000_1234_5678


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4  # HPFAR_EL2.FIPA [43:4] = IPA[51:12]


class Recorder:
    """Records the engine's injections and MMIO completions with their arguments."""

    def __init__(self, rec: RecHandle) -> None:
        self.seas: list[tuple[int, bool]] = []
        self.reads: list[tuple[AccessSyndrome, int]] = []
        self.steps = 0
        engine = rec.engine

        def inject_sea(far: int, is_fetch: bool = False) -> None:
            self.seas.append((far, is_fetch))

        def complete_mmio_read(syndrome: AccessSyndrome, value: int) -> None:
            self.reads.append((syndrome, value))

        def skip_instruction() -> None:
            self.steps += 1

        engine.inject_sea = inject_sea  # type: ignore[method-assign]
        engine.complete_mmio_read = complete_mmio_read  # type: ignore[method-assign]
        engine.skip_instruction = skip_instruction  # type: ignore[method-assign]


def active_realm(env: Env) -> tuple[RealmHandle, RecHandle, Recorder]:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)  # the L2 table of [0, 1 GiB): RIPAS per 2 MiB block
    env.init_ripas(realm, RAM_IPA, RAM_IPA + L2)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.idle_wfi = True
    return realm, rec, Recorder(rec)


def abort(ipa: int, write: bool = False, size: int = 4, srt: int = 5, value: int = 0, **kw: object) -> DataAbortTrap:
    syndrome = AccessSyndrome(is_write=write, size=size, srt=srt, sign_extend=not write, sixty_four=size == 8)
    return DataAbortTrap(0x1000, ipa=ipa, is_write=write, size=size, syndrome=syndrome, value=value,
                         va=VA, **kw)  # type: ignore[arg-type]


def enter(env: Env, rec: RecHandle, flags: int = 0, gprs: tuple[int, ...] = ()) -> dict:  # type: ignore[type-arg]
    out, run = env.enter(rec, flags, gprs)
    assert_status(out, RmiStatus.SUCCESS)
    return run


@pytest.mark.parametrize(
    ("ipa", "kw"),
    [
        (1 << 40, {}),  # the first IPA beyond a 40-bit IPA space
        ((1 << 40) + 5 * L3, {}),
        (RAM_IPA, {"gpf": True}),  # mapped, but the GPT refused the access
        (EMPTY_IPA, {}),
        (EMPTY_IPA + 0x123, {}),
    ],
)
def test_abort_the_realm_must_see_is_an_sea(env: Env, ipa: int, kw: dict) -> None:  # type: ignore[type-arg]
    _, rec, seen = active_realm(env)
    rec.engine.push(abort(ipa, **kw))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ  # the realm went on to its WFI
    assert seen.seas == [(VA, False)]


def test_sea_far_is_the_ipa_without_a_va(env: Env) -> None:
    _, rec, seen = active_realm(env)
    rec.engine.push(DataAbortTrap(0x1000, ipa=EMPTY_IPA + 8, va=None))
    enter(env, rec)
    assert seen.seas == [(EMPTY_IPA + 8, False)]


def test_last_ipa_of_the_space_is_not_beyond_it(env: Env) -> None:
    _, rec, seen = active_realm(env)
    ipa = (1 << 40) - 8  # unprotected, unmapped: the host's to emulate
    rec.engine.push(abort(ipa))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC and seen.seas == []
    assert run["exit_hpfar"] == hpfar(ipa)


def test_unmapped_protected_ram_is_a_non_emulatable_exit(env: Env) -> None:
    _, rec, seen = active_realm(env)
    rec.engine.push(abort(RAM_IPA + 3 * L3 + 0x10, write=True, value=0x77))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC and seen.seas == []
    assert run["exit_esr"] == EC_DABT | (TRANSLATION + 2)  # the walk ends at the L2 block entry
    assert (run["exit_far"], run["exit_hpfar"]) == (0, hpfar(RAM_IPA + 3 * L3))
    assert run["exit_gprs"][0] == 0  # nothing of the realm's data
    # The host may not complete it as MMIO nor inject an SEA for it.
    assert_status(env.enter(rec, EMULATED_MMIO)[0], RmiStatus.ERROR_REC)
    assert_status(env.enter(rec, INJECT_SEA)[0], RmiStatus.ERROR_REC)


def test_unmapped_protected_ram_reports_the_walk_level(env: Env) -> None:
    realm, rec, _ = active_realm(env)
    env.create_rtt(realm, RAM_IPA, 3)  # the block unfolds into a table of RAM pages
    rec.engine.push(abort(RAM_IPA + L3))
    run = enter(env, rec)
    assert run["exit_esr"] == EC_DABT | (TRANSLATION + 3)


@pytest.mark.parametrize(("size", "sas"), [(1, 0), (2, 1), (4, 2), (8, 3)])
def test_emulatable_write_exit(env: Env, size: int, sas: int) -> None:
    realm, rec, seen = active_realm(env)
    ipa = realm.par_size + 7 * L1 + 0xABC
    rec.engine.push(abort(ipa, write=True, size=size, srt=9, value=0x1122_3344_5566_7788))
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    sf = SF if size == 8 else 0
    # No IL, SRT or SSE; the walk of an empty unprotected half ends at the L1 root entry.
    assert run["exit_esr"] == EC_DABT | ISV | (sas << SAS_SHIFT) | sf | WNR | (TRANSLATION + 1)
    assert run["exit_far"] == 0xABC
    assert run["exit_hpfar"] == hpfar(ipa)
    assert run["exit_gprs"][0] == 0x1122_3344_5566_7788
    assert run["exit_gprs"][1:] == [0] * 30
    # EMULATED_MMIO completes the write: the store is stepped over, nothing is loaded.
    run = enter(env, rec, EMULATED_MMIO, (0xDEAD,))
    assert seen.steps == 1 and seen.reads == [] and seen.seas == []
    assert run["exit_reason"] == RmiRecExitReason.IRQ


def test_emulatable_read_exit_and_completion(env: Env) -> None:
    realm, rec, seen = active_realm(env)
    ipa = realm.par_size + 3 * L1 + 0x18
    trap = abort(ipa, size=4, srt=3)
    rec.engine.push(trap)
    run = enter(env, rec)
    assert run["exit_esr"] == EC_DABT | ISV | (2 << SAS_SHIFT) | (TRANSLATION + 1)
    assert run["exit_esr"] & (IL | SSE | (0x1F << SRT_SHIFT)) == 0
    assert (run["exit_far"], run["exit_gprs"][0]) == (0x18, 0)
    run = enter(env, rec, EMULATED_MMIO, (0xCAFE_F00D,))
    assert seen.reads == [(trap.syndrome, 0xCAFE_F00D)] and seen.steps == 0
    # Completed once: the next entry has nothing left to complete.
    rec.engine.push(abort(ipa))
    enter(env, rec)
    enter(env, rec)  # the host declines to emulate: no flag, nothing completed
    assert len(seen.reads) == 1 and seen.steps == 0 and seen.seas == []


def test_host_injects_an_sea_at_the_access_va(env: Env) -> None:
    realm, rec, seen = active_realm(env)
    rec.engine.push(abort(realm.par_size + 0x40))
    enter(env, rec)
    run = enter(env, rec, INJECT_SEA | EMULATED_MMIO)  # INJECT_SEA wins
    assert seen.seas == [(VA, False)] and seen.reads == []
    assert run["exit_reason"] == RmiRecExitReason.IRQ


def test_mapped_unprotected_ipa_is_a_permission_fault(env: Env) -> None:
    realm, rec, seen = active_realm(env)
    ipa = realm.par_size + 6 * L2
    env.ensure_rtts(realm, ipa, 3)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, env.ns_granule() | NS_DESC | S2AP_RO)
    rec.engine.push(abort(ipa + 0x20, write=True, value=5))
    run = enter(env, rec)
    assert run["exit_esr"] == EC_DABT | (PERMISSION + 3)  # non-emulatable: no ISV, SAS, WnR
    assert (run["exit_far"], run["exit_hpfar"], run["exit_gprs"][0]) == (0, hpfar(ipa), 0)
    assert_status(env.enter(rec, EMULATED_MMIO)[0], RmiStatus.ERROR_REC)
    # It is an abort at an unprotected IPA: the host may answer it with an SEA.
    enter(env, rec, INJECT_SEA)
    assert seen.seas == [(VA, False)]


def test_unprotected_access_without_syndrome_is_non_emulatable(env: Env) -> None:
    realm, rec, _ = active_realm(env)
    ipa = realm.par_size + 2 * L1
    rec.engine.push(DataAbortTrap(0x1000, ipa=ipa, is_write=True, size=16, syndrome=None, value=9, va=VA))
    run = enter(env, rec)
    assert run["exit_esr"] == EC_DABT | (TRANSLATION + 1)
    assert (run["exit_far"], run["exit_hpfar"], run["exit_gprs"][0]) == (0, hpfar(ipa), 0)
    assert_status(env.enter(rec, EMULATED_MMIO)[0], RmiStatus.ERROR_REC)


def test_completion_flags_need_a_data_abort_exit(env: Env) -> None:
    _, rec, seen = active_realm(env)
    enter(env, rec)  # an IRQ exit (the WFI)
    assert_status(env.enter(rec, EMULATED_MMIO)[0], RmiStatus.ERROR_REC)
    assert_status(env.enter(rec, INJECT_SEA)[0], RmiStatus.ERROR_REC)
    assert seen.seas == [] and seen.reads == []


def test_a_realm_stuck_taking_seas_yields_to_the_host(env: Env) -> None:
    """Each injected SEA counts; after 64 in a row the REC exits to the host (IRQ)."""
    _, rec, seen = active_realm(env)
    rec.engine.idle_wfi = False
    rec.engine.push(*[abort(EMPTY_IPA) for _ in range(70)])
    run = enter(env, rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert len(seen.seas) == 64
    # The count starts again at the next entry.
    enter(env, rec)
    assert len(seen.seas) == 70


def test_an_exit_to_the_host_resets_the_injection_count(env: Env) -> None:
    realm, rec, seen = active_realm(env)
    rec.engine.idle_wfi = False
    rec.engine.push(*[abort(EMPTY_IPA) for _ in range(40)])
    rec.engine.push(abort(realm.par_size))  # emulatable: exits, the count restarts
    rec.engine.push(*[abort(EMPTY_IPA) for _ in range(40)])
    assert enter(env, rec)["exit_reason"] == RmiRecExitReason.SYNC
    assert len(seen.seas) == 40
    rec.engine.push(abort(RAM_IPA))  # stops the second run before a 64th SEA could end it
    run = enter(env, rec)
    assert len(seen.seas) == 80 and run["exit_reason"] == RmiRecExitReason.SYNC
