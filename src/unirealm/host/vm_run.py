"""The VMM's plain-VM run loop (`--platform kvm|rme` without `--realm`): the VM's RAM on
a host-owned stage 2, its vCPUs scheduled by `VmCpus`, and the host's side of each trap
(PSCI and SMCCC, MMIO, WFx, aborts). Each function takes the `Vmm` whose devices serve
the VM."""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.arch.smccc import PsciFid, is_psci
from unirealm.machine.board import Machine
from unirealm.machine.cpu import Cpu
from unirealm.machine.vcpu import (
    CpuErrorTrap,
    DataAbortTrap,
    HvcTrap,
    InstructionAbortTrap,
    IrqTrap,
    Mapping,
    SmcTrap,
    SysRegTrap,
    Trap,
    UndefinedTrap,
    WfxTrap,
)

from .devices.virtio_mmio import RamView
from .rmi_client import HostPages
from .vcpus import SLICE, VmCpus
from .vmm_result import NET_POLL_INTERVAL, RunResult, VmmError

if TYPE_CHECKING:
    from .vmm import Vmm

SIGNAL_CHECK = 0.25  # the longest idle sleep between two looks at SIGINT/SIGTERM


def run_vm(vmm: Vmm, machine: Machine) -> RunResult:
    lay = vmm.layout
    pages = HostPages(machine)
    ram_pa = pages.alloc_contiguous(lay.ram_size // GRANULE_SIZE)
    ns = machine.ns_memory()
    ns.write(ram_pa + lay.kernel_start - lay.ram_base, vmm.kernel)
    if vmm.initrd:
        ns.write(ram_pa + lay.initrd_start - lay.ram_base, vmm.initrd)
    ns.write(ram_pa + lay.dtb_start - lay.ram_base, vmm.dtb)
    for device in vmm.virtio:  # the host's own mapping of the VM's RAM
        device.memory = RamView(ns, ram_pa, lay.ram_base, lay.ram_size)

    def translate(ipa: int, write: bool, fetch: bool) -> Mapping | None:
        if lay.ram_base <= ipa < lay.ram_end:
            return Mapping(ram_pa + ipa - lay.ram_base, World.NON_SECURE)
        return None

    vcpus = VmCpus(machine.memory, translate, vmm.gic, vmm.timers, vmm.psci,
                   vmm._trace_inject if vmm._tracing("irq") else None, ram_size=lay.ram_size)
    if not vmm.hostile:  # its modes may answer a write with an abort, which a posted one cannot take
        vcpus.posted_mmio = lambda ipa, size, value: vmm.mmio(ipa, True, size, value) is not None
    vcpus.boot(lay.kernel_start, [lay.dtb_start])
    storm = vmm.irq_storm  # --hostile irq-storm
    if storm is not None:
        storm.start_vm(vmm.gic)
    try:
        while True:
            now = time.monotonic()
            vcpu = vcpus.next(now)
            if vcpu is None:
                idle_sleep(vmm, vcpus)
                continue
            cpu = vcpu.cpu
            assert cpu is not None
            # A time slice when another vCPU could run, or a network wants the host now
            # and then; at the latest, a waiting vCPU's timer deadline.
            until = now + SLICE if vmm.networks or vcpus.shared() else None
            wake = vcpus.earliest_deadline()
            if wake is not None:
                until = wake if until is None else min(until, wake)
            trap = cpu.run(until)
            vmm.exits += 1
            vmm.poll_transmit()
            if storm is not None:
                storm.vm_exit(vmm.gic, vcpu.index)
            vmm.signals.check()
            status = _vm_trap(vmm, vcpus, vcpu.index, cpu, trap)
            if status is not None:
                return RunResult(status, vmm.exits)
    finally:
        vcpus.close()


def _vm_trap(vmm: Vmm, vcpus: VmCpus, index: int, cpu: Cpu, trap: Trap) -> int | None:
    """Handle one exit of vCPU `index`; the VM's exit status when it ends."""
    if isinstance(trap, SmcTrap | HvcTrap):
        # The DT's PSCI conduit is HVC; KVM answers SMCCC calls over SMC alike
        # (NOT_SUPPORTED for RSI, which only an RMM implements).
        regs = trap.regs
        if is_psci(regs[0]):
            fid = regs[0] & ~(1 << 30)
            if fid in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
                vmm.psci_trace(f"PSCI {PsciFid(fid).name} status={regs[1] & 0xFF}")
                return regs[1] & 0xFF
            result = vmm.vm_psci(regs, index)
            if result is None:  # CPU_OFF
                vcpus.cpu_off(index)
                if not vcpus.any_on():
                    raise VmmError("every vCPU is off (PSCI CPU_OFF): nothing left to run")
                return None
            cpu.set_gpr(0, result)
            if fid == PsciFid.CPU_SUSPEND and not cpu.is_python_kernel:
                vcpus.wait(index, suspend=True)
        else:
            for i, out in enumerate(vmm.smccc.call(regs)):
                cpu.set_gpr(i, out)
    elif isinstance(trap, DataAbortTrap):
        if trap.syndrome is None:
            cpu.inject_sea(trap.ipa)
            return None
        value = vmm.mmio(trap.ipa, trap.is_write, trap.size, trap.value)
        if value is None:
            cpu.inject_sea(trap.ipa)
        elif trap.is_write:
            cpu.skip_instruction()
        else:
            cpu.complete_mmio_read(trap.syndrome, value)
    elif isinstance(trap, WfxTrap):
        if trap.is_wfe and not vcpus.shared():
            vmm.wait()  # a lone WFE: look at devices, go on
        elif not trap.is_wfe:
            vmm.idle = 0
            vcpus.wait(index)  # WFI: not scheduled until an interrupt is pending
        # A WFE with other vCPUs runnable yields to them.
    elif isinstance(trap, IrqTrap):
        # The host's interrupt (a slice's end, a timer deadline): nothing for the guest.
        if vmm.networks and time.monotonic() - vmm._net_polled >= NET_POLL_INTERVAL:
            vmm.poll_networks()
    elif isinstance(trap, InstructionAbortTrap):
        cpu.inject_sea(trap.ipa, is_fetch=True)
    elif isinstance(trap, UndefinedTrap | SysRegTrap):
        cpu.inject_undef()  # an access EL2 traps that KVM does not emulate
    elif isinstance(trap, CpuErrorTrap):
        raise VmmError(f"the guest CPU stopped at {trap.pc:#x}: {trap.message}")
    return None


def idle_sleep(vmm: Vmm, vcpus: VmCpus) -> None:
    """No vCPU can run: sleep until the earliest timer deadline of a waiting vCPU, a host
    socket of a user-mode network, console input, or a signal; then let devices work."""
    if not vcpus.any_on():
        raise VmmError("every vCPU is off (PSCI CPU_OFF): nothing left to run")
    # hvc0 hands the input it holds to receive buffers its driver reposted without a notify
    # (the device polls its available ring): an SPI that may wake a vCPU now.
    vmm.console.poll_input()
    if any(v.kicked for v in vcpus.waiting):
        return
    deadlines = [d for d in (vcpus.earliest_deadline(), *(n.next_deadline() for n in vmm.networks))
                 if d is not None]
    poller = select.poll()
    for net in vmm.networks:
        for fd, mask in net.watched().items():
            poller.register(fd, mask)
    console = vmm.console.input_fd()
    if console is not None:
        poller.register(console, select.POLLIN)
    if not deadlines and console is None and not vmm.networks:
        raise VmmError("the guest stopped: every vCPU waits for an interrupt and nothing can raise one")
    timeout = SIGNAL_CHECK
    if deadlines:
        timeout = min(timeout, max(0.0, min(deadlines) - time.monotonic()))
    ready = {fd for fd, _ in poller.poll(int(timeout * 1000 + 0.999))}
    vmm.signals.check()
    if vmm.networks:
        vmm.poll_networks()
    if console is not None and console in ready:
        vmm.console.poll_input()
        vcpus.wake_all()  # the UART has no interrupt line here: a waiting guest looks again
