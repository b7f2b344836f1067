"""The `lkvm run` flag table: every option `unirealm run` (and `unirealm measure`) declares,
its spelling, metavar and help, grouped as kvmtool's builtin-run.c groups them, and the
stand-alone parser whose usage errors raise CmdlineError. The flags are declared as strings;
what each value may be, and the defaults, are host/cmdline.py's (RunConfig.from_args).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

# kvmtool flags CCA guides pass that change nothing on this model: (flag, dest, why).
IGNORED_FLAGS = (
    ("--no-pvtime", "no_pvtime", "no stolen-time device is modelled"),
    ("--disable-mte", "disable_mte", "the vCPU has no MTE"),
)
IGNORED_DEBUG_FLAGS = (
    ("--debug-single-step", "debug_single_step", "no KVM single-stepping here"),
    ("--debug-ioport", "debug_ioport", "arm64 has no I/O ports"),
)


class CmdlineError(ValueError):
    """A run command line kvmtool would refuse; the message is one line."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `run` options on `parser` (strings only; RunConfig.from_args checks them)."""
    basic = parser.add_argument_group("Basic options")
    basic.add_argument("-c", "--cpus", dest="cpus", metavar="N", help="number of vCPUs (default 1)")
    basic.add_argument(
        "-m",
        "--mem",
        dest="mem",
        metavar="size[BKMGTP][@addr[BKMGTP]]",
        help="guest RAM size and optional base address, in MiB by default (default 64M x (cpus + 3) at 2G)",
    )
    basic.add_argument(
        "-d",
        "--disk",
        dest="disks",
        action="append",
        default=[],
        metavar="image|dir",
        help=argparse.SUPPRESS,  # no block device is modelled: refused by the VMM
    )
    basic.add_argument(
        "--9p",
        dest="shares_9p",
        action="append",
        default=[],
        metavar="dir[,tag]",
        help="share a directory over 9p",
    )
    basic.add_argument(
        "--console", dest="console", metavar="serial|virtio",
        help="the guest's console: serial (ttyS0, the default) or virtio (a virtio-console, hvc0)"
    )
    basic.add_argument(
        "--nodefaults",
        dest="nodefaults",
        action="store_true",
        help="pass -p verbatim; add no default devices",
    )
    basic.add_argument(
        "--virtio-transport", dest="virtio_transport", metavar="mmio|mmio-legacy", help="virtio transport"
    )
    basic.add_argument("--loglevel", dest="loglevel", metavar="error|warning|info|debug", help="log level")

    kernel = parser.add_argument_group("Kernel options")
    kernel.add_argument("-k", "--kernel", dest="kernel", metavar="kernel", help="kernel image to boot")
    kernel.add_argument("-i", "--initrd", dest="initrd", metavar="initrd", help="initial RAM disk")
    kernel.add_argument("-p", "--params", dest="params", metavar="params", help="kernel command line")

    net = parser.add_argument_group("Networking options")
    net.add_argument(
        "-n",
        "--network",
        dest="networks",
        action="append",
        default=[],
        nargs="?",
        const="",
        metavar="k=v,...",
        help="add a virtio-net NIC (mode=tap|user|none, guest_ip, host_ip, guest_mac, tapif, trans, ...)",
    )

    arch = parser.add_argument_group("Arm options")
    arch.add_argument(
        "--irqchip", dest="irqchip", metavar="gicv3", help="interrupt controller: gicv3 (the only one modelled)"
    )
    arch.add_argument("--kaslr-seed", dest="kaslr_seed", metavar="seed", help="/chosen/kaslr-seed value")
    arch.add_argument("--disable-sve", dest="disable_sve", action="store_true", help="disable SVE")
    arch.add_argument("--pmu", dest="pmu", action="store_true", help="give the guest a PMUv3 (DT node, realm PMU)")
    arch.add_argument("--force-pci", dest="force_pci", action="store_true",
                      help=argparse.SUPPRESS)  # refused: there is no PCI
    for flag, dest, what in IGNORED_FLAGS:
        arch.add_argument(flag, dest=dest, action="store_true", help=f"accepted, changes nothing ({what})")
    arch.add_argument("--vcpu-affinity", dest="vcpu_affinity", metavar="cpulist",
                      help="accepted, changes nothing (the vCPUs run in the VMM's own thread)")
    arch.add_argument(
        "--dump-dtb", dest="dump_dtb", metavar="FILE", help="write the generated device tree to FILE"
    )

    realm = parser.add_argument_group("Realm options")
    realm.add_argument(
        "--platform", dest="platform", metavar="kvm|rme", help="host machine (default kvm; rme with --realm)"
    )
    realm.add_argument("--realm", dest="realm", action="store_true", help="create the VM as an Arm CCA realm")
    realm.add_argument(
        "--measurement-algo",
        dest="measurement_algo",
        metavar="sha256|sha512",
        help="realm hash algorithm (default sha256)",
    )
    realm.add_argument(
        "--realm-pv", dest="realm_pv", metavar="string", help="realm personalisation value (<= 64 bytes)"
    )
    realm.add_argument(
        "--sve-vl", dest="sve_vl", metavar="bits", help="realm SVE vector length (multiple of 128)"
    )
    realm.add_argument(
        "--sve-max-vl", dest="sve_max_vl", metavar="bits", help="the same, as kvmtool-cca spells it"
    )
    realm.add_argument("--pmu-counters", dest="pmu_counters", metavar="N", help="realm PMU event counters")
    realm.add_argument(
        "--token-format", dest="token_format", metavar="399|907",
        help="the RMM's CCA token: tag-399 collection (default, RMM 1.0) or tag-907 CMW collection",
    )
    realm.add_argument(
        "--token-profile", dest="token_profile", metavar="realm#1.0.0|realm#2.0.0",
        help="realm token claims: RMM 1.0-rel0's (default) or RMM 2.0's (instance ID, MEC policy)",
    )

    debug = parser.add_argument_group("Debug options")
    debug.add_argument("--debug", dest="debug", action="store_true", help="same as --loglevel debug")
    for flag, dest, what in IGNORED_DEBUG_FLAGS:
        debug.add_argument(flag, dest=dest, action="store_true", help=f"accepted, changes nothing ({what})")
    debug.add_argument("--debug-iodelay", dest="debug_iodelay", metavar="N",
                       help="accepted, changes nothing (no I/O delay is emulated)")
    debug.add_argument("--debug-mmio", dest="debug_mmio", action="store_true", help="same as --trace mmio")
    debug.add_argument(
        "--trace",
        dest="trace",
        action="append",
        default=[],
        metavar="rsi,rmi,mmio,psci,irq",
        help="trace these layers",
    )
    debug.add_argument(
        "--hostile",
        dest="hostile",
        action="append",
        default=[],
        metavar="ATTACK[,ATTACK...]",
        help="test mode: the VMM misbehaves in these named ways (see unirealm.host.hostile)",
    )


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CmdlineError(message)


def run_parser(prog: str = "unirealm run") -> argparse.ArgumentParser:
    """A stand-alone parser with the run options whose usage errors raise CmdlineError."""
    parser = _RaisingParser(prog=prog, description="Run a VM or a realm, as `lkvm run` does.")
    add_run_arguments(parser)
    return parser
