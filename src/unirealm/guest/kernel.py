"""The unikernel's boot flow.

1. Read the device tree the VMM left at x0.
2. Detect RSI at run time: RSI_VERSION answered NOT_SUPPORTED means "not a realm", so one
   image boots as a plain VM, as a normal VM on an RME machine, and as a realm.
3. In a realm: RSI_REALM_CONFIG into a zeroed granule -> IPA width -> the unprotected bit;
   RSI_IPA_STATE_SET to RAM over all RAM, checking ACCEPT; every device region named in the
   device tree is reached through its unprotected alias (after checking with
   RSI_IPA_STATE_GET that the host, not the realm, owns it: RIPAS EMPTY).
4. The console, then the command line: unikernel options, `--`, the app's argv; then the
   GICv3 and the virtual timer (guest/gic.py, guest/irq.py): from here on the kernel takes
   interrupts and idles in WFI until one comes. With a
   virtio-console in the device tree (`--console virtio`), the app's stdio moves to it
   (hvc0) once the page allocator exists; kernel messages stay on the UART.
5. Run the app; its exit status travels in x1 of PSCI SYSTEM_OFF (ignored by PSCI itself).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from ..arch.rsi import RsiRipas
from ..arch.smccc import PsciFid
from ..arch.timer import PPI_VIRT_TIMER
from . import ukrsi
from .console import ConsoleError, Ns16550
from .fdt import read_fdt
from .loglevel import (
    CONSOLE_LOGLEVEL_QUIET,
    LOGLEVEL_ERR,
    LOGLEVEL_INFO,
    LOGLEVEL_REQUESTED,
    LOGLEVEL_WARNING,
    console_loglevel,
)
from .mm import PageAllocator

if TYPE_CHECKING:
    from .interfaces import Console, Cpu
    from .irq import Interrupts
    from .net.stack import NetStack

FDT_MAGIC = 0xD00DFEED
UNDRIVEN = ("pci-host-ecam-generic",)  # kvmtool's PCI host bridge: this kernel has no PCI driver
ARM64_IMAGE_SIZE_OFFSET = 0x10


@dataclass
class Device:
    path: str
    compatible: str
    base: int
    size: int
    address: int = 0  # where the kernel reaches it: base, or its unprotected alias
    irq: int | None = None  # the INTID of its first `interrupts` entry (GIC binding: SPI n is 32 + n)


@dataclass
class BootInfo:
    ram: list[tuple[int, int]] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    bootargs: str = ""
    initrd: tuple[int, int] | None = None
    psci_method: str = "hvc"
    stdout_path: str = ""
    timer_irq: int | None = None  # the virtual timer's INTID from the arm,armv8-timer node


# GIC binding (arm,gic-v3): interrupt specifiers are (type, number, flags); INTID = base + number.
GIC_SPI, GIC_PPI = 0, 1
GIC_INTID_BASE = {GIC_SPI: 32, GIC_PPI: 16}
TIMER_VIRTUAL = 2  # arm,armv8-timer: secure, non-secure, virtual, hypervisor


def _intids(prop: bytes | None) -> list[int]:
    """The INTIDs of an `interrupts` property of a node under the GIC (3 cells each)."""
    if not prop or len(prop) % 12:
        return []
    cells = struct.unpack(f">{len(prop) // 4}I", prop)
    return [GIC_INTID_BASE[kind] + number for kind, number, _ in zip(cells[::3], cells[1::3], cells[2::3], strict=True)
            if kind in GIC_INTID_BASE]


def _cells(prop: bytes, count: int) -> list[int]:
    return list(struct.unpack(f">{len(prop) // 4}I", prop))[:count] if prop else []


def _reg_pairs(prop: bytes, addr_cells: int = 2, size_cells: int = 2) -> list[tuple[int, int]]:
    words = struct.unpack(f">{len(prop) // 4}I", prop)
    step = addr_cells + size_cells
    out = []
    for i in range(0, len(words) - step + 1, step):
        addr = 0
        for w in words[i : i + addr_cells]:
            addr = addr << 32 | w
        size = 0
        for w in words[i + addr_cells : i + step]:
            size = size << 32 | w
        out.append((addr, size))
    return out


def parse_fdt(blob: bytes) -> BootInfo:
    info = BootInfo()
    for node in read_fdt(blob).children:
        name = node.name
        path = "/" + name
        prop = node.prop
        device_type = (prop("device_type") or b"").rstrip(b"\0")
        reg = prop("reg")
        if device_type == b"memory" and reg:
            info.ram.extend(_reg_pairs(reg))
        elif name == "chosen":
            info.bootargs = (prop("bootargs") or b"").rstrip(b"\0").decode(errors="replace")
            info.stdout_path = (prop("stdout-path") or b"").rstrip(b"\0").decode(errors="replace")
            start, end = prop("linux,initrd-start"), prop("linux,initrd-end")
            if start and end:
                info.initrd = (int.from_bytes(start, "big"), int.from_bytes(end, "big"))
        elif name == "psci":
            info.psci_method = (prop("method") or b"hvc").rstrip(b"\0").decode()
        elif name == "timer":
            ppis = _intids(prop("interrupts"))
            info.timer_irq = ppis[TIMER_VIRTUAL] if len(ppis) > TIMER_VIRTUAL else None
        elif reg and name not in ("cpus",):
            compatible = (prop("compatible") or b"").split(b"\0")[0].decode(errors="replace")
            irqs = _intids(prop("interrupts"))
            for base, size in _reg_pairs(reg):
                info.devices.append(Device(path, compatible, base, size, irq=irqs[0] if irqs else None))
    return info


class Kernel:
    def __init__(self, cpu: Cpu) -> None:
        self.cpu = cpu
        self.rsi = ukrsi.Rsi(cpu)
        self.realm: ukrsi.RealmConfig | None = None
        self.console: Console | None = None  # the app's stdio: the stdout-path UART (ttyS0), or hvc0
        self.log_device: Ns16550 | None = None  # kernel messages: the next UART (ttyS1) if any
        self._early_log: list[str] = []
        self.pages = PageAllocator()
        self.info = BootInfo()
        self.options: dict[str, str] = {}
        self.argv: list[str] = []
        self.console_loglevel = CONSOLE_LOGLEVEL_QUIET  # guest/loglevel.py: `quiet`, `debug`, `loglevel=N`
        self.realtime_offset_ns = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC
        self.net: NetStack | None = None  # the IPv4 stack on the first virtio-net NIC (guest/net)
        self.irq: Interrupts | None = None  # the GIC's interrupts (None: no GIC, the kernel polls)

    # --- logging ------------------------------------------------------------------------
    def log(self, text: str, error: bool = False, level: int | None = None) -> None:
        """One line of the kernel log, at `level` (KERN_ERR for an error, else KERN_INFO):
        shown only below the console loglevel, as printk does."""
        if level is None:
            level = LOGLEVEL_ERR if error else LOGLEVEL_INFO
        if level >= self.console_loglevel:
            return
        line = f"unirealm: {text}\n"
        if self.log_device is None:
            self._early_log.append(line)
        else:
            self.log_device.write(line.encode())

    def write_log(self, data: bytes) -> None:
        if self.log_device is not None:
            self.log_device.write(data)

    def write_console(self, data: bytes) -> None:
        if self.console is not None:
            self.console.write(data)

    # --- power --------------------------------------------------------------------------
    def psci(self, *regs: int) -> list[int]:
        conduit = self.cpu.smc if self.info.psci_method == "smc" else self.cpu.hvc
        return conduit(*regs)

    def power_off(self, status: int) -> None:
        while True:
            self.psci(PsciFid.SYSTEM_OFF, status & 0xFF)

    # --- boot ---------------------------------------------------------------------------
    def boot(self) -> int:
        dtb_ipa = self.cpu.boot_registers[0]
        header = self.cpu.read(dtb_ipa, 8)
        magic, total = struct.unpack(">II", header)
        if magic != FDT_MAGIC:
            raise RuntimeError(f"no device tree at {dtb_ipa:#x}")
        self.info = parse_fdt(self.cpu.read(dtb_ipa, total))
        words = self.info.bootargs.split()
        self.console_loglevel, problem = console_loglevel(words[: words.index("--")] if "--" in words else words)
        if problem is not None:
            self.log(problem, error=True)
        image_base = self.cpu.boot_pc
        image_size = int.from_bytes(self.cpu.read(image_base + ARM64_IMAGE_SIZE_OFFSET, 8), "little")

        version = self.rsi.detect()
        if version is None:
            self.log("RSI: NOT_SUPPORTED -> not a realm")
        else:
            self.log(f"RSI {version[0]}.{version[1]} detected: running as a realm")
            # The image's BSS is RIPAS RAM from the start (RTT_INIT_RIPAS at load): use its
            # last granule for RsiRealmConfig.
            config_page = image_base + image_size - GRANULE_SIZE
            self.realm = self.rsi.read_config(config_page)
            self.log(
                f"realm config: IPA width {self.realm.ipa_width} bits, unprotected bit "
                f"{self.realm.unprotected_bit:#x}, hash {['sha-256', 'sha-512'][self.realm.hash_algo & 1]}"
            )
            for base, size in self.info.ram:
                self.rsi.setup_memory(base, base + size)
                self.log(f"RIPAS RAM set over [{base:#x}, {base + size:#x})")
        self.map_devices()
        self.start_console()
        self.start_clock()

        for base, size in self.info.ram:
            self.pages.add(base, base + size)
        self.pages.reserve(image_base, image_base + image_size)
        self.pages.reserve(dtb_ipa, dtb_ipa + total)
        if self.info.initrd:
            self.pages.reserve(*self.info.initrd)
        self.log(f"memory: {self.pages.free_bytes >> 20} MiB free of {sum(s for _, s in self.info.ram) >> 20} MiB")

        self.parse_cmdline(self.info.bootargs)
        self.start_interrupts()
        self.start_hvc()
        if "ukrsi.selftest" in self.options:
            from .selftest import run_selftest

            run_selftest(self)
        if "attest" in self.options:
            self.print_token(self.options["attest"])
        self.start_network()
        return self.run_app()

    def start_interrupts(self) -> None:
        """The device tree's GICv3 (distributor, then redistributors) and the virtual timer.
        A GIC that cannot be driven is reported, and the kernel polls its devices instead."""
        from .gic import Gic, GicError
        from .irq import Interrupts, VirtualTimer

        regions = [d for d in self.info.devices if d.compatible == "arm,gic-v3"]
        if len(regions) < 2:
            self.log("no GICv3 in the device tree: devices are polled")
            return
        dist, redist = regions[0], regions[1]
        try:
            gic = Gic(self.cpu, dist.address, redist.address, redist.size)
            gic.init()
            irqs = Interrupts(self.cpu, gic)
            VirtualTimer(self.cpu, irqs, self.info.timer_irq or PPI_VIRT_TIMER)
        except GicError as exc:
            self.log(f"GICv3 {dist.path}: {exc}; devices are polled", error=True)
            return
        except Exception as exc:  # an exception the PE delivered (an ICC_* register UNDEFINED)
            self.log(f"GICv3 {dist.path}: CPU interface: {exc}; devices are polled", error=True)
            return
        self.irq = irqs
        self.log(f"GICv3: distributor {dist.address:#x}, {gic.nr_irqs} INTIDs; virtual timer on PPI "
                 f"{irqs.timer.intid if irqs.timer else '-'}")

    def wait(self, deadline_ns: int | None = None) -> int:
        """Idle until an interrupt (a device, or the timer armed for `deadline_ns` on the
        monotonic clock), taking it; the interrupts taken. Without a GIC one WFI."""
        if self.irq is None:
            self.cpu.wfi()
            return 0
        return self.irq.wait(deadline_ns)

    def start_hvc(self) -> None:
        """hvc0 for the app's stdio: the first virtio-console, unless the command line's last
        `console=` names a UART. A device that fails to come up leaves stdio on the UART."""
        if not any(d.compatible == "virtio,mmio" for d in self.info.devices):
            return
        if not self.options.get("console", "hvc0").startswith("hvc"):
            return
        from ..arch.virtio import VirtioDeviceId
        from .hvc import VirtioConsole
        from .virtio import VirtioError, virtio_devices

        for dev, transport, device_id in virtio_devices(self):
            if device_id != VirtioDeviceId.CONSOLE:
                continue
            try:
                self.console = VirtioConsole(self, transport)
            except VirtioError as exc:
                self.log(f"virtio-console {dev.path}: {exc}; stdio stays on the UART", error=True)
                return
            self.log(f"hvc0: virtio-console {dev.path} at {dev.address:#x} is the console")
            return

    def start_network(self) -> None:
        """The first virtio-net NIC, configured by `ip=ADDR/PREFIX,GATEWAY`, DHCP or kvmtool's
        defaults (guest/net/dhcp.py)."""
        if not any(d.compatible == "virtio,mmio" for d in self.info.devices) or "nonet" in self.options:
            return
        from .net.dhcp import start_network

        self.net = start_network(self)

    def map_devices(self) -> None:
        mapped: dict[str, list[int]] = {}  # compatible -> the bases mapped through the alias
        for dev in self.info.devices:
            if dev.compatible in UNDRIVEN:
                continue  # no driver here: its window is never touched
            if self.realm is None:
                dev.address = dev.base
                continue
            # RIPAS is per granule: check every granule the region touches (devices such as
            # virtio-mmio windows are smaller than a granule and need not start on one).
            first = dev.base & ~(GRANULE_SIZE - 1)
            end = -(-(dev.base + max(dev.size, 1)) // GRANULE_SIZE) * GRANULE_SIZE
            runs = self.rsi.ripas_runs(first, end)
            if any(r[2] != RsiRipas.EMPTY for r in runs):
                # Realm-owned memory is never handed to a device model.
                self.log(f"device {dev.path}: RIPAS is not EMPTY; left protected", level=LOGLEVEL_WARNING)
                dev.address = dev.base
                continue
            dev.address = dev.base | self.realm.unprotected_bit
            mapped.setdefault(dev.compatible, []).append(dev.base)
        if mapped and self.realm is not None:
            # One line for all: each byte of the kernel log is an exit on a 16550.
            devices = ", ".join(f"{c} " + " ".join(f"{b:#x}" for b in bases) for c, bases in mapped.items())
            self.log(f"mapped unprotected at IPA | {self.realm.unprotected_bit:#x}: {devices}")

    def emergency_console(self) -> None:
        """A panic before the console came up: reach the UARTs the plain way, or through the
        unprotected alias once the realm's IPA width is known, and flush the early log."""
        bit = self.realm.unprotected_bit if self.realm is not None else 0
        for dev in self.info.devices:
            if not dev.address:
                dev.address = dev.base | bit
        try:
            self.start_console()
        except Exception:  # nothing more can be said: power off silently
            self._early_log = []

    def start_console(self) -> None:
        """The app's stdio goes to the stdout-path UART; kernel messages to the UART after it
        (kvmtool's ttyS1, which the VMM connects to its stderr), so an app's output is never
        interleaved with the kernel's. With a single UART both share it."""
        target = self.info.stdout_path.split(":")[0]
        uarts = sorted((d for d in self.info.devices if d.compatible.startswith("ns16550")), key=lambda d: d.base)
        if not uarts:
            return
        index = next((i for i, d in enumerate(uarts) if d.path == target), 0)
        log_uart = uarts[index + 1] if index + 1 < len(uarts) else uarts[index]
        problem = None
        uart: Ns16550 | None = None
        try:
            uart = self.console = Ns16550(self.cpu, uarts[index].address)
        except ConsoleError as exc:  # the app runs without stdio: input at end, output dropped
            problem = exc
        try:
            self.log_device = uart if log_uart is uarts[index] else Ns16550(self.cpu, log_uart.address)
        except ConsoleError:
            self.log_device = None
        if self.log_device is None:
            self._early_log = []
            return
        if problem is not None:
            self.log(f"console {uarts[index].path}: {problem}; no console", error=True)
        early, self._early_log = self._early_log, []
        self.log_device.write("".join(early).encode())

    # --- time ---------------------------------------------------------------------------
    def monotonic_ns(self) -> int:
        """CLOCK_MONOTONIC: the architected counter, which EL0 code (and the vDSO) reads too."""
        return self.cpu.cntvct() * 1_000_000_000 // self.cpu.cntfrq

    def realtime_ns(self) -> int:
        return self.monotonic_ns() + self.realtime_offset_ns

    def start_clock(self) -> None:
        """Wall-clock time from the RTC the device tree names; the epoch if there is none."""
        self.realtime_offset_ns = -self.monotonic_ns()
        rtc = next((d for d in self.info.devices if d.compatible == "motorola,mc146818"), None)
        if rtc is None:
            self.log("no RTC: the wall clock starts at the epoch")
            return
        from .rtc import Mc146818, RtcError

        try:
            seconds = Mc146818(self.cpu, rtc.address).seconds()
        except RtcError as exc:
            self.log(f"RTC: {exc}; the wall clock starts at the epoch", error=True)
            return
        self.realtime_offset_ns = seconds * 1_000_000_000 - self.monotonic_ns()

    def parse_cmdline(self, bootargs: str) -> None:
        """Unikernel options, then `--`, then the app's argv (Unikraft's convention)."""
        words = bootargs.split()
        if "--" in words:
            split = words.index("--")
            opts, self.argv = words[:split], words[split + 1 :]
        else:
            opts, self.argv = words, []
        for opt in opts:
            key, _, value = opt.partition("=")
            self.options[key] = value

    def print_token(self, challenge_hex: str) -> None:
        if self.realm is None:
            self.log("attest: not a realm, no attestation token", level=LOGLEVEL_REQUESTED)
            return
        try:
            challenge = bytes.fromhex(challenge_hex)
        except ValueError:
            self.log("attest: the challenge is not hexadecimal", level=LOGLEVEL_REQUESTED)
            return
        if len(challenge) > 64:
            self.log("attest: the challenge is longer than 64 bytes", level=LOGLEVEL_REQUESTED)
            return
        pages = 4
        buffer = self.pages.alloc(pages)
        try:
            token = self.rsi.attestation_token(challenge, buffer, pages)
        except ukrsi.RsiError as exc:
            self.log(f"attest: {exc}", level=LOGLEVEL_REQUESTED)
            return
        finally:
            self.pages.release(buffer, pages)
        self.log(f"attestation token ({len(token)} bytes, base64):", level=LOGLEVEL_REQUESTED)
        encoded = base64.b64encode(token).decode()
        self.write_log(("\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n").encode())
        self.log("end of attestation token", level=LOGLEVEL_REQUESTED)

    def run_app(self) -> int:
        from .rootfs import run_app

        return run_app(self)


def boot(cpu: Cpu) -> None:
    """Image entry point."""
    kernel = Kernel(cpu)
    status = 1
    try:
        status = kernel.boot()
    except Exception as exc:  # a kernel panic: report it on the console, then power off
        status = 125
        try:
            kernel.log(f"panic: {type(exc).__name__}: {exc}", error=True)
            if kernel.log_device is None:
                kernel.emergency_console()
        except Exception:  # the console itself faults (a host injecting aborts): stop all the same
            pass
    kernel.power_off(status)
