"""`unirealm measure LAUNCH.json`: the RIM of a realm launch, computed offline.

LAUNCH.json holds the realm parameters and the host's operations (see
`unirealm.attest.measure` for the format and the RIPAS block-size rule). Prints the RIM
and the measurement log, as text or `--json`; `--comid OUT.json` also writes the realm's
reference values as a CoMID for Veraison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unirealm.attest.corim import realm_comid
from unirealm.attest.measure import LaunchError, load_launch, log_to_json, log_to_text, measure_launch
from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("measure", help="compute the RIM of a realm launch offline")
    p.add_argument("launch", metavar="LAUNCH.json", help="realm parameters and host operations")
    p.add_argument("--json", action="store_true", help="print the RIM and the log as JSON")
    p.add_argument("--comid", metavar="OUT.json", help="write the realm reference values as a CoMID")
    p.set_defaults(func=_measure)


def _measure(args: argparse.Namespace) -> int:
    try:
        launch = load_launch(args.launch)
        log = measure_launch(launch)
    except LaunchError as exc:
        raise UsageError(f"{args.launch}: {exc}") from None
    algo = "sha-256" if len(log.digest) == 32 else "sha-512"
    if args.comid:
        comid = realm_comid(log.digest, hash_algo=algo, rpv=launch.params.rpv)
        try:
            Path(args.comid).write_text(json.dumps(comid, indent=2) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.comid}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(log_to_json(log), indent=2))
    else:
        print(f"RIM ({algo}): {log.digest.hex()}")
        print("measurement log:")
        print(log_to_text(log))
    return 0
