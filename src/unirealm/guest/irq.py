"""How the Python kernel takes interrupts, and its virtual timer.

The kernel is Python on its vCPU: it has no exception vector that the PE could enter at any
instruction, so an interrupt is taken at the kernel's own boundaries, the points where a
real kernel would have interrupts unmasked and where the PE's IRQ input can have changed
(it changes only at a trap: `cpu.irq_signalled()` is what the last trap's answer showed):

- after every WFI (`wait`);
- whenever EL0 code stops (a syscall that leaves the SVC fast path, a fault, the end of a
  slice) and when EL0 is stopped by the host's interrupt with the IRQ input signalled
  (El0Space.run returns "irq"): EL0 runs with PSTATE.I clear;
- never inside a handler or while `masked` (the kernel's PSTATE.I: set on entry to `take`,
  as exception entry sets it, and by `mask()` around code no handler may interleave with).

`take()` is the IRQ vector: while the input is signalled it reads ICC_IAR1_EL1, dispatches
by INTID to the handler the driver registered, and writes ICC_EOIR1_EL1 (EOImode 0: priority
drop and deactivation). A level source is quieted by its handler before the EOI (the timer
disables itself), an edge one needs nothing (a virtio device's SPI). An INTID with no handler
is only acknowledged and ended (counted in `stray`).

`VirtualTimer` is the EL1 virtual timer (CNTV_CVAL_EL0, CNTV_CTL_EL0, PPI 27): armed for the
earliest deadline the kernel waits for, it is what ends a WFI when no device does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..arch.gic import SPECIAL_INTIDS
from ..arch.timer import CNT_CTL_ENABLE, PPI_VIRT_TIMER, CntSysreg
from .uapi import NSEC

if TYPE_CHECKING:
    from .gic import Gic
    from .interfaces import Cpu



class Interrupts:
    def __init__(self, cpu: Cpu, gic: Gic) -> None:
        self.cpu = cpu
        self.gic = gic
        self.handlers: dict[int, Callable[[], None]] = {}
        self.masked = 0  # the kernel's PSTATE.I: no interrupt is taken while it is not 0
        self.counts: dict[int, int] = {}  # INTID -> times taken
        self.stray = 0
        self.timer: VirtualTimer | None = None

    def register(self, intid: int, handler: Callable[[], None], edge: bool) -> None:
        """`handler` runs for every acknowledge of `intid`, which is enabled in the GIC now."""
        self.handlers[intid] = handler
        self.gic.enable(intid, edge)

    @contextlib.contextmanager
    def mask(self) -> Iterator[None]:
        self.masked += 1
        try:
            yield
        finally:
            self.masked -= 1

    def take(self) -> int:
        """The IRQ vector: handle every interrupt the CPU interface signals (none while
        masked). Returns how many were handled."""
        if self.masked or not self.cpu.irq_signalled():
            return 0
        taken = 0
        gic = self.gic
        self.masked += 1
        try:
            while self.cpu.irq_signalled():
                intid = gic.acknowledge()
                if intid in SPECIAL_INTIDS:
                    break  # withdrawn meanwhile (another group or priority): spurious
                try:
                    handler = self.handlers.get(intid)
                    if handler is None:
                        self.stray += 1
                    else:
                        handler()
                finally:
                    gic.end(intid)
                self.counts[intid] = self.counts.get(intid, 0) + 1
                taken += 1
        finally:
            self.masked -= 1
        return taken

    def wait(self, deadline_ns: int | None) -> int:
        """Idle until an interrupt: the timer armed for `deadline_ns` at the latest (None:
        only a device or the host can end the wait), WFI, then the interrupts taken (their
        number)."""
        if self.timer is not None:
            self.timer.arm(deadline_ns, early_ok=True)
        self.cpu.wfi()
        return self.take()


class VirtualTimer:
    """CNTV: one compare value, re-armed only when the earliest deadline moves."""

    def __init__(self, cpu: Cpu, irqs: Interrupts, intid: int = PPI_VIRT_TIMER) -> None:
        self.cpu = cpu
        self.intid = intid
        self.cval: int | None = None  # the compare value armed (None: disabled)
        self.fired = 0
        self.on_fire: Callable[[], None] | None = None
        cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 0)
        irqs.register(intid, self._fire, edge=False)
        irqs.timer = self

    def ticks(self, deadline_ns: int) -> int:
        """The first count at or after `deadline_ns` on the kernel's monotonic clock."""
        return -(-deadline_ns * self.cpu.cntfrq // NSEC)

    def arm(self, deadline_ns: int | None, early_ok: bool = False) -> None:
        """Fire at `deadline_ns` (None: not at all). `early_ok`: a compare value already armed
        earlier may stay (the wake-up it brings finds nothing due and arms again), which
        saves the register write when the deadline only moves later."""
        if deadline_ns is None:
            if self.cval is not None and not early_ok:
                self.cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 0)
                self.cval = None
            return
        cval = self.ticks(deadline_ns)
        if cval == self.cval or (early_ok and self.cval is not None and self.cval < cval):
            return
        self.cpu.write_sysreg(CntSysreg.CNTV_CVAL_EL0, cval)
        if self.cval is None:
            self.cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
        self.cval = cval

    def _fire(self) -> None:
        """PPI 27 is level-sensitive: the timer is disabled before the EOI, so its line drops."""
        self.cpu.write_sysreg(CntSysreg.CNTV_CTL_EL0, 0)
        self.cval = None
        self.fired += 1
        if self.on_fire is not None:
            self.on_fire()
