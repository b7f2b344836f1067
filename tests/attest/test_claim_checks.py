"""The claim checks of attest/claims.py one by one (Veraison's ccatoken rules): the realm
instance ID (a 33-byte RAND UEID), policy bits (0 or 1, not a boolean), profiles and hash
algorithm names, with the claim each problem names and what it says."""

from __future__ import annotations

import pytest

from unirealm.arch import token as t
from unirealm.attest import claims as c


def test_ueid() -> None:
    assert c._ueid(bytes([1]) + bytes(32)) is None
    assert c._ueid(bytes([2]) + bytes(32)) == "UEID type byte 0x02, expected 0x01 (RAND)"
    for bad in (bytes([1]) + bytes(31), bytes([1]) + bytes(33), "x" * 33, 33):
        assert c._ueid(bad) is not None


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (2, False), (-1, False), (True, False),
                                           (False, False), ("1", False)])
def test_policy_bit(value: object, ok: bool) -> None:
    assert (c._policy_bit(value) is None) is ok
    if not ok:
        assert c._policy_bit(value).endswith("is neither 0 nor 1")  # type: ignore[union-attr]


def test_profiles_and_hash_names() -> None:
    assert c._realm_profile(t.PROFILE_REALM_1_0) is None and c._realm_profile(t.PROFILE_REALM_2_0) is None
    assert c._realm_profile("tag:arm.com,2099:realm#9") == "unknown realm profile 'tag:arm.com,2099:realm#9'"
    assert c._platform_profile(t.PROFILE_PLATFORM_LEGACY) is None
    assert c._platform_profile("http://example.com/other").startswith("unknown platform profile ")
    assert c._hash_name("sha-256") is None and c._hash_name("md5") == "unknown hash algorithm 'md5'"


def test_unknown_profiles_are_the_only_problem_reported() -> None:
    problems, warnings = c.validate_realm_claims({t.REALM_PROFILE: "realm#3"})
    assert [(p.claim, p.reason) for p in problems] == [("cca-realm-profile", "unknown realm profile 'realm#3'")]
    assert warnings == []
    problems, _ = c.validate_platform_claims({t.PLATFORM_PROFILE: "p#9"})
    assert [(p.claim, p.reason) for p in problems] == [("cca-platform-profile", "unknown platform profile 'p#9'")]


def test_an_unknown_hash_algorithm_is_a_warning_naming_it() -> None:
    _, warnings = c.validate_realm_claims({t.REALM_HASH_ALGO_ID: "sha3-999"})
    assert ("cca-realm-hash-algo-id", "unknown hash algorithm 'sha3-999'") in [(w.claim, w.reason) for w in warnings]


def test_platform_problems_name_their_token() -> None:
    problems, warnings = c.validate_platform_claims({t.PLATFORM_PROFILE: t.PROFILE_PLATFORM_LEGACY, 99999: 1})
    assert any(w.claim == "platform claim 99999" for w in warnings)
    assert problems  # the mandatory claims are missing
