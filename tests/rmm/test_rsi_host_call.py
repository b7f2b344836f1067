"""RSI_HOST_CALL (digest §1.4, §2.5 RsiHostCall and HOST_CALL exit): alignment, PAR and
RIPAS errors, the exit's imm and gprs, the host's answer written back, unmapped RAM."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from unirealm.arch.esr import Ec, esr_ec, ipa_from_hpfar_far
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiRecExitReason
from unirealm.arch.rsi import RsiFid, RsiStatus

from .rsi_support import (
    EMPTY_IPA,
    PAR_SIZE,
    RAM_BASE,
    UNMAPPED_RAM_IPA,
    ScriptedRealm,
    build_realm,
    run_calls,
    run_program,
)

HC = RAM_BASE + 4 * GRANULE_SIZE
MASK64 = (1 << 64) - 1


def host_call_struct(imm: int, gprs: list[int]) -> bytes:
    """RsiHostCall: imm (16-bit) @0x0, gprs[31] @0x8; 256 bytes (digest §2.5)."""
    data = bytearray(256)
    struct.pack_into("<H", data, 0, imm)
    struct.pack_into("<31Q", data, 8, *gprs)
    return bytes(data)


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path)


@pytest.mark.parametrize(
    "ipa",
    [
        HC + 8,  # not 256-byte aligned
        HC + 0x80,
        HC + 0xFF,
        PAR_SIZE,  # outside the PAR
        PAR_SIZE + HC,
        EMPTY_IPA,  # RIPAS EMPTY
        EMPTY_IPA + 0x100,
        0,
    ],
)
def test_bad_address_is_error_input(realm: ScriptedRealm, ipa: int) -> None:
    (out,) = run_calls(realm, [[RsiFid.HOST_CALL, ipa]])
    assert out[0] == RsiStatus.ERROR_INPUT


@pytest.mark.parametrize("offset", [0x000, 0x100, 0xF00])
def test_host_call_exit_and_answer(realm: ScriptedRealm, offset: int) -> None:
    ipa = HC + offset
    gprs = [(0x1111_1111_1111_1111 * (i + 1)) & MASK64 for i in range(31)]
    realm.write_ipa(HC, b"\xcc" * GRANULE_SIZE)
    realm.write_ipa(ipa, host_call_struct(0xBEEF, gprs))
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [RsiFid.HOST_CALL, ipa]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.HOST_CALL
    assert ex.imm == 0xBEEF
    assert list(ex.gprs) == gprs
    assert seen == []

    answer = [(0xA000_0000_0000_0000 + i) for i in range(31)]
    ex = realm.vm.enter(realm.rec(0), 0, answer)
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[0][0] == RsiStatus.SUCCESS
    back = realm.read_ipa(ipa, 256)
    assert struct.unpack_from("<H", back, 0)[0] == 0xBEEF  # imm is not written back
    assert list(struct.unpack_from("<31Q", back, 8)) == answer
    # Only the 256-byte structure is written.
    page = realm.read_ipa(HC, GRANULE_SIZE)
    assert page[:offset] == b"\xcc" * offset
    assert page[offset + 256 :] == b"\xcc" * (GRANULE_SIZE - offset - 256)


def test_two_host_calls_in_a_row(realm: ScriptedRealm) -> None:
    realm.write_ipa(HC, host_call_struct(1, [5] * 31))
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [RsiFid.HOST_CALL, HC]))
        realm.write_ipa(HC, host_call_struct(2, [6] * 31))
        seen.append((yield [RsiFid.HOST_CALL, HC]))

    ex = run_program(realm, program)
    assert (ex.reason, ex.imm, ex.gprs[30]) == (RmiRecExitReason.HOST_CALL, 1, 5)
    ex = realm.vm.enter(realm.rec(0), 0, [7] * 31)
    assert (ex.reason, ex.imm, ex.gprs[0]) == (RmiRecExitReason.HOST_CALL, 2, 6)
    ex = realm.vm.enter(realm.rec(0), 0, [8] * 31)
    assert ex.reason == RmiRecExitReason.IRQ
    assert [s[0] for s in seen] == [RsiStatus.SUCCESS] * 2
    assert list(struct.unpack_from("<31Q", realm.read_ipa(HC, 256), 8)) == [8] * 31


def test_unmapped_ram_exits_with_stage2_abort_then_retries(realm: ScriptedRealm) -> None:
    ipa = UNMAPPED_RAM_IPA + 0x300

    def program(cpu):  # type: ignore[no-untyped-def]
        yield [RsiFid.HOST_CALL, ipa]

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.SYNC
    assert esr_ec(ex.esr) == Ec.DABT_LOWER
    assert ipa_from_hpfar_far(ex.hpfar, ex.far) & ~0xFFF == UNMAPPED_RAM_IPA
    flags, gprs = realm.vm.handle_sync(ex)
    ex = realm.vm.enter(realm.rec(0), flags, gprs)
    assert ex.reason == RmiRecExitReason.HOST_CALL
    assert ex.imm == 0 and list(ex.gprs) == [0] * 31  # a fresh zeroed granule
