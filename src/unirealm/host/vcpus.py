"""The vCPUs of a plain VM (and an RME normal VM): their interrupt lines over the VMM's GICv3
and generic timers, their PSCI power states, and the scheduler that shares the one host
thread between them.

Scheduling is round robin with time slices measured in host time: a vCPU runs until its
next trap or until its slice (`SLICE` seconds) ends, which `VCpu.run(until=...)` enforces
with `emu_start`'s timeout (an IrqTrap, as a host timer tick would stop a KVM vCPU). The
slice is given only when it can matter: another vCPU is runnable, or a user-mode network
needs the host thread now and then. A vCPU in WFI (or a CPU_SUSPEND standby) is not
scheduled until woken: an interrupt becomes pending at its CPU interface (masked by
PSTATE or not, as WFI wakes), which the GIC announces with `on_kick` (a device's SPI, an
SGI from another vCPU) or its timer's deadline brings. When no vCPU can run, the host
thread sleeps in `select` until the earliest timer deadline, a host socket of a user-mode
network, console input, or a signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from unirealm.arch.smccc import PsciAffinityState
from unirealm.machine.cpu import Cpu
from unirealm.machine.irq import PENDING_FIQ, PENDING_IRQ
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.timer import GenericTimer
from unirealm.machine.vcpu import Translate

from .devices.gicv3 import GicV3
from .memmap import vcpu_mpidr
from .smccc import VmPsci

SLICE = 0.010  # seconds a vCPU runs before the next runnable one gets the host thread


class GicLines:
    """vCPU `index`'s InterruptLines: its GICv3 CPU interface and its generic timers."""

    def __init__(self, gic: GicV3, timer: GenericTimer, index: int) -> None:
        self.gic = gic
        self.cpuif = gic.cpu(index)
        self.timer = timer
        self.index = index

    def pending(self) -> int:
        irq = self.cpuif.signalled()
        if irq is None:
            return 0
        return PENDING_IRQ if irq.group == 1 else PENDING_FIQ

    def next_deadline(self) -> float | None:
        return self.timer.monotonic_deadline()

    def read_sysreg(self, key: int) -> int | None:
        value = self.cpuif.read_sysreg(key)
        return value if value is not None else self.timer.read_sysreg(key)

    def write_sysreg(self, key: int, value: int) -> bool:
        return self.cpuif.write_sysreg(key, value) or self.timer.write_sysreg(key, value)

    def iar1_now(self) -> int | None:
        return self.cpuif.iar_now(1)  # a VM's accesses of these never trap

    def acknowledge_foreseen(self, intid: int) -> bool:
        return self.cpuif.acknowledge_foreseen(1, intid)


@dataclass(eq=False)
class VmCpu:
    index: int
    mpidr: int
    lines: GicLines
    cpu: Cpu | None = None  # made at boot (vCPU 0) or at its CPU_ON
    waiting: bool = False  # in WFI or a CPU_SUSPEND standby
    kicked: bool = False  # what it has pending may have changed since it was last looked at
    wake_at: float | None = None  # its timer's deadline when it began to wait
    suspend: bool = field(default=False)  # the wait is a CPU_SUSPEND: x0 = SUCCESS on wake-up


class VmCpus:
    """The vCPUs, their power states (`psci`) and the round-robin run queue."""

    def __init__(self, memory: PhysicalMemory, translate: Translate, gic: GicV3, timers: list[GenericTimer],
                 psci: VmPsci, on_interrupt: Callable[[int, int], None] | None = None,
                 ram_size: int | None = None) -> None:
        self.memory = memory
        self.ram_size = ram_size  # the VM's RAM: bounds a kernel process
        # The VMM's emulation of an MMIO write, which a kernel process may post (None: it traps).
        self.posted_mmio: Callable[[int, int, int], bool] | None = None
        self.translate = translate
        self.gic = gic
        self.psci = psci
        self.on_interrupt = on_interrupt
        self.vcpus = [VmCpu(i, vcpu_mpidr(i), GicLines(gic, timers[i], i)) for i in range(len(timers))]
        self._last = -1
        self.running: VmCpu | None = None
        self.waiting: set[VmCpu] = set()  # the vCPUs in WFI or a standby
        gic.on_kick = self.kick
        psci.on_cpu_on = self.cpu_on

    def _make(self, vcpu: VmCpu, pc: int, gprs: list[int]) -> Cpu:
        if vcpu.cpu is not None:
            vcpu.cpu.close()
        cpu = Cpu(self.memory, self.translate, ram_size=self.ram_size)
        cpu.interrupts = vcpu.lines
        cpu.posted_mmio = self.posted_mmio
        cpu.mpidr = vcpu.mpidr
        if self.on_interrupt is not None:
            notify = self.on_interrupt
            cpu.on_interrupt = lambda _kind, n=vcpu.index: notify(n, _kind)
        cpu.reset(pc, gprs)
        vcpu.cpu = cpu
        vcpu.waiting = vcpu.suspend = False
        self.waiting.discard(vcpu)
        return cpu

    def boot(self, pc: int, gprs: list[int]) -> Cpu:
        return self._make(self.vcpus[0], pc, gprs)

    def cpu_on(self, target: int, entry: int, context_id: int) -> None:
        """PSCI CPU_ON: the target starts at `entry` with x0 = context_id, in its reset state."""
        self._make(self.vcpus[target], entry, [context_id])

    def cpu_off(self, index: int) -> None:
        vcpu = self.vcpus[index]
        vcpu.waiting = vcpu.suspend = False
        self.waiting.discard(vcpu)

    def kick(self, index: int) -> None:
        """What vCPU `index` has pending may have changed: a waiting one looks again, and the
        running one (if another) gives the host thread back so that it can."""
        if 0 <= index < len(self.vcpus):
            vcpu = self.vcpus[index]
            vcpu.kicked = True
            running = self.running
            if vcpu.waiting and running is not None and running is not vcpu and running.cpu is not None:
                running.cpu.kick()

    def powered(self, vcpu: VmCpu) -> bool:
        return vcpu.cpu is not None and self.psci.states[vcpu.index] != PsciAffinityState.OFF

    def wait(self, index: int, suspend: bool = False) -> bool:
        """vCPU `index` executed WFI (or CPU_SUSPEND): True if it now waits, False if an
        interrupt is already pending and it goes on at once."""
        vcpu = self.vcpus[index]
        vcpu.kicked = False
        # The deadline first: once it passes it is gone, and pending() then shows its interrupt.
        wake_at = vcpu.lines.next_deadline()
        if vcpu.lines.pending():
            return False
        vcpu.waiting, vcpu.suspend, vcpu.wake_at = True, suspend, wake_at
        self.waiting.add(vcpu)
        return True

    def _wake_check(self, now: float) -> None:
        for vcpu in list(self.waiting):
            if vcpu.kicked or (vcpu.wake_at is not None and vcpu.wake_at <= now):
                vcpu.kicked = False
                wake_at = vcpu.lines.next_deadline()
                if vcpu.lines.pending():
                    self.wake(vcpu)
                else:
                    vcpu.wake_at = wake_at

    def wake(self, vcpu: VmCpu) -> None:
        vcpu.waiting = False
        self.waiting.discard(vcpu)
        if vcpu.suspend and vcpu.cpu is not None:
            vcpu.cpu.set_gpr(0, 0)  # CPU_SUSPEND returns SUCCESS
        vcpu.suspend = False

    def wake_all(self) -> None:
        """Something WFI may wake on without an interrupt (console input): let all look."""
        for vcpu in list(self.waiting):
            self.wake(vcpu)

    def shared(self) -> bool:
        """Whether more than one vCPU is runnable (then each runs in time slices)."""
        if len(self.vcpus) == 1:
            return False
        return sum(1 for v in self.vcpus if not v.waiting and self.powered(v)) > 1

    def any_on(self) -> bool:
        return any(self.powered(v) for v in self.vcpus)

    def next(self, now: float) -> VmCpu | None:
        """The next vCPU to run, round robin after the last one; None if all wait or are off."""
        if self.waiting:
            self._wake_check(now)
        n = len(self.vcpus)
        if n == 1:
            vcpu = self.vcpus[0]
            self.running = vcpu if not vcpu.waiting and self.powered(vcpu) else None
            return self.running
        for step in range(1, n + 1):
            vcpu = self.vcpus[(self._last + step) % n]
            if self.powered(vcpu) and not vcpu.waiting:
                self._last = vcpu.index
                if self.psci.states[vcpu.index] == PsciAffinityState.ON_PENDING:
                    self.psci.started(vcpu.index)
                self.running = vcpu
                return vcpu
        self.running = None
        return None

    def earliest_deadline(self) -> float | None:
        if not self.waiting:
            return None
        return min((v.wake_at for v in self.waiting if v.wake_at is not None), default=None)

    def close(self) -> None:
        for vcpu in self.vcpus:
            if vcpu.cpu is not None:
                vcpu.cpu.close()
                vcpu.cpu = None
