"""The virtual address an A64 load or store accesses (Arm ARM C4.1.x "Loads and Stores"
encodings; C6 instruction pseudocode: address = Xn|SP + offset, before any writeback).

Covers load register (literal), load/store exclusive and ordered (Xn|SP), load/store pair
(all index forms), load/store register (unsigned immediate, unscaled, unprivileged, pre- and
post-index, register offset with extend and shift) and atomic memory operations, in general
and SIMD&FP registers. Other forms (SIMD structures, PAC loads, SVE) give None.
"""

from __future__ import annotations

from collections.abc import Callable

MASK64 = (1 << 64) - 1

# x(n) for n in 0..30; 31 means SP for a base register
ReadReg = Callable[[int], int]


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def _extend(value: int, option: int, shift: int) -> int:
    if option == 0b010:  # UXTW
        value &= 0xFFFF_FFFF
    elif option == 0b110:  # SXTW
        value = _sext(value & 0xFFFF_FFFF, 32)
    elif option not in (0b011, 0b111):  # LSL (UXTX) / SXTX; others are unallocated here
        return -1
    return (value << shift) & MASK64


def access_address(insn: int, x: ReadReg, sp: int, pc: int) -> int | None:
    """The address the load/store `insn` at `pc` accesses first, or None."""

    def base() -> int:
        n = (insn >> 5) & 0x1F
        return sp if n == 31 else x(n)

    if insn & 0x3B00_0000 == 0x1800_0000:  # load register (literal)
        return (pc + 4 * _sext((insn >> 5) & 0x7FFFF, 19)) & MASK64
    if insn & 0x3F00_0000 == 0x0800_0000:  # load/store exclusive, ordered, compare-and-swap
        return base()
    if insn & 0x3A00_0000 == 0x2800_0000:  # load/store pair
        opc, simd, index = insn >> 30, (insn >> 26) & 1, (insn >> 23) & 3
        scale = 2 + opc if simd else 2 + (opc >> 1)
        offset = _sext((insn >> 15) & 0x7F, 7) << scale
        return base() if index == 0b01 else (base() + offset) & MASK64
    size, simd, opc = insn >> 30, (insn >> 26) & 1, (insn >> 22) & 3
    scale = 4 if simd and opc & 2 and size == 0 else size
    if insn & 0x3B00_0000 == 0x3900_0000:  # unsigned immediate
        return (base() + (((insn >> 10) & 0xFFF) << scale)) & MASK64
    if insn & 0x3B00_0000 != 0x3800_0000:
        return None
    kind = (insn >> 10) & 3
    if not (insn >> 21) & 1:
        simm9 = _sext((insn >> 12) & 0x1FF, 9)
        return base() if kind == 0b01 else (base() + simm9) & MASK64
    if kind == 0b00:  # atomic memory operations
        return base()
    if kind == 0b10:  # register offset
        m = (insn >> 16) & 0x1F
        offset = _extend(0 if m == 31 else x(m), (insn >> 13) & 7, scale if (insn >> 12) & 1 else 0)
        return None if offset < 0 else (base() + offset) & MASK64
    return None
