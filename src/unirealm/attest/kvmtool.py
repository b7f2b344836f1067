"""Reference values for real kvmtool-cca launches, in the reference tool's command-line form:
`unirealm measure [HOST OPTIONS] kvmtool VMM-ARGS...` (cca-realm-measurements).

HOST OPTIONS describe the host's capabilities and the files: `--ipa-bits --num-bps
--num-wps --pmu-num-ctrs --sve-vl --pmu --lpa2`, `-c HOSTCONF` (a profile name: fvp, qemu,
kvm, rmm-1.0-eac5, unirealm -- this platform: its RMM's FeatReg0 and a GIC without an ITS --
or a `key = value` file with those keys and `its`; several may be given and each can only
lower what is set), `-k/--kernel FILE`, `-f/--firmware FILE`, `-i/--initrd FILE`, `--dtb FILE`
(the DTB to measure as it is), `--output-dtb FILE`, `--print-b64`. VMM-ARGS are `lkvm run`'s.

What is modelled, as kvmtool-cca and the tool do it:
  * realm parameters: IPA bits from the top of RAM (kvmtool's minimum plus the unprotected
    half; refused beyond the host's), num_bps/num_wps from the host (required); SVE
    (`--disable-sve`, `--sve-max-vl`, refused on a host without SVE), a PMU only with `--pmu`
    (refused on a host without one; `--pmu-counters` lowers the count), LPA2 and the hash
    algorithm (`--measurement-algo`);
  * launch order: RIPAS RAM over all of RAM first (RMI_RTT_INIT_RIPAS entries of the largest
    block the host's tables allow), then every image in ascending address order, then the
    REC (pc = the kernel or the firmware, or 0 without either; x0 = the DTB);
  * images: the kernel at RAM + its Image header's text_offset, firmware at the start of RAM
    (or `--firmware-address`), the initrd 4-byte aligned just below the DTB, the DTB 2 MiB
    aligned below min(top of RAM, RAM + 256 MiB) and padded to 64 KiB (host/memmap.py);
  * kvmtool's arm64 DTB byte for byte (host/fdt.KvmtoolFdt, which `unirealm run` uses too):
    its nodes and properties in kvmtool's order, a user-mode NIC when no `-n` names one
    (none with mode=none; on PCI it has no node, on virtio-mmio one node per device), the
    GICv3 with its ITS unless `--irqchip gicv3` or the host has none, the PCI host bridge,
    and the bootargs kvmtool builds (the console, " root=/dev/vda rw " unless -p names a
    root, then -p; -p verbatim with --nodefaults).
Flags that change nothing in a realm's measurement (`--debug*`, `--no-pvtime`,
`--disable-mte`, `--force-pci`, `--vcpu-affinity`, `--loglevel`, ...) are accepted, as the
tool accepts them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiRealmFlags, RmiRecFlags, feat_reg0_get
from unirealm.attest import measure as m
from unirealm.attest.inputs import DATA_LIMIT, JSON_LIMIT, InputError, read_bounded
from unirealm.host.fdt import FdtError, KvmtoolFdt, VirtioMmioNode, kvmtool_bootargs
from unirealm.host.memmap import (
    ARM_MEMORY_AREA,
    FDT_MAX_SIZE,
    KVM_IRQ_OFFSET,
    KVM_VIRTIO_MMIO_AREA,
    SERIAL8250_NR_PORTS,
    VIRTIO_MMIO_IO_SIZE,
    GuestLayout,
    MemoryLayoutError,
    fdt_start,
    initrd_start_below,
    ipa_bits_for,
)

KiB, MiB = 1 << 10, 1 << 20

MEM_BASE = ARM_MEMORY_AREA
FDT_SIZE = FDT_MAX_SIZE

# the tool's host profiles (configs/*.conf)
HOST_PROFILES: dict[str, dict[str, int | bool]] = {
    "fvp": {"ipa_bits": 52, "num_bps": 16, "num_wps": 16, "pmu_num_ctrs": 8, "sve_vl": 512, "pmu": True,
            "lpa2": True},
    "qemu": {"ipa_bits": 52, "num_bps": 6, "num_wps": 4, "pmu_num_ctrs": 6, "sve_vl": 2048, "pmu": True,
             "lpa2": True},
    "kvm": {"lpa2": False},
    "rmm-1.0-eac5": {"num_bps": 2, "num_wps": 2, "lpa2": False},
}
HOST_KEYS = ("ipa_bits", "num_bps", "num_wps", "pmu_num_ctrs", "sve_vl", "pmu", "lpa2", "its")


def unirealm_profile() -> dict[str, int | bool]:
    """This platform as a host profile (`-c unirealm`): what its RMM's FeatReg0 offers realms,
    and a GIC without an ITS (host/devices/gicv3.py), so kvmtool's --irqchip default is gicv3."""
    from unirealm.rmm.state import RmmState

    feat = RmmState.feat_reg0
    sve = feat_reg0_get(feat, "SVE_EN")
    return {"ipa_bits": feat_reg0_get(feat, "S2SZ"), "num_bps": feat_reg0_get(feat, "NUM_BPS") + 1,
            "num_wps": feat_reg0_get(feat, "NUM_WPS") + 1, "pmu": bool(feat_reg0_get(feat, "PMU_EN")),
            "pmu_num_ctrs": feat_reg0_get(feat, "PMU_NUM_CTRS"),
            "sve_vl": (feat_reg0_get(feat, "SVE_VL") + 1) * 128 if sve else 0,
            "lpa2": bool(feat_reg0_get(feat, "LPA2")), "its": False}



class KvmtoolError(m.LaunchError):
    """A host option or VMM argument this model cannot honour; one line."""


# --- command lines ------------------------------------------------------------------------
def host_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unirealm measure", add_help=False)
    for name in ("--ipa-bits", "--num-bps", "--num-wps", "--pmu-num-ctrs", "--sve-vl"):
        p.add_argument(name, type=int, metavar="N")
    p.add_argument("--pmu", choices=["true", "false"])
    p.add_argument("--lpa2", choices=["true", "false"])
    p.add_argument("-c", "--config", action="append", default=[], metavar="HOSTCONF")
    p.add_argument("-k", "--kernel", metavar="FILE")
    p.add_argument("-i", "--initrd", metavar="FILE")
    p.add_argument("-f", "--firmware", metavar="FILE")
    p.add_argument("--dtb", metavar="FILE")
    p.add_argument("--output-dtb", metavar="FILE")
    p.add_argument("--print-b64", action="store_true")
    return p


def vmm_parser() -> argparse.ArgumentParser:
    """`lkvm run`'s options as kvmtool-cca spells them."""
    p = _Parser(prog="kvmtool", add_help=False)
    for short, name in (("-c", "--cpus"), ("-m", "--mem"), ("-k", "--kernel"), ("-i", "--initrd"),
                        ("-p", "--params"), ("-f", "--firmware"), ("-F", "--flash")):
        p.add_argument(short, name)
    for name in ("--name", "--console", "--virtio-transport", "--loglevel", "--measurement-algo", "--realm-pv",
                 "--sve-max-vl", "--pmu-counters", "--vcpu-affinity", "--irqchip", "--firmware-address",
                 "--dtb", "--debug-iodelay", "--tty", "--dev", "--hugetlbfs", "--vsock"):
        p.add_argument(name)
    for name in ("--balloon", "--rng", "--nodefaults", "--no-dhcp", "--debug", "--debug-single-step",
                 "--debug-ioport", "--debug-mmio", "--pmu", "--disable-sve", "--realm", "--measurement-log",
                 "--no-pvtime", "--disable-mte", "--force-pci", "--restricted_mem"):
        p.add_argument(name, action="store_true")
    p.add_argument("-d", "--disk", action="append", default=[])
    p.add_argument("--9p", dest="p9", action="append", default=[])
    p.add_argument("-n", "--network", action="append", default=[])
    p.add_argument("--vfio-pci", action="append", default=[])
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise KvmtoolError(f"{self.prog}: {message}")


def _number(text: str, flag: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise KvmtoolError(f"kvmtool {flag} {text}: not a number") from None


def _size(text: str) -> int:
    """kvmtool's -m: a size in MiB by default, or with a B/K/M/G/T suffix."""
    units = {"B": 1, "K": KiB, "M": MiB, "G": 1 << 30, "T": 1 << 40}
    text = text.strip()
    unit = units.get(text[-1:].upper()) if text else None
    try:
        return int(text[:-1] if unit else text, 0) * (unit or MiB)
    except ValueError:
        raise KvmtoolError(f"-m {text}: not a size") from None


@dataclass
class HostCaps:
    values: dict[str, int | bool] = field(default_factory=dict)

    def restrict(self, key: str, value: int | bool) -> None:
        """A capability can only be lowered (an unset one takes the value)."""
        old = self.values.get(key)
        if old is None or value <= old:
            self.values[key] = value

    def get(self, key: str) -> int | bool | None:
        return self.values.get(key)


def _load_config(name: str) -> dict[str, int | bool]:
    profiles = {**HOST_PROFILES, "unirealm": unirealm_profile()}
    profile = profiles.get(name) or profiles.get(name.removesuffix(".conf").rsplit("/", 1)[-1])
    if profile is not None and not Path(name).is_file():
        return profile
    try:
        text = read_bounded(name, JSON_LIMIT, "host configuration").decode()
    except (InputError, UnicodeDecodeError) as exc:
        raise KvmtoolError(f"-c {name}: not a host profile ({', '.join(profiles)}) nor a readable file: "
                           f"{exc}") from None
    out: dict[str, int | bool] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, eq, value = (part.strip() for part in line.partition("="))
        if not eq or key not in HOST_KEYS:
            raise KvmtoolError(f"{name}:{number}: expected one of {', '.join(HOST_KEYS)} = VALUE")
        if value in ("true", "false"):
            out[key] = value == "true"
        else:
            try:
                out[key] = int(value, 0)
            except ValueError:
                raise KvmtoolError(f"{name}:{number}: {value!r} is not a number or a boolean") from None
    return out


def _read(path: str, what: str) -> bytes:
    try:
        return read_bounded(path, DATA_LIMIT, what)
    except InputError as exc:
        raise KvmtoolError(str(exc)) from None


@dataclass
class KvmtoolMeasurement:
    launch: m.Launch
    dtb: bytes
    print_b64: bool
    output_dtb: str | None


def _check_vmm(vmm: argparse.Namespace, host: argparse.Namespace) -> None:
    if not vmm.realm:
        raise KvmtoolError("kvmtool: only a realm (--realm) has a RIM")
    if vmm.kernel is not None and vmm.firmware is not None:
        raise KvmtoolError("kvmtool -k with -f/--firmware: a firmware launch loads no kernel")
    if vmm.flash is not None:
        raise KvmtoolError("kvmtool -F/--flash: no CFI flash is modelled")
    if vmm.measurement_log:
        raise KvmtoolError("kvmtool --measurement-log: the event log is not modelled")
    if vmm.vfio_pci:
        raise KvmtoolError("kvmtool --vfio-pci: device assignment is not modelled")
    if vmm.cpus is None:
        raise KvmtoolError("kvmtool: the number of vCPUs is not known: give -c N")
    if vmm.mem is None:
        raise KvmtoolError("kvmtool: the default guest RAM size is host-dependent: give -m SIZE")
    for given, name, host_file in ((vmm.firmware, "-f/--firmware", host.firmware),
                                   (vmm.initrd, "-i/--initrd", host.initrd), (vmm.kernel, "-k/--kernel", host.kernel)):
        if given is not None and host_file is None:
            raise KvmtoolError(f"kvmtool {name} {given}: give the file as a host option before `kvmtool`")


def measure_kvmtool(argv: Sequence[str]) -> KvmtoolMeasurement:
    """The Launch (and DTB) of `[HOST OPTIONS] kvmtool VMM-ARGS...`."""
    argv = list(argv)
    if "kvmtool" not in argv:
        raise KvmtoolError("expected `[HOST OPTIONS] kvmtool VMM-ARGS...`")
    split = argv.index("kvmtool")
    host = host_parser().parse_args(argv[:split])
    vmm = vmm_parser().parse_args(argv[split + 1 :])
    _check_vmm(vmm, host)

    caps = HostCaps()
    for name in host.config:
        for key, value in _load_config(name).items():
            caps.restrict(key, value)
    for key in ("ipa_bits", "num_bps", "num_wps", "pmu_num_ctrs", "sve_vl"):
        if getattr(host, key) is not None:
            caps.values[key] = getattr(host, key)
    for key in ("pmu", "lpa2"):
        if getattr(host, key) is not None:
            caps.values[key] = getattr(host, key) == "true"

    try:
        nrcpus = int(vmm.cpus, 0)
    except ValueError:
        raise KvmtoolError(f"kvmtool -c {vmm.cpus}: not a number") from None
    if "@" in vmm.mem:
        raise KvmtoolError("kvmtool -m SIZE@ADDR: moving RAM is not modelled")
    mem_size = _size(vmm.mem)
    if mem_size % (2 * MiB) or mem_size <= 0:
        raise KvmtoolError("kvmtool -m: RAM size must be a multiple of 2 MiB")

    algo = vmm.measurement_algo or "sha256"
    if algo not in m.HASH_ALGORITHMS:
        raise KvmtoolError(f"kvmtool --measurement-algo {algo}: use sha256 or sha512")
    if vmm.pmu and caps.get("pmu") is False:
        raise KvmtoolError("kvmtool --pmu: the host offers realms no PMU")
    pmu = bool(vmm.pmu)
    if vmm.pmu_counters is not None:
        if not pmu:
            raise KvmtoolError("kvmtool --pmu-counters: needs --pmu")
        caps.restrict("pmu_num_ctrs", _number(vmm.pmu_counters, "--pmu-counters"))
    if vmm.sve_max_vl is not None and caps.get("sve_vl") == 0:
        raise KvmtoolError("kvmtool --sve-max-vl: the host offers realms no SVE")
    if vmm.disable_sve:
        caps.restrict("sve_vl", 0)
    elif vmm.sve_max_vl is not None:
        caps.restrict("sve_vl", _number(vmm.sve_max_vl, "--sve-max-vl"))
    try:
        ipa_bits = ipa_bits_for(MEM_BASE, mem_size, True)  # kvmtool's minimum, plus the unprotected half
    except MemoryLayoutError as exc:
        raise KvmtoolError(f"kvmtool -m {vmm.mem}: {exc}") from None
    if ipa_bits > int(caps.get("ipa_bits") or ipa_bits):
        raise KvmtoolError(f"kvmtool -m {vmm.mem}: needs {ipa_bits} IPA bits, the host has {caps.get('ipa_bits')}")
    caps.values["ipa_bits"] = ipa_bits
    for key in ("num_wps", "num_bps"):
        if caps.get(key) is None:
            raise KvmtoolError(f"{key} is not known: give --{key.replace('_', '-')} N or -c HOSTCONF")
        if not 2 <= int(caps.get(key) or 0) <= 64:
            raise KvmtoolError(f"{key} {caps.get(key)} is out of [2;64]")
    sve_vl = int(caps.get("sve_vl") or 0)
    if sve_vl and (sve_vl % 128 or sve_vl > 2048):
        raise KvmtoolError(f"SVE vector length {sve_vl} is not a multiple of 128 bits up to 2048")
    flags = (RmiRealmFlags.SVE if sve_vl else 0) | (RmiRealmFlags.LPA2 if caps.get("lpa2") else 0) | \
        (RmiRealmFlags.PMU if pmu else 0)
    rpv = b""
    if vmm.realm_pv is not None:
        rpv = vmm.realm_pv.encode()
        if len(rpv) > 64:
            raise KvmtoolError("kvmtool --realm-pv: at most 64 bytes")
    params = m.RealmParams(
        s2sz=int(caps.get("ipa_bits") or 0),
        hash_algo=m.HASH_ALGORITHMS[algo],
        num_bps=int(caps.get("num_bps") or 0) - 1,
        num_wps=int(caps.get("num_wps") or 0) - 1,
        pmu_num_ctrs=int(caps.get("pmu_num_ctrs") or 0) if pmu else 0,
        sve_vl=sve_vl // 128 - 1 if sve_vl else 0,
        flags=int(flags),
        rpv=rpv.ljust(64, b"\0"),
    )

    its = caps.get("its") is not False  # an ITS unless the host profile says it has none, as the tool assumes
    if vmm.irqchip is not None:
        if vmm.irqchip not in ("gicv3", "gicv3-its"):
            raise KvmtoolError(f"kvmtool --irqchip {vmm.irqchip}: a realm needs gicv3 or gicv3-its")
        if vmm.irqchip == "gicv3-its" and not its:
            raise KvmtoolError("kvmtool --irqchip gicv3-its: the host's GIC has no ITS")
        its = vmm.irqchip == "gicv3-its"
    transport = vmm.virtio_transport or "pci"
    if transport not in ("pci", "mmio"):
        raise KvmtoolError(f"kvmtool --virtio-transport {transport}: use pci or mmio")
    devices = int(vmm.balloon) + int(vmm.rng) + len(vmm.p9) + int(vmm.vsock is not None) + \
        int(vmm.console == "virtio") + len(vmm.disk)
    nics, no_net = 0, False  # kvmtool adds a user-mode NIC when no -n names one, unless mode=none
    for net in vmm.network:
        mode = "tap"
        for item in net.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise KvmtoolError(f"kvmtool -n {net}: malformed parameter {item}")
            if key == "mode":
                mode = value
            elif key == "trans" and value != transport:
                raise KvmtoolError(f"kvmtool -n trans={value}: differs from --virtio-transport {transport}")
        if mode == "none":
            no_net = True
        else:
            nics += 1
    if not nics and not no_net:
        nics = 1
    mmio_devices = devices + nics if transport == "mmio" else 0
    virtio = [VirtioMmioNode(KVM_VIRTIO_MMIO_AREA + i * VIRTIO_MMIO_IO_SIZE, KVM_IRQ_OFFSET + SERIAL8250_NR_PORTS + i)
              for i in range(mmio_devices)]

    images: dict[int, bytes] = {}
    kernel = _read(host.kernel, "kernel") if vmm.kernel is not None else None
    initrd_content = _read(host.initrd, "initrd") if vmm.initrd is not None else None
    pc = 0
    if kernel is not None:
        try:
            layout = GuestLayout.for_images(MEM_BASE, mem_size, kernel, initrd_content, is_realm=True)
        except MemoryLayoutError as exc:
            raise KvmtoolError(f"kvmtool -k: {exc}") from None
        dtb_base = layout.dtb_start
        pc = layout.kernel_start
        images[pc] = kernel
    else:
        dtb_base = fdt_start(MEM_BASE, mem_size)
    initrd = None
    if initrd_content is not None:
        start = initrd_start_below(dtb_base, len(initrd_content))
        initrd = (start, start + len(initrd_content))
        images[start] = initrd_content
    if vmm.firmware is not None:
        pc = _number(vmm.firmware_address, "--firmware-address") if vmm.firmware_address is not None else MEM_BASE
        images[pc] = _read(host.firmware, "firmware")
    bootargs = kvmtool_bootargs(vmm.params or "", vmm.console, vmm.nodefaults)
    model = KvmtoolFdt(nrcpus, MEM_BASE, mem_size, bootargs, its=its, pmu=pmu, virtio_mmio=virtio, initrd=initrd)
    if host.dtb is not None:
        dtb = _read(host.dtb, "DTB")
        if len(dtb) > FDT_SIZE:
            raise KvmtoolError(f"--dtb {host.dtb}: larger than {FDT_SIZE} bytes")
        dtb = dtb.ljust(FDT_SIZE, b"\0")
    else:
        try:
            dtb = model.dtb()
        except FdtError as exc:
            raise KvmtoolError(str(exc)) from None
    images[dtb_base] = dtb

    ops: list[m.Operation] = ripas_entries(MEM_BASE, MEM_BASE + mem_size, params.s2sz)
    for addr in sorted(images):
        # an image that does not start on a granule is measured from the granule it starts in
        base = addr & ~(GRANULE_SIZE - 1)
        ops.append(m.DataOp(base, bytes(addr - base) + images[addr]))
    ops.append(m.RecOp(pc, [dtb_base], RmiRecFlags.RUNNABLE))
    return KvmtoolMeasurement(m.Launch(params, ops), dtb, host.print_b64, host.output_dtb)


def block_sizes(ipa_bits: int) -> list[tuple[int, int]]:
    """(level, block size) a host's stage-2 tables offer, largest first: KVM concatenates the
    initial level when it would hold 16 entries or fewer."""
    page_bits, per_level = 12, 9
    table_bits = ipa_bits - page_bits
    levels = -(-table_bits // per_level)
    if table_bits - per_level * (levels - 1) <= 4:
        levels -= 1
    return [(level, GRANULE_SIZE << (per_level * (3 - level))) for level in range(4 - levels, 4)]


def ripas_entries(base: int, top: int, ipa_bits: int) -> list[m.Operation]:
    """RMI_RTT_INIT_RIPAS over [base, top) in the largest aligned blocks that fit, one op per run
    of equal-sized blocks."""
    sizes = block_sizes(ipa_bits)
    ops: list[m.Operation] = []
    cur = base
    while cur < top:
        level, size = next((lv, s) for lv, s in sizes if cur % s == 0 and top - cur >= s)
        last = ops[-1] if ops else None
        if isinstance(last, m.RipasOp) and last.level == level and last.top == cur:
            last.top = cur + size
        else:
            ops.append(m.RipasOp(cur, cur + size, level))
        cur += size
    return ops
