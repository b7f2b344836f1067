"""The realm claim tables of attest/claims.py as the CCA token profiles define them
(draft-ffm-rats-cca-token; DEN0137 1.0 and 2.0 realm claims): each claim's key, the name
Veraison's JSON gives it, whether the profile makes it mandatory and its JSON form; every
check accepting the claims of the real tokens of that profile (the shared vectors). The
tables are built per profile by `_realm_table`; the tests build them again, as the module
does at import."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch import token as t
from unirealm.attest import claims as c
from unirealm.attest.verify import decode_token

# (key, Veraison JSON name, JSON form); mandatory: below
REALM_CLAIMS = [
    (265, "cca-realm-profile", "text"),
    (10, "cca-realm-challenge", "bytes"),
    (256, "cca-realm-instance-id", "bytes"),
    (44235, "cca-realm-personalization-value", "bytes"),
    (44238, "cca-realm-initial-measurement", "bytes"),
    (44239, "cca-realm-extensible-measurements", "bytes-array"),
    (44236, "cca-realm-hash-algo-id", "text"),
    (44237, "cca-realm-public-key", "bytes"),
    (44240, "cca-realm-public-key-hash-algo-id", "text"),
    (44243, "cca-realm-mec-policy", "mec"),
    (44244, "cca-realm-lfa-policy", "int"),
    (44257, "cca-realm-devices-token-hash", "bytes"),
]
ALWAYS = {10, 44235, 44238, 44239, 44236, 44237, 44240}
MANDATORY = {None: ALWAYS, t.PROFILE_REALM_1_0: ALWAYS, t.PROFILE_REALM_2_0: ALWAYS | {256, 44243}}
TOKENS = {
    None: "tf-m-tools/08c16e94-head/cca_token.cbor",
    t.PROFILE_REALM_1_0: "tf-m-tools/e84d296-rmm1.0-realm-profile/cca_example_token.cbor",
    t.PROFILE_REALM_2_0: "tf-m-tools/08c16e94-head/cca_example_token.cbor",
}


@pytest.mark.parametrize("profile", list(MANDATORY), ids=["no-profile", "realm-1.0", "realm-2.0"])
def test_realm_table(profile: str | None, vectors: Path) -> None:
    table = c._realm_table(profile)
    assert [(s.key, s.name, s.kind) for s in table] == REALM_CLAIMS
    assert {s.key for s in table if s.mandatory} == MANDATORY[profile]
    assert [(s.key, s.name, s.mandatory, s.kind) for s in table] == \
        [(s.key, s.name, s.mandatory, s.kind) for s in c.REALM_TABLES[profile]]
    token = decode_token((vectors / TOKENS[profile]).read_bytes())
    assert token.realm is not None
    claims = token.realm.claims
    assert claims.get(t.REALM_PROFILE) == profile
    present = [s for s in table if s.key in claims]
    assert {s.key for s in present} >= MANDATORY[profile]
    for spec in present:
        assert spec.check(claims[spec.key]) is None, spec.name
    assert c._validate(claims, table, "realm") == ([], [])
    # each mandatory claim taken away is named
    for key in sorted(MANDATORY[profile]):
        problems, _ = c._validate({k: v for k, v in claims.items() if k != key}, table, "realm")
        assert [str(p) for p in problems] == [f"{dict((k, n) for k, n, _ in REALM_CLAIMS)[key]}: mandatory claim missing"]


def test_json_forms_round_trip(vectors: Path) -> None:
    """Veraison's JSON of a 2.0 token read back gives its claims: the profile and hash names
    stay text, the REMs an array of byte strings."""
    token = decode_token((vectors / TOKENS[t.PROFILE_REALM_2_0]).read_bytes())
    claims = dict(token.realm.claims)  # type: ignore[union-attr]
    obj = c.realm_claims_to_json(claims)
    assert obj["cca-realm-profile"] == t.PROFILE_REALM_2_0
    assert isinstance(obj["cca-realm-extensible-measurements"], list)
    assert c.realm_claims_from_json(obj) == claims


def test_shown_stays_within_its_limit() -> None:
    assert c.shown("x" * 78) == repr("x" * 78)  # 80 characters with the quotes
    long = c.shown("x" * 79)
    assert len(long) == 80 and long.endswith("...")
    assert c.shown("x" * 500, limit=10) == "'xxxxxx..."
    assert c.shown(10 ** 5000).startswith("0x")  # past Python's digit limit: hex, cut to 80
    assert len(c.shown(10 ** 5000)) == 80


def test_claims_json_that_is_not_an_object() -> None:
    for bad in ([], "claims", 3):
        with pytest.raises(c.ClaimsJsonError) as exc:
            c.realm_claims_from_json(bad)
        assert str(exc.value) == "cca-realm-delegated-token: expected a JSON object of claims"
    with pytest.raises(c.ClaimsJsonError) as exc:
        c.platform_claims_from_json([])
    assert str(exc.value) == "cca-platform-token: expected a JSON object of claims"
