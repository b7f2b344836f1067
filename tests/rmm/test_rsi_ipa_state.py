"""RSI_IPA_STATE_SET / RSI_IPA_STATE_GET (digest §1.4): input errors, the RIPAS_CHANGE
exit, completion by RMI_RTT_SET_RIPAS and the next REC_ENTER (progress and response)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiRecExitReason, RmiStatus
from unirealm.arch.rsi import RsiFid, RsiResponse, RsiRipas, RsiStatus

from .rsi_support import (
    EMPTY_IPA,
    PAR_SIZE,
    POPULATED,
    RAM_BASE,
    RAM_TOP,
    ScriptedRealm,
    build_realm,
    run_calls,
    run_program,
)

G = GRANULE_SIZE
MASK64 = (1 << 64) - 1


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path)


def state_set(base: int, top: int, ripas: int, flags: int = 0) -> list[int]:
    return [RsiFid.IPA_STATE_SET, base, top, ripas, flags]


def state_get(base: int, end: int) -> list[int]:
    return [RsiFid.IPA_STATE_GET, base, end]


# --- IPA_STATE_GET -------------------------------------------------------------------------
def test_get_reports_runs_of_the_same_ripas(realm: ScriptedRealm) -> None:
    out = run_calls(
        realm,
        [
            state_get(RAM_BASE, RAM_TOP + 0x40_0000),  # populated + unassigned RAM, then EMPTY
            state_get(RAM_BASE, RAM_BASE + 3 * G),  # capped at end
            state_get(RAM_BASE + POPULATED * G, RAM_TOP),  # unassigned RAM only
            state_get(RAM_TOP, RAM_TOP + 0x40_0000),  # EMPTY run, capped at end
            state_get(0, RAM_BASE + G),  # EMPTY from 0 up to the RAM
            state_get(PAR_SIZE - G, PAR_SIZE),  # the last protected granule
        ],
    )
    assert [o[0] for o in out] == [RsiStatus.SUCCESS] * 6
    assert out[0][1:3] == [RAM_TOP, RsiRipas.RAM]
    assert out[1][1:3] == [RAM_BASE + 3 * G, RsiRipas.RAM]
    assert out[2][1:3] == [RAM_TOP, RsiRipas.RAM]
    assert out[3][1:3] == [RAM_TOP + 0x40_0000, RsiRipas.EMPTY]
    assert out[4][1:3] == [RAM_BASE, RsiRipas.EMPTY]
    assert out[5][1:3] == [PAR_SIZE, RsiRipas.EMPTY]


@pytest.mark.parametrize(
    ("base", "end"),
    [
        (RAM_BASE + 8, RAM_TOP),  # unaligned base
        (RAM_BASE, RAM_TOP - 1),  # unaligned end
        (RAM_BASE, RAM_BASE),  # base == end
        (RAM_TOP, RAM_BASE),  # base > end
        (RAM_BASE, PAR_SIZE + G),  # end outside the PAR
        (PAR_SIZE, PAR_SIZE + G),  # all outside
        (RAM_BASE, MASK64 & ~0xFFF),
    ],
)
def test_get_bad_range_is_error_input(realm: ScriptedRealm, base: int, end: int) -> None:
    (out,) = run_calls(realm, [state_get(base, end)])
    assert out[0] == RsiStatus.ERROR_INPUT


# --- IPA_STATE_SET input errors -------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "top", "ripas"),
    [
        (RAM_BASE, RAM_BASE + G, 2),  # DESTROYED cannot be requested
        (RAM_BASE, RAM_BASE + G, 3),
        (RAM_BASE, RAM_BASE + G, MASK64),
        (RAM_BASE + 1, RAM_BASE + G, 0),  # unaligned base
        (RAM_BASE, RAM_BASE + G + 8, 0),  # unaligned top
        (RAM_BASE, RAM_BASE, 0),  # top == base
        (RAM_BASE + G, RAM_BASE, 1),  # top < base
        (PAR_SIZE - G, PAR_SIZE + G, 1),  # runs out of the PAR
        (PAR_SIZE, PAR_SIZE + G, 0),  # outside the PAR
    ],
)
def test_set_bad_input_is_error_input_without_exit(realm: ScriptedRealm, base: int, top: int, ripas: int) -> None:
    (out,) = run_calls(realm, [state_set(base, top, ripas)])
    assert out[0] == RsiStatus.ERROR_INPUT


# --- IPA_STATE_SET exits and completion -----------------------------------------------------
def test_set_to_empty_completes_in_two_host_steps(realm: ScriptedRealm) -> None:
    base, top = RAM_BASE + 2 * G, RAM_BASE + 5 * G
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        out = yield state_set(base, top, RsiRipas.EMPTY, 1)
        seen.append(out)
        while out[1] < top:  # the guest loops with base = X1
            out = yield state_set(out[1], top, RsiRipas.EMPTY, 1)
            seen.append(out)
        seen.append((yield state_get(base, top)))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.RIPAS_CHANGE
    assert (ex.ripas_base, ex.ripas_top, ex.ripas_value) == (base, top, RsiRipas.EMPTY)
    assert seen == []
    rec = realm.rec(0)
    # The host changes one granule only; the realm sees progress base + 4 KiB, ACCEPT.
    out = realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, base + G)
    assert out[0] == RmiStatus.SUCCESS and out[1] == base + G
    ex = realm.vm.enter(rec)
    assert seen[0][:3] == [RsiStatus.SUCCESS, base + G, RsiResponse.ACCEPT]
    # The realm asks again for the rest.
    assert ex.reason == RmiRecExitReason.RIPAS_CHANGE
    assert (ex.ripas_base, ex.ripas_top, ex.ripas_value) == (base + G, top, RsiRipas.EMPTY)
    out = realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base + G, top)
    assert out[0] == RmiStatus.SUCCESS and out[1] == top
    ex = realm.vm.enter(rec)
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[1][:3] == [RsiStatus.SUCCESS, top, RsiResponse.ACCEPT]
    assert seen[2][:3] == [RsiStatus.SUCCESS, top, RsiRipas.EMPTY]


def test_set_ram_rejected_by_host_reports_reject_and_progress(realm: ScriptedRealm) -> None:
    base, top = RAM_TOP, RAM_TOP + 4 * G  # EMPTY -> RAM
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield state_set(base, top, RsiRipas.RAM)))
        seen.append((yield state_get(base, top)))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.RIPAS_CHANGE
    assert (ex.ripas_base, ex.ripas_top, ex.ripas_value) == (base, top, RsiRipas.RAM)
    ex = realm.vm.enter(realm.rec(0), RmiRecEnterFlags.RIPAS_RESPONSE)
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[0][:3] == [RsiStatus.SUCCESS, base, RsiResponse.REJECT]
    assert seen[1][:3] == [RsiStatus.SUCCESS, top, RsiRipas.EMPTY]  # unchanged


def test_set_ram_partly_done_then_rejected(realm: ScriptedRealm) -> None:
    base, top = RAM_TOP, RAM_TOP + 4 * G
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield state_set(base, top, RsiRipas.RAM)))
        seen.append((yield state_get(base, top)))

    run_program(realm, program)
    rec = realm.rec(0)
    realm.vm.ensure_rtt(base, 3)
    out = realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, base + 2 * G)
    assert out[0] == RmiStatus.SUCCESS
    realm.vm.enter(rec, RmiRecEnterFlags.RIPAS_RESPONSE)
    assert seen[0][:3] == [RsiStatus.SUCCESS, base + 2 * G, RsiResponse.REJECT]
    assert seen[1][:3] == [RsiStatus.SUCCESS, base + 2 * G, RsiRipas.RAM]


def test_set_ram_complete_is_accepted_even_with_response_flag(realm: ScriptedRealm) -> None:
    base, top = RAM_TOP, RAM_TOP + 2 * G
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield state_set(base, top, RsiRipas.RAM)))

    run_program(realm, program)
    rec = realm.rec(0)
    realm.vm.ensure_rtt(base, 3)
    assert realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, top)[0] == RmiStatus.SUCCESS
    realm.vm.enter(rec, RmiRecEnterFlags.RIPAS_RESPONSE)
    assert seen[0][:3] == [RsiStatus.SUCCESS, top, RsiResponse.ACCEPT]


def test_set_empty_is_never_rejected(realm: ScriptedRealm) -> None:
    base, top = RAM_BASE + POPULATED * G, RAM_BASE + (POPULATED + 2) * G
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield state_set(base, top, RsiRipas.EMPTY)))

    run_program(realm, program)
    realm.vm.enter(realm.rec(0), RmiRecEnterFlags.RIPAS_RESPONSE)
    assert seen[0][:3] == [RsiStatus.SUCCESS, base, RsiResponse.ACCEPT]


def test_rtt_set_ripas_needs_the_pending_request(realm: ScriptedRealm) -> None:
    base, top = RAM_BASE + POPULATED * G, RAM_BASE + (POPULATED + 4) * G
    rec = realm.rec(0)
    # No request yet.
    out = realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, top)
    assert out[0] & 0xFF != RmiStatus.SUCCESS

    def program(cpu):  # type: ignore[no-untyped-def]
        yield state_set(base, top, RsiRipas.EMPTY)

    run_program(realm, program)
    # base must equal the progress pointer, top must not exceed the requested top.
    assert realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base + G, top)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, top + G)[0] == RmiStatus.ERROR_INPUT
    assert realm.rmi(RmiFid.RTT_SET_RIPAS, realm.rd, rec.pa, base, top)[0] == RmiStatus.SUCCESS


def test_set_outside_par_but_empty_range_never_exits(realm: ScriptedRealm) -> None:
    out = run_calls(realm, [state_set(EMPTY_IPA, EMPTY_IPA + G, 7), state_get(EMPTY_IPA, EMPTY_IPA + G)])
    assert out[0][0] == RsiStatus.ERROR_INPUT
    assert out[1][:3] == [RsiStatus.SUCCESS, EMPTY_IPA + G, RsiRipas.EMPTY]
