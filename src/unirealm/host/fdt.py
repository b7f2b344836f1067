"""The guest device tree, built with libfdt's sequential-write API the way kvmtool's arm fdt.c does.

Node order and names follow kvmtool (arm/fdt.c, arm/gic.c, arm/timer.c, hw/serial.c,
virtio/mmio.c, and the realm changes of the Arm kvmtool-cca branch):

    /                 interrupt-parent, compatible "linux,dummy-virt", #address-cells/#size-cells 2
    /chosen           bootargs, kaslr-seed, stdout-path, linux,initrd-start/-end
    /memory           device_type "memory", reg
    /cpus/cpu@N       device_type "cpu", compatible, enable-method "psci", reg = MPIDR affinity
    /intc             arm,gic-v3: distributor and redistributor frames
    /timer            arm,armv8-timer: four PPIs, level-low, always-on
    /U6_16550A@...    ns16550a UARTs (kvmtool's node name), level-high SPIs
    /virtio@...       virtio,mmio windows, dma-coherent, edge-rising SPIs
    /psci             method "smc" for a realm (the RMM implements PSCI), "hvc" otherwise
    /aliases          serialN -> the UART nodes

Deliberate differences from kvmtool: every cpu node carries enable-method (kvmtool omits it for
a single vCPU; it is harmless there and a guest need not special-case it), psci also lists
"arm,psci-1.0" because the RMM implements PSCI 1.1, and stdout-path names the UART node's full
path so that a guest needs no alias lookup. No PCI host bridge or RTC node is emitted: neither
device is modelled.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libfdt

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
from unirealm.arch.smccc import PsciFid
from unirealm.host.devices.ns16550 import UART_CLOCK_FREQUENCY
from unirealm.host.devices.rtc import RTC_MMIO_SIZE as RTC_REG_SIZE
from unirealm.host.memmap import (
    ARCH_TIMER_PPIS,
    ARM_GIC_DIST_BASE,
    ARM_GIC_DIST_SIZE,
    ARM_IOPORT_AREA,
    ARM_IOPORT_SIZE,
    ARM_PCI_CFG_SIZE,
    ARM_PCI_MMIO_SIZE,
    ARM_RTC_MMIO_BASE,
    FDT_MAX_SIZE,
    GIC_SPI_IRQ_BASE,
    KVM_PCI_CFG_AREA,
    KVM_PCI_MMIO_AREA,
    SERIAL8250_REG_SIZE,
    VIRTIO_MMIO_IO_SIZE,
    GuestLayout,
    IrqLines,
    gic_redists_base,
    gic_redists_size,
    serial_iobase,
    vcpu_mpidr,
)

# Phandles (kvmtool arm-common/fdt-arch.h).
PHANDLE_GIC = 1

# GIC interrupt specifier: <type number flags> (Linux dt-bindings arm,gic-v3).
GIC_FDT_IRQ_NUM_CELLS = 3
GIC_FDT_IRQ_TYPE_SPI = 0
GIC_FDT_IRQ_TYPE_PPI = 1
IRQ_TYPE_EDGE_RISING = 0x1
IRQ_TYPE_LEVEL_HIGH = 0x4
IRQ_TYPE_LEVEL_LOW = 0x8

CPU_COMPATIBLE = "arm,arm-v8"
PSCI_COMPATIBLE = ("arm,psci-1.0", "arm,psci-0.2", "arm,psci")
TIMER_COMPATIBLE = ("arm,armv8-timer", "arm,armv7-timer")
PSCI_METHODS = ("hvc", "smc")


class FdtError(ValueError):
    """A device tree description that cannot be built; the message is one line."""


@dataclass(frozen=True)
class SerialPort:
    """An 8250/ns16550a port as kvmtool describes it. `irq` is the GIC INTID (an SPI, >= 32)."""

    base: int
    irq: int
    reg_size: int = SERIAL8250_REG_SIZE
    clock_frequency: int = UART_CLOCK_FREQUENCY

    @property
    def node_name(self) -> str:
        return f"U6_16550A@{self.base:x}"


@dataclass(frozen=True)
class VirtioMmioNode:
    """A virtio-mmio transport window. `irq` is the GIC INTID (an SPI, >= 32)."""

    base: int
    irq: int
    size: int = VIRTIO_MMIO_IO_SIZE

    @property
    def node_name(self) -> str:
        return f"virtio@{self.base:x}"


@dataclass(frozen=True)
class FdtConfig:
    """Everything the guest device tree says. Addresses are guest physical (IPAs)."""

    memory: Sequence[tuple[int, int]]  # (base, size) per RAM bank
    nrcpus: int = 1
    bootargs: str = ""
    initrd: tuple[int, int] | None = None  # (start, end), end exclusive
    psci_method: str = "hvc"
    serials: Sequence[SerialPort] = ()
    virtio_mmio: Sequence[VirtioMmioNode] = ()
    kaslr_seed: int | None = None
    stdout_path: str | None = None  # default: the first UART
    mpidrs: Sequence[int] | None = None  # default: KVM's reset MPIDR for each vCPU index
    cpu_compatible: str = CPU_COMPATIBLE
    timer_ppis: tuple[int, int, int, int] = ARCH_TIMER_PPIS
    extra_chosen: dict[str, str] = field(default_factory=dict)
    rtc: tuple[int, int] | None = None  # (base, size) of the motorola,mc146818 RTC

    @classmethod
    def for_layout(
        cls,
        layout: GuestLayout,
        *,
        nrcpus: int = 1,
        bootargs: str = "",
        serials: Sequence[SerialPort] = (),
        virtio_mmio: Sequence[VirtioMmioNode] = (),
        kaslr_seed: int | None = None,
    ) -> FdtConfig:
        """Memory, initrd and PSCI conduit taken from a computed GuestLayout."""
        return cls(
            memory=[(layout.ram_base, layout.ram_size)],
            nrcpus=nrcpus,
            bootargs=bootargs,
            initrd=(layout.initrd_start, layout.initrd_end) if layout.has_initrd else None,
            psci_method="smc" if layout.is_realm else "hvc",
            serials=serials,
            virtio_mmio=virtio_mmio,
            kaslr_seed=kaslr_seed,
        )

    def cpu_mpidrs(self) -> list[int]:
        if self.mpidrs is not None:
            if len(self.mpidrs) != self.nrcpus:
                raise FdtError(f"{len(self.mpidrs)} MPIDRs given for {self.nrcpus} vCPUs")
            return list(self.mpidrs)
        return [vcpu_mpidr(i) for i in range(self.nrcpus)]


def kvmtool_serial_ports(irq_lines: IrqLines, count: int = 4) -> list[SerialPort]:
    """ttyS0..ttyS{count-1} at kvmtool's addresses, taking lines from `irq_lines` in order."""
    return [SerialPort(serial_iobase(n), irq_lines.alloc()) for n in range(count)]


def _cells(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _u64s(*values: int) -> bytes:
    return struct.pack(f">{len(values)}Q", *values)


def _strings(items: Sequence[str]) -> bytes:
    return b"".join(s.encode() + b"\0" for s in items)


def _spi(irq: int, flags: int) -> bytes:
    if not GIC_SPI_IRQ_BASE <= irq < 1020:
        raise FdtError(f"interrupt {irq} is not an SPI INTID (32..1019)")
    return _cells(GIC_FDT_IRQ_TYPE_SPI, irq - GIC_SPI_IRQ_BASE, flags)


def generate_fdt(cfg: FdtConfig) -> bytes:
    """The packed device tree blob (kvmtool's setup_fdt). At most FDT_MAX_SIZE bytes."""
    if cfg.psci_method not in PSCI_METHODS:
        raise FdtError(f"PSCI method must be hvc or smc, not {cfg.psci_method!r}")
    if cfg.nrcpus < 1:
        raise FdtError("a guest needs at least one vCPU")
    if not cfg.memory:
        raise FdtError("a guest needs at least one memory bank")
    mpidrs = cfg.cpu_mpidrs()

    sw = libfdt.FdtSw()
    sw.finish_reservemap()  # no memory reservations
    with sw.add_node(""):
        sw.property_u32("interrupt-parent", PHANDLE_GIC)
        sw.property_string("compatible", "linux,dummy-virt")
        sw.property_u32("#address-cells", 2)
        sw.property_u32("#size-cells", 2)

        with sw.add_node("chosen"):
            sw.property_string("bootargs", cfg.bootargs)
            if cfg.kaslr_seed is not None:
                sw.property_u64("kaslr-seed", cfg.kaslr_seed)
            stdout = cfg.stdout_path
            if stdout is None and cfg.serials:
                stdout = "/" + cfg.serials[0].node_name
            if stdout is not None:
                sw.property_string("stdout-path", stdout)
            if cfg.initrd is not None:
                start, end = cfg.initrd
                if end < start:
                    raise FdtError(f"initrd ends at {end:#x} before it starts at {start:#x}")
                sw.property("linux,initrd-start", _u64s(start))
                sw.property("linux,initrd-end", _u64s(end))
            for name, value in cfg.extra_chosen.items():
                sw.property_string(name, value)

        banks = sorted(cfg.memory)
        for base, size in banks:
            # kvmtool's single bank is plain "memory"; several need unit addresses to be distinct.
            with sw.add_node("memory" if len(banks) == 1 else f"memory@{base:x}"):
                sw.property_string("device_type", "memory")
                sw.property("reg", _u64s(base, size))

        with sw.add_node("cpus"):
            sw.property_u32("#address-cells", 1)
            sw.property_u32("#size-cells", 0)
            for mpidr in mpidrs:
                with sw.add_node(f"cpu@{mpidr:x}"):
                    sw.property_string("device_type", "cpu")
                    sw.property_string("compatible", cfg.cpu_compatible)
                    sw.property_string("enable-method", "psci")
                    sw.property_u32("reg", mpidr)

        with sw.add_node("intc"):
            sw.property_string("compatible", "arm,gic-v3")
            sw.property_u32("#interrupt-cells", GIC_FDT_IRQ_NUM_CELLS)
            sw.property("interrupt-controller", b"")
            sw.property(
                "reg",
                _u64s(
                    ARM_GIC_DIST_BASE,
                    ARM_GIC_DIST_SIZE,
                    gic_redists_base(cfg.nrcpus),
                    gic_redists_size(cfg.nrcpus),
                ),
            )
            sw.property_u32("phandle", PHANDLE_GIC)
            sw.property_u32("#address-cells", 2)
            sw.property_u32("#size-cells", 2)

        with sw.add_node("timer"):
            sw.property("compatible", _strings(TIMER_COMPATIBLE))
            # PPI flags carry no CPU mask on GICv3 (kvmtool gic__get_fdt_irq_cpumask).
            sw.property(
                "interrupts",
                b"".join(_cells(GIC_FDT_IRQ_TYPE_PPI, ppi, IRQ_TYPE_LEVEL_LOW) for ppi in cfg.timer_ppis),
            )
            sw.property("always-on", b"")

        for port in cfg.serials:
            with sw.add_node(port.node_name):
                sw.property_string("compatible", "ns16550a")
                sw.property("reg", _u64s(port.base, port.reg_size))
                sw.property("interrupts", _spi(port.irq, IRQ_TYPE_LEVEL_HIGH))
                sw.property_u32("clock-frequency", port.clock_frequency)

        if cfg.rtc is not None:
            with sw.add_node(f"rtc@{cfg.rtc[0]:x}"):
                sw.property_string("compatible", "motorola,mc146818")
                sw.property("reg", _u64s(*cfg.rtc))

        for dev in cfg.virtio_mmio:
            with sw.add_node(dev.node_name):
                sw.property_string("compatible", "virtio,mmio")
                sw.property("reg", _u64s(dev.base, dev.size))
                sw.property("dma-coherent", b"")
                sw.property("interrupts", _spi(dev.irq, IRQ_TYPE_EDGE_RISING))

        with sw.add_node("psci"):
            sw.property("compatible", _strings(PSCI_COMPATIBLE))
            sw.property_string("method", cfg.psci_method)
            # PSCI 0.1 function IDs, for guests that predate the standard IDs (64-bit forms).
            sw.property_u32("cpu_suspend", PsciFid.CPU_SUSPEND_64)
            sw.property_u32("cpu_off", PsciFid.CPU_OFF)
            sw.property_u32("cpu_on", PsciFid.CPU_ON_64)
            sw.property_u32("migrate", PsciFid.MIGRATE_64)

        if cfg.serials:
            with sw.add_node("aliases"):
                for n, port in enumerate(cfg.serials):
                    sw.property_string(f"serial{n}", "/" + port.node_name)

    # as_fdt() appends the end tag without growing the buffer: leave it room.
    sw.resize(len(sw.as_bytearray()) + libfdt.FdtSw.INC_SIZE)
    fdt = sw.as_fdt()
    fdt.pack()
    blob = bytes(fdt.as_bytearray())
    if len(blob) > FDT_MAX_SIZE:
        raise FdtError(f"device tree is {len(blob)} bytes, more than FDT_MAX_SIZE ({FDT_MAX_SIZE})")
    return blob


def dump_dtb(path: str | Path, dtb: bytes) -> None:
    """Write the blob for `--dump-dtb` (readable with `dtc -I dtb -O dts`)."""
    Path(path).write_bytes(dtb)


# --- kvmtool-cca's arm64 device tree, byte for byte ----------------------------------------
# `unirealm run` and the model of a real kvmtool-cca launch (attest/kvmtool.py) both take the
# guest's device tree from KvmtoolFdt, so the DTB a realm measures is the one kvmtool builds.

KVMTOOL_PHANDLE_ITS = 2
KVMTOOL_CPU_COMPATIBLE = "arm,armv8"
KVMTOOL_GIC_ITS_SIZE = 128 << 10  # the ITS frame below the redistributors (gicv3-its)
KVMTOOL_PCI_SLOTS = 32  # one legacy INTx line per slot in interrupt-map
KVMTOOL_PCI_FIRST_SPI = 64  # kvmtool's PCI INTx SPIs, above the device lines
PCI_RANGE_IOPORT, PCI_RANGE_MMIO = 0x0100_0000, 0x0200_0000  # phys.hi space codes (PCI bus binding)
PMU_PPI = 7  # the PMU overflow interrupt, PPI 7 (INTID 23)


class FdtWriter:
    """Sequential FDT writer as libfdt's sequential-write mode lays a blob out: the 40-byte
    header, an empty reservation map, the structure block, then the strings, each property
    name stored once in first-use order."""

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
        self.prop(name, _strings(values))

    def u32(self, name: str, *values: int) -> None:
        self.prop(name, _cells(*values))

    def u64(self, name: str, *values: int) -> None:
        self.prop(name, _u64s(*values))

    def finish(self) -> bytes:
        self._token(FDT_END)
        off_rsvmap = FDT_HEADER.size
        off_struct = off_rsvmap + FDT_RESERVE_ENTRY.size
        off_strings = off_struct + len(self.struct)
        total = off_strings + len(self.strings)
        header = FDT_HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsvmap, FDT_VERSION,
                                 FDT_LAST_COMP_VERSION, 0, len(self.strings), len(self.struct))
        return header + FDT_RESERVE_ENTRY.pack(0, 0) + bytes(self.struct) + bytes(self.strings)


def kvmtool_bootargs(params: str, console: str | None = None, nodefaults: bool = False) -> str:
    """The kernel command line kvmtool builds (builtin-run.c kvm_run_set_real_cmdline): the
    console's name, ` root=/dev/vda rw ` unless -p names a root, then ` ` and -p;
    `--nodefaults` passes -p verbatim. With no --console the name is hvc0, as in the
    reference tool's golden device trees; `--console serial` names ttyS0."""
    if nodefaults:
        return params
    text = " console=ttyS0" if console == "serial" else " console=hvc0"
    if "root=" not in params:
        text += " root=/dev/vda rw "
    if params:
        text += " " + params
    return text


@dataclass(frozen=True)
class KvmtoolFdt:
    """What kvmtool-cca's arm64 DTB says for one launch. Addresses are IPAs; `virtio_mmio`
    lists the virtio-mmio windows in registration order; `initrd` is (start, end)."""

    nrcpus: int
    mem_base: int
    mem_size: int
    bootargs: str
    realm: bool = True
    its: bool = True
    pmu: bool = False
    virtio_mmio: Sequence[VirtioMmioNode] = ()
    initrd: tuple[int, int] | None = None
    kaslr_seed: int | None = None
    rtc_base: int = ARM_RTC_MMIO_BASE
    serial_ports: int = 4

    def dtb(self) -> bytes:
        """The blob, zero-padded to FDT_MAX_SIZE (kvmtool populates the whole 64 KiB)."""
        f = FdtWriter()
        f.begin("")
        f.string("compatible", "linux,dummy-virt")
        if self.realm:
            f.string("model", "linux,dummy-virt-realm")
        f.u32("#address-cells", 2)
        f.u32("#size-cells", 2)
        f.u32("interrupt-parent", PHANDLE_GIC)
        f.begin("chosen")
        f.string("bootargs", self.bootargs)
        if self.kaslr_seed is not None:
            f.u64("kaslr-seed", self.kaslr_seed)
        if self.initrd is not None:
            f.u64("linux,initrd-start", self.initrd[0])
            f.u64("linux,initrd-end", self.initrd[1])
        f.end()
        f.begin(f"memory@{self.mem_base:x}")
        f.string("device_type", "memory")
        f.u64("reg", self.mem_base, self.mem_size)
        f.end()
        f.begin("cpus")
        f.u32("#size-cells", 0)
        f.u32("#address-cells", 1)
        for i in range(self.nrcpus):
            f.begin(f"cpu@{vcpu_mpidr(i):x}")
            f.u32("reg", vcpu_mpidr(i))
            f.string("enable-method", "psci")
            f.string("compatible", KVMTOOL_CPU_COMPATIBLE)
            f.string("device_type", "cpu")
            f.end()
        f.end()
        f.begin("psci")
        f.u32("cpu_on", PsciFid.CPU_ON_64)
        f.u32("cpu_off", PsciFid.CPU_OFF)
        f.string("method", "smc" if self.realm else "hvc")
        f.string("compatible", *PSCI_COMPATIBLE)
        f.end()
        redist_base, redist_size = gic_redists_base(self.nrcpus), gic_redists_size(self.nrcpus)
        f.begin("intc")
        f.string("compatible", "arm,gic-v3")
        f.u32("#interrupt-cells", GIC_FDT_IRQ_NUM_CELLS)
        f.prop("interrupt-controller")
        f.u64("reg", ARM_GIC_DIST_BASE, ARM_GIC_DIST_SIZE, redist_base, redist_size)
        f.u32("phandle", PHANDLE_GIC)
        f.u32("#address-cells", 2)
        f.u32("#size-cells", 2)
        f.prop("ranges")
        if self.its:
            f.begin("msic")
            f.string("compatible", "arm,gic-v3-its")
            f.prop("msi-controller")
            f.u32("phandle", KVMTOOL_PHANDLE_ITS)
            f.u64("reg", redist_base - KVMTOOL_GIC_ITS_SIZE, KVMTOOL_GIC_ITS_SIZE)
            f.end()
        f.end()
        f.begin("timer")
        # kvmtool lists the secure, non-secure and virtual timers (not the hyp timer).
        f.u32("interrupts", *(c for ppi in ARCH_TIMER_PPIS[:3] for c in (GIC_FDT_IRQ_TYPE_PPI, ppi,
                                                                        IRQ_TYPE_LEVEL_LOW)))
        f.prop("always-on")
        f.string("compatible", *TIMER_COMPATIBLE)
        f.end()
        if self.pmu:
            f.begin("pmu")
            f.u32("interrupts", GIC_FDT_IRQ_TYPE_PPI, PMU_PPI, IRQ_TYPE_LEVEL_HIGH)
            f.string("compatible", "arm,armv8-pmuv3")
            f.end()
        for port in range(self.serial_ports):
            addr = serial_iobase(port)
            f.begin(f"U6_16550A@{addr:x}")
            f.string("compatible", "ns16550a")
            f.u64("reg", addr, SERIAL8250_REG_SIZE)
            f.u32("interrupts", GIC_FDT_IRQ_TYPE_SPI, port, IRQ_TYPE_LEVEL_HIGH)
            f.u32("clock-frequency", UART_CLOCK_FREQUENCY)
            f.end()
        for dev in self.virtio_mmio:
            f.begin(dev.node_name)
            f.string("compatible", "virtio,mmio")
            f.u64("reg", dev.base, dev.size)
            f.prop("dma-coherent")
            f.prop("interrupts", _spi(dev.irq, IRQ_TYPE_EDGE_RISING))
            f.end()
        f.begin(f"rtc@{self.rtc_base:x}")
        f.string("compatible", "motorola,mc146818")
        f.u64("reg", self.rtc_base, RTC_REG_SIZE)
        f.end()
        f.begin(f"pci@{KVM_PCI_CFG_AREA:x}")
        f.string("device_type", "pci")
        f.u32("#address-cells", 3)
        f.u32("#size-cells", 2)
        f.prop("dma-coherent")
        f.u32("bus-range", 0, 0)
        f.string("compatible", "pci-host-ecam-generic")
        f.u64("reg", KVM_PCI_CFG_AREA, ARM_PCI_CFG_SIZE)
        f.u32("ranges", PCI_RANGE_IOPORT, 0, 0, 0, ARM_IOPORT_AREA, 0, ARM_IOPORT_SIZE,
              PCI_RANGE_MMIO, 0, KVM_PCI_MMIO_AREA, 0, KVM_PCI_MMIO_AREA, 0, ARM_PCI_MMIO_SIZE)
        imap: list[int] = []
        for slot in range(KVMTOOL_PCI_SLOTS):  # one SPI per slot, pin INTA only
            imap += [slot << 11, 0, 0, 1, PHANDLE_GIC, 0, 0, GIC_FDT_IRQ_TYPE_SPI, KVMTOOL_PCI_FIRST_SPI + slot,
                     IRQ_TYPE_LEVEL_HIGH]
        f.u32("interrupt-map", *imap)
        f.u32("interrupt-map-mask", 0x1F << 11, 0, 0, 7)
        f.u32("#interrupt-cells", 1)
        if self.its:
            f.u32("msi-map", 0, KVMTOOL_PHANDLE_ITS, 0, 0x1_0000)
        f.end()
        f.end()
        blob = f.finish()
        if len(blob) > FDT_MAX_SIZE:
            raise FdtError(f"the device tree is too large ({len(blob)} > {FDT_MAX_SIZE} bytes)")
        return blob.ljust(FDT_MAX_SIZE, b"\0")
