"""Realm attestation: the RAK, the realm token, and the CCA token the realm copies out.

One realm attestation key (RAK, P-384) per realm, made on the realm's first token request.
The claims follow the realm profile this RMM was built for: `realm#1.0.0` as RMM 1.0-rel0
writes it, or `realm#2.0.0` as RMM 2.0 writes it, which adds the realm instance ID (claim 256,
a 33-byte RAND UEID fixed for the realm's life, made with its RAK) and the MEC policy (claim
44243, an integer: shared, since this machine has no FEAT_MEC and every realm uses the
default MECID).
The RMM asks the root of trust for a platform token whose challenge is the hash of the
exact RAK claim bytes (the binding, digest §5.2), signs the realm token (COSE_Sign1, ES384)
and wraps both in the CCA collection this RMM was built for (tag 399, or the tag-907 CMW
collection). Signing is done in steps so RSI_ATTESTATION_TOKEN_CONTINUE can report
INCOMPLETE and an interrupt can end REC_ENTER in the middle (digest §5.1).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as tk
from unirealm.arch.measurement import HASH_NAMES
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiHashAlgorithm
from unirealm.machine.platform import es384_sign

from .measurement import hash_length

if TYPE_CHECKING:
    from .realm import Realm
    from .state import RmmState

RAK_HASH_ALGO = "sha-256"
SIGNATURE_SIZE = 96  # ES384 r||s


class AttestationError(Exception):
    """The token could not be produced (RSI_ERROR_UNKNOWN)."""


@dataclass
class RealmAttestationKey:
    key: ec.EllipticCurvePrivateKey
    cose_key: bytes  # the exact claim-44237 bytes
    platform_token: bytes
    instance_id: bytes = b""  # the realm instance ID of the realm#2.0.0 profile

    @classmethod
    def create(cls, rmm: RmmState) -> RealmAttestationKey:
        key = ec.generate_private_key(ec.SECP384R1())
        numbers = key.public_key().public_numbers()
        cose_key = tk.cose_ec2_key(tk.COSE_CRV_P384, numbers.x.to_bytes(48, "big"), numbers.y.to_bytes(48, "big"))
        try:
            platform_token = rmm.monitor.attest_platform_token(hashlib.sha256(cose_key).digest())
        except (RuntimeError, ValueError) as exc:
            raise AttestationError(str(exc)) from None
        return cls(key, cose_key, platform_token, bytes([tk.UEID_TYPE_RAND]) + os.urandom(32))


def realm_claims(
    realm: Realm, challenge: bytes, rak: RealmAttestationKey, profile: str = tk.PROFILE_REALM_1_0
) -> dict[int, object]:
    """The realm token claims, in the order TF-RMM writes them (digest §5.2); the 2.0 profile
    adds the instance ID after the challenge and the MEC policy at the end."""
    hlen = hash_length(realm.hash_algo)
    claims: dict[int, object] = {tk.REALM_CHALLENGE: challenge}
    if profile == tk.PROFILE_REALM_2_0:
        claims[tk.REALM_INSTANCE_ID] = rak.instance_id
    claims.update({
        tk.REALM_PERSONALIZATION_VALUE: realm.rpv,
        tk.REALM_PUBLIC_KEY: rak.cose_key,
        tk.REALM_HASH_ALGO_ID: HASH_NAMES[RmiHashAlgorithm(realm.hash_algo)],
        tk.REALM_PUBLIC_KEY_HASH_ALGO_ID: RAK_HASH_ALGO,
        tk.REALM_PROFILE: profile,
        tk.REALM_INITIAL_MEASUREMENT: realm.measurements[0][:hlen],
        tk.REALM_EXTENSIBLE_MEASUREMENTS: [m[:hlen] for m in realm.measurements[1:]],
    })
    if profile == tk.PROFILE_REALM_2_0:
        claims[tk.REALM_MEC_POLICY] = tk.MEC_POLICY_SHARED
    return claims


@dataclass
class TokenState:
    """One REC's token in progress: claims fixed at INIT, signed in steps, copied out."""

    rak: RealmAttestationKey
    payload: bytes
    token_format: int
    upper_bound: int
    realm_token: bytes = b""
    token: bytes = b""
    copied: int = 0
    steps: list[str] = field(default_factory=lambda: ["sign", "assemble"])

    @classmethod
    def start(cls, rmm: RmmState, realm: Realm, challenge: bytes) -> TokenState:
        if realm.attestation_key is None:
            realm.attestation_key = RealmAttestationKey.create(rmm)
        rak = realm.attestation_key
        payload = cbor2.dumps(realm_claims(realm, challenge, rak, rmm.config.realm_profile))
        fmt = rmm.config.token_format
        # Measurements and RPV are snapshotted now, so the final size is known exactly.
        unsigned = tk.CoseSign1(cbor2.dumps({tk.COSE_HEADER_ALG: tk.COSE_ALG_ES384}), {}, payload, bytes(SIGNATURE_SIZE))
        size = len(tk.encode_collection(rak.platform_token, unsigned.encode(), fmt))
        bound = -(-size // GRANULE_SIZE) * GRANULE_SIZE
        return cls(rak, payload, fmt, bound)

    @property
    def signed(self) -> bool:
        return not self.steps

    def step(self) -> None:
        action = self.steps.pop(0)
        if action == "sign":
            self.realm_token = tk.sign1(self.payload, lambda tbs: es384_sign(self.rak.key, tbs)).encode()
        else:
            self.token = tk.encode_collection(self.rak.platform_token, self.realm_token, self.token_format)

    @property
    def remaining(self) -> int:
        return len(self.token) - self.copied

    def take(self, size: int) -> bytes:
        chunk = self.token[self.copied : self.copied + size]
        self.copied += len(chunk)
        return chunk
