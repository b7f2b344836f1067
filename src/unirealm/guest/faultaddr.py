"""The address an A64 load or store accesses, decoded from the instruction and the registers:
what FAR_EL1 tells Linux on a data abort, and so what si_addr and sigcontext.fault_address
report (the CPU's TLB miss only names the page).

The decoding is arch/a64.py's (Arm ARM C4.1, "Loads and Stores"), which the vCPU uses for
the hypervisor's FAR too; a load or store it does not decode (SIMD structures, SVE, PAC
loads) accesses Xn|SP first, and that is the address given for it here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..arch.a64 import MASK64
from ..arch.a64 import access_address as decoded_address

_LOADS_AND_STORES, _OP0_MASK = 0b0100, 0b0101  # op0 bits 27 and 25: x1x0


def access_address(insn: int, reg: Callable[[int], int], pc: int) -> int | None:
    """The first byte `insn` (at `pc`) accesses, `reg(n)` reading Xn (31: SP where it is a
    base register); None if it is not a load or store."""
    if (insn >> 25) & _OP0_MASK != _LOADS_AND_STORES:
        return None
    addr = decoded_address(insn, reg, reg(31), pc)
    return addr if addr is not None else reg((insn >> 5) & 31) & MASK64
