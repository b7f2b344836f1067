"""The EL1 generic timers of one PE, CNTV (virtual, PPI 27) and CNTP (EL1 physical, PPI 30),
over the machine's system counter, driving their PPIs through an interrupt controller as
level interrupts (facts in `arch/timer.py`). The timers are PE hardware: a plain VM's vCPU
gets one from the VMM, wired to its redistributor; the RMM can give each REC its own.

The count is the machine's: the host's monotonic clock at 62.5 MHz, the same counter a guest
reads with `mrs CNTVCT_EL0` (machine/pykernel.py); the virtual count is the physical count
minus CNTVOFF_EL2 (the host's choice, 0 unless set). A timer's output is
ENABLE && !IMASK && count >= CVAL; `sync()` presents it on the PPI line, and the GIC calls
`sync()` before every decision about the vCPU's pending interrupts, so a deadline passing
between two exits is seen at the next one. `next_deadline()` is the physical count at which
an output will next rise, for the VMM's WFI sleep.

When ENABLE is 0, ISTATUS (UNKNOWN in the Arm ARM) reads 0 and TVAL reads
(CVAL - count)[31:0] as when enabled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from unirealm.arch.timer import (
    CNT_CTL_ENABLE,
    CNT_CTL_ISTATUS,
    CNT_CTL_WRITABLE,
    COUNTER_MASK,
    PPI_NONSECURE_PHYS_TIMER,
    PPI_VIRT_TIMER,
    TVAL_MASK,
    CntSysreg,
    condition_met,
    tval_signed,
)

from .pykernel import SYSTEM_COUNTER_HZ, SYSTEM_COUNTER_PERIOD_NS

Counter = Callable[[], int]


def system_count() -> int:
    """CNTPCT: the machine's system counter."""
    return time.monotonic_ns() // SYSTEM_COUNTER_PERIOD_NS


class TimerGic(Protocol):
    """What a timer needs of its interrupt controller (host/devices/gicv3.py GicV3 provides it)."""

    def set_ppi_level(self, cpu: int, intid: int, level: bool) -> None: ...

    def add_source(self, cpu: int, sync: Callable[[], None]) -> None: ...


@dataclass
class TimerChannel:
    """One EL1 timer: CTL (ENABLE, IMASK) and CVAL, compared against `count()`."""

    name: str
    ppi: int
    count: Counter
    ctl: int = 0  # ENABLE | IMASK; ISTATUS is computed
    cval: int = 0

    def istatus(self) -> bool:
        return bool(self.ctl & CNT_CTL_ENABLE) and condition_met(self.count(), self.cval)

    def output(self) -> bool:
        """The interrupt line: enabled, not masked, condition met (the counter is read only
        for a timer that is enabled and unmasked)."""
        return self.ctl & CNT_CTL_WRITABLE == CNT_CTL_ENABLE and condition_met(self.count(), self.cval)

    def read_ctl(self) -> int:
        return self.ctl | (CNT_CTL_ISTATUS if self.istatus() else 0)

    def write_ctl(self, value: int) -> None:
        self.ctl = value & CNT_CTL_WRITABLE

    def read_tval(self) -> int:
        return (self.cval - self.count()) & TVAL_MASK

    def write_tval(self, value: int) -> None:
        self.cval = (self.count() + tval_signed(value)) & COUNTER_MASK

    def write_cval(self, value: int) -> None:
        self.cval = value & COUNTER_MASK

    def load(self, ctl: int, cval: int) -> None:
        """Take CTL and CVAL as a REC exit reports them (ISTATUS is ignored: it is derived)."""
        self.write_ctl(ctl)
        self.write_cval(cval)

    def deadline(self) -> int | None:
        """The count at which the output rises, if it is armed and has not risen yet."""
        if self.ctl & CNT_CTL_WRITABLE != CNT_CTL_ENABLE or condition_met(self.count(), self.cval):
            return None
        return self.cval


class GenericTimer:
    """CNTV and CNTP of PE `cpu`, wired to that PE's PPIs 27 and 30 in `gic`."""

    def __init__(self, gic: TimerGic, cpu: int, counter: Counter = system_count, cntvoff: int = 0) -> None:
        self.gic = gic
        self.cpu = cpu
        self.counter = counter
        self.cntvoff = cntvoff & COUNTER_MASK
        self.frequency = SYSTEM_COUNTER_HZ
        self.virtual = TimerChannel("cntv", PPI_VIRT_TIMER, self.cntvct)
        self.physical = TimerChannel("cntp", PPI_NONSECURE_PHYS_TIMER, self.cntpct)
        gic.add_source(cpu, self.sync)

    @property
    def channels(self) -> tuple[TimerChannel, TimerChannel]:
        return self.virtual, self.physical

    def cntpct(self) -> int:
        return self.counter() & COUNTER_MASK

    def cntvct(self) -> int:
        return (self.counter() - self.cntvoff) & COUNTER_MASK

    def sync(self) -> None:
        """Present both outputs on their PPIs."""
        gic, cpu, virtual, physical = self.gic, self.cpu, self.virtual, self.physical
        gic.set_ppi_level(cpu, virtual.ppi, virtual.output())
        gic.set_ppi_level(cpu, physical.ppi, physical.output())

    def next_deadline(self) -> int | None:
        """The physical count at which the first armed, unmasked timer fires; None if none will."""
        deadlines = []
        if (v := self.virtual.deadline()) is not None:
            deadlines.append((v + self.cntvoff) & COUNTER_MASK)
        if (p := self.physical.deadline()) is not None:
            deadlines.append(p)
        return min(deadlines, default=None)

    def seconds_until_deadline(self) -> float | None:
        """How long the host may sleep in a WFI before a timer interrupt: 0.0 if one is due."""
        deadline = self.next_deadline()
        if deadline is None:
            return None
        return max(deadline - self.cntpct(), 0) / self.frequency

    def monotonic_deadline(self) -> float | None:
        """`next_deadline()` as a time.monotonic() value (the counter is that clock's)."""
        deadline = self.next_deadline()
        if deadline is None:
            return None
        return deadline * SYSTEM_COUNTER_PERIOD_NS / 1e9

    # --- system registers ---------------------------------------------------------------------
    def read_sysreg(self, reg: int) -> int | None:
        """MRS of a CNT* register an EL1 guest may read; None if it is not a timer register."""
        match reg:
            case CntSysreg.CNTFRQ_EL0:
                return self.frequency
            case CntSysreg.CNTPCT_EL0:
                return self.cntpct()
            case CntSysreg.CNTVCT_EL0:
                return self.cntvct()
        channel, field = self._decode(reg)
        if channel is None:
            return None
        if field == "ctl":
            return channel.read_ctl()
        return channel.cval if field == "cval" else channel.read_tval()

    def write_sysreg(self, reg: int, value: int) -> bool:
        """MSR to a timer register; False if it is not one an EL1 guest may write."""
        channel, field = self._decode(reg)
        if channel is None:
            return False
        if field == "ctl":
            channel.write_ctl(value)
        elif field == "cval":
            channel.write_cval(value)
        else:
            channel.write_tval(value)
        self.sync()
        return True

    def _decode(self, reg: int) -> tuple[TimerChannel | None, str]:
        match reg:
            case CntSysreg.CNTV_CTL_EL0 | CntSysreg.CNTP_CTL_EL0:
                field = "ctl"
            case CntSysreg.CNTV_CVAL_EL0 | CntSysreg.CNTP_CVAL_EL0:
                field = "cval"
            case CntSysreg.CNTV_TVAL_EL0 | CntSysreg.CNTP_TVAL_EL0:
                field = "tval"
            case _:
                return None, ""
        virtual = reg in (CntSysreg.CNTV_CTL_EL0, CntSysreg.CNTV_CVAL_EL0, CntSysreg.CNTV_TVAL_EL0)
        return (self.virtual if virtual else self.physical), field

