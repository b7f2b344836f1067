"""What the RMM's attestation token holds (rmm/attestation.py, digest §5.2): the collection
the RMM was built for (tag 399 or the CMW tag 907), INIT's bound as the token's size
rounded up to granules, a RAK whose COSE_Key (P-384, 48-byte coordinates) verifies the
realm token and whose claim bytes are what the platform token binds, and the realm#2.0.0
claims: a 33-byte RAND instance ID fixed for the realm's life, MEC policy shared."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from unirealm.arch import token as tk
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.rmm.core import RmmConfig

from .rsi_support import build_realm
from .test_rsi_attestation import CHALLENGE, collect_token


def parts(token: bytes) -> tuple[int, dict, dict, cbor2.CBORTag]:  # type: ignore[type-arg]
    top = cbor2.loads(token)
    body = top.value
    platform = body[tk.KEY_PLATFORM_TOKEN]
    realm = body[tk.KEY_REALM_DELEGATED_TOKEN]
    if top.tag == tk.TAG_CMW_COLLECTION:
        assert platform[0] == realm[0] == tk.COAP_CONTENT_FORMAT_EAT_CWT
        platform, realm = platform[1], realm[1]
    realm_sign1 = cbor2.loads(realm)
    platform_claims = cbor2.loads(cbor2.loads(platform).value[2])
    return top.tag, dict(cbor2.loads(realm_sign1.value[2])), platform_claims, realm_sign1


@pytest.mark.parametrize("fmt", [tk.TAG_CCA_TOKEN_COLLECTION, tk.TAG_CMW_COLLECTION])
def test_collection_tag_and_bound(tmp_path: Path, fmt: int) -> None:
    realm = build_realm(tmp_path, config=RmmConfig(token_format=fmt))
    token, _, bound = collect_token(realm, GRANULE_SIZE)
    tag, claims, _, _ = parts(token)
    assert tag == fmt and claims[tk.REALM_CHALLENGE] == CHALLENGE
    assert bound % GRANULE_SIZE == 0 and bound - GRANULE_SIZE < len(token) <= bound


def test_rak_verifies_the_realm_token_and_is_bound_by_the_platform_token(tmp_path: Path) -> None:
    realm = build_realm(tmp_path)
    token, _, _ = collect_token(realm, GRANULE_SIZE)
    _, claims, platform_claims, sign1 = parts(token)
    rak_claim = claims[tk.REALM_PUBLIC_KEY]
    cose_key = cbor2.loads(rak_claim)
    x, y = cose_key[tk.COSE_KEY_X], cose_key[tk.COSE_KEY_Y]
    assert cose_key[tk.COSE_KEY_CRV] == tk.COSE_CRV_P384 and len(x) == len(y) == 48
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                        ec.SECP384R1()).public_key()
    protected, _, payload, signature = sign1.value
    assert len(signature) == 96
    der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
    key.verify(der, tk.sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    assert platform_claims[tk.PLATFORM_CHALLENGE] == hashlib.sha256(rak_claim).digest()


def test_realm_2_0_claims(tmp_path: Path) -> None:
    realm = build_realm(tmp_path, config=RmmConfig(realm_profile=tk.PROFILE_REALM_2_0))
    first, _, _ = collect_token(realm, GRANULE_SIZE)
    again, _, _ = collect_token(realm, GRANULE_SIZE)
    claims, claims_again = parts(first)[1], parts(again)[1]
    instance = claims[tk.REALM_INSTANCE_ID]
    assert len(instance) == 33 and instance[0] == tk.UEID_TYPE_RAND
    assert claims_again[tk.REALM_INSTANCE_ID] == instance  # fixed for the realm's life
    assert claims[tk.REALM_MEC_POLICY] == tk.MEC_POLICY_SHARED
    assert claims[tk.REALM_PROFILE] == tk.PROFILE_REALM_2_0
    assert list(claims)[:2] == [tk.REALM_CHALLENGE, tk.REALM_INSTANCE_ID]  # TF-RMM's order
    assert list(claims)[-1] == tk.REALM_MEC_POLICY
    other = build_realm(tmp_path / "other", config=RmmConfig(realm_profile=tk.PROFILE_REALM_2_0))
    assert parts(collect_token(other, GRANULE_SIZE)[0])[1][tk.REALM_INSTANCE_ID] != instance


def test_realm_1_0_claims_have_neither(tmp_path: Path) -> None:
    claims = parts(collect_token(build_realm(tmp_path), GRANULE_SIZE)[0])[1]
    assert tk.REALM_INSTANCE_ID not in claims and tk.REALM_MEC_POLICY not in claims
    assert claims[tk.REALM_PROFILE] == tk.PROFILE_REALM_1_0
