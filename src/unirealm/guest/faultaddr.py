"""The address an A64 load or store accesses, decoded from the instruction (Arm ARM C4.1,
"Loads and Stores") and the registers: what FAR_EL1 tells Linux on a data abort, and so
what si_addr and sigcontext.fault_address report. The CPU's TLB miss only names the page.

Decoded: register literal (PC + imm19 * 4), pair (imm7, scaled, offset/pre/post-index),
register with an unsigned scaled imm12, with a signed imm9 (unscaled, pre/post-index,
unprivileged), with a register offset (UXTW, LSL, SXTW, SXTX, optionally scaled); every
other form (exclusives, atomics, SIMD structures, ...) accesses the base register Xn.
"""

from __future__ import annotations

from collections.abc import Callable

MASK64 = (1 << 64) - 1


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def _extend(value: int, option: int) -> int:
    if option == 0b010:  # UXTW
        return value & 0xFFFF_FFFF
    if option == 0b110:  # SXTW
        return _sext(value & 0xFFFF_FFFF, 32)
    return value  # LSL (UXTX), SXTX


def access_address(insn: int, reg: Callable[[int], int], pc: int) -> int | None:
    """The first byte `insn` (at `pc`) accesses, `reg(n)` reading Xn (31: SP where it is a
    base register); None if it is not a load or store."""
    if (insn >> 25) & 0b0101 != 0b0100:  # op0 bit 27 = 1, bit 25 = 0
        return None
    rn = (insn >> 5) & 31
    base = reg(rn)  # 31 names SP as a base
    group = (insn >> 28) & 3
    if group == 0b01 and not insn >> 24 & 1:  # load register (literal)
        return (pc + 4 * _sext((insn >> 5) & 0x7FFFF, 19)) & MASK64
    if group == 0b10:  # load/store pair
        mode = (insn >> 23) & 3
        opc, vector = insn >> 30, insn >> 26 & 1
        scale = 2 + opc if vector else (3 if opc == 0b10 else 2)
        offset = _sext((insn >> 15) & 0x7F, 7) << scale
        return (base + (0 if mode == 0b01 else offset)) & MASK64
    if group == 0b11:
        size, vector = insn >> 30, insn >> 26 & 1
        scale = 4 if vector and insn >> 23 & 1 else size
        if insn >> 24 & 1:  # unsigned immediate
            return (base + (((insn >> 10) & 0xFFF) << scale)) & MASK64
        if not insn >> 21 & 1:  # imm9: unscaled, post-index, unprivileged, pre-index
            post = (insn >> 10) & 3 == 0b01
            return (base + (0 if post else _sext((insn >> 12) & 0x1FF, 9))) & MASK64
        if (insn >> 10) & 3 == 0b10:  # register offset
            rm = (insn >> 16) & 31
            index = 0 if rm == 31 else reg(rm)
            amount = scale if insn >> 12 & 1 else 0
            return (base + (_extend(index, (insn >> 13) & 7) << amount)) & MASK64
    return base & MASK64
