"""`unirealm run`: kvmtool's `lkvm run`, for plain VMs, normal VMs on RME, and realms."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import BinaryIO

from unirealm.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from unirealm.host.cmdline import add_run_arguments

    p = subparsers.add_parser("run", help="run a kernel image as a VM or a realm (lkvm run flags)")
    add_run_arguments(p)
    p.set_defaults(func=run)


def _stdin() -> BinaryIO | None:
    """The console's input (a terminal, a pipe or a file); None when there is no stdin."""
    try:
        if sys.stdin is None:
            return None
        sys.stdin.fileno()
        return sys.stdin.buffer
    except (AttributeError, ValueError, OSError):
        return None


def _is_unirealm_image(path: str | None) -> bool:
    """Whether `path` starts like a unirealm image (its unikernel magic): one that will boot
    a Python kernel in a kernel process. The VMM checks the whole image later."""
    from unirealm.arch.image import UNIKERNEL_HEADER_OFFSET, UNIKERNEL_MAGIC

    if not path:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(UNIKERNEL_HEADER_OFFSET + len(UNIKERNEL_MAGIC))
    except OSError:
        return False
    return head[UNIKERNEL_HEADER_OFFSET:] == UNIKERNEL_MAGIC


def run(args: argparse.Namespace) -> int:
    from unirealm.machine import kernel_spawn

    # The kernel process's interpreter starts first, on another core, while this process
    # imports the VMM and builds the VM (kernel_spawn.start_early).
    if _is_unirealm_image(getattr(args, "kernel", None)):
        kernel_spawn.start_early()
    try:
        return _run(args)
    finally:
        kernel_spawn.discard_early()


def _run(args: argparse.Namespace) -> int:
    from unirealm.host.cmdline import CmdlineError, RunConfig
    from unirealm.host.vmm import Vmm, VmmError

    try:
        cfg = RunConfig.from_args(args)
    except CmdlineError as exc:
        raise UsageError(str(exc)) from None
    for note in cfg.notes:
        print(f"unirealm run: note: {note}", file=sys.stderr)
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
    logging.basicConfig(level=level.get(cfg.loglevel, logging.WARNING), format="  %(levelname)s: %(message)s")
    trace = (lambda line: print(f"  trace: {line}", file=sys.stderr, flush=True)) if cfg.trace else None
    try:
        vmm = Vmm(cfg, sys.stdout.buffer, _stdin(), trace, sys.stderr.buffer)
        result = vmm.run()
    except VmmError as exc:
        raise UsageError(str(exc)) from None
    return result.status
