"""The kvmtool-equivalent VMM behind `unirealm run`.

It lays out guest memory as kvmtool does (memmap.GuestLayout), builds the device tree
(fdt), wires the devices on an MMIO bus, and launches the guest in one of three ways:

- `--platform kvm`: a machine without RME; the host's KVM layer owns stage 2.
- `--platform rme`: the RME machine with its RMM booted; the VM still runs in the normal
  world on a host-owned stage 2, and its SMCs never reach the RMM.
- `--realm`: a realm built through RMI in kvmtool's order (REALM_CREATE; kernel DATA_CREATE
  measured, kernel BSS by RTT_INIT_RIPAS; initrd; DTB; REC 0; ACTIVATE), run over REC_ENTER.

The guest's PSCI SYSTEM_OFF/RESET ends the run; x1 of that call carries the guest's exit
status (a unirealm convention; PSCI ignores x1), which becomes the VMM's exit status.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from unirealm.arch.esr import Ec, esr_ec
from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.arch.net import ip_bytes, mac_bytes
from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiRecExitReason, RmiRipas
from unirealm.arch.smccc import (
    PsciFid,
    PsciReturn,
    is_psci,
    unsigned64,
)
from unirealm.machine.board import Machine
from unirealm.machine.cpu import IN_PROCESS_ENV, Cpu
from unirealm.machine.kernel_process import KernelProcessStopped, discard_spare, prestart
from unirealm.machine.vcpu import (
    CpuErrorTrap,
    DataAbortTrap,
    HvcTrap,
    InstructionAbortTrap,
    IrqTrap,
    Mapping,
    SmcTrap,
    SysRegTrap,
    UndefinedTrap,
    WfxTrap,
)

from .cmdline import NetParams, RunConfig
from .devices.arch_timer import GenericTimer
from .devices.gicv3 import GicV3, nr_spis_for_lines
from .devices.mmio import MmioBus
from .devices.ns16550 import Ns16550
from .devices.rtc import RTC_MMIO_SIZE, Mc146818
from .devices.virtio_9p import P9Server, Virtio9p
from .devices.virtio_mmio import RamView, SharedView, VirtioMmioDevice
from .devices.virtio_net import VirtioNet, VirtioNetDevice
from .fdt import FdtConfig, VirtioMmioNode, dump_dtb, generate_fdt, kvmtool_serial_ports
from .hostile import LONG_TAG, Hostile, check_attacks, readdir_forever
from .image import ImageFormatError, inspect_image
from .kvm import (
    DataStep,
    HostPages,
    LaunchStep,
    RealmConfig,
    RealmRec,
    RealmVm,
    RecExitInfo,
    RecStep,
    RipasStep,
    RmiCallError,
)
from .memmap import (
    ARM_RTC_MMIO_BASE,
    FDT_MAX_SIZE,
    VIRTIO_MMIO_IO_SIZE,
    GuestLayout,
    IrqLines,
    MemoryLayoutError,
    VirtioMmioSpace,
)
from .net.usernet import Forward, UserNet, UserNetError
from .signals import SignalWatch, VmmStopped
from .smccc import SmcccServices, VmPsci

log = logging.getLogger("unirealm.vmm")
IDLE_LIMIT = 2000  # WFx exits in a row with no device activity: the guest has stopped
NET_IDLE_WAIT = 0.001  # seconds a WFI may wait on the user network's host sockets
NET_POLL_INTERVAL = 0.0005  # seconds between network polls at MMIO exits


class VmmError(Exception):
    """A launch problem reported as one line (bad kernel file, memory too small, ...)."""


@dataclass
class RunResult:
    status: int
    exits: int = 0


@dataclass
class Console:
    """ttyS0: guest output to `output`, `input` fed in as the guest polls for it."""

    output: BinaryIO
    input: BinaryIO | None
    uart: Ns16550 = field(init=False)

    def __post_init__(self) -> None:
        self.uart = Ns16550(output=self._write, name="ttyS0")
        if self.input is None:
            self.uart.set_eof()

    def _write(self, data: bytes) -> None:
        self.output.write(data)
        self.output.flush()

    def poll_input(self) -> None:
        """Move whatever stdin has ready into the UART without blocking the guest."""
        if self.input is None or self.uart._eof:
            return
        try:
            fd = self.input.fileno()
        except (OSError, ValueError, AttributeError):
            data = self.input.read()
            self.uart.feed(data or b"")
            self.uart.set_eof()
            return
        ready, _, _ = select.select([fd], [], [], 0)
        if ready:
            data = os.read(fd, 65536)
            if data:
                self.uart.feed(data)
            else:
                self.uart.set_eof()


def read_file(path: str | None, what: str, limit: int) -> bytes | None:
    """A kernel or initrd: a regular file or a pipe of at most `limit` bytes (the guest's
    RAM), never a device read without end."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise VmmError(f"{what} {path!r} is not a regular file")
            data = bytearray()
            while len(data) <= limit and (chunk := f.read(min(1 << 24, limit + 1 - len(data)))):
                data += chunk
    except FileNotFoundError:
        raise VmmError(f"{what} {path!r} not found") from None
    except IsADirectoryError:
        raise VmmError(f"{what} {path!r} is a directory") from None
    except OSError as exc:
        raise VmmError(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if len(data) > limit:
        raise VmmError(f"{what} {path!r} is larger than the guest's RAM ({limit >> 20} MiB)")
    return bytes(data)


class Vmm:
    def __init__(
        self,
        cfg: RunConfig,
        stdout: BinaryIO | None = None,
        stdin: BinaryIO | None = None,
        trace: Callable[[str], None] | None = None,
        log_output: BinaryIO | None = None,
    ) -> None:
        self.cfg = cfg
        self.log_output = log_output if log_output is not None else sys.stderr.buffer
        self.trace = trace
        if cfg.console != "serial":
            raise VmmError("only the serial console is available (--console serial)")
        if cfg.disks:
            raise VmmError("virtio block devices (-d) are not available in this release")
        # RmiRealmParams SVE/PMU need an RMM that offers them (RMI_FEATURES SVE_EN, PMU_EN)
        # and a vCPU that honours them; this RMM offers neither, and realms see neither.
        if cfg.sve_vl is not None:
            raise VmmError("--sve-vl: this RMM offers realms no SVE (RMI_FEATURES SVE_EN = 0); run without it")
        if cfg.pmu_counters is not None:
            raise VmmError("--pmu-counters: this RMM offers realms no PMU (RMI_FEATURES PMU_EN = 0); run without it")
        for nic in cfg.nics:
            if nic.mode == "tap":
                raise VmmError("-n mode=tap: this VMM does not create tap devices; use -n mode=user")
            if nic.trans is not None and nic.trans != "mmio":
                raise VmmError(f"-n trans={nic.trans}: only the modern virtio-mmio transport is available (trans=mmio)")
        if cfg.nics and cfg.virtio_transport != "mmio":
            raise VmmError("-n needs the modern virtio-mmio transport (--virtio-transport mmio)")
        if cfg.shares_9p and cfg.virtio_transport != "mmio":
            raise VmmError("--9p needs the modern virtio-mmio transport (--virtio-transport mmio)")
        self.console = Console(stdout or sys.stdout.buffer, stdin)
        self.hostile = Hostile(cfg.hostile) if cfg.hostile else None
        if problem := check_attacks(cfg.hostile, cfg.realm, len(cfg.shares_9p), len(cfg.nics)):
            raise VmmError(problem)
        if self.hostile:
            log.warning("hostile VMM (a test mode): %s", ", ".join(sorted(cfg.hostile)))
        self.kernel = read_file(cfg.kernel, "kernel", cfg.ram_size) or b""
        self.initrd = read_file(cfg.initrd, "initrd", cfg.ram_size)
        if not self.kernel:
            raise VmmError(f"kernel {cfg.kernel!r} is empty")
        try:
            inspect_image(self.kernel)
        except ImageFormatError as exc:
            raise VmmError(f"kernel {cfg.kernel!r}: {exc}") from None
        try:
            self.layout = GuestLayout.for_images(cfg.ram_addr, cfg.ram_size, self.kernel, self.initrd, cfg.realm)
        except MemoryLayoutError as exc:
            raise VmmError(str(exc)) from None
        self.bus = MmioBus(trace=self._trace_mmio if self._tracing("mmio") else None)
        irqs = IrqLines()
        self.serials = kvmtool_serial_ports(irqs, 4)
        for i, port in enumerate(self.serials):
            # ttyS0 is the guest's console (stdin/stdout); ttyS1 carries its kernel log to stderr.
            if i == 0:
                device = self.console.uart
            elif i == 1:
                device = Ns16550(output=self._write_log, name="ttyS1")
            else:
                device = Ns16550(name=f"ttyS{i}")
            self.bus.register(port.base, 0x1000, device, f"ttyS{i}")
        self.bootargs = cfg.params or ""
        if not cfg.nodefaults:
            self.bootargs = ("console=ttyS0 " + self.bootargs).strip()
        self.bus.register(ARM_RTC_MMIO_BASE, RTC_MMIO_SIZE, Mc146818(), "rtc")
        self.virtio: list[VirtioMmioDevice] = []
        self.nics: list[tuple[VirtioNetDevice, NetParams]] = []
        self.usernets: list[UserNet] = []
        self._net_polled = 0.0
        space = VirtioMmioSpace()
        virtio_nodes = self._add_9p_devices(irqs, space) + self._add_net_devices(irqs, space)
        # KVM's vGIC behind kvmtool's GIC windows, sized as kvmtool sizes it, and each vCPU's
        # generic timers; the vCPUs do not take interrupts from it yet.
        self.gic = GicV3(cfg.nrcpus, nr_spis_for_lines(irqs.allocated))
        self.gic.attach(self.bus)
        self.timers = [GenericTimer(self.gic, cpu) for cpu in range(cfg.nrcpus)]
        fdt_cfg = FdtConfig.for_layout(self.layout, nrcpus=cfg.nrcpus, bootargs=self.bootargs, serials=self.serials,
                                       virtio_mmio=virtio_nodes, kaslr_seed=cfg.kaslr_seed)
        rtc_base = ARM_RTC_MMIO_BASE
        if self.hostile and "dtb-device-in-ram" in self.hostile:
            rtc_base = self.layout.ram_base + (self.layout.ram_size // 2 & ~0xFFFFF)
        self.dtb = generate_fdt(dataclasses.replace(fdt_cfg, rtc=(rtc_base, RTC_MMIO_SIZE)))
        if cfg.dump_dtb:
            try:
                dump_dtb(cfg.dump_dtb, self.dtb)
            except OSError as exc:
                raise VmmError(f"--dump-dtb {cfg.dump_dtb}: {exc.strerror or exc}") from None
        self.idle = 0
        self.exits = 0
        self.signals = SignalWatch()
        self.smccc = SmcccServices()
        self.psci = VmPsci(self.smccc, cfg.nrcpus)

    def _add_9p_devices(self, irqs: IrqLines, space: VirtioMmioSpace) -> list[VirtioMmioNode]:
        """One virtio-9p device per `--9p DIR[,TAG]`, windows and SPIs in registration order
        (kvmtool). ACCESS_PLATFORM is forced for a realm. No interrupt is ever injected
        (the GIC is not wired to the vCPUs yet): requests complete inside the QueueNotify exit and the
        guest polls the used ring."""
        nodes = []
        for share in self.cfg.shares_9p:
            try:
                server = P9Server(share.path)
            except ValueError as exc:
                raise VmmError(str(exc)) from None
            base = space.alloc()
            name = f"virtio-9p:{share.tag}"
            backend = Virtio9p(server, LONG_TAG if self.hostile and "p9-tag-long" in self.hostile else share.tag)
            if self.hostile and "p9-readdir-loop" in self.hostile:
                honest = backend.handle
                backend.handle = lambda q, req, cap, honest=honest: readdir_forever(req) or honest(q, req, cap)  # type: ignore[method-assign]
            device = VirtioMmioDevice(backend, access_platform=self.cfg.realm, name=name)
            device.hostile = self.hostile
            self.bus.register(base, VIRTIO_MMIO_IO_SIZE, device, name)
            self.virtio.append(device)
            nodes.append(VirtioMmioNode(base, irqs.alloc()))
            log.info("%s: %s at %#x", name, server.root, base)
        return nodes

    def _add_net_devices(self, irqs: IrqLines, space: VirtioMmioSpace) -> list[VirtioMmioNode]:
        """One virtio-net device per user-mode `-n`, after the 9p devices. Its network (the
        gateway and its host sockets) opens when the guest starts, in `start_networks`."""
        nodes = []
        for i, nic in enumerate(self.cfg.nics):
            base = space.alloc()
            name = f"virtio-net:{i}"
            device = VirtioNetDevice(VirtioNet(mac_bytes(nic.guest_mac)), access_platform=self.cfg.realm, name=name)
            device.hostile = self.hostile
            self.bus.register(base, VIRTIO_MMIO_IO_SIZE, device, name)
            self.virtio.append(device)
            self.nics.append((device, nic))
            nodes.append(VirtioMmioNode(base, irqs.alloc()))
            fwd = ", ".join(f"{f.host_addr}:{f.host_port}->{f.guest_port}" for f in nic.hostfwd)
            log.info("%s: user mode, guest %s (%s), gateway %s%s at %#x", name, nic.guest_ip, nic.guest_mac,
                     nic.host_ip, f", hostfwd {fwd}" if fwd else "", base)
        return nodes

    def start_networks(self) -> None:
        """Open each NIC's user-mode network: its gateway, and the listening sockets of its
        port forwards."""
        for device, nic in self.nics:
            try:
                net = UserNet(
                    device.receive,
                    guest_ip=ip_bytes(nic.guest_ip),
                    gateway_ip=ip_bytes(nic.host_ip),
                    guest_mac=device.mac,
                    forwards=[Forward(f.host_addr, f.host_port, f.guest_port) for f in nic.hostfwd],
                )
            except UserNetError as exc:
                self.stop_networks()
                raise VmmError(str(exc)) from None
            device.backend.sink = net.input
            self.usernets.append(net)

    def stop_networks(self) -> None:
        for net in self.usernets:
            net.close()
        self.usernets.clear()

    def poll_networks(self, timeout: float = 0.0) -> None:
        """Let host sockets make progress and hand waiting frames to the guest's RX buffers."""
        self._net_polled = time.monotonic()
        for net in self.usernets:
            net.poll(timeout)
        for device, _ in self.nics:
            device.deliver()

    def _write_log(self, data: bytes) -> None:
        self.log_output.write(data)
        self.log_output.flush()

    # --- tracing --------------------------------------------------------------------------
    def _tracing(self, kind: str) -> bool:
        return self.trace is not None and kind in self.cfg.trace

    def _trace_mmio(self, is_write: bool, addr: int, size: int, value: int, handled: bool) -> None:
        if self.trace is not None:
            op = "write" if is_write else "read "
            self.trace(f"MMIO {op} {addr:#x}/{size} = {value:#x}{'' if handled else ' (unclaimed)'}")

    def _monitor_trace(self, line: str) -> None:
        if self.trace is None:
            return
        if (line.startswith("RMI_") and "rmi" in self.cfg.trace) or (line.startswith("RSI_") and "rsi" in self.cfg.trace):
            self.trace(line)

    # --- devices --------------------------------------------------------------------------
    def mmio(self, ipa: int, is_write: bool, size: int, value: int) -> int | None:
        self.idle = 0
        if not is_write:
            self.console.poll_input()
        if self.usernets and time.monotonic() - self._net_polled >= NET_POLL_INTERVAL:
            self.poll_networks()
        hostile = self.hostile
        if hostile:
            hostile.at_exit()
            region = self.bus.find(ipa, size)
            if hostile.faults(region.name if region is not None else None):
                return None
        access = self.bus.write(ipa, size, value) if is_write else self.bus.read(ipa, size)
        if not access.handled:
            return None
        if is_write:
            return 0
        if hostile:
            region = self.bus.find(ipa, size)
            return hostile.mmio_read(region.name if region is not None else "", access.value, size)
        return access.value

    def wait(self) -> None:
        """The guest is idle (WFI): give it input if any, and notice a guest that stopped.
        With a network, the WFI waits a little for host sockets (a server waits for clients
        as long as it likes: no idle limit then)."""
        self.console.poll_input()
        if self.usernets:
            self.poll_networks(NET_IDLE_WAIT)
            return
        self.idle += 1
        if self.idle > IDLE_LIMIT:
            raise VmmError("the guest stopped: idle with no device activity")

    def psci_trace(self, text: str) -> None:
        if self._tracing("psci") and self.trace is not None:
            self.trace(text)

    # --- launching ------------------------------------------------------------------------
    def run(self) -> RunResult:
        with self.signals:
            self.start_networks()
            try:
                return self._run()
            except VmmStopped as stop:
                self._write_log(f"unirealm: stopped by {stop}\n".encode())
                return RunResult(128 + stop.signum, self.exits)
            finally:
                self.stop_networks()

    def _run(self) -> RunResult:
        rme = self.cfg.realm or self.cfg.platform == "rme"
        try:
            machine = Machine(dram_size=self.cfg.ram_size + (128 << 20), rme=rme)
        except (OSError, MemoryError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise VmmError(f"cannot allocate {self.cfg.ram_size >> 20} MiB of guest RAM: {reason}") from None
        lay = self.layout  # logged once the machine's memory exists
        log.info(
            "kernel %#x-%#x, dtb %#x, initrd %s, RAM %#x+%#x, IPA width %d",
            lay.kernel_start, lay.kernel_end, lay.dtb_start,
            f"{lay.initrd_start:#x}+{lay.initrd_size:#x}" if self.initrd else "none",
            lay.ram_base, lay.ram_size, lay.ipa_bits,
        )
        if rme:
            from unirealm.rmm.core import Rmm, RmmConfig

            Rmm(machine.monitor, RmmConfig(token_format=self.cfg.token_format, realm_profile=self.cfg.realm_profile))
            machine.monitor.trace = self._monitor_trace if self.trace else None
        if inspect_image(self.kernel) is not None and os.environ.get(IN_PROCESS_ENV) != "1":
            # The Python kernel's process starts on another core while the VM is built.
            prestart(machine.memory, None if self.cfg.realm else lay.ram_size)
        try:
            if self.cfg.realm:
                return self.run_realm(machine)
            return self.run_vm(machine)
        except KernelProcessStopped as exc:  # the guest's own kernel process ended (its CPU stopped)
            raise VmmError(f"the guest's kernel process stopped: {exc}") from None
        finally:
            discard_spare(machine.memory)

    def realm_config(self) -> RealmConfig:
        return RealmConfig(ipa_bits=self.layout.ipa_bits, hash_algo=self.cfg.hash_algo, rpv=self.cfg.realm_pv)

    def realm_vm(self, machine: Machine) -> RealmVm:
        return RealmVm(machine, HostPages(machine), self.realm_config())

    def realm_plan(self) -> list[LaunchStep]:
        """kvmtool's realm launch order after REALM_CREATE: the kernel (measured), its BSS by
        RTT_INIT_RIPAS, the initrd, the DTB, then REC 0 (runnable, x0 = DTB) and the
        secondary RECs. `unirealm measure` predicts the RIM from this same plan."""
        lay = self.layout
        plan: list[LaunchStep] = [DataStep(lay.kernel_start, self.kernel)]
        file_end = lay.kernel_start + -(-len(self.kernel) // GRANULE_SIZE) * GRANULE_SIZE
        if lay.kernel_end > file_end:
            plan.append(RipasStep(file_end, lay.kernel_end))
        if self.initrd:
            plan.append(DataStep(lay.initrd_start, self.initrd))
        plan.append(DataStep(lay.dtb_start, self.dtb.ljust(FDT_MAX_SIZE, b"\0")))
        plan.append(RecStep(lay.kernel_start, (lay.dtb_start, 0, 0, 0, 0, 0, 0, 0), True))
        plan.extend(RecStep(0, (0,) * 8, False) for _ in range(1, self.cfg.nrcpus))
        return plan

    def build_realm(self, vm: RealmVm) -> list[RealmRec]:
        vm.create()
        recs = vm.execute(self.realm_plan())
        vm.activate()
        return recs

    def run_realm(self, machine: Machine) -> RunResult:
        vm = self.realm_vm(machine)
        vm.ram_ranges = [(self.layout.ram_base, self.layout.ram_end)]
        try:
            recs = self.build_realm(vm)
        except RmiCallError as exc:
            raise VmmError(f"realm creation failed: {exc}") from None
        # The host never learns the RIM from the RMM: `unirealm measure` predicts it, the token reports it.
        log.info("realm activated: %d RECs", len(recs))
        vm.on_mmio = self.mmio
        for device in self.virtio:  # devices see only the pages the host mapped unprotected
            device.memory = SharedView(vm.pages.mem, vm.shared, vm.unprotected_bit)
        vm.on_host_call = self.host_call
        if self.hostile and "uart-ram" in self.hostile:
            # The console's window becomes host memory: its alias no longer traps.
            pa = vm.map_shared(self.serials[0].base | vm.unprotected_bit)
            vm.pages.mem.write(pa, b"\xff" * GRANULE_SIZE)
        status = 0
        try:
            while True:
                ex = self._run_rec(vm, recs[0])
                fid = ex.gprs[0] & ~(1 << 30)
                if fid in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
                    self.psci_trace(f"PSCI {PsciFid(fid).name} status={ex.gprs[1] & 0xFF}")
                    status = ex.gprs[1] & 0xFF
                    break
                # This VMM runs REC 0 only: it refuses CPU_ON, and AFFINITY_INFO is answered
                # by the RMM from the REC's real state.
                target = next((r for r in recs if r.index == (ex.gprs[1] & 0xF)), None)
                status_arg = unsigned64(PsciReturn.DENIED) if fid == PsciFid.CPU_ON else PsciReturn.SUCCESS
                self.psci_trace(f"PSCI {PsciFid(fid).name} target {ex.gprs[1]:#x} -> PSCI_COMPLETE({status_arg:#x})")
                if target is None:
                    raise VmmError(f"the realm asked PSCI about an unknown CPU {ex.gprs[1]:#x}")
                vm.rmi.call(RmiFid.PSCI_COMPLETE, recs[0].pa, target.pa, status_arg)
        except RmiCallError as exc:  # e.g. an exit the host cannot serve: memory it destroyed
            raise VmmError(f"the realm cannot go on: {exc}") from None
        finally:
            vm.destroy()
        return RunResult(status, self.exits)

    def _run_rec(self, vm: RealmVm, rec: RealmRec) -> RecExitInfo:
        """REC_ENTER until a PSCI exit that ends or needs the VMM."""
        flags, gprs = 0, None
        while True:
            ex = vm.enter(rec, flags, gprs)
            self.exits += 1
            self.signals.check()
            flags, gprs = 0, None
            if ex.reason == RmiRecExitReason.SYNC:
                if esr_ec(ex.esr) == Ec.WFX:
                    self.wait()
                    continue
                flags, gprs = vm.handle_sync(ex)
            elif ex.reason == RmiRecExitReason.IRQ:
                self.wait()
            elif ex.reason == RmiRecExitReason.RIPAS_CHANGE:
                flags = self.ripas_change(vm, rec, ex)
            elif ex.reason == RmiRecExitReason.HOST_CALL:
                gprs = self.host_call(ex.imm, list(ex.gprs))
            elif ex.reason == RmiRecExitReason.PSCI:
                return ex

    def ripas_change(self, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> int:
        """The host's answer to a RIPAS change request; `--hostile ripas-refuse` does nothing
        (the realm sees no progress), `ripas-reject` changes one granule of a change to RAM
        and then REJECTs the rest."""
        if self.hostile and "ripas-refuse" in self.hostile:
            return 0
        if self.hostile and "ripas-reject" in self.hostile and ex.ripas_value == RmiRipas.RAM:
            vm.handle_ripas_change(rec, dataclasses.replace(ex, ripas_top=ex.ripas_base + GRANULE_SIZE))
            return RmiRecEnterFlags.RIPAS_RESPONSE
        return vm.handle_ripas_change(rec, ex)

    # --- a normal VM on a host-owned stage 2 ---------------------------------------------
    def run_vm(self, machine: Machine) -> RunResult:
        lay = self.layout
        pages = HostPages(machine)
        ram_pa = pages.alloc_contiguous(lay.ram_size // GRANULE_SIZE)
        ns = machine.ns_memory()
        ns.write(ram_pa + lay.kernel_start - lay.ram_base, self.kernel)
        if self.initrd:
            ns.write(ram_pa + lay.initrd_start - lay.ram_base, self.initrd)
        ns.write(ram_pa + lay.dtb_start - lay.ram_base, self.dtb)
        for device in self.virtio:  # the host's own mapping of the VM's RAM
            device.memory = RamView(ns, ram_pa, lay.ram_base, lay.ram_size)

        def translate(ipa: int, write: bool, fetch: bool) -> Mapping | None:
            if lay.ram_base <= ipa < lay.ram_end:
                return Mapping(ram_pa + ipa - lay.ram_base, World.NON_SECURE)
            return None

        cpu = Cpu(machine.memory, translate, ram_size=lay.ram_size)
        cpu.reset(lay.kernel_start, [lay.dtb_start])
        try:
            while True:
                trap = cpu.run()
                self.exits += 1
                self.signals.check()
                if isinstance(trap, SmcTrap | HvcTrap):
                    # The DT's PSCI conduit is HVC; KVM answers SMCCC calls over SMC alike
                    # (NOT_SUPPORTED for RSI, which only an RMM implements).
                    regs = trap.regs
                    if is_psci(regs[0]):
                        fid = regs[0] & ~(1 << 30)
                        if fid in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
                            self.psci_trace(f"PSCI {PsciFid(fid).name} status={regs[1] & 0xFF}")
                            return RunResult(regs[1] & 0xFF, self.exits)
                        cpu.set_gpr(0, self.vm_psci(regs))
                    else:
                        for i, value in enumerate(self.smccc.call(regs)):
                            cpu.set_gpr(i, value)
                elif isinstance(trap, DataAbortTrap):
                    if trap.syndrome is None:
                        cpu.inject_sea(trap.ipa)
                        continue
                    value = self.mmio(trap.ipa, trap.is_write, trap.size, trap.value)
                    if value is None:
                        cpu.inject_sea(trap.ipa)
                    elif trap.is_write:
                        cpu.skip_instruction()
                    else:
                        cpu.complete_mmio_read(trap.syndrome, value)
                elif isinstance(trap, WfxTrap):
                    self.wait()
                elif isinstance(trap, IrqTrap):
                    continue  # the host's interrupt, taken: nothing for the guest
                elif isinstance(trap, InstructionAbortTrap):
                    cpu.inject_sea(trap.ipa, is_fetch=True)
                elif isinstance(trap, UndefinedTrap | SysRegTrap):
                    cpu.inject_undef()  # an access EL2 traps that KVM does not emulate
                elif isinstance(trap, CpuErrorTrap):
                    raise VmmError(f"the guest CPU stopped at {trap.pc:#x}: {trap.message}")
        finally:
            cpu.close()

    def vm_psci(self, regs: list[int]) -> int:
        self.psci_trace(f"PSCI {regs[0] & ~(1 << 30):#x}")
        return self.psci.call(regs)

    def host_call(self, imm: int, gprs: list[int]) -> list[int]:
        """RSI_HOST_CALL: the realm's x0.. are an SMCCC call to this hypervisor (imm is
        not interpreted); the results replace the leading registers."""
        result = self.smccc.call(list(gprs))
        return result + list(gprs[len(result):])
