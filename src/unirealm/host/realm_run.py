"""The VMM's realm run loop (`unirealm run --realm`): the RECs of a realm built through RMI,
scheduled round robin over REC_ENTER, with the host's side of their exits (PSCI, GIC
SGIs, RIPAS changes, host calls). Each function takes the `Vmm` whose devices serve the
realm."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unirealm.arch.esr import Ec, SysRegAccess, esr_ec, esr_iss
from unirealm.arch.gic import IccSysreg
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiRecExitReason, RmiRipas
from unirealm.arch.smccc import PsciFid, PsciReturn
from unirealm.arch.sysreg import SysReg
from unirealm.machine.board import Machine
from unirealm.machine.interrupt import HOST_IRQ

from .devices.virtio_mmio import SharedView
from .kvm import RealmRec, RealmVm, RecExitInfo
from .memmap import vcpu_mpidr
from .realm_vgic import RealmVgic
from .rmi_client import RmiCallError
from .vcpus import SLICE
from .vmm_result import NET_POLL_INTERVAL, RunResult, VmmError

if TYPE_CHECKING:
    from .vmm import Vmm

log = logging.getLogger("unirealm.vmm")
REALM_TIME_SLICE = 0.005  # seconds a REC runs while another could (the host's EL2 timer)
# A lone REC's slice only lets a user-mode network have the host thread: as long as a plain
# VM's (host/vcpus.py SLICE), so that a realm does not exit twice as often for it.
REALM_NET_SLICE = SLICE
REALM_IDLE_POLL = 0.01  # seconds at most between input/network polls while every REC waits
TRAP_WFI = int(RmiRecEnterFlags.TRAP_WFI)  # a plain int: or-ed in at every REC_ENTER


@dataclass


class RealmVcpu:
    """One realm vCPU as the VMM schedules it: its REC, its vGIC view, whether it is on
    (REC 0 from the start, the others once CPU_ON succeeded) and whether it waits in WFI."""

    rec: RealmRec
    vgic: RealmVgic
    on: bool
    waiting: bool = False


def run_realm(vmm: Vmm, machine: Machine) -> RunResult:
    vm = vmm.realm_vm(machine)
    vm.ram_ranges = [(vmm.layout.ram_base, vmm.layout.ram_end)]
    try:
        recs = vmm.build_realm(vm)
    except RmiCallError as exc:
        raise VmmError(f"realm creation failed: {exc}") from None
    # The host never learns the RIM from the RMM: `unirealm measure` predicts it, the token reports it.
    log.info("realm activated: %d RECs", len(recs))
    vm.on_mmio = vmm.mmio
    for device in vmm.virtio:  # devices see only the pages the host mapped unprotected
        device.memory = SharedView(vm.pages.mem, vm.shared, vm.unprotected_bit)
    vm.on_host_call = vmm.host_call
    if vmm.hostile and "uart-ram" in vmm.hostile:
        # The console's window becomes host memory: its alias no longer traps.
        pa = vm.map_shared(vmm.serials[0].base | vm.unprotected_bit)
        vm.pages.mem.write(pa, b"\xff" * GRANULE_SIZE)
    vcpus = [RealmVcpu(rec, RealmVgic(vmm.gic, vmm.timers[rec.index], rec.index), on=rec.index == 0) for rec in recs]
    try:
        status = _schedule_realm(vmm, vm, vcpus)
    except RmiCallError as exc:  # e.g. an exit the host cannot serve: memory it destroyed
        raise VmmError(f"the realm cannot go on: {exc}") from None
    except MemoryError as exc:  # a fault the host has no granule left for
        raise VmmError(f"the realm cannot go on: {exc}") from None
    finally:
        HOST_IRQ.deadline = None
        vm.destroy()
    return RunResult(status, vmm.exits)


def _schedule_realm(vmm: Vmm, vm: RealmVm, vcpus: list[RealmVcpu]) -> int:
    """Run the realm's RECs round robin until one calls SYSTEM_OFF/RESET (its x1 is the
    status). A REC runs until its time slice ends (the host's EL2 timer, armed when the
    realm has more than one REC or a user-mode network: an IRQ exit), it waits in a trapped
    WFI with nothing pending, it sends an SGI, it is turned off, or a PSCI exit needs the
    host; then the next runnable REC in index order runs. When every REC that is on
    waits, the host sleeps until the earliest timer deadline or device event."""
    last = len(vcpus) - 1
    current: RealmVcpu | None = None
    slice_end = 0.0
    while True:
        now = time.monotonic()
        if current is not None and current.on and not current.waiting and now < slice_end:
            vcpu = current  # a PSCI call the host answered: the caller's slice goes on
        else:
            ready = [v for v in vcpus if v.on and (not v.waiting or v.vgic.has_pending())]
            if not ready:
                wait_realm(vmm, vcpus)
                for v in vcpus:  # the wait is over: each WFI completes (a spurious wake-up at worst)
                    v.waiting = False
                current = None
                continue
            vcpu = next((v for v in ready if v.rec.index > last), ready[0])
            last = vcpu.rec.index
            vcpu.waiting = False
            slice_end = now + (REALM_TIME_SLICE if len(vcpus) > 1 else REALM_NET_SLICE)
        # The host's EL2 timer bounds the slice when another REC could run, or a
        # user-mode network wants the host thread now and then.
        HOST_IRQ.deadline = slice_end if len(vcpus) > 1 or vmm.networks else None
        ex = _run_rec(vmm, vm, vcpu)
        HOST_IRQ.deadline = None
        current = None
        if ex is None:
            continue
        status = _realm_psci(vmm, vm, vcpus, vcpu, ex)
        if status is not None:
            return status
        current = vcpu
        if ex.gprs[0] & ~(1 << 30) == PsciFid.CPU_ON:
            # The caller of CPU_ON runs on first, in a slice of its own (as it would on
            # its own PE while the new CPU comes up).
            slice_end = time.monotonic() + REALM_TIME_SLICE


def _realm_psci(vmm: Vmm, vm: RealmVm, vcpus: list[RealmVcpu], vcpu: RealmVcpu, ex: RecExitInfo) -> int | None:
    """The host's side of a realm PSCI exit: the run's status for SYSTEM_OFF/RESET, else None.
    CPU_ON and AFFINITY_INFO are completed with PSCI_COMPLETE on the REC the realm named;
    the RMM answers the realm from the target REC's real state."""
    fid = ex.gprs[0] & ~(1 << 30)
    if fid in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
        vmm.psci_trace(f"PSCI {PsciFid(fid).name} status={ex.gprs[1] & 0xFF}")
        return ex.gprs[1] & 0xFF
    if fid == PsciFid.CPU_OFF:
        vmm.psci_trace(f"PSCI CPU_OFF cpu {vcpu.rec.index}")
        vcpu.on = False
        return None
    if fid == PsciFid.CPU_SUSPEND:
        vcpu.waiting = True  # a standby state: woken as from WFI
        return None
    if fid not in (PsciFid.CPU_ON, PsciFid.AFFINITY_INFO):
        return None
    target = next((v for v in vcpus if vcpu_mpidr(v.rec.index) == ex.gprs[1] & 0xFF_FFFF and ex.gprs[1] >> 24 == 0), None)
    if target is None:
        raise VmmError(f"the realm asked PSCI about an unknown CPU {ex.gprs[1]:#x}")
    vmm.psci_trace(f"PSCI {PsciFid(fid).name} target {ex.gprs[1]:#x} -> PSCI_COMPLETE(SUCCESS)")
    vm.rmi.call(RmiFid.PSCI_COMPLETE, vcpu.rec.pa, target.rec.pa, PsciReturn.SUCCESS)
    if fid == PsciFid.CPU_ON:
        target.on = True  # runnable now, or it already was
    return None


def wait_realm(vmm: Vmm, vcpus: list[RealmVcpu]) -> None:
    """Every REC that is on waits for an interrupt: sleep until the first of their timers
    is due (the host's timer models hold what the last exits reported), or until input or
    a network event; with no timer armed this is an idle WFI (`wait`)."""
    due = [d for v in vcpus if v.on and (d := vmm.timers[v.rec.index].seconds_until_deadline()) is not None]
    if not due:
        vmm.wait()
        return
    vmm.idle = 0
    vmm.console.poll_input()
    timeout = min(min(due), REALM_IDLE_POLL)
    if vmm.networks:
        vmm.poll_networks(timeout)
    elif timeout > 0:
        time.sleep(timeout)


def _run_rec(vmm: Vmm, vm: RealmVm, vcpu: RealmVcpu) -> RecExitInfo | None:
    """REC_ENTER until a PSCI exit (returned), or None when the REC's turn ends: its time
    slice is over, or it waits in WFI with nothing pending.
    Before each entry the vGIC fills the list registers; after each exit it reads them
    back with the REC's timer state."""
    rec = vcpu.rec
    flags, gprs = 0, None
    while True:
        hcr, lrs = vcpu.vgic.flush()
        honest, storm = len(lrs), vmm.irq_storm
        if storm is not None:  # --hostile irq-storm
            hcr, lrs = storm.realm_entry(vm, rec, flags | TRAP_WFI, gprs, hcr, lrs)
        ex = vm.enter(rec, flags | TRAP_WFI, gprs, gicv3_hcr=hcr, gicv3_lrs=lrs)
        if storm is not None:
            storm.realm_exit(rec, honest, ex.gicv3_lrs)
        vmm.exits += 1
        vmm.poll_transmit()
        vcpu.vgic.sync(ex.gicv3_lrs, ex.cntv_ctl, ex.cntv_cval, ex.cntp_ctl, ex.cntp_cval)
        vmm.signals.check()
        flags, gprs = 0, None
        if ex.reason == RmiRecExitReason.SYNC:
            ec = esr_ec(ex.esr)
            if ec == Ec.WFX:
                if vcpu.vgic.has_pending():
                    continue  # an interrupt for it is on its way: the WFI completes
                vcpu.waiting = True
                return None
            if ec == Ec.SYSREG:
                if realm_sysreg(vmm, vcpu, ex):
                    return None  # an SGI: the turn ends, so that a vCPU it woke runs soon
                continue
            flags, gprs = vm.handle_sync(ex)
        elif ex.reason == RmiRecExitReason.IRQ:
            vmm.console.poll_input()
            if vmm.networks and time.monotonic() - vmm._net_polled >= NET_POLL_INTERVAL:
                vmm.poll_networks()
            if HOST_IRQ.deadline is not None and time.monotonic() >= HOST_IRQ.deadline:
                return None  # the time slice is over
        elif ex.reason == RmiRecExitReason.RIPAS_CHANGE:
            flags = ripas_change(vmm, vm, rec, ex)
        elif ex.reason == RmiRecExitReason.HOST_CALL:
            gprs = vmm.host_call(ex.imm, list(ex.gprs))
        elif ex.reason == RmiRecExitReason.PSCI:
            return ex


def realm_sysreg(vmm: Vmm, vcpu: RealmVcpu, ex: RecExitInfo) -> bool:
    """A realm's write to a GIC register that traps to the host: an SGI (ICC_SGI1R_EL1 a
    Group 1 one, ICC_SGI0R/ASGI1R Group 0), sent through the host's vGIC from this vCPU.
    True if it was one."""
    access = SysRegAccess.from_iss(esr_iss(ex.esr))
    key = SysReg(*access.encoding).key
    if access.is_read or key not in (IccSysreg.SGI1R, IccSysreg.SGI0R, IccSysreg.ASGI1R):
        return False
    vmm.gic.cpu(vcpu.rec.index).generate_sgi(ex.gprs[0], allow_group1=key == IccSysreg.SGI1R)
    return True


def ripas_change(vmm: Vmm, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> int:
    """The host's answer to a RIPAS change request; `--hostile ripas-refuse` does nothing
    (the realm sees no progress), `ripas-reject` changes one granule of a change to RAM
    and then REJECTs the rest."""
    if vmm.hostile and "ripas-refuse" in vmm.hostile:
        return 0
    if vmm.hostile and "ripas-reject" in vmm.hostile and ex.ripas_value == RmiRipas.RAM:
        vm.handle_ripas_change(rec, dataclasses.replace(ex, ripas_top=ex.ripas_base + GRANULE_SIZE))
        return RmiRecEnterFlags.RIPAS_RESPONSE
    if vmm.hostile and "ripas-replay" in vmm.hostile:
        replay = vmm.ripas_replay
        replay.before(vm, rec, ex)
        vm.handle_ripas_change(rec, ex)
        replay.after(vm, rec, ex)
        return replay.response()
    return vm.handle_ripas_change(rec, ex)
