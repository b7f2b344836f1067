"""The guest device tree as kvmtool-cca's arm64 fdt.c builds it, byte for byte.

`unirealm run` and the model of a real kvmtool-cca launch (attest/kvmtool.py, `unirealm
measure ... kvmtool ARGS`) both take the guest's DTB from KvmtoolFdt, so the device tree a
realm measures is the one kvmtool would build for the same devices. Nodes in kvmtool's order
(arm/fdt.c, arm/gic.c, arm/timer.c, hw/serial.c, hw/rtc.c, virtio/mmio.c, arm/pci.c and the
realm changes of the kvmtool-cca branch):

    /                 compatible "linux,dummy-virt" (model "linux,dummy-virt-realm" for a
                      realm), #address-cells/#size-cells 2, interrupt-parent = the GIC
    /chosen           bootargs, kaslr-seed (`--kaslr-seed`), linux,initrd-start/-end
    /memory@BASE      device_type "memory", reg
    /cpus/cpu@N       reg = MPIDR affinity, enable-method "psci", compatible "arm,armv8"
    /psci             cpu_on/cpu_off, method "smc" for a realm (the RMM implements PSCI), "hvc" otherwise
    /intc             arm,gic-v3: distributor and redistributors; /intc/msic the ITS (gicv3-its)
    /timer            the secure, non-secure and virtual timer PPIs, level-low, always-on
    /pmu              arm,armv8-pmuv3 (`--pmu`)
    /U6_16550A@...    ns16550a UARTs (kvmtool's node name), level-high SPIs
    /virtio@...       virtio,mmio windows, dma-coherent, edge-rising SPIs
    /rtc@1010000      motorola,mc146818
    /pci@40000000     pci-host-ecam-generic: the host bridge kvmtool always describes

The writer lays the blob out as the reference tool's (cca-realm-measurements) does: header,
an empty reservation map, the structure block, then each property name once in first-use
order; kvmtool populates the whole 64 KiB (FDT_MAX_SIZE), zero-padded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

PSCI_COMPATIBLE = ("arm,psci-1.0", "arm,psci-0.2", "arm,psci")
TIMER_COMPATIBLE = ("arm,armv8-timer", "arm,armv7-timer")


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


def dump_dtb(path: str | Path, dtb: bytes) -> None:
    """Write the blob for `--dump-dtb` (readable with `dtc -I dtb -O dts`)."""
    Path(path).write_bytes(dtb)


# --- kvmtool-cca's arm64 device tree, byte for byte ----------------------------------------
# `unirealm run` and the model of a real kvmtool-cca launch (attest/kvmtool.py) both take the
# guest's device tree from KvmtoolFdt, so the DTB a realm measures is the one kvmtool builds.

KVMTOOL_PHANDLE_ITS = 2
CPU_COMPATIBLE = "arm,armv8"
KVMTOOL_GIC_ITS_SIZE = 128 << 10  # the ITS frame below the redistributors (gicv3-its)
KVMTOOL_PCI_SLOTS = 32  # one legacy INTx line per slot in interrupt-map
KVMTOOL_PCI_FIRST_SPI = 64  # kvmtool's PCI INTx SPIs, above the device lines
PCI_RANGE_IOPORT, PCI_RANGE_MMIO = 0x0100_0000, 0x0200_0000  # phys.hi space codes (PCI bus binding)
PMU_PPI = 7  # the PMU overflow interrupt, PPI 7 (INTID 23)


class FdtWriter:
    """Sequential FDT writer: the 40-byte header, an empty reservation map, the structure
    block, then the strings, each property name stored once in first-use order."""

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
        if self.nrcpus < 1:
            raise FdtError("a guest needs at least one vCPU")
        if self.initrd is not None and self.initrd[1] < self.initrd[0]:
            raise FdtError(f"initrd ends at {self.initrd[1]:#x} before it starts at {self.initrd[0]:#x}")
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
            f.string("compatible", CPU_COMPATIBLE)
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
