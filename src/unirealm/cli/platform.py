"""`unirealm platform`: the RME platform's identity, and its endorsement for a verifier.

`show` prints the platform identity (created on first use in the user's data directory).
`export --cpak-pub FILE.pem` writes the CPAK public key a verifier needs to check platform
tokens (`--cpak-jwk FILE.json` as a JWK, the form evcli and Veraison take); `--comid
FILE.json` writes the platform endorsement as a CoMID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from unirealm.cli.main import UsageError

if TYPE_CHECKING:
    from unirealm.machine.platform import PlatformRoT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("platform", help="show or export the platform identity")
    sub = p.add_subparsers(dest="platform_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    show = sub.add_parser("show", help="print the platform identity")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    export = sub.add_parser("export", help="write the platform's endorsement for a verifier")
    export.add_argument("--cpak-pub", type=Path, help="write the CPAK public key (PEM)")
    export.add_argument("--cpak-jwk", type=Path, help="write the CPAK public key (JWK)")
    export.add_argument("--comid", type=Path, help="write the platform endorsement CoMID (JSON)")
    export.set_defaults(func=run_export)


def _rot() -> PlatformRoT:
    from unirealm.machine.platform import PlatformRoT

    try:
        return PlatformRoT()
    except (RuntimeError, OSError) as exc:
        raise UsageError(str(exc)) from None


def run_show(args: argparse.Namespace) -> int:
    rot = _rot()
    ident = rot.identity
    info = {
        "directory": str(rot.directory),
        "profile": ident.profile,
        "implementation-id": ident.implementation_id.hex(),
        "instance-id": ident.instance_id.hex(),
        "lifecycle": f"{ident.lifecycle:#06x}",
        "config": ident.config.hex(),
        "verification-service": ident.verification_service,
        "cpak-sha256": hashlib.sha256(ident.cpak_public_point).hexdigest(),
        "software-components": [c.as_json() for c in ident.software_components],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key != "software-components":
            print(f"{key:22} {value}")
    print("software components:")
    for c in ident.software_components:
        print(f"  {c.measurement_type:10} {c.measurement_value.hex()}  version {c.version}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    if args.cpak_pub is None and args.cpak_jwk is None and args.comid is None:
        raise UsageError("nothing to export: give --cpak-pub FILE.pem, --cpak-jwk FILE.json and/or --comid FILE.json")
    ident = _rot().identity
    try:
        if args.cpak_pub is not None:
            args.cpak_pub.write_bytes(ident.cpak_public_pem)
            print(f"wrote CPAK public key to {args.cpak_pub}")
        if args.cpak_jwk is not None:
            from unirealm.attest.keys import public_jwk

            args.cpak_jwk.write_text(json.dumps(public_jwk(ident.cpak.public_key()), indent=2) + "\n")
            print(f"wrote CPAK public key (JWK) to {args.cpak_jwk}")
        if args.comid is not None:
            from unirealm.attest.corim import platform_comid

            comid = platform_comid(
                ident.cpak_public_pem,
                ident.implementation_id,
                ident.instance_id,
                [c.as_json() for c in ident.software_components],
                platform_config=ident.config,
            )
            args.comid.write_text(json.dumps(comid, indent=2) + "\n")
            print(f"wrote platform endorsement CoMID to {args.comid}")
    except ValueError as exc:  # a component whose measurement does not fit its named hash
        raise UsageError(f"cannot make the platform CoMID: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write: {exc.strerror}: {exc.filename}") from None
    return 0
