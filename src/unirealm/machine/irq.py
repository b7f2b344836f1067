"""The interrupt inputs of a processing element, as its owner wires them (see `VCpu.interrupts`).

A PE has two interrupt request inputs, IRQ and FIQ, and reaches its interrupt controller's CPU
interface and its generic timers through system registers (ICC_*_EL1, CNT*_EL0). The vCPU
asks its owner's `InterruptLines` what is signalled and hands it the MRS/MSR of those
registers: a plain VM's owner gives the VMM's GICv3 CPU interface and the vCPU's generic
timers; a REC's owner (the RMM) gives its virtual CPU interface over the REC's list registers
and the REC's EL1 timers.
"""

from __future__ import annotations

from typing import Protocol

PENDING_IRQ = 1 << 0
PENDING_FIQ = 1 << 1


class InterruptLines(Protocol):
    """What the PE's interrupt inputs and its CPU-interface / timer system registers look like
    to a vCPU."""

    def pending(self) -> int:
        """PENDING_IRQ | PENDING_FIQ as signalled to the PE now (before the PSTATE masks)."""
        ...

    def next_deadline(self) -> float | None:
        """The time.monotonic() at which `pending()` may change by time alone; None: never."""
        ...

    def read_sysreg(self, key: int) -> int | None:
        """MRS of the register `arch.sysreg.sysreg_key(op0, op1, CRn, CRm, op2)`; None: not
        this controller's (the CPU's own path follows: a trap or UNDEFINED)."""
        ...

    def write_sysreg(self, key: int, value: int) -> bool:
        """MSR of the register `key`; False: not this controller's."""
        ...

    def iar1_now(self) -> int | None:
        """What an MRS of ICC_IAR1_EL1 would return now (an INTID, or 1023), without
        acknowledging anything; None: that read, or an MSR of machine.kernel_channel's
        POSTED_WRITES, could trap to EL2 now."""
        ...

    def acknowledge_foreseen(self, intid: int) -> bool:
        """The ICC_IAR1_EL1 read that returned `intid` when `iar1_now` said so, applied now:
        `intid` becomes active as that read made it (whatever a timer raised since). False:
        `intid` is not pending and inactive here."""
        ...
