"""Reference values for real kvmtool-cca launches, in the reference tool's command-line form:
`unirealm measure [HOST OPTIONS] kvmtool VMM-ARGS...` (cca-realm-measurements).

HOST OPTIONS describe the host's capabilities and the files: `--ipa-bits --num-bps
--num-wps --pmu-num-ctrs --sve-vl --pmu --lpa2`, `-c HOSTCONF` (a profile name: fvp, qemu,
kvm, rmm-1.0-eac5, or a `key = value` file with those keys; several may be given and each
can only lower what is set), `-f/--firmware FILE`, `-i/--initrd FILE`, `--dtb FILE` (the DTB
to measure as it is), `--output-dtb FILE`, `--print-b64`. VMM-ARGS are `lkvm run`'s.

What is modelled, as kvmtool-cca and the tool do it:
  * realm parameters: IPA bits from the top of RAM (at least 33), restricted by the host;
    num_bps/num_wps from the host (required); SVE (`--disable-sve`, `--sve-max-vl`), PMU
    (`--pmu`, `--pmu-counters`), LPA2 and the hash algorithm (`--measurement-algo`);
  * launch order: RIPAS RAM over all of RAM first (RMI_RTT_INIT_RIPAS entries of the largest
    block the host's tables allow), then every image in ascending address order, then the
    REC (pc = the firmware, or 0 without one; x0 = the DTB);
  * images: firmware at the start of RAM (or `--firmware-address`), the initrd 4-byte
    aligned just below the DTB, the DTB 2 MiB aligned below min(top of RAM, RAM + 256 MiB)
    and padded to 64 KiB;
  * kvmtool's arm64 DTB byte for byte: its nodes and properties in kvmtool's order, a
    default virtio NIC on PCI (no node; a virtio-mmio transport adds one node per device),
    the GICv3 with its ITS unless `--irqchip gicv3`, the PCI host bridge, and the bootargs
    kvmtool builds (" console=hvc0 root=/dev/vda rw " then -p), in the strings-table order
    of the tool's writer.
A kernel (`-k`) is refused: its placement is not modelled here. Flags that change nothing in
a realm's measurement (`--debug*`, `--no-pvtime`, `--disable-mte`, `--force-pci`,
`--vcpu-affinity`, `--loglevel`, ...) are accepted, as the tool accepts them.
"""

from __future__ import annotations

import argparse
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from unirealm.arch.fdt import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_HEADER,
    FDT_LAST_COMP_VERSION,
    FDT_MAGIC,
    FDT_PROP,
    FDT_PROP_HEADER,
    FDT_RESERVE_ENTRY,
    FDT_VERSION,
)
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiRealmFlags, RmiRecFlags
from unirealm.attest import measure as m
from unirealm.attest.inputs import DATA_LIMIT, JSON_LIMIT, InputError, read_bounded

KiB, MiB = 1 << 10, 1 << 20

MEM_BASE = 0x8000_0000
UART_BASE, UART_SIZE, UART_STRIDE, UART_COUNT = 0x0100_0000, 8, 0x1000, 4
RTC_BASE, RTC_SIZE = 0x0101_0000, 2
VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE = 0x0300_0000, 0x200
IOPORT_BASE, IOPORT_SIZE = 0, 0x1_0000
PCI_CFG_BASE, PCI_CFG_SIZE = 0x4000_0000, 1 << 28
PCI_MMIO_BASE = PCI_CFG_BASE + PCI_CFG_SIZE
PCI_MMIO_SIZE = MEM_BASE - PCI_MMIO_BASE
GIC_DIST_BASE, GIC_DIST_SIZE, GIC_REDIST_SIZE, GIC_ITS_SIZE = 0x3FFF_0000, 0x1_0000, 0x2_0000, 128 * KiB
SPI_UART, SPI_VIRTIO_MMIO, SPI_PCI = 0, 4, 64
GIC_PHANDLE, ITS_PHANDLE = 1, 2
FDT_LIMIT = MEM_BASE + 256 * MiB
FDT_ALIGN = 2 * MiB
FDT_SIZE = 0x1_0000
INITRD_ALIGN = 4
BOOTARGS = " console=hvc0 root=/dev/vda rw "
# GIC interrupt specifier cells
IRQ_SPI, IRQ_PPI = 0, 1
IRQ_EDGE_LO_HI, IRQ_LEVEL_HI, IRQ_LEVEL_LO = 1, 4, 8
PCI_RANGE_IOPORT, PCI_RANGE_MMIO = 0x0100_0000, 0x0200_0000

# the tool's host profiles (configs/*.conf)
HOST_PROFILES: dict[str, dict[str, int | bool]] = {
    "fvp": {"ipa_bits": 52, "num_bps": 16, "num_wps": 16, "pmu_num_ctrs": 8, "sve_vl": 512, "pmu": True,
            "lpa2": True},
    "qemu": {"ipa_bits": 52, "num_bps": 6, "num_wps": 4, "pmu_num_ctrs": 6, "sve_vl": 2048, "pmu": True,
             "lpa2": True},
    "kvm": {"lpa2": False},
    "rmm-1.0-eac5": {"num_bps": 2, "num_wps": 2, "lpa2": False},
}
HOST_KEYS = ("ipa_bits", "num_bps", "num_wps", "pmu_num_ctrs", "sve_vl", "pmu", "lpa2")


class KvmtoolError(m.LaunchError):
    """A host option or VMM argument this model cannot honour; one line."""


# --- the device tree, written as the tool's FDT writer lays it out --------------------------
class FdtWriter:
    """Sequential FDT writer: an empty reservation map after the 40-byte header, the
    structure block, then the strings, each new name appended once in first-use order."""

    def __init__(self) -> None:
        self.struct = bytearray()
        self.strings = bytearray()
        self.offsets: dict[str, int] = {}

    def _token(self, token: int) -> None:
        self.struct += token.to_bytes(4, "big")

    def _pad(self) -> None:
        self.struct += bytes(-len(self.struct) % 4)

    def begin(self, name: str) -> None:
        self._token(FDT_BEGIN_NODE)
        self.struct += name.encode() + b"\0"
        self._pad()

    def end(self) -> None:
        self._token(FDT_END_NODE)

    def prop(self, name: str, value: bytes = b"") -> None:
        if name not in self.offsets:
            self.offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        self.struct += FDT_PROP_HEADER.pack(FDT_PROP, len(value), self.offsets[name]) + value
        self._pad()

    def string(self, name: str, *values: str) -> None:
        self.prop(name, b"".join(v.encode() + b"\0" for v in values))

    def u32(self, name: str, *values: int) -> None:
        self.prop(name, struct.pack(f">{len(values)}I", *values))

    def u64(self, name: str, *values: int) -> None:
        self.prop(name, struct.pack(f">{len(values)}Q", *values))

    def finish(self) -> bytes:
        self._token(FDT_END)
        off_rsvmap = FDT_HEADER.size
        off_struct = off_rsvmap + FDT_RESERVE_ENTRY.size
        off_strings = off_struct + len(self.struct)
        total = off_strings + len(self.strings)
        header = FDT_HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsvmap, FDT_VERSION,
                                 FDT_LAST_COMP_VERSION, 0, len(self.strings), len(self.struct))
        return header + FDT_RESERVE_ENTRY.pack(0, 0) + bytes(self.struct) + bytes(self.strings)


@dataclass
class KvmtoolLaunch:
    """What kvmtool-cca puts in the device tree for one command line."""

    nrcpus: int
    mem_size: int
    bootargs: str
    its: bool = True
    pmu: bool = False
    virtio_mmio_devices: int = 0
    initrd: tuple[int, int] | None = None  # (start, size)

    def dtb(self) -> bytes:
        f = FdtWriter()
        f.begin("")
        f.string("compatible", "linux,dummy-virt")
        f.string("model", "linux,dummy-virt-realm")
        f.u32("#address-cells", 2)
        f.u32("#size-cells", 2)
        f.u32("interrupt-parent", GIC_PHANDLE)
        f.begin("chosen")
        f.string("bootargs", self.bootargs)
        if self.initrd is not None:
            f.u64("linux,initrd-start", self.initrd[0])
            f.u64("linux,initrd-end", self.initrd[0] + self.initrd[1])
        f.end()
        f.begin(f"memory@{MEM_BASE:x}")
        f.string("device_type", "memory")
        f.u64("reg", MEM_BASE, self.mem_size)
        f.end()
        f.begin("cpus")
        f.u32("#size-cells", 0)
        f.u32("#address-cells", 1)
        for i in range(self.nrcpus):
            f.begin(f"cpu@{i}")
            f.u32("reg", i)
            f.string("enable-method", "psci")
            f.string("compatible", "arm,armv8")
            f.string("device_type", "cpu")
            f.end()
        f.end()
        f.begin("psci")
        f.u32("cpu_on", 0xC400_0003)
        f.u32("cpu_off", 0x8400_0002)
        f.string("method", "smc")
        f.string("compatible", "arm,psci-1.0", "arm,psci-0.2", "arm,psci")
        f.end()
        redist_size = self.nrcpus * GIC_REDIST_SIZE
        redist_base = GIC_DIST_BASE - redist_size
        f.begin("intc")
        f.string("compatible", "arm,gic-v3")
        f.u32("#interrupt-cells", 3)
        f.prop("interrupt-controller")
        f.u64("reg", GIC_DIST_BASE, GIC_DIST_SIZE, redist_base, redist_size)
        f.u32("phandle", GIC_PHANDLE)
        f.u32("#address-cells", 2)
        f.u32("#size-cells", 2)
        f.prop("ranges")
        if self.its:
            f.begin("msic")
            f.string("compatible", "arm,gic-v3-its")
            f.prop("msi-controller")
            f.u32("phandle", ITS_PHANDLE)
            f.u64("reg", redist_base - GIC_ITS_SIZE, GIC_ITS_SIZE)
            f.end()
        f.end()
        f.begin("timer")
        f.u32("interrupts", *(c for irq in (13, 14, 11) for c in (IRQ_PPI, irq, IRQ_LEVEL_LO)))
        f.prop("always-on")
        f.string("compatible", "arm,armv8-timer", "arm,armv7-timer")
        f.end()
        if self.pmu:
            f.begin("pmu")
            f.u32("interrupts", IRQ_PPI, 7, IRQ_LEVEL_HI)
            f.string("compatible", "arm,armv8-pmuv3")
            f.end()
        for i in range(UART_COUNT):
            addr = UART_BASE + i * UART_STRIDE
            f.begin(f"U6_16550A@{addr:x}")
            f.string("compatible", "ns16550a")
            f.u64("reg", addr, UART_SIZE)
            f.u32("interrupts", IRQ_SPI, SPI_UART + i, IRQ_LEVEL_HI)
            f.u32("clock-frequency", 1843200)
            f.end()
        for i in range(self.virtio_mmio_devices):
            addr = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE
            f.begin(f"virtio@{addr:x}")
            f.string("compatible", "virtio,mmio")
            f.u64("reg", addr, VIRTIO_MMIO_SIZE)
            f.prop("dma-coherent")
            f.u32("interrupts", IRQ_SPI, SPI_VIRTIO_MMIO + i, IRQ_EDGE_LO_HI)
            f.end()
        f.begin(f"rtc@{RTC_BASE:x}")
        f.string("compatible", "motorola,mc146818")
        f.u64("reg", RTC_BASE, RTC_SIZE)
        f.end()
        f.begin(f"pci@{PCI_CFG_BASE:x}")
        f.string("device_type", "pci")
        f.u32("#address-cells", 3)
        f.u32("#size-cells", 2)
        f.prop("dma-coherent")
        f.u32("bus-range", 0, 0)
        f.string("compatible", "pci-host-ecam-generic")
        f.u64("reg", PCI_CFG_BASE, PCI_CFG_SIZE)
        f.u32("ranges", PCI_RANGE_IOPORT, 0, 0, 0, IOPORT_BASE, 0, IOPORT_SIZE,
              PCI_RANGE_MMIO, 0, PCI_MMIO_BASE, 0, PCI_MMIO_BASE, 0, PCI_MMIO_SIZE)
        imap: list[int] = []
        for slot in range(32):  # one SPI per slot, pin INTA only
            imap += [slot << 3 << 8, 0, 0, 1, GIC_PHANDLE, 0, 0, IRQ_SPI, SPI_PCI + slot, IRQ_LEVEL_HI]
        f.u32("interrupt-map", *imap)
        f.u32("interrupt-map-mask", 0x1F << 3 << 8, 0, 0, 7)
        f.u32("#interrupt-cells", 1)
        if self.its:
            f.u32("msi-map", 0, ITS_PHANDLE, 0, 0x1_0000)
        f.end()
        f.end()
        blob = f.finish()
        if len(blob) > FDT_SIZE:
            raise KvmtoolError(f"the device tree is too large ({len(blob)} > {FDT_SIZE} bytes)")
        return blob.ljust(FDT_SIZE, b"\0")


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
    profile = HOST_PROFILES.get(name) or HOST_PROFILES.get(name.removesuffix(".conf").rsplit("/", 1)[-1])
    if profile is not None and not Path(name).is_file():
        return profile
    try:
        text = read_bounded(name, JSON_LIMIT, "host configuration").decode()
    except (InputError, UnicodeDecodeError) as exc:
        raise KvmtoolError(f"-c {name}: not a host profile ({', '.join(HOST_PROFILES)}) nor a readable file: "
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
    if vmm.kernel is not None or host.kernel is not None:
        raise KvmtoolError("kvmtool -k: the kernel's placement is not modelled here; measure a kernel launch "
                           "with unirealm run's flags or LAUNCH.json")
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
    for given, name in ((vmm.firmware, "-f/--firmware"), (vmm.initrd, "-i/--initrd")):
        host_file = host.firmware if name.startswith("-f") else host.initrd
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
    if vmm.pmu:
        caps.restrict("pmu", True)
    if vmm.pmu_counters is not None:
        caps.restrict("pmu_num_ctrs", int(vmm.pmu_counters, 0))
    if vmm.disable_sve:
        caps.restrict("sve_vl", 0)
    elif vmm.sve_max_vl is not None:
        caps.restrict("sve_vl", int(vmm.sve_max_vl, 0))
    last_ipa = MEM_BASE + mem_size - 1
    caps.restrict("ipa_bits", max(last_ipa.bit_length() - 1, 32) + 1)
    for key in ("num_wps", "num_bps"):
        if caps.get(key) is None:
            raise KvmtoolError(f"{key} is not known: give --{key.replace('_', '-')} N or -c HOSTCONF")
        if not 2 <= int(caps.get(key) or 0) <= 64:
            raise KvmtoolError(f"{key} {caps.get(key)} is out of [2;64]")
    sve_vl = int(caps.get("sve_vl") or 0)
    if sve_vl and (sve_vl % 128 or sve_vl > 2048):
        raise KvmtoolError(f"SVE vector length {sve_vl} is not a multiple of 128 bits up to 2048")
    pmu = bool(caps.get("pmu"))
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
        pmu_num_ctrs=int(caps.get("pmu_num_ctrs") or 0),
        sve_vl=sve_vl // 128 - 1 if sve_vl else 0,
        flags=int(flags),
        rpv=rpv.ljust(64, b"\0"),
    )

    its = True  # the host is assumed to have an ITS, as the tool assumes
    if vmm.irqchip is not None:
        if vmm.irqchip not in ("gicv3", "gicv3-its"):
            raise KvmtoolError(f"kvmtool --irqchip {vmm.irqchip}: a realm needs gicv3 or gicv3-its")
        its = vmm.irqchip == "gicv3-its"
    transport = vmm.virtio_transport or "pci"
    if transport not in ("pci", "mmio"):
        raise KvmtoolError(f"kvmtool --virtio-transport {transport}: use pci or mmio")
    devices = int(vmm.balloon) + int(vmm.rng) + len(vmm.p9) + int(vmm.vsock is not None) + \
        int(vmm.console == "virtio") + len(vmm.disk)
    nics = 1  # kvmtool's default NIC, unless mode=none
    for net in vmm.network:
        for item in net.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise KvmtoolError(f"kvmtool -n {net}: malformed parameter {item}")
            if key == "mode":
                nics = 0 if value == "none" else nics + 1
            elif key == "trans" and value != transport:
                raise KvmtoolError(f"kvmtool -n trans={value}: differs from --virtio-transport {transport}")
    mmio_devices = devices + nics if transport == "mmio" else 0

    dtb_base = min(MEM_BASE + mem_size, FDT_LIMIT) - FDT_ALIGN - FDT_SIZE
    dtb_base = -(-dtb_base // FDT_ALIGN) * FDT_ALIGN
    images: dict[int, bytes] = {}
    initrd = None
    if vmm.initrd is not None:
        content = _read(host.initrd, "initrd")
        start = dtb_base - len(content) - INITRD_ALIGN
        start = -(-start // INITRD_ALIGN) * INITRD_ALIGN
        initrd = (start, len(content))
        images[start] = content
    pc = 0
    if vmm.firmware is not None:
        pc = int(vmm.firmware_address, 0) if vmm.firmware_address is not None else MEM_BASE
        images[pc] = _read(host.firmware, "firmware")
    bootargs = BOOTARGS + (" " + vmm.params if vmm.params else "")
    model = KvmtoolLaunch(nrcpus, mem_size, bootargs, its=its, pmu=pmu, virtio_mmio_devices=mmio_devices,
                          initrd=initrd)
    if host.dtb is not None:
        dtb = _read(host.dtb, "DTB")
        if len(dtb) > FDT_SIZE:
            raise KvmtoolError(f"--dtb {host.dtb}: larger than {FDT_SIZE} bytes")
        dtb = dtb.ljust(FDT_SIZE, b"\0")
    else:
        dtb = model.dtb()
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
