"""RSI_ATTESTATION_TOKEN_INIT / CONTINUE (digest §1.4, §5.1): the INCOMPLETE protocol,
copying in pieces, input and state errors, stage-2 aborts on the buffer, and interrupts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest

from unirealm.arch.esr import Ec, esr_ec, ipa_from_hpfar_far
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecExitReason, RmiStatus
from unirealm.arch.rsi import RsiFid, RsiStatus

from .rsi_support import (
    EMPTY_IPA,
    PAR_SIZE,
    RAM_BASE,
    UNMAPPED_RAM_IPA,
    ScriptedRealm,
    build_realm,
    le_regs,
    run_calls,
    run_program,
)

MASK64 = (1 << 64) - 1
CHALLENGE = bytes((7 * i + 3) & 0xFF for i in range(64))
BUF = RAM_BASE + 2 * GRANULE_SIZE  # a populated (mapped, RIPAS RAM) granule
BUF2 = RAM_BASE + 3 * GRANULE_SIZE


def init_call(challenge: bytes = CHALLENGE) -> list[int]:
    return [RsiFid.ATTESTATION_TOKEN_INIT, *le_regs(challenge)]


def cont(ipa: int, offset: int, size: int) -> list[int]:
    return [RsiFid.ATTESTATION_TOKEN_CONTINUE, ipa, offset, size]


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path, rpv=b"R" * 64)


def decode_realm_claims(token: bytes) -> dict:  # type: ignore[type-arg]
    top = cbor2.loads(token)
    assert isinstance(top, cbor2.CBORTag) and top.tag in (399, 907)
    realm_entry = top.value[44241]
    realm_token = realm_entry if isinstance(realm_entry, bytes) else realm_entry[1]
    sign1 = cbor2.loads(realm_token)
    assert sign1.tag == 18
    return dict(cbor2.loads(sign1.value[2]))


def test_continue_before_init_is_error_state(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [cont(BUF, 0, GRANULE_SIZE)])
    assert out[0] == RsiStatus.ERROR_STATE


def test_init_returns_an_upper_bound(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [init_call()])
    assert out[0] == RsiStatus.SUCCESS
    assert out[1] > 0 and out[1] % GRANULE_SIZE == 0


def collect_token(realm: ScriptedRealm, piece: int, ipa: int = BUF) -> tuple[bytes, list[list[int]], int]:
    """INIT, then CONTINUE with `piece`-byte sizes, walking offsets through one granule per
    4096 bytes as a guest would; returns the token, every CONTINUE result and INIT's bound."""
    outs: list[list[int]] = []
    token = bytearray()
    bound = 0

    def program(cpu):  # type: ignore[no-untyped-def]
        nonlocal bound
        out = yield init_call()
        assert out[0] == RsiStatus.SUCCESS
        bound = out[1]
        offset = 0
        for _ in range(10_000):
            size = min(piece, GRANULE_SIZE - offset)
            out = yield cont(ipa, offset, size)
            outs.append(out)
            written = out[1]
            token.extend(realm.read_ipa(ipa + offset, written))
            offset += written
            if offset == GRANULE_SIZE:
                offset = 0
            if out[0] == RsiStatus.SUCCESS:
                return
            assert out[0] == RsiStatus.INCOMPLETE

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.IRQ
    return bytes(token), outs, bound


def test_token_in_one_piece_after_incomplete_signing_steps(realm: ScriptedRealm) -> None:
    token, outs, bound = collect_token(realm, GRANULE_SIZE)
    assert len(token) <= bound
    # Signing takes at least one CONTINUE that writes nothing and says INCOMPLETE.
    assert outs[0][:2] == [RsiStatus.INCOMPLETE, 0]
    assert outs[-1][0] == RsiStatus.SUCCESS
    assert outs[-1][1] == len(token)
    claims = decode_realm_claims(token)
    assert claims[10] == CHALLENGE
    assert claims[44235] == b"R" * 64


def test_token_copied_in_pieces_is_the_same_token(realm: ScriptedRealm) -> None:
    whole, _, _ = collect_token(realm, GRANULE_SIZE)
    pieces, outs, _ = collect_token(realm, 100)
    copying = [o for o in outs if o[1]]
    assert all(o[1] == 100 for o in copying[:-1])
    assert all(o[0] == RsiStatus.INCOMPLETE for o in copying[:-1])
    assert copying[-1][0] == RsiStatus.SUCCESS and 0 < copying[-1][1] <= 100
    assert sum(o[1] for o in outs) == len(pieces)
    # Same claims (the realm signature differs: ECDSA is randomised).
    assert decode_realm_claims(pieces) == decode_realm_claims(whole)


def test_size_zero_is_incomplete_without_writing(realm: ScriptedRealm) -> None:
    realm.write_ipa(BUF, b"\xa5" * GRANULE_SIZE)
    outs: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        yield init_call()
        while True:  # finish signing with size-0 calls only
            out = yield cont(BUF, 0, 0)
            outs.append(out)
            if len(outs) > 5:
                break
        out = yield cont(BUF, 16, 0)
        outs.append(out)
        out = yield cont(BUF, 0, 8)
        outs.append(out)

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.IRQ
    for out in outs[:-1]:
        assert out[:2] == [RsiStatus.INCOMPLETE, 0]
    assert realm.read_ipa(BUF + 8, GRANULE_SIZE - 8) == b"\xa5" * (GRANULE_SIZE - 8)
    assert outs[-1][:2] == [RsiStatus.INCOMPLETE, 8]
    assert realm.read_ipa(BUF, 8) != b"\xa5" * 8


def test_token_spans_granules_with_offsets(realm: ScriptedRealm) -> None:
    """CONTINUE writes at granule + offset; a second granule continues the stream."""
    whole, _, _ = collect_token(realm, GRANULE_SIZE)
    assert len(whole) > 1000
    got = bytearray()

    def program(cpu):  # type: ignore[no-untyped-def]
        yield init_call()
        while True:
            out = yield cont(BUF, 3000, 1000)
            if out[1]:
                break
        assert out[:2] == [RsiStatus.INCOMPLETE, 1000]
        got.extend(realm.read_ipa(BUF + 3000, 1000))
        offset = 0
        while True:
            out = yield cont(BUF2, offset, GRANULE_SIZE - offset)
            got.extend(realm.read_ipa(BUF2 + offset, out[1]))
            offset += out[1]
            if out[0] == RsiStatus.SUCCESS:
                break

    run_program(realm, program)
    assert len(got) == len(whole)
    assert decode_realm_claims(bytes(got)) == decode_realm_claims(whole)


def test_init_restarts_a_token_in_progress(realm: ScriptedRealm) -> None:
    other = b"\x42" * 64
    token = bytearray()

    def program(cpu):  # type: ignore[no-untyped-def]
        yield init_call()
        while True:
            out = yield cont(BUF, 0, 64)
            if out[1]:
                break
        out = yield init_call(other)  # abandon the first token
        assert out[0] == RsiStatus.SUCCESS
        while True:
            out = yield cont(BUF, 0, GRANULE_SIZE)
            token.extend(realm.read_ipa(BUF, out[1]))
            if out[0] == RsiStatus.SUCCESS:
                break

    run_program(realm, program)
    assert decode_realm_claims(bytes(token))[10] == other


def test_after_success_continue_needs_a_new_init(realm: ScriptedRealm) -> None:
    collect_token(realm, GRANULE_SIZE)
    (out,) = run_calls(realm, [cont(BUF, 0, GRANULE_SIZE)])
    assert out[0] == RsiStatus.ERROR_STATE


@pytest.mark.parametrize(
    ("ipa", "offset", "size"),
    [
        (BUF + 8, 0, 16),  # unaligned granule address
        (BUF + 0x800, 0, 16),
        (BUF, GRANULE_SIZE, 0),  # offset >= 4096
        (BUF, 0x10000, 1),
        (BUF, 4000, 97),  # offset + size > 4096
        (BUF, 0, GRANULE_SIZE + 1),
        (BUF, 8, MASK64 - 3),  # offset + size overflows
        (PAR_SIZE, 0, 16),  # first unprotected IPA: outside the PAR
        (PAR_SIZE | BUF, 0, 16),
        (EMPTY_IPA, 0, 16),  # RIPAS EMPTY
        (0, 0, 16),  # RIPAS EMPTY (never initialised)
    ],
)
def test_continue_bad_input_is_error_input(realm: ScriptedRealm, ipa: int, offset: int, size: int) -> None:
    out = run_calls(realm, [init_call(), cont(ipa, offset, size)])
    assert out[0][0] == RsiStatus.SUCCESS
    assert out[1][0] == RsiStatus.ERROR_INPUT


def test_unmapped_ram_buffer_exits_with_stage2_abort_then_retries(realm: ScriptedRealm) -> None:
    outs: list[list[int]] = []

    def program(cpu):  # type: ignore[no-untyped-def]
        yield init_call()
        while True:
            out = yield cont(UNMAPPED_RAM_IPA, 0, GRANULE_SIZE)
            outs.append(out)
            if out[0] != RsiStatus.INCOMPLETE:
                break

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.SYNC
    assert esr_ec(ex.esr) == Ec.DABT_LOWER
    assert ex.esr & (1 << 24) == 0  # ISV clear: not an emulatable access
    assert ipa_from_hpfar_far(ex.hpfar, ex.far) & ~0xFFF == UNMAPPED_RAM_IPA
    assert outs == []  # the realm has not seen a result yet
    # The host maps the granule (as KVM does on a fault) and re-enters: the call retries.
    flags, gprs = realm.vm.handle_sync(ex)
    assert UNMAPPED_RAM_IPA in realm.vm.data
    ex = realm.vm.enter(realm.rec(0), flags, gprs)
    assert ex.reason == RmiRecExitReason.IRQ
    assert outs[-1][0] == RsiStatus.SUCCESS
    token = realm.read_ipa(UNMAPPED_RAM_IPA, outs[-1][1])
    assert decode_realm_claims(token)[10] == CHALLENGE
    issued = realm.engines[0].issued
    assert issued[1][:4] == issued[2][:4] == cont(UNMAPPED_RAM_IPA, 0, GRANULE_SIZE)


def test_pending_irq_while_signing_exits_and_realm_sees_incomplete(realm: ScriptedRealm) -> None:
    outs: list[list[int]] = []
    token = bytearray()

    def program(cpu):  # type: ignore[no-untyped-def]
        yield init_call()
        realm.rmm.pending_irq = True  # a host interrupt arrives while the RMM signs
        out = yield cont(BUF, 0, GRANULE_SIZE)
        outs.append(out)
        while out[0] == RsiStatus.INCOMPLETE:
            out = yield cont(BUF, 0, GRANULE_SIZE)
            outs.append(out)
            token.extend(realm.read_ipa(BUF, out[1]))

    ex = run_program(realm, program)
    assert ex.reason == RmiRecExitReason.IRQ
    assert outs == []  # the exit happened inside the CONTINUE
    assert not realm.engines[0].done
    ex = realm.vm.enter(realm.rec(0))
    assert ex.reason == RmiRecExitReason.IRQ and realm.engines[0].done
    assert outs[0][:2] == [RsiStatus.INCOMPLETE, 0]
    assert outs[-1][0] == RsiStatus.SUCCESS
    assert decode_realm_claims(bytes(token))[10] == CHALLENGE


def test_token_binds_platform_to_rak_and_reports_measurements(realm: ScriptedRealm) -> None:
    ext = [RsiFid.MEASUREMENT_EXTEND, 2, 3, 0x636261, 0, 0, 0, 0, 0, 0, 0]
    token = bytearray()

    def program(cpu):  # type: ignore[no-untyped-def]
        yield ext
        yield init_call()
        while True:
            out = yield cont(BUF, 0, GRANULE_SIZE)
            token.extend(realm.read_ipa(BUF, out[1]))
            if out[0] == RsiStatus.SUCCESS:
                break

    run_program(realm, program)
    top = cbor2.loads(bytes(token))
    entry = top.value[44234]
    platform = cbor2.loads(entry if isinstance(entry, bytes) else entry[1])
    pclaims = cbor2.loads(platform.value[2])
    claims = decode_realm_claims(bytes(token))
    assert pclaims[10] == hashlib.sha256(claims[44237]).digest()
    assert claims[44238] == realm.realm.rim[:32]
    assert list(claims[44239]) == [
        bytes(32),
        hashlib.sha256(bytes(32) + b"abc").digest(),
        bytes(32),
        bytes(32),
    ]


def test_rmi_status_of_rec_enter_is_success_for_token_exits(realm: ScriptedRealm) -> None:
    out = realm.rmi(RmiFid.REC_ENTER, realm.rec(0).pa, realm.rec(0).run)
    assert out[0] == RmiStatus.SUCCESS
