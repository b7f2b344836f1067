"""ACS 1.0 attestation and measurement suite: the RIM and REMs, and the realm token a realm
gets through RSI, checked the way a relying party checks it (attest.verify)."""

from __future__ import annotations

import hashlib

from unirealm.arch import token as tk
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecExitReason
from unirealm.arch.rsi import RsiFid, RsiStatus, regs_to_bytes
from unirealm.attest.verify import decode_token, verify_token

from .acs import DATA_IPA, AcsEnv, RealmHandle, RecHandle

CHALLENGE = bytes(range(64))


def le_regs(data: bytes) -> list[int]:
    data = data.ljust(64, b"\0")
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, 64, 8)]


def realm_with_rec(acs: AcsEnv, **params: object) -> tuple[RealmHandle, RecHandle]:
    realm = acs.default_realm(**params)  # type: ignore[arg-type]
    acs.ensure_rtts(realm, DATA_IPA, 3)
    acs.data_create(realm, DATA_IPA)
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.idle_wfi = True  # between calls the REC waits; each REC_ENTER runs the next
    return realm, rec


def call(acs: AcsEnv, rec: RecHandle, *regs: int) -> list[int]:
    start = len(rec.engine.log)
    rec.engine.push(list(regs))
    _, run = acs.enter(rec)
    while rec.engine.log[start].out is None:  # retried (an interrupt, a fault the host fixes)
        _, run = acs.enter(rec)
    assert run["exit_reason"] in (RmiRecExitReason.IRQ, RmiRecExitReason.SYNC)
    return rec.engine.log[start].out  # type: ignore[return-value]


def get_token(acs: AcsEnv, realm: RealmHandle, rec: RecHandle, challenge: bytes = CHALLENGE) -> bytes:
    out = call(acs, rec, RsiFid.ATTESTATION_TOKEN_INIT, *le_regs(challenge))
    assert out[0] == RsiStatus.SUCCESS
    token = b""
    while True:
        out = call(acs, rec, RsiFid.ATTESTATION_TOKEN_CONTINUE, DATA_IPA, 0, GRANULE_SIZE)
        pa = acs.rmm.stage2_translate(acs.realm(realm), DATA_IPA)
        assert pa is not None
        token += acs.realm_mem.read(pa.pa, out[1])
        if out[0] == RsiStatus.SUCCESS:
            return token
        assert out[0] == RsiStatus.INCOMPLETE


def realm_claims(token: bytes) -> dict:  # type: ignore[type-arg]
    decoded = decode_token(token)
    assert decoded.realm is not None
    return decoded.realm.claims


def read_measurement(acs: AcsEnv, rec: RecHandle, index: int) -> bytes:
    out = call(acs, rec, RsiFid.MEASUREMENT_READ, index)
    assert out[0] == RsiStatus.SUCCESS
    return regs_to_bytes(out[1:9])


def test_measurement_immutable_rim(acs: AcsEnv) -> None:
    """After activation nothing the host does changes the RIM."""
    realm, rec = realm_with_rec(acs)
    rim = read_measurement(acs, rec, 0)
    acs.ensure_rtts(realm, 0x30_0000, 3)
    acs.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, acs.delegated(), 0x30_0000)
    assert read_measurement(acs, rec, 0) == rim


def test_measurement_initial_rem_is_zero(acs: AcsEnv) -> None:
    _, rec = realm_with_rec(acs)
    assert [read_measurement(acs, rec, i) for i in range(1, 5)] == [bytes(64)] * 4


def test_measurement_rim_order(acs: AcsEnv) -> None:
    """The RIM depends on the order of the measured operations."""
    rims = []
    for order in ((0x10_0000, 0x20_0000), (0x20_0000, 0x10_0000)):
        realm = acs.default_realm()
        for ipa in order:
            acs.ensure_rtts(realm, ipa, 3)
            acs.data_create(realm, ipa, ipa.to_bytes(8, "little"))
        rims.append(acs.realm(realm).rim)
    assert rims[0] != rims[1]


def test_attestation_token_verify(acs: AcsEnv) -> None:
    realm, rec = realm_with_rec(acs)
    token = get_token(acs, realm, rec)
    assert acs.m.rot is not None
    result = verify_token(token, acs.m.rot.identity.cpak.public_key(), challenge=CHALLENGE)
    assert result.ok, result.reasons()


def test_attestation_rpv_value(acs: AcsEnv) -> None:
    rpv = bytes(range(100, 164))
    realm, rec = realm_with_rec(acs, rpv=rpv)  # type: ignore[arg-type]
    assert realm_claims(get_token(acs, realm, rec))[tk.REALM_PERSONALIZATION_VALUE] == rpv


def test_attestation_challenge_data_verification(acs: AcsEnv) -> None:
    realm, rec = realm_with_rec(acs)
    other = bytes(reversed(CHALLENGE))
    assert realm_claims(get_token(acs, realm, rec, other))[tk.REALM_CHALLENGE] == other


def test_attestation_token_init(acs: AcsEnv) -> None:
    """A second INIT restarts the token with the new challenge."""
    realm, rec = realm_with_rec(acs)
    call(acs, rec, RsiFid.ATTESTATION_TOKEN_INIT, *le_regs(b"first"))
    assert realm_claims(get_token(acs, realm, rec))[tk.REALM_CHALLENGE] == CHALLENGE


def test_attestation_realm_measurement_type(acs: AcsEnv) -> None:
    for algo, name, size in ((0, "sha-256", 32), (1, "sha-512", 64)):
        realm, rec = realm_with_rec(acs, hash_algo=algo)
        claims = realm_claims(get_token(acs, realm, rec))
        assert claims[tk.REALM_HASH_ALGO_ID] == name
        assert len(claims[tk.REALM_INITIAL_MEASUREMENT]) == size
        assert claims[tk.REALM_INITIAL_MEASUREMENT] == acs.realm(realm).rim[:size]


def test_attestation_platform_challenge_size(acs: AcsEnv) -> None:
    """The platform token's challenge is the hash of the RAK (a 32/48/64-byte nonce)."""
    realm, rec = realm_with_rec(acs)
    decoded = decode_token(get_token(acs, realm, rec))
    assert len(decoded.platform.claims[tk.PLATFORM_CHALLENGE]) in (32, 48, 64)


def test_attestation_rem_extend_check(acs: AcsEnv) -> None:
    _, rec = realm_with_rec(acs)
    value = b"\xAA" * 32
    out = call(acs, rec, RsiFid.MEASUREMENT_EXTEND, 1, len(value), *le_regs(value))
    assert out[0] == RsiStatus.SUCCESS
    want = hashlib.sha256(bytes(32) + value).digest()
    assert read_measurement(acs, rec, 1)[:32] == want


def test_attestation_rem_extend_check_realm_token(acs: AcsEnv) -> None:
    realm, rec = realm_with_rec(acs)
    value = b"\x55" * 16
    call(acs, rec, RsiFid.MEASUREMENT_EXTEND, 2, len(value), *le_regs(value))
    rems = realm_claims(get_token(acs, realm, rec))[tk.REALM_EXTENSIBLE_MEASUREMENTS]
    assert rems[1] == hashlib.sha256(bytes(32) + value).digest() and rems[0] == bytes(32)


def test_attestation_rec_exit_irq(acs: AcsEnv) -> None:
    """An interrupt during signing ends REC_ENTER with an IRQ exit; the realm continues."""
    realm, rec = realm_with_rec(acs)
    call(acs, rec, RsiFid.ATTESTATION_TOKEN_INIT, *le_regs(CHALLENGE))
    start = len(rec.engine.log)
    rec.engine.push([RsiFid.ATTESTATION_TOKEN_CONTINUE, DATA_IPA, 0, GRANULE_SIZE])
    acs.rmm.pending_irq = True  # the host's interrupt arrives
    _, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    acs.enter(rec)
    assert rec.engine.log[start].out is not None and rec.engine.log[start].out[0] == RsiStatus.INCOMPLETE
    assert realm_claims(get_token(acs, realm, rec))[tk.REALM_CHALLENGE] == CHALLENGE
