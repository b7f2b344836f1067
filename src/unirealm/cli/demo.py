"""`unirealm demo`: boot helloworld as a realm and check what it proves.

It builds examples/helloworld (with Debian's aarch64 cross compiler) into a kernel image,
runs it as a realm with a fresh challenge (`-p "attest=<hex> loglevel=7 -- ..."`), shows the boot log,
then verifies the token the realm printed against this platform's CPAK and compares its
RIM with the RIM `unirealm measure` predicts for the same command line.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import unirealm
from unirealm.cli.main import UsageError

REPO = Path(unirealm.__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("demo", help="boot helloworld as a realm, verify its token and RIM")
    p.add_argument("--image", type=Path, default=REPO / "build" / "helloworld.img")
    p.set_defaults(func=run)


def ensure_image(image: Path) -> None:
    if image.exists():
        return
    source = REPO / "examples" / "helloworld" / "hello.c"
    if not source.exists():
        raise UsageError(f"{image} does not exist and {source} is not available to build it")
    elf = image.with_suffix("")
    image.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(source)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise UsageError(f"building helloworld failed: {result.stderr.strip() or 'aarch64-linux-gnu-gcc missing'}")
    from unirealm.host.image import build_image

    image.write_bytes(build_image(elf.read_bytes(), "helloworld"))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from unirealm.attest.measure import measure_launch
    from unirealm.attest.verify import verify_token
    from unirealm.cli.measure import launch_of_run
    from unirealm.host.cmdline import RunConfig, run_parser
    from unirealm.host.vmm import Vmm, VmmError
    from unirealm.machine.platform import PlatformRoT

    console = Console()
    ensure_image(args.image)
    challenge = os.urandom(32)
    argv = ["--realm", "-k", str(args.image), "-p", f"attest={challenge.hex()} loglevel=7 -- hello from a realm"]
    console.rule("[bold]unirealm run " + " ".join(argv))
    run_args = run_parser().parse_args(argv)
    out, kernel_log = io.BytesIO(), io.BytesIO()
    try:
        result = Vmm(RunConfig.from_args(run_args), out, None, log_output=kernel_log).run()
    except VmmError as exc:
        raise UsageError(str(exc)) from None
    text = kernel_log.getvalue().decode(errors="replace") + out.getvalue().decode(errors="replace")
    sys.stdout.write(text)
    console.rule("[bold]what the realm proves")

    match = re.search(r"attestation token \((\d+) bytes, base64\):\n(.*?)\nunirealm: end of", text, re.S)
    if match is None:
        console.print("[red]the realm printed no attestation token")
        return 1
    token = base64.b64decode("".join(match.group(2).split()))
    predicted = measure_launch(launch_of_run(run_args)).digest
    verdict = verify_token(token, PlatformRoT().identity.cpak.public_key(), challenge=challenge)
    realm_claims = verdict.token.realm.claims if verdict.token.realm else {}
    rim = realm_claims.get(44238, b"")

    def line(pattern: str) -> str:
        found = re.search(pattern, text)
        return found.group(0) if found else "(missing)"

    table = Table(show_header=False)
    table.add_row("greeting", line(r"Hello from unirealm![^\n]*"))
    table.add_row("RSI", line(r"RSI [0-9.]+ detected[^\n]*"))
    table.add_row("IPA width", line(r"IPA width \d+ bits"))
    table.add_row("exit status", str(result.status))
    table.add_row("token", f"{len(token)} bytes, {verdict.token.format.value}, {verdict.token.realm_generation}")
    table.add_row("RIM (token)", rim.hex())
    table.add_row("RIM (predicted)", predicted.hex())
    table.add_row("RIM matches", "[green]yes" if rim == predicted else "[red]NO")
    table.add_row("signatures, binding, challenge", "[green]verified" if verdict.ok else "[red]" + "; ".join(
        f"{p.claim}: {p.reason}" for p in verdict.problems))
    console.print(table)
    return 0 if verdict.ok and rim == predicted and result.status == 0 else 1
