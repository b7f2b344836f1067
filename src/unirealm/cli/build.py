"""`unirealm build`: make a unirealm kernel image around a static AArch64 ELF."""

from __future__ import annotations

import argparse
from pathlib import Path

from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("build", help="build a kernel image from an AArch64 ELF program")
    p.add_argument("elf", type=Path, help="the program (static AArch64 ELF)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the kernel image to write")
    p.add_argument("--name", help="the program's name inside the image (default: the file name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unirealm.host.image import build_image

    try:
        elf = args.elf.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.elf}: {exc.strerror}") from None
    if elf[:4] != b"\x7fELF":
        raise UsageError(f"{args.elf} is not an ELF file")
    if len(elf) < 20 or int.from_bytes(elf[18:20], "little") != 183:
        raise UsageError(f"{args.elf} is not an AArch64 ELF (e_machine {int.from_bytes(elf[18:20], 'little')})")
    image = build_image(elf, args.name or args.elf.name)
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_bytes(image)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {args.output} ({len(image)} bytes, app {args.name or args.elf.name})")
    return 0
