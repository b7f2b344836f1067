"""`unirealm token`: decode, verify and create CCA attestation tokens.

`decode FILE [--json]` prints the format, profiles and claims (Veraison's claim names).
`verify FILE --cpak KEY [--challenge HEX] [--ref REF.json] [--rem-log LOG] [--strict] [--json]`
exits 0 when the token verifies, 1 when it does not (one line per reason), 2 when the input
cannot be read as a token or the options are wrong. evcli's spelling works too:
`verify -t FILE -k KEY [-c CLAIMS.json]` (`-c` writes the claims of a verified token as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2

from unirealm.arch import token as t
from unirealm.arch.remlog import RemLogError, parse_rem_log, replay
from unirealm.attest.claims import (
    PLATFORM_NAMES,
    REALM_NAMES,
    SWC_NAMES,
    ClaimSpec,
    lifecycle_name,
    platform_claims_to_json,
    realm_claims_to_json,
    validate_platform_claims,
    validate_realm_claims,
)
from unirealm.attest.inputs import JSON_LIMIT, KEY_LIMIT, TOKEN_LIMIT, InputError, load_json, read_bounded
from unirealm.attest.keys import AttestKeyError, load_public_key
from unirealm.attest.refvals import ReferenceValues, ReferenceValuesError, reference_values_from_json
from unirealm.attest.verify import CcaToken, decode_token, verify_token
from unirealm.cli import token_create
from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("token", help="decode, verify and create CCA attestation tokens")
    sub = p.add_subparsers(dest="token_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    d = sub.add_parser("decode", help="print the format, profiles and claims of a CCA token")
    d.add_argument("file", metavar="FILE", help="CCA token (tag 399 / 907 collection or a platform token)")
    d.add_argument("--json", action="store_true", help="print JSON with Veraison's claim names")
    d.set_defaults(func=_decode)

    v = sub.add_parser("verify", help="verify a CCA token's signatures, binding and claims")
    v.add_argument("file", metavar="FILE", nargs="?", help="CCA token")
    v.add_argument("-t", "--token", dest="token_file", metavar="FILE", help="CCA token (evcli's spelling)")
    v.add_argument("--cpak", "-k", "--key", dest="cpak", required=True, metavar="KEY",
                   help="CPAK: PEM public/private key or JWK")
    v.add_argument("-c", "--claims", metavar="CLAIMS.json", help="write the claims of a verified token as JSON")
    v.add_argument("--challenge", metavar="HEX", help="the realm challenge the relying party sent")
    v.add_argument("--ref", metavar="REF.json", help="reference values (plain JSON or CoMID)")
    v.add_argument("--rem-log", metavar="LOG", help="a REM measurement log to replay: the token's REMs must equal it")
    v.add_argument("--strict", action="store_true", help="fail on measurements longer than the hash")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_verify)

    token_create.register(sub)


def _read(path: str, what: str, limit: int) -> bytes:
    try:
        return read_bounded(path, limit, what)
    except InputError as exc:
        raise UsageError(str(exc)) from None


def _load_token(path: str) -> CcaToken:
    data = _read(path, "token", TOKEN_LIMIT)
    try:
        return decode_token(data)
    except t.TokenFormatError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except Exception as exc:  # malformed input must never end in a traceback
        raise UsageError(f"{path}: malformed token ({type(exc).__name__}: {exc})") from None


def _dumps(obj: Any) -> str:
    """JSON of decoded claims; a claim may hold what JSON has no form for (CBOR tags,
    `undefined`, simple values, bignums), written as a tagged object or a string."""
    return json.dumps(_jsonable(obj), indent=2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else _text_value(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else hex(value)
    if isinstance(value, cbor2.CBORTag):
        return {"cbor-tag": value.tag, "value": _jsonable(value.value)}
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)  # undefined, CBORSimpleValue, ...


def _summary(token: CcaToken) -> dict[str, Any]:
    return {
        "format": token.format.value,
        "platform-profile": token.platform_profile,
        "realm-profile": token.realm_profile,
        "realm-generation": token.realm_generation,
    }


def _claims_json(token: CcaToken) -> dict[str, Any]:
    out: dict[str, Any] = {"cca-platform-token": platform_claims_to_json(token.platform.claims)}
    if token.realm is not None:
        out["cca-realm-delegated-token"] = realm_claims_to_json(token.realm.claims)
    return out


def _text_value(value: Any) -> str:
    """A claim value as text; what JSON and repr() cannot always print (bignums past
    Python's digit limit, CBOR tags, undefined) goes through _jsonable."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value))


def _print_claims(title: str, claims: Mapping[Any, Any], names: Mapping[int, ClaimSpec]) -> None:
    print(f"{title}:")
    for key, value in claims.items():
        spec = names.get(key)
        name = spec.name if spec else f"claim {_text_value(key)}"
        if key == t.PLATFORM_SW_COMPONENTS and names is PLATFORM_NAMES and isinstance(value, Sequence):
            print(f"  {name}:")
            for i, comp in enumerate(value):
                if not isinstance(comp, Mapping):
                    print(f"    [{i}] {_text_value(comp)}")
                    continue
                for j, (k, v) in enumerate(comp.items()):
                    prefix = f"    [{i}] " if j == 0 else " " * (len(f"    [{i}] "))
                    print(f"{prefix}{SWC_NAMES.get(k, _text_value(k))}: {_text_value(v)}")
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            print(f"  {name}:")
            for i, item in enumerate(value):
                print(f"    [{i}] {_text_value(item)}")
        elif key == t.PLATFORM_LIFECYCLE and names is PLATFORM_NAMES and isinstance(value, int):
            state = lifecycle_name(value)
            print(f"  {name}: 0x{value:04x}" + (f" ({state})" if state else ""))
        else:
            print(f"  {name}: {_text_value(value)}")


def _decode(args: argparse.Namespace) -> int:
    token = _load_token(args.file)
    if args.json:
        print(_dumps({**_summary(token), **_claims_json(token)}))
    else:
        summary = _summary(token)
        print(f"format: {summary['format']}")
        print(f"platform profile: {summary['platform-profile']}")
        if token.realm is not None:
            print(f"realm profile: {summary['realm-profile'] or '(none)'} - {summary['realm-generation']}")
        _print_claims("cca-platform-token", token.platform.claims, PLATFORM_NAMES)
        if token.realm is not None:
            _print_claims("cca-realm-delegated-token", token.realm.claims, REALM_NAMES)
    # Decoding does not judge, but says which claims a verifier would reject.
    problems, _ = validate_platform_claims(token.platform.claims)
    if token.realm is not None:
        problems += validate_realm_claims(token.realm.claims)[0]
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    return 0


def rems_of_log(path: str, algorithm: Any = None) -> list[bytes]:
    """The REMs a measurement log (arch/remlog.py) replays to, for the realm's algorithm."""
    try:
        text = _read(path, "REM log", JSON_LIMIT).decode()
        return replay(parse_rem_log(text), algorithm if isinstance(algorithm, str) else None)
    except (RemLogError, UnicodeDecodeError) as exc:
        raise UsageError(f"--rem-log {path}: {exc}") from None


def _verify(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.token_file is None):
        raise UsageError("give the token once: FILE or -t/--token FILE")
    args.file = args.file or args.token_file
    try:
        cpak = load_public_key(_read(args.cpak, "CPAK", KEY_LIMIT))
    except AttestKeyError as exc:
        raise UsageError(f"--cpak {args.cpak}: {exc}") from None
    challenge = None
    if args.challenge is not None:
        try:
            challenge = bytes.fromhex(args.challenge.removeprefix("0x"))
        except ValueError:
            raise UsageError("--challenge: not a hex string") from None
        if not 1 <= len(challenge) <= 64:
            raise UsageError("--challenge: must be 1 to 64 bytes")
    reference = None
    if args.ref is not None:
        try:
            reference = reference_values_from_json(load_json(args.ref, "reference values"))
        except InputError as exc:
            raise UsageError(f"--ref: {exc}") from None
        except ReferenceValuesError as exc:
            raise UsageError(f"--ref {args.ref}: {exc}") from None
    token = _load_token(args.file)
    if args.rem_log is not None:
        reference = reference or ReferenceValues()
        replayed: list[bytes | None] = list(
            rems_of_log(args.rem_log, token.realm.claims.get(t.REALM_HASH_ALGO_ID) if token.realm else None))
        reference.rems = replayed
    try:
        result = verify_token(token, cpak, challenge=challenge, reference=reference, strict=args.strict)
    except Exception as exc:  # malformed input must never end in a traceback
        raise UsageError(f"{args.file}: malformed token ({type(exc).__name__}: {exc})") from None
    if args.claims is not None and result.ok:
        try:
            Path(args.claims).write_text(json.dumps(_claims_json(token), indent=2) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.claims}: {exc.strerror or exc}") from None
    if args.json:
        out = {
            "verified": result.ok,
            **_summary(token),
            "problems": [{"claim": p.claim, "reason": p.reason} for p in result.problems],
            "warnings": [{"claim": p.claim, "reason": p.reason} for p in result.warnings],
            **_claims_json(token),
        }
        print(_dumps(out))
    else:
        summary = _summary(token)
        print(f"format: {summary['format']}")
        print(f"platform profile: {summary['platform-profile']}")
        if token.realm is not None:
            print(f"realm profile: {summary['realm-profile'] or '(none)'} - {summary['realm-generation']}")
        for warning in result.warnings:
            print(f"warning: {warning}")
        if result.ok:
            print("verified")
        else:
            print("NOT verified:")
            for problem in result.problems:
                print(f"  {problem}")
    return 0 if result.ok else 1
