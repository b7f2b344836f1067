"""`unirealm build`: make a unirealm kernel image around an AArch64 ELF program, or around
an app from Debian arm64 packages (`--debian PKG... --app PATH`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("build", help="build a kernel image from an AArch64 ELF program")
    p.add_argument("elf", type=Path, nargs="?", help="the program (static AArch64 ELF)")
    p.add_argument("-o", "--output", type=Path, help="the kernel image to write (default: build/<app>.img)")
    p.add_argument("--name", help="the program's name inside the image (default: the file name)")
    p.add_argument("--debian", nargs="+", metavar="PKG", help="Debian arm64 packages holding the app and its libraries")
    p.add_argument("--app", help="with --debian: the program's path in the packages, e.g. /usr/bin/sqlite3")
    p.add_argument("--cache", type=Path, help="with --debian: where packages are cached (default build/debian)")
    p.set_defaults(func=run)


DEFAULT_DIR = Path("build")


def write_output(output: Path, data: bytes, default: bool = False) -> None:
    """Write `data` to `output`, whose directory must exist; only the default output
    directory `build/` (of the current directory) is created when missing."""
    if default and output.parent == DEFAULT_DIR and not DEFAULT_DIR.exists():
        try:
            DEFAULT_DIR.mkdir()
        except OSError as exc:
            raise UsageError(f"cannot create {DEFAULT_DIR}/: {exc.strerror}") from None
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: directory {output.parent} does not exist")
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None


def run_debian(args: argparse.Namespace) -> int:
    from unirealm.host import debian
    from unirealm.host.image import build_image

    if not args.app or not args.app.startswith("/"):
        raise UsageError("--debian needs --app with the program's absolute path in the packages")
    if args.elf is not None:
        raise UsageError("give either an ELF file or --debian, not both")
    try:
        files = debian.image_files(args.debian, args.app, args.cache or debian.DEFAULT_CACHE)
    except debian.DebianError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    image = build_image(None, extra=files)
    output = args.output or DEFAULT_DIR / f"{args.app.rsplit('/', 1)[-1]}.img"
    write_output(output, image, args.output is None)
    print(f"wrote {output} ({len(image)} bytes, app {args.app}, {len(files) - 1} files from {', '.join(args.debian)})")
    return 0


def run(args: argparse.Namespace) -> int:
    from unirealm.host.toolchain import ToolchainError

    try:
        return build(args)
    except ToolchainError as exc:
        raise UsageError(f"building the image's vDSO: {exc}") from None


def build(args: argparse.Namespace) -> int:
    from unirealm.host.image import build_image

    if args.debian:
        return run_debian(args)
    if args.elf is None:
        raise UsageError("give an ELF program, or --debian PKG... --app PATH")
    try:
        elf = args.elf.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.elf}: {exc.strerror}") from None
    if elf[:4] != b"\x7fELF":
        raise UsageError(f"{args.elf} is not an ELF file")
    if len(elf) < 20 or int.from_bytes(elf[18:20], "little") != 183:
        raise UsageError(f"{args.elf} is not an AArch64 ELF (e_machine {int.from_bytes(elf[18:20], 'little')})")
    image = build_image(elf, args.name or args.elf.name)
    output = args.output or DEFAULT_DIR / f"{args.name or args.elf.name}.img"
    write_output(output, image, args.output is None)
    print(f"wrote {output} ({len(image)} bytes, app {args.name or args.elf.name})")
    return 0
