"""The kvmtool-equivalent VMM behind `unirealm run`.

It lays out guest memory as kvmtool does (memmap.GuestLayout), builds the device tree
(fdt), wires the devices on an MMIO bus, and launches the guest in one of three ways:

- `--platform kvm`: a machine without RME; the host's KVM layer owns stage 2.
- `--platform rme`: the RME machine with its RMM booted; the VM still runs in the normal
  world on a host-owned stage 2, and its SMCs never reach the RMM.
- `--realm`: a realm built through RMI in kvmtool-cca's order (REALM_CREATE; RTT_INIT_RIPAS
  over all of RAM; kernel, initrd and DTB DATA_CREATE measured, in address order; REC 0;
  ACTIVATE), run over REC_ENTER.

The guest's PSCI SYSTEM_OFF/RESET ends the run; x1 of that call carries the guest's exit
status (a unirealm convention; PSCI ignores x1), which becomes the VMM's exit status.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import (
    RmiRealmFlags,
    feat_reg0_get,
)
from unirealm.machine.board import Machine
from unirealm.machine.cpu import IN_PROCESS_ENV
from unirealm.machine.irq import PENDING_IRQ
from unirealm.machine.kernel_process import KernelProcessStopped, discard_spare, prestart
from unirealm.machine.kernel_spawn import start_early
from unirealm.machine.timer import GenericTimer

from .cmdline import NetParams, RunConfig
from .console import Console
from .devices.gicv3 import GicV3, nr_spis_for_lines
from .devices.mmio import MmioBus
from .devices.ns16550 import Ns16550
from .devices.pci import EmptyPciBus
from .devices.rtc import RTC_MMIO_SIZE, Mc146818
from .devices.virtio_mmio import VirtioMmioDevice
from .fdt import FdtError, KvmtoolFdt, VirtioMmioNode, dump_dtb, kvmtool_bootargs, kvmtool_serial_ports
from .hostile import LONG_TAG, NET_ATTACKS, Hostile, HostileNet, RipasReplay, check_attacks, readdir_forever
from .image import ImageFormatError, inspect_image
from .kvm import (
    DataStep,
    HostPages,
    LaunchStep,
    RealmConfig,
    RealmRec,
    RealmVm,
    RecStep,
    RipasStep,
)
from .memmap import (
    ARM_PCI_CFG_SIZE,
    ARM_RTC_MMIO_BASE,
    FDT_MAX_SIZE,
    KVM_PCI_CFG_AREA,
    VIRTIO_MMIO_IO_SIZE,
    GuestLayout,
    IrqLines,
    MemoryLayoutError,
    VirtioMmioSpace,
    vcpu_mpidr,
)
from .realm_run import run_realm
from .signals import SignalWatch, VmmStopped
from .smccc import SmcccServices, VmPsci
from .vm_run import run_vm
from .vmm_result import NET_POLL_INTERVAL, RunResult, VmmError

if TYPE_CHECKING:
    # Optional devices: imported where a run asks for them (9p, virtio-net and its networks,
    # virtio-console, the interrupt storm), not at every launch.
    from .devices.virtio_net import VirtioNetDevice
    from .hostile_irq import IrqStorm
    from .net.tap import TapNet
    from .net.usernet import UserNet

log = logging.getLogger("unirealm.vmm")
IDLE_LIMIT = 2000  # WFx exits in a row with no device activity: the guest has stopped
NET_IDLE_WAIT = 0.001  # seconds a WFI may wait on the user network's host sockets


def _watched(watch: Callable[[bytes], None], sink: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """A frame sink that shows each frame to `watch` first."""

    def both(frame: bytes) -> None:
        watch(frame)
        sink(frame)

    return both


def platform_features() -> int:
    """FeatReg0 of the RMM this machine boots (RMI_FEATURES index 0)."""
    from unirealm.rmm.state import RmmState

    return RmmState.feat_reg0


def check_features(cfg: RunConfig, feat: int) -> None:
    """SVE and a PMU reach RmiRealmParams only when the RMM offers them (FeatReg0 SVE_EN,
    SVE_VL, PMU_EN, PMU_NUM_CTRS; REALM_CREATE refuses anything else); a plain VM's vCPU
    model has no PMUv3."""
    pmu = cfg.pmu or cfg.pmu_counters is not None
    if not cfg.realm:
        if pmu:
            raise VmmError("--pmu: the vCPU model has no PMUv3; run without it")
        return
    sve = cfg.sve_flag
    if cfg.sve_vl is not None and cfg.sve_vq is not None:
        if not feat_reg0_get(feat, "SVE_EN"):
            raise VmmError(f"{sve}: this RMM offers realms no SVE "
                           "(RMI_FEATURES FeatReg0.SVE_EN = 0); run without it")
        if cfg.sve_vq > feat_reg0_get(feat, "SVE_VL"):
            raise VmmError(f"{sve} {cfg.sve_vl}: this RMM offers at most "
                           f"{(feat_reg0_get(feat, 'SVE_VL') + 1) * 128} bits")
    if pmu:
        flag = "--pmu" if cfg.pmu else "--pmu-counters"
        if not feat_reg0_get(feat, "PMU_EN"):
            raise VmmError(f"{flag}: this RMM offers realms no PMU (RMI_FEATURES FeatReg0.PMU_EN = 0); run without it")
        if cfg.pmu_counters is not None and cfg.pmu_counters > feat_reg0_get(feat, "PMU_NUM_CTRS"):
            raise VmmError(f"--pmu-counters {cfg.pmu_counters}: this RMM offers at most "
                           f"{feat_reg0_get(feat, 'PMU_NUM_CTRS')} counters")


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
        if cfg.disks:
            raise VmmError("virtio block devices (-d) are not available in this release")
        self.features = platform_features() if cfg.realm else 0
        check_features(cfg, self.features)
        # kvmtool adds a user-mode NIC when no -n names one (virtio/net.c); on the pci
        # transport it would be a PCI function, which this VMM does not model.
        self.nic_params = cfg.nics
        if not cfg.networks and cfg.virtio_transport_option is not None:
            self.nic_params = (NetParams(mode="user"),)
        for nic in self.nic_params:
            if nic.vhost:
                raise VmmError("-n vhost=1: vhost-net needs KVM's ioeventfds, which this VMM does not have; use vhost=0")
            if nic.mq > 1:
                raise VmmError(f"-n mq={nic.mq}: the virtio-net device has one queue pair (mq=1)")
            if nic.mode == "user" and nic.fd is not None:
                raise VmmError("-n fd= names a tap file descriptor: it needs mode=tap")
            if nic.trans is not None and nic.trans != "mmio":
                raise VmmError(f"-n trans={nic.trans}: only the modern virtio-mmio transport is available (trans=mmio)")
        if cfg.console == "virtio" and cfg.virtio_transport != "mmio":
            raise VmmError("--console virtio needs the modern virtio-mmio transport (--virtio-transport mmio)")
        if self.nic_params and cfg.virtio_transport != "mmio":
            if not cfg.networks:
                raise VmmError(f"--virtio-transport {cfg.virtio_transport}: kvmtool adds its default NIC there and only "
                               "the modern virtio-mmio transport is modelled; use mmio, or add -n mode=none")
            raise VmmError("-n needs the modern virtio-mmio transport (--virtio-transport mmio)")
        if cfg.shares_9p and cfg.virtio_transport != "mmio":
            raise VmmError("--9p needs the modern virtio-mmio transport (--virtio-transport mmio)")
        self.console = Console(stdout or sys.stdout.buffer, stdin, virtio=cfg.console == "virtio",
                               access_platform=cfg.realm)
        self.hostile = Hostile(cfg.hostile) if cfg.hostile else None
        self.ripas_replay = RipasReplay()
        if problem := check_attacks(cfg.hostile, cfg.realm, len(cfg.shares_9p), len(self.nic_params),
                                    int(cfg.console == "virtio")):
            raise VmmError(problem)
        if self.hostile:
            log.warning("hostile VMM (a test mode): %s", ", ".join(sorted(cfg.hostile)))
        self.kernel = read_file(cfg.kernel, "kernel", cfg.ram_size) or b""
        self.initrd = read_file(cfg.initrd, "initrd", cfg.ram_size)
        if not self.kernel:
            raise VmmError(f"kernel {cfg.kernel!r} is empty")
        try:
            python_kernel = inspect_image(self.kernel) is not None
        except ImageFormatError as exc:
            raise VmmError(f"kernel {cfg.kernel!r}: {exc}") from None
        if python_kernel:  # its kernel process's interpreter starts now, on another core
            start_early()
        try:
            self.layout = GuestLayout.for_images(cfg.ram_addr, cfg.ram_size, self.kernel, self.initrd, cfg.realm)
        except MemoryLayoutError as exc:
            raise VmmError(str(exc)) from None
        self.bus = MmioBus(trace=self._trace_mmio if self._tracing("mmio") else None)
        irqs = IrqLines()
        self.serials = kvmtool_serial_ports(irqs, 4)
        self.uarts: list[Ns16550] = []
        for i, port in enumerate(self.serials):
            # ttyS0 is the guest's console (stdin/stdout); ttyS1 carries its kernel log to stderr.
            if i == 0:
                device = self.console.uart
            elif i == 1:
                device = Ns16550(output=self._write_log, name="ttyS1")
            else:
                device = Ns16550(name=f"ttyS{i}")
            self.uarts.append(device)
            self.bus.register(port.base, 0x1000, device, f"ttyS{i}")
        self.bootargs = kvmtool_bootargs(cfg.params or "", cfg.console_option, cfg.nodefaults)
        self.bus.register(ARM_RTC_MMIO_BASE, RTC_MMIO_SIZE, Mc146818(), "rtc")
        self.bus.register(KVM_PCI_CFG_AREA, ARM_PCI_CFG_SIZE, EmptyPciBus(), "pci")
        self.virtio: list[VirtioMmioDevice] = []
        self.nics: list[tuple[VirtioNetDevice, NetParams]] = []
        self.networks: list[UserNet | TapNet] = []
        self.net_attacks: list[HostileNet] = []
        self._net_polled = 0.0
        space = VirtioMmioSpace()
        virtio_nodes = (self._add_9p_devices(irqs, space) + self._add_net_devices(irqs, space)
                        + self._add_console_device(irqs, space))
        self.virtio_nodes = virtio_nodes  # windows and INTIDs, as the DT gives them
        # KVM's vGIC behind kvmtool's GIC windows, sized as kvmtool sizes it, and each vCPU's
        # generic timers; a virtio device pulses its SPI when it updates a used ring.
        self.gic = GicV3(cfg.nrcpus, nr_spis_for_lines(irqs.allocated))
        self.gic.attach(self.bus)
        if self._tracing("irq"):
            self.gic.trace = self._trace_irq
        self.timers = [GenericTimer(self.gic, cpu) for cpu in range(cfg.nrcpus)]
        for virtio, node in zip(self.virtio, virtio_nodes, strict=True):
            virtio.on_interrupt = lambda intid=node.irq: self.gic.pulse_spi(intid)
        self.irq_storm: IrqStorm | None = None
        if self.hostile and "irq-storm" in self.hostile:
            from .hostile_irq import IrqStorm

            owned = {node.irq for node in virtio_nodes} | {port.irq for port in self.serials}
            last = self.gic.nr_irqs - 1  # an SPI no device owns, its line stuck high
            self.irq_storm = IrqStorm(self.hostile.rng, [node.irq for node in virtio_nodes],
                                      last if last not in owned else None)
        rtc_base = ARM_RTC_MMIO_BASE
        if self.hostile and "dtb-device-in-ram" in self.hostile:
            rtc_base = self.layout.ram_base + (self.layout.ram_size // 2 & ~0xFFFFF)
        lay = self.layout
        # kvmtool-cca's device tree for these devices, as `unirealm measure ... kvmtool` models it.
        self.fdt = KvmtoolFdt(cfg.nrcpus, lay.ram_base, lay.ram_size, self.bootargs, realm=cfg.realm, its=False,
                              pmu=cfg.pmu, virtio_mmio=virtio_nodes,
                              initrd=(lay.initrd_start, lay.initrd_end) if lay.has_initrd else None,
                              kaslr_seed=cfg.kaslr_seed, rtc_base=rtc_base, serial_ports=len(self.serials))
        try:
            self.dtb = self.fdt.dtb()
        except FdtError as exc:
            raise VmmError(str(exc)) from None
        if cfg.dump_dtb:
            try:
                dump_dtb(cfg.dump_dtb, self.dtb)
            except OSError as exc:
                raise VmmError(f"--dump-dtb {cfg.dump_dtb}: {exc.strerror or exc}") from None
        self.idle = 0
        self.exits = 0
        self.signals = SignalWatch()
        self.smccc = SmcccServices()
        self.psci = VmPsci(self.smccc, cfg.nrcpus, [vcpu_mpidr(i) for i in range(cfg.nrcpus)])

    def _add_9p_devices(self, irqs: IrqLines, space: VirtioMmioSpace) -> list[VirtioMmioNode]:
        """One virtio-9p device per `--9p DIR[,TAG]`, windows and SPIs in registration order
        (kvmtool). ACCESS_PLATFORM is forced for a realm. No interrupt is ever injected
        (the GIC is not wired to the vCPUs yet): requests complete inside the QueueNotify exit and the
        guest polls the used ring."""
        from .devices.virtio_9p import P9Server, Virtio9p

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

                def lying(queue: int, request: bytes, capacity: int, honest: Callable[[int, bytes, int], bytes] = honest
                          ) -> bytes:
                    return readdir_forever(request) or honest(queue, request, capacity)

                backend.handle = lying  # type: ignore[method-assign]  # this one device's answers
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
        from unirealm.arch.net import mac_bytes

        from .devices.virtio_net import VirtioNet, VirtioNetDevice

        nodes = []
        for i, nic in enumerate(self.nic_params):
            base = space.alloc()
            name = f"virtio-net:{i}"
            device = VirtioNetDevice(VirtioNet(mac_bytes(nic.guest_mac)), access_platform=self.cfg.realm, name=name)
            device.hostile = self.hostile
            self.bus.register(base, VIRTIO_MMIO_IO_SIZE, device, name)
            self.virtio.append(device)
            self.nics.append((device, nic))
            nodes.append(VirtioMmioNode(base, irqs.alloc()))
            if nic.mode == "tap":
                log.info("%s: tap %s, guest %s at %#x", name, nic.tapif or "(new)", nic.guest_mac, base)
                continue
            fwd = ", ".join(f"{f.host_addr}:{f.host_port}->{f.guest_port}" for f in nic.hostfwd)
            log.info("%s: user mode, guest %s (%s), gateway %s%s at %#x", name, nic.guest_ip, nic.guest_mac,
                     nic.host_ip, f", hostfwd {fwd}" if fwd else "", base)
        return nodes

    def _add_console_device(self, irqs: IrqLines, space: VirtioMmioSpace) -> list[VirtioMmioNode]:
        """`--console virtio`: the virtio-console (hvc0) after the other virtio devices, as
        kvmtool's init order places it."""
        device = self.console.hvc
        if device is None:
            return []
        base = space.alloc()
        device.hostile = self.hostile
        self.bus.register(base, VIRTIO_MMIO_IO_SIZE, device, device.name)
        self.virtio.append(device)
        log.info("%s: hvc0 at %#x", device.name, base)
        return [VirtioMmioNode(base, irqs.alloc())]

    def start_networks(self) -> None:
        """Open each NIC's network: a user-mode network (libslirp, with the listening sockets
        of its port forwards) or the host's tap device."""
        if not self.nics:
            return
        from unirealm.arch.net import ip_bytes

        from .net.tap import TapError, TapNet
        from .net.usernet import Forward, UserNet, UserNetError

        for device, nic in self.nics:
            net: UserNet | TapNet
            attack = None
            to_guest: Callable[[bytes], None] = device.receive
            if self.hostile and any(name in self.hostile for name in NET_ATTACKS):
                attack = HostileNet(self.hostile, device.receive)
                self.net_attacks.append(attack)
                to_guest = attack.to_guest
            try:
                if nic.mode == "tap":
                    net = TapNet(to_guest, tapif=nic.tapif, host_ip=ip_bytes(nic.host_ip), script=nic.script,
                                 downscript=nic.downscript, fd=nic.fd)
                else:
                    net = UserNet(
                        to_guest,
                        guest_ip=ip_bytes(nic.guest_ip),
                        gateway_ip=ip_bytes(nic.host_ip),
                        forwards=[Forward(f.host_addr, f.host_port, f.guest_port) for f in nic.hostfwd],
                    )
            except (UserNetError, TapError) as exc:
                self.stop_networks()
                raise VmmError(str(exc)) from None
            device.backend.sink = net.input
            if attack is not None:
                device.backend.sink = _watched(attack.from_guest, net.input)
            self.networks.append(net)

    def stop_networks(self) -> None:
        for net in self.networks:
            net.close()
        self.networks.clear()
        if self.net_attacks:
            forged = sum(attack.forged for attack in self.net_attacks)
            log.warning("hostile: %d frames forged into the guest's network", forged)
            self.net_attacks.clear()

    def poll_networks(self, timeout: float = 0.0) -> None:
        """Let host sockets and taps make progress and hand waiting frames to the guest's RX
        buffers (only the first network waits up to `timeout`)."""
        self._net_polled = time.monotonic()
        for net in self.networks:
            net.poll(timeout)
            timeout = 0.0
        for device, _ in self.nics:
            device.deliver()

    def poll_transmit(self) -> None:
        """At every exit: each NIC takes the TX chains its driver posted without a notify
        (VIRTIO_F_EVENT_IDX lets the device ask for a notification only once half the ring
        waits)."""
        for device, _ in self.nics:
            device.poll_transmit()

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
        """Emulate one MMIO access; None when no device claims it (or a --hostile mode
        answers with an abort). Host sockets make progress at a read before it (the read
        then shows what arrived) and at a write after it: a write may be posted
        (KernelProcess.posted_mmio), the PE already past it and reading the rings, so a
        frame delivered before an InterruptACK took effect would be acknowledged unseen."""
        self.idle = 0
        polling = bool(self.networks) and time.monotonic() - self._net_polled >= NET_POLL_INTERVAL
        if not is_write:
            self.console.poll_input()
            if polling:
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
            if polling:
                self.poll_networks()
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
        if self.networks:
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
                for uart in self.uarts:  # bytes still in a transmit FIFO
                    uart.flush()
                self.stop_networks()
                if self.irq_storm is not None:
                    self.irq_storm.report()

    def _run(self) -> RunResult:
        rme = self.cfg.realm or self.cfg.platform == "rme"
        host_ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if self.cfg.ram_size > host_ram:
            # Guest RAM is a sparse memory file: it would be granted now and fail as the
            # guest touches it, so a VM larger than the host is refused up front.
            raise VmmError(f"cannot allocate {self.cfg.ram_size >> 20} MiB of guest RAM: "
                           f"more than this host's {host_ram >> 20} MiB")
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
                return run_realm(self, machine)
            return run_vm(self, machine)
        except KernelProcessStopped as exc:  # the guest's own kernel process ended (its CPU stopped)
            raise VmmError(f"the guest's kernel process stopped: {exc}") from None
        finally:
            discard_spare(machine.memory)

    def realm_config(self) -> RealmConfig:
        """RmiRealmParams as kvmtool-cca and KVM fill them: the host's breakpoints and
        watchpoints (FeatReg0), SVE and the PMU only when asked for."""
        cfg, feat = self.cfg, self.features
        pmu = cfg.pmu or cfg.pmu_counters is not None
        flags = (RmiRealmFlags.SVE if cfg.sve_vl is not None else 0) | (RmiRealmFlags.PMU if pmu else 0)
        ctrs = feat_reg0_get(feat, "PMU_NUM_CTRS") if cfg.pmu_counters is None else cfg.pmu_counters
        return RealmConfig(ipa_bits=self.layout.ipa_bits, hash_algo=cfg.hash_algo, rpv=cfg.realm_pv,
                           num_bps=feat_reg0_get(feat, "NUM_BPS") + 1, num_wps=feat_reg0_get(feat, "NUM_WPS") + 1,
                           flags=int(flags), sve_vl=cfg.sve_vq or 0, pmu_num_ctrs=ctrs if pmu else 0)

    def realm_vm(self, machine: Machine) -> RealmVm:
        return RealmVm(machine, HostPages(machine), self.realm_config())

    def realm_plan(self) -> list[LaunchStep]:
        """kvmtool-cca's realm launch after REALM_CREATE: RIPAS RAM over all of RAM
        (RTT_INIT_RIPAS), then the images in ascending address order (the kernel file, the
        initrd from the granule it starts in, the 64 KiB DTB), then REC 0 (runnable, pc the
        kernel, x0 the DTB) and the secondary RECs. `unirealm measure` predicts the RIM from
        this same plan, and `unirealm measure -c unirealm ... kvmtool ARGS` from its model
        of kvmtool."""
        lay = self.layout
        images = {lay.kernel_start: self.kernel, lay.dtb_start: self.dtb.ljust(FDT_MAX_SIZE, b"\0")}
        if self.initrd:
            base = lay.initrd_start & ~(GRANULE_SIZE - 1)
            images[base] = bytes(lay.initrd_start - base) + self.initrd
        plan: list[LaunchStep] = [RipasStep(lay.ram_base, lay.ram_end)]
        plan.extend(DataStep(ipa, images[ipa]) for ipa in sorted(images))
        plan.append(RecStep(lay.kernel_start, (lay.dtb_start, 0, 0, 0, 0, 0, 0, 0), True))
        plan.extend(RecStep(0, (0,) * 8, False) for _ in range(1, self.cfg.nrcpus))
        return plan

    def build_realm(self, vm: RealmVm) -> list[RealmRec]:
        vm.create()
        recs = vm.execute(self.realm_plan())
        vm.activate()
        return recs

    def vm_psci(self, regs: list[int], caller: int = 0) -> int | None:
        self.psci_trace(f"PSCI {regs[0] & ~(1 << 30):#x} vcpu={caller}")
        return self.psci.call(regs, caller)

    def _trace_inject(self, vcpu: int, kind: int) -> None:
        if self.trace is not None:
            line = "IRQ" if kind == PENDING_IRQ else "FIQ"
            self.trace(f"IRQ inject intid={self.gic.highest_pending(vcpu)} vcpu={vcpu} ({line})")

    def _trace_irq(self, event: str, vcpu: int, intid: int) -> None:
        if self.trace is not None:
            self.trace(f"IRQ {event} intid={intid} vcpu={vcpu}")

    def host_call(self, imm: int, gprs: list[int]) -> list[int]:
        """RSI_HOST_CALL: the realm's x0.. are an SMCCC call to this hypervisor (imm is
        not interpreted); the results replace the leading registers."""
        result = self.smccc.call(list(gprs))
        return result + list(gprs[len(result):])
