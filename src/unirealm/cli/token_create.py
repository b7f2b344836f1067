"""`unirealm token create`: launch a minimal realm through the RMI and write its CCA token.

No VMM is involved: the host builds the realm (guest/asm/attest_realm.S, assembled at build
time) directly with RMI calls, the realm asks the RMM for its token over RSI, and hands it
to the host through memory it shares with RSI_IPA_STATE_SET and an RSI_HOST_CALL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unirealm.arch.rmi import RmiHashAlgorithm
from unirealm.arch.rsi import CHALLENGE_SIZE, MAX_MEASUREMENT_SIZE, RPV_SIZE
from unirealm.arch.token import (
    REALM_INITIAL_MEASUREMENT,
    REALM_PROFILES_BY_NAME,
    TAG_CCA_TOKEN_COLLECTION,
    TAG_CMW_COLLECTION,
)
from unirealm.cli.main import UsageError

ALGOS = {"sha256": RmiHashAlgorithm.SHA_256, "sha512": RmiHashAlgorithm.SHA_512}


def parse_hex(text: str, what: str, limit: int) -> bytes:
    cleaned = text[2:] if text.lower().startswith("0x") else text
    if len(cleaned) % 2:
        raise UsageError(f"{what}: odd number of hex digits")
    try:
        value = bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError(f"{what}: not hexadecimal") from None
    if len(value) > limit:
        raise UsageError(f"{what}: {len(value)} bytes, at most {limit} allowed")
    return value


def parse_rem(text: str) -> tuple[int, bytes]:
    index_text, sep, value_text = text.partition(":")
    if not sep:
        raise UsageError(f"--rem {text!r}: expected INDEX:HEX")
    try:
        index = int(index_text, 0)
    except ValueError:
        raise UsageError(f"--rem {text!r}: index is not a number") from None
    if not 1 <= index <= 4:
        raise UsageError(f"--rem {text!r}: REM index must be 1..4 (REM0..REM3)")
    return index, parse_hex(value_text, f"--rem {index}", MAX_MEASUREMENT_SIZE)


def register(token_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = token_sub.add_parser("create", help="boot a minimal realm and write its attestation token")
    p.add_argument("--out", "-o", required=True, type=Path, help="where to write the CCA token (CBOR)")
    p.add_argument("--challenge", default="", help=f"challenge, hex, at most {CHALLENGE_SIZE} bytes (zero-padded)")
    p.add_argument("--rpv", default="", help=f"realm personalisation value, hex, at most {RPV_SIZE} bytes")
    p.add_argument("--measurement-algo", choices=sorted(ALGOS), default="sha256")
    p.add_argument("--rem", action="append", default=[], metavar="INDEX:HEX", help="extend REM INDEX (1..4)")
    p.add_argument("--format", choices=["399", "907"], default="399", help="CCA collection: tag 399 or CMW tag 907")
    p.add_argument("--profile", choices=sorted(REALM_PROFILES_BY_NAME), default="realm#1.0.0",
                   help="realm token claims: RMM 1.0-rel0's or RMM 2.0's (instance ID, MEC policy)")
    p.add_argument("--trace", action="store_true", help="print each RMI/RSI call with its arguments and result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unirealm.host.attest_realm import RealmFailed, TokenRequest, create_token
    from unirealm.host.toolchain import ToolchainError

    challenge = parse_hex(args.challenge, "--challenge", CHALLENGE_SIZE)
    rpv = parse_hex(args.rpv, "--rpv", RPV_SIZE)
    rems = [parse_rem(r) for r in args.rem]
    request = TokenRequest(
        challenge=challenge.ljust(CHALLENGE_SIZE, b"\0"),
        rpv=rpv,
        hash_algo=ALGOS[args.measurement_algo],
        rems=rems,
        token_format=TAG_CMW_COLLECTION if args.format == "907" else TAG_CCA_TOKEN_COLLECTION,
        realm_profile=REALM_PROFILES_BY_NAME[args.profile],
    )
    trace = (lambda line: print(line, file=sys.stderr)) if args.trace else None
    try:
        result = create_token(request, trace=trace)
    except (RealmFailed, ToolchainError) as exc:
        print(f"unirealm token create: {exc}", file=sys.stderr)
        return 1
    try:
        args.out.write_bytes(result.token)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {len(result.token)}-byte CCA token (tag {args.format}) to {args.out}")
    from unirealm.attest.verify import decode_token

    realm = decode_token(result.token).realm
    if realm is not None:  # the RIM as the realm's token reports it
        print(f"RIM ({args.measurement_algo}): {bytes(realm.claims[REALM_INITIAL_MEASUREMENT]).hex()}")
    return 0
