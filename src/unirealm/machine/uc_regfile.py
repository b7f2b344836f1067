"""Where a Unicorn AArch64 CPU keeps X0..X30 and PC: read and written in place.

The EL0 engine's SVC fast path reads x8, x0..x5 and PC at every syscall and writes x0 back.
Through the API that is two foreign calls (uc_reg_read_batch, uc_reg_write) of about a
quarter of the path's cost; the registers themselves are words of the CPU's state
(CPUARMState: `xregs[32]` followed by `pc`), which those calls read and write with
nothing else done, and which hold the architectural values whenever a hook runs (the
translated code has stored them before it raises the SVC's exception).

The state sits in the engine's CPU object, which the engine structure points to (`cpu`,
include/uc_priv.h, Unicorn 2.1). Its place is found once per process by behaviour: on a
scratch engine with a pattern written into X0..X30 and PC through the API, the pointer
field of the engine structure and the offset behind it where the pattern sits; the pair
is then checked on a second engine (other heap addresses, other pattern). Every engine
that uses it is checked again when it is set up (`locate`: a value written through the
API must be seen in place, and one written in place must be read back through the API).
A build where either check fails gets None, and the caller keeps the API calls.

The candidate pointers are read through /proc/self/mem, where an address that is not
mapped is an error, not a crash; so `register_file_offsets()` is called before a process
closes its files (the kernel process does it at its warm-up).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any

from unicorn import arm64_const as a64
from unicorn.unicorn_py3.unicorn import Uc

from .vcpu_stops import engine_address, scratch_engine

ENGINE_SCAN = 1024  # the engine structure's fields looked at (`cpu` is among its first)
CPU_SCAN = 1 << 16  # the CPU object's bytes looked at (its state follows a 32 KiB jump cache)
XREGS = 31  # X0..X30; xregs[31] is not SP's home, PC follows it
PC_INDEX = 32  # pc right after xregs[32]
_X_IDS = [getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)] + [a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30]


def _pattern(seed: int) -> list[int]:
    return [(0xC0DE_0000_0000_0000 | seed << 32 | 0x5A00 | i) for i in range(XREGS)] + [0, seed << 20 | 0x4000]


def _scratch(seed: int) -> Uc:
    uc = scratch_engine()
    uc.mem_map(0, 0x1000)  # initialises the engine: its CPU exists from here on
    values = _pattern(seed)
    for i, reg in enumerate(_X_IDS):
        uc.reg_write(reg, values[i])
    uc.reg_write(a64.UC_ARM64_REG_PC, values[PC_INDEX])
    return uc


def _image(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(8, "little") for v in values[:XREGS])


def _read_mem(mem: int, address: int, size: int) -> bytes:
    try:
        return os.pread(mem, size, address)
    except (OSError, OverflowError, ValueError):
        return b""


def _candidates(uc: Uc, seed: int) -> list[tuple[int, int]]:
    """(field offset in the engine structure, offset of xregs behind that pointer) pairs."""
    engine = ctypes.string_at(engine_address(uc), ENGINE_SCAN)
    want = _image(_pattern(seed))
    found = []
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for field in range(0, ENGINE_SCAN, 8):
            pointer = int.from_bytes(engine[field:field + 8], "little")
            if pointer < 0x10000 or pointer & 7 or pointer >= 1 << 47:
                continue
            blob = _read_mem(mem, pointer, CPU_SCAN)
            at = blob.find(want)
            if at >= 0 and at % 8 == 0:
                found.append((field, at))
    finally:
        os.close(mem)
    return found


def _shows(uc: Uc, seed: int, field: int, offset: int) -> bool:
    """Whether `uc`'s pattern sits at `offset` behind its pointer at `field`."""
    pointer = ctypes.c_uint64.from_address(engine_address(uc) + field).value
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        return _read_mem(mem, pointer + offset, 8 * XREGS) == _image(_pattern(seed))
    finally:
        os.close(mem)


class _Offsets:
    found: tuple[int, int] | None = None
    looked = False


def register_file_offsets() -> tuple[int, int] | None:
    """The (engine field, xregs offset) pair of this Unicorn build, or None."""
    if not _Offsets.looked:
        _Offsets.looked = True
        with contextlib.suppress(OSError):
            first = _scratch(1)
            second = _scratch(2)
            for field, offset in _candidates(first, 1):
                if _shows(second, 2, field, offset) and locate(second, (field, offset)) is not None:
                    _Offsets.found = (field, offset)
                    break
            first.mem_unmap(0, 0x1000)
            second.mem_unmap(0, 0x1000)
    return _Offsets.found


def locate(uc: Uc, offsets: tuple[int, int] | None = None) -> Any:
    """X0..X30, (X31), PC of an initialised engine `uc` as a ctypes array of 33 words in
    place, checked both ways on `uc` itself (X0 and PC are put back as they were); None
    when this build does not show them."""
    offsets = offsets or register_file_offsets()
    if offsets is None:
        return None
    field, offset = offsets
    pointer = ctypes.c_uint64.from_address(engine_address(uc) + field).value
    if not pointer:
        return None
    words = (ctypes.c_uint64 * (PC_INDEX + 1)).from_address(pointer + offset)
    x0, pc = uc.reg_read(a64.UC_ARM64_REG_X0), uc.reg_read(a64.UC_ARM64_REG_PC)
    try:
        uc.reg_write(a64.UC_ARM64_REG_X0, 0x1234_5678_9ABC_DEF0)
        uc.reg_write(a64.UC_ARM64_REG_PC, 0x7654_3210)
        if (words[0], words[PC_INDEX]) != (0x1234_5678_9ABC_DEF0, 0x7654_3210):
            return None
        words[0] = 0x0FED_CBA9_8765_4321
        if uc.reg_read(a64.UC_ARM64_REG_X0) != 0x0FED_CBA9_8765_4321:
            return None
    finally:
        uc.reg_write(a64.UC_ARM64_REG_X0, x0)
        uc.reg_write(a64.UC_ARM64_REG_PC, pc)
    return words
