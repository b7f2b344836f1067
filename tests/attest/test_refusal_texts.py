"""Refusals of the relying party's inputs word for word: each names the field it is about
(the index of an operation, rems[i], the CoMID measurement), so a user can find it; and the
edges of what is accepted (s2sz 32, a kvmtool -m without a unit in MiB, a COSE_Key's x and
y both byte strings)."""

from __future__ import annotations

import cbor2
import pytest

from unirealm.arch import token as t
from unirealm.attest import claims as c
from unirealm.attest import measure as m
from unirealm.attest.keys import AttestKeyError, rak_from_claim
from unirealm.attest.refvals import ReferenceValuesError, reference_values_from_json


@pytest.mark.parametrize(("obj", "message"), [
    ({"rim": "zz"}, "rim: not a hex string"),
    ({"rim": ["00", 5]}, "rim: expected a hex string"),
    ({"rems": ["00", None, "q", None]}, "rems[2]: not a hex string"),
    ({"tag-identity": {}, "triples": []}, "CoMID without triples"),
    ({"triples": {"reference-values": [{"measurements": [
        {"key": {"value": "cca.rim"}, "value": {"digests": []}}]}]}}, "cca.rim: no digests"),
    ({"triples": {"reference-values": [{"measurements": [
        {"key": {"value": "cca.rim"}, "value": {"digests": [[1]]}}]}]}}, "cca.rim: a digest is not [alg, value]"),
    ({"triples": {"reference-values": [{"measurements": [
        {"key": {"value": "cca.rem1"}, "value": {"digests": [[1, 5]]}}]}]}}, "cca.rem1: expected a base64 string"),
    ({"triples": {"reference-values": [{"environment": {"class": {"id": {"type": "oid", "value": "x"}}},
                                        "measurements": [{"key": {"value": "cca.software-component"},
                                                          "value": {"digests": [[1, "AA"]]}}]}]}},
     'environment class id: expected {"type": "bytes", "value": ...}'),
])
def test_reference_value_refusals(obj: object, message: str) -> None:
    with pytest.raises(ReferenceValuesError) as exc:
        reference_values_from_json(obj)
    assert str(exc.value) == message


def test_reference_rpv_problem_text() -> None:
    from unirealm.attest.refvals import compare_reference_values

    ref = reference_values_from_json({"rpv": "00" * 64})
    problems = compare_reference_values(ref, {}, {t.REALM_PERSONALIZATION_VALUE: b"\1" * 64})
    assert [str(p) for p in problems] == ["cca-realm-personalization-value: does not match the reference RPV"]


@pytest.mark.parametrize(("obj", "message"), [
    ({"realm": {"s2sz": [40]}}, "realm.s2sz: expected an integer"),
    ({"realm": {"s2sz": "x" * 41}}, f"realm.s2sz: {'x' * 40 + '... (41 characters)'!r} is not an integer"),
    ({"realm": {"s2sz": "y" * 40}}, f"realm.s2sz: {'y' * 40!r} is not an integer"),
    ({"realm": {"s2sz": 31}}, "realm.s2sz: 31 is outside 32..52"),
    ({"realm": {"s2sz": 53}}, "realm.s2sz: 53 is outside 32..52"),
    ({"realm": {"colour": 1, "size": 2}}, "realm: unknown field(s) colour, size"),
    ({"realm": {}, "extra": 1, "more": 2}, "unknown field(s) extra, more"),
    ({"realm": {"flags": 1 << 64}}, f"realm.flags: {1 << 64} does not fit in 64 bits"),
    ({"realm": {"rpv": "xyz"}}, "realm.rpv: not a hex string"),
    ({"operations": [{"op": "rec", "pc": 0}, {"op": "ripas", "base": 0, "top": 4096}]},
     'operations[1]: give the RTT level of the entries: 1, 2, 3 or "auto"'),
])
def test_launch_refusals(obj: object, message: str) -> None:
    with pytest.raises(m.LaunchError) as exc:
        m.launch_from_json(obj)
    assert str(exc.value) == message


def test_launch_edges() -> None:
    assert m.launch_from_json({"realm": {"s2sz": 32}}).params.s2sz == 32
    assert m.launch_from_json({"realm": {"s2sz": 52}}).params.s2sz == 52
    ops = m.launch_from_json({"operations": [
        {"op": "rec", "pc": 0, "runnable": False}, {"op": "rec", "pc": 0, "flags": 0, "runnable": True},
        {"op": "rec", "pc": 0}]}).operations
    assert [op.flags for op in ops] == [0, 1, 1]  # type: ignore[union-attr]


def test_log_json_and_text_name_the_algorithm_and_addresses() -> None:
    launch = m.launch_from_json({"realm": {"s2sz": 40, "hash_algo": "sha512"}, "operations": [
        {"op": "data", "ipa": "0x80000000", "content_hex": "01"}]})
    log = m.measure_launch(launch)
    obj = m.log_to_json(log)
    assert obj["hash_algo"] == "sha-512" and obj["rim"] == log.digest.hex()
    assert [e["rim"] for e in obj["events"]][-1] == log.digest.hex()
    launch.params.hash_algo = m.HASH_ALGORITHMS["sha256"]
    assert m.log_to_json(m.measure_launch(launch))["hash_algo"] == "sha-256"
    assert "   1 data  ipa=0x80000000 flags=" in m.log_to_text(log)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), ("shared", True), ("private", True),
                                           (True, False), (False, False), (2, False), ("public", False)])
def test_mec_policy(value: object, ok: bool) -> None:
    assert (c._mec_policy(value) is None) is ok


def test_software_components_must_be_an_array() -> None:
    for bad in ("BL", b"BL", 5):
        assert c._sw_components(bad) == f"expected an array of software components, got {type(bad).__name__}"
    assert c._sw_components([]) == "no software components"


def test_unknown_claims_warn_in_words() -> None:
    _, warnings = c.validate_realm_claims({999: 1})
    assert [str(w) for w in warnings] == ["realm claim 999: not defined by the profile; ignored"]
    with pytest.raises(c.ClaimsJsonError) as exc:
        c.realm_claims_from_json({"cca-realm-challenge": 5})
    assert str(exc.value) == "cca-realm-challenge: expected a base64 string, got int"
    with pytest.raises(c.ClaimsJsonError) as exc:
        c.platform_claims_from_json({"cca-platform-sw-components": {}})
    assert str(exc.value) == "cca-platform-sw-components: expected an array of software components"
    assert c.claims_to_json({t.PLATFORM_SW_COMPONENTS: [{1: "BL", 99: 1, "x": 2}]}, c.PLATFORM_NAMES) == {
        "cca-platform-sw-components": [{"measurement-type": "BL", "99": 1, "x": 2}]}


def test_cose_key_refusals() -> None:
    x = bytes(32)
    for key, message in (
        ({t.COSE_KEY_KTY: 1}, "COSE_Key is not an EC2 key"),
        ({t.COSE_KEY_KTY: t.COSE_KTY_EC2, t.COSE_KEY_CRV: t.COSE_CRV_P256, t.COSE_KEY_X: x, t.COSE_KEY_Y: 5},
         "COSE_Key x/y are not byte strings"),
        ({t.COSE_KEY_KTY: t.COSE_KTY_EC2, t.COSE_KEY_CRV: t.COSE_CRV_P256, t.COSE_KEY_X: 5, t.COSE_KEY_Y: x},
         "COSE_Key x/y are not byte strings"),
    ):
        with pytest.raises(AttestKeyError) as exc:
            rak_from_claim(cbor2.dumps(key), cose_key=True)
        assert str(exc.value) == message
    on_no_curve = {t.COSE_KEY_KTY: t.COSE_KTY_EC2, t.COSE_KEY_CRV: t.COSE_CRV_P256, t.COSE_KEY_X: x,
                   t.COSE_KEY_Y: x}
    with pytest.raises(AttestKeyError) as exc:
        rak_from_claim(cbor2.dumps(on_no_curve), cose_key=True)
    assert str(exc.value).startswith("not a point on the curve (")


def test_more_refusal_texts(tmp_path: object) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from unirealm.attest.keys import load_public_key, public_jwk

    with pytest.raises(m.LaunchError) as exc:
        m.launch_from_json({"realm": {"s2sz": True}})
    assert str(exc.value) == "realm.s2sz: expected an integer"
    assert (c._cose_key_rak(b"\xff") or "").startswith("not a CBOR-encoded COSE_Key (COSE_Key: ")
    with pytest.raises(AttestKeyError) as kexc:
        rak_from_claim(b"", cose_key=True)
    assert str(kexc.value) == "COSE_Key: empty input"
    with pytest.raises(AttestKeyError) as kexc:
        public_jwk(ec.generate_private_key(ec.SECP256K1()).public_key())
    assert str(kexc.value) == "no JWK curve name for secp256k1"
    # a d that is not a valid scalar for the curve: cryptography's refusal, named for the curve
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    import json

    with pytest.raises(AttestKeyError) as kexc:
        load_public_key(json.dumps({**jwk, "d": "AAAA"}).encode())
    assert str(kexc.value).startswith("JWK is not a valid P-256 key (")


def test_kvmtool_file_refusals(cli: object, tmp_path: object) -> None:
    from pathlib import Path

    run = cli  # the in-process CLI fixture
    missing = Path(str(tmp_path)) / "fw.bin"
    status, _, err = run("measure", "--num-wps", "6", "--num-bps", "6", "-f", missing, "kvmtool", "--realm",  # type: ignore[operator]
                         "--firmware", "fw.bin", "-c", "1", "-m", "512M")
    assert status == 2
    assert err.strip() == f"unirealm measure: error: cannot read firmware {missing}: No such file or directory"
    status, _, err = run("measure", "-c", "nosuch", "kvmtool", "--realm", "-c", "1", "-m", "512M")  # type: ignore[operator]
    assert err.strip().startswith(
        "unirealm measure: error: -c nosuch: not a host profile (fvp, qemu, kvm, rmm-1.0-eac5, unirealm) "
        "nor a readable file: ")
