"""`unirealm initrd DIR -o FILE`: pack a directory as a newc cpio initrd (for `run -i`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unirealm.cli.build import write_output
from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("initrd", help="pack a directory into a newc cpio initrd")
    p.add_argument("directory", type=Path, help="the tree to pack (it becomes the guest's /)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the initrd file to write")
    p.add_argument("-z", "--gzip", action="store_true", help="gzip-compress the archive")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unirealm.host.cpio import write_initrd

    if not args.directory.is_dir():
        raise UsageError(f"{args.directory} is not a directory")
    try:
        data = write_initrd(args.directory, args.gzip)
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    write_output(args.output, data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0
