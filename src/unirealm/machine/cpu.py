"""A processing element that runs whatever is at its boot PC: machine code on Unicorn, or,
for a unirealm kernel image, the Python unikernel in that image (see pykernel)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.memory import GRANULE_MASK
from unirealm.arch.sysreg import SysReg

from .irq import InterruptLines
from .kernel_process import KernelProcess
from .kernel_spawn import IN_PROCESS_ENV
from .memory import GranuleProtectionFault, PhysicalMemory
from .pykernel import PyKernelEngine, image_at
from .vcpu import El2Context, Translate, Trap, VCpu

log = logging.getLogger("unirealm.machine.cpu")


class Cpu:
    """The ExecutionEngine a REC or a VM vCPU gets: it picks its mode at the first run."""

    def __init__(self, memory: PhysicalMemory, translate: Translate, cpu_model: str = "max",
                 context: El2Context | None = None, ram_size: int | None = None) -> None:
        self.memory = memory
        self.ram_size = ram_size  # bounds a kernel process (None: the machine's DRAM)
        self.translate = translate
        self.cpu_model = cpu_model
        self.context = context or El2Context()
        self._pc = 0
        self._gprs: list[int] = []
        self._impl: VCpu | PyKernelEngine | KernelProcess | None = None
        # The vCPU's interrupt inputs (the Python kernel's too: its SYSREG traps), and a
        # machine-code vCPU's MPIDR and entry notice.
        self.interrupts: InterruptLines | None = None
        self.mpidr: int | None = None
        self.on_interrupt: Callable[[int], None] | None = None
        # A kernel process may post MMIO writes to this (KernelProcess.posted_mmio; None: not).
        self.posted_mmio: Callable[[int, int, int], bool] | None = None

    def _read(self, ipa: int, size: int) -> bytes | None:
        mapping = self.translate(ipa & ~GRANULE_MASK, False, False)
        if mapping is None or (ipa & GRANULE_MASK) + size > GRANULE_MASK + 1:
            return None
        try:
            return self.memory.accessor(mapping.world).read(mapping.pa + (ipa & GRANULE_MASK), size)
        except GranuleProtectionFault:
            return None

    @property
    def impl(self) -> VCpu | PyKernelEngine | KernelProcess:
        if self._impl is None:
            if image_at(self._read, self._pc):
                log.debug("vCPU: unirealm kernel image at %#x", self._pc)
                if os.environ.get(IN_PROCESS_ENV) == "1":
                    log.warning("%s=1: the Python kernel runs in the VMM's own process, not isolated "
                                "(a benchmark baseline only)", IN_PROCESS_ENV)
                    engine: PyKernelEngine | KernelProcess = PyKernelEngine(
                        self.memory, self.translate, self._pc, self._gprs, self.cpu_model)
                else:
                    engine = KernelProcess(self.memory, self.translate, self._pc, self._gprs, self.cpu_model,
                                           self.ram_size)
                engine.interrupts = self.interrupts
                if isinstance(engine, KernelProcess):
                    engine.posted_mmio = self.posted_mmio
                self._impl = engine
            else:
                vcpu = VCpu(self.memory, self.translate, self.cpu_model, self.context)
                vcpu.reset(self._pc, self._gprs)
                vcpu.interrupts = self.interrupts
                vcpu.on_interrupt = self.on_interrupt
                if self.mpidr is not None:
                    vcpu.set_mpidr(self.mpidr)
                self._impl = vcpu
        return self._impl

    @property
    def is_python_kernel(self) -> bool:
        return isinstance(self._impl, PyKernelEngine | KernelProcess)

    # --- ExecutionEngine ------------------------------------------------------------------
    def run(self, until: float | None = None) -> Trap:
        """Run to the next trap; a machine-code vCPU stops with an IrqTrap by `until` at the
        latest (the Python kernel runs to its next trap: it stops its EL0 code for its own
        timer, and Unicorn cannot be stopped from another thread and resumed safely)."""
        impl = self.impl
        return impl.run(until) if isinstance(impl, VCpu) else impl.run()

    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None:
        if self._impl is None:
            self._pc, self._gprs = pc, list(gprs)
        else:
            self._impl.reset(pc, gprs)

    @property
    def pc(self) -> int:
        return self._pc if self._impl is None else self._impl.pc

    @pc.setter
    def pc(self, value: int) -> None:
        if self._impl is None:
            self._pc = value
        else:
            self._impl.pc = value

    def get_gpr(self, n: int) -> int:
        if self._impl is None:
            return self._gprs[n] if n < len(self._gprs) else 0
        return self._impl.get_gpr(n)

    def set_gpr(self, n: int, value: int) -> None:
        self.impl.set_gpr(n, value)

    def get_gprs(self, count: int = 31) -> list[int]:
        return self.impl.get_gprs(count)

    def kick(self) -> None:
        """End a machine-code vCPU's current run with an IrqTrap (see VCpu.kick)."""
        if isinstance(self._impl, VCpu):
            self._impl.kick()

    def skip_instruction(self) -> None:
        self.impl.skip_instruction()

    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None:
        self.impl.complete_mmio_read(syndrome, value)

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        self.impl.inject_sea(far, is_fetch)

    def inject_undef(self) -> None:
        self.impl.inject_undef()

    def read_sysreg(self, reg: SysReg) -> int:
        """The hardware value of a system register (machine-code guests only: the Python
        kernel makes no access EL2 traps)."""
        impl = self.impl
        if not isinstance(impl, VCpu):
            raise TypeError("system registers are read only on a machine-code vCPU")
        return impl.read_sysreg(reg)

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        self.impl.take_exception(esr_value, far, preferred_return)

    def invalidate(self, ipa: int, size: int) -> None:
        if self._impl is not None:
            self._impl.invalidate(ipa, size)

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
