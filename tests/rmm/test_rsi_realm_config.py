"""RSI_REALM_CONFIG (digest §1.4, §2.5 RsiRealmConfig): what it writes, what it leaves,
its ERROR_INPUT cases, and the stage-2 abort exit (then retry) for unmapped RAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.esr import Ec, esr_ec, ipa_from_hpfar_far
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiRecExitReason
from unirealm.arch.rsi import RsiFid, RsiStatus

from .rsi_support import (
    EMPTY_IPA,
    IPA_BITS,
    PAR_SIZE,
    RAM_BASE,
    UNMAPPED_RAM_IPA,
    build_realm,
    run_calls,
    run_program,
)

CFG = RAM_BASE + GRANULE_SIZE
RPV = bytes(range(0x40, 0x80))


def check_config_page(page: bytes, hash_algo: int, rpv: bytes, fill: int) -> None:
    # RsiRealmConfig: ipa_width u64 @0x0, hash_algo u8 @0x8, rpv[64] @0x200 (digest §2.5)
    assert int.from_bytes(page[0:8], "little") == IPA_BITS
    assert page[8] == hash_algo
    assert page[0x200:0x240] == rpv
    # Everything else is left alone.
    assert page[9:0x200] == bytes([fill]) * (0x200 - 9)
    assert page[0x240:] == bytes([fill]) * (GRANULE_SIZE - 0x240)


@pytest.mark.parametrize(("hash_algo", "rpv"), [(0, RPV), (1, b"\x01\x02")])
def test_config_writes_only_three_fields(tmp_path: Path, hash_algo: int, rpv: bytes) -> None:
    realm = build_realm(tmp_path, hash_algo=hash_algo, rpv=rpv)
    realm.write_ipa(CFG, b"\xee" * GRANULE_SIZE)
    (out,) = run_calls(realm, [[RsiFid.REALM_CONFIG, CFG]])
    assert out[0] == RsiStatus.SUCCESS
    check_config_page(realm.read_ipa(CFG, GRANULE_SIZE), hash_algo, rpv.ljust(64, b"\0"), 0xEE)


@pytest.mark.parametrize(
    "ipa",
    [
        CFG + 8,  # not 4 KiB aligned
        CFG + 0x800,
        PAR_SIZE,  # outside the PAR
        PAR_SIZE + CFG,  # the unprotected alias of a good granule
        1 << 40,  # beyond the IPA space
        EMPTY_IPA,  # RIPAS EMPTY
        0,
    ],
)
def test_config_bad_address_is_error_input(tmp_path: Path, ipa: int) -> None:
    realm = build_realm(tmp_path)
    (out,) = run_calls(realm, [[RsiFid.REALM_CONFIG, ipa]])
    assert out[0] == RsiStatus.ERROR_INPUT


def test_config_in_unmapped_ram_exits_with_stage2_abort_then_retries(tmp_path: Path) -> None:
    realm = build_realm(tmp_path, rpv=RPV)
    seen: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        seen.append((yield [RsiFid.REALM_CONFIG, UNMAPPED_RAM_IPA]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.SYNC
    assert esr_ec(ex.esr) == Ec.DABT_LOWER
    assert ex.esr & (1 << 24) == 0  # not emulatable
    assert 0x04 <= ex.esr & 0x3F <= 0x07  # translation fault at some level
    assert ipa_from_hpfar_far(ex.hpfar, ex.far) & ~0xFFF == UNMAPPED_RAM_IPA
    assert seen == []
    assert UNMAPPED_RAM_IPA not in realm.vm.data

    flags, gprs = realm.vm.handle_sync(ex)  # the host maps the page (DATA_CREATE_UNKNOWN)
    ex = realm.vm.enter(realm.rec(0), flags, gprs)
    assert ex.reason == RmiRecExitReason.IRQ
    assert seen[0][0] == RsiStatus.SUCCESS
    check_config_page(realm.read_ipa(UNMAPPED_RAM_IPA, GRANULE_SIZE), 0, RPV, 0)
    issued = realm.engines[0].issued
    assert [c[:2] for c in issued] == [[RsiFid.REALM_CONFIG, UNMAPPED_RAM_IPA]] * 2
