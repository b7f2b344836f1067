"""Where an emulation stop lands: between two instructions, never inside one.

An AArch64 PE takes an asynchronous event (an interrupt, the host's IPI that ends a REC's
run) between two instructions: each has executed wholly or not at all. Unicorn stops
`emu_start` when `emu_stop` is called (by the emulation timeout's thread at the end of a
time slice or at the interrupt lines' deadline, by `HOST_IRQ.kick` from another thread, by a
hook) and looks for that request at the start of each translation block and, as built,
after every load and store as well. That second look exits with the PC put back at the
instruction making the access although the access has written its register: `ldr x9, [x9]`
stopped there has replaced its own base, and the resumed vCPU loads again from the value it
loaded. Any stop can be caught there (the look after the next access comes first), so a
pointer-chasing loop under time slices skipped an element per slice, and a REC's first
`ldr x9, [x9]`, whose first touch of a page takes a Python hook's time, loaded from the
unprotected IPA it had just read (an MMIO exit, then an external abort in the realm).

Unicorn leaves the look after an access out of code translated while its `no_exit_request`
flag is set (a flag its AArch32 translator sets around IT blocks; the AArch64 translator
never touches it). `stop_at_block_boundaries()` sets it for a vCPU's Unicorn before any
code is translated: a stop lands at the next block start, with the PC of the first
instruction not executed. A load that a hook refuses still exits from inside the access,
before it writes anything. A refused store, though, only asks for a stop and relies on that
look to leave at once; machine/vcpu.py makes a store it refuses end the block itself
(`VCpu._refuse_store`).

The flag is a field of Unicorn's private engine structure. Its place is found once per
process from a field the API can change: `context_content` (UC_CTL_CONTEXT_MODE) is
followed by `cpu_context_size`, `next_pc`, `hook_insert`, `first_tb`, then
`no_exit_request` (include/uc_priv.h, Unicorn 2.1). The place is then checked by behaviour
on a scratch engine (a stop requested while `ldr x9, [x9]` maps its page must land after
the block, the load made once); a build where that does not hold is refused with one line
rather than run with stops inside instructions.
"""

from __future__ import annotations

import ctypes
from typing import Any

from unicorn import UC_ARCH_ARM64, UC_HOOK_MEM_UNMAPPED, UC_MODE_ARM, UC_PROT_ALL
from unicorn import arm64_const as a64
from unicorn.unicorn_const import (
    UC_CTL_CONTEXT_CPU,
    UC_CTL_CONTEXT_MEMORY,
    UC_CTL_CONTEXT_MODE,
    UC_CTL_IO_WRITE,
)
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.unicorn import Uc

# The engine structure is far larger than this (64 sigjmp_bufs for nested runs follow the
# fields looked at), so reading this much of it stays inside it.
SCAN_BYTES = 8192
# The probe at PROBE_CODE: ldr x9, [x9]; add x1, x1, #1; b +4; add x2, x2, #1; b .
PROBE_CODE = 0x1000
PROBE_DATA = 0x2000
PROBE_WORDS = (0xF9400129, 0x91000421, 0x14000001, 0x91000442, 0x14000000)
PROBE_VALUE = 0x5A5A_0000
# The scratch engines' translation buffer: small, so that finding the flag fits in a process
# with a tight address-space limit (the kernel process).
SCRATCH_TCG_BUFFER = 1 << 20


class UnicornStopError(RuntimeError):
    pass


def engine_address(uc: Uc) -> int:
    address = ctypes.cast(uc._uch, ctypes.c_void_p).value
    assert address is not None
    return address


def scratch_engine() -> Uc:
    uc: Any = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(SCRATCH_TCG_BUFFER)  # before the engine is initialised
    return uc


def _set_context_mode(uc: Uc, mode: int) -> None:
    uc.ctl(UC_CTL_CONTEXT_MODE, UC_CTL_IO_WRITE, ctypes.c_int(mode))


def _context_content_offset(uc: Uc) -> int:
    """The offset of `context_content`: the one int that follows UC_CTL_CONTEXT_MODE."""
    base = engine_address(uc)
    _set_context_mode(uc, UC_CTL_CONTEXT_CPU)
    before = ctypes.string_at(base, SCAN_BYTES)
    _set_context_mode(uc, UC_CTL_CONTEXT_CPU | UC_CTL_CONTEXT_MEMORY)
    after = ctypes.string_at(base, SCAN_BYTES)
    _set_context_mode(uc, UC_CTL_CONTEXT_CPU)
    both = UC_CTL_CONTEXT_CPU | UC_CTL_CONTEXT_MEMORY
    found = [
        off for off in range(0, SCAN_BYTES, 4)
        if int.from_bytes(before[off:off + 4], "little") == UC_CTL_CONTEXT_CPU
        and int.from_bytes(after[off:off + 4], "little") == both
    ]
    if len(found) != 1:
        raise UnicornStopError("this Unicorn build does not show where it keeps its context mode")
    return found[0]


def _lands_after_the_block(offset: int) -> bool:
    """With the byte at `offset` set, a stop requested while a load maps its page lands at
    the next block start, the load made once."""
    uc = scratch_engine()
    ctypes.c_bool.from_address(engine_address(uc) + offset).value = True
    uc.mem_map(PROBE_CODE, 0x1000)
    uc.mem_write(PROBE_CODE, b"".join(w.to_bytes(4, "little") for w in PROBE_WORDS))
    data = ctypes.create_string_buffer(PROBE_VALUE.to_bytes(8, "little"), 0x1000)

    def on_unmapped(uc: Uc, _access: int, _address: int, _size: int, _value: int, _ud: object) -> bool:
        uc.mem_map_ptr(PROBE_DATA, 0x1000, UC_PROT_ALL, ctypes.addressof(data))
        uc.emu_stop()  # as the timeout's thread would, while the access is being made
        return True

    uc.hook_add(UC_HOOK_MEM_UNMAPPED, on_unmapped)
    uc.reg_write(a64.UC_ARM64_REG_X9, PROBE_DATA)
    uc.emu_start(PROBE_CODE, PROBE_CODE + 4 * len(PROBE_WORDS))
    return (
        uc.reg_read(a64.UC_ARM64_REG_PC) == PROBE_CODE + 12  # the block after the branch
        and uc.reg_read(a64.UC_ARM64_REG_X9) == PROBE_VALUE
        and (uc.reg_read(a64.UC_ARM64_REG_X1), uc.reg_read(a64.UC_ARM64_REG_X2)) == (1, 0)
    )


class _Flag:
    offset: int | None = None


def no_exit_request_offset() -> int:
    if _Flag.offset is None:
        uc = scratch_engine()
        next_pc = (_context_content_offset(uc) + 8 + 7) & ~7  # after context_content, cpu_context_size
        candidate = next_pc + 8 + 2  # after next_pc: hook_insert, first_tb, no_exit_request
        if ctypes.string_at(engine_address(uc) + candidate, 1) != b"\0" or not _lands_after_the_block(candidate):
            raise UnicornStopError("this Unicorn build cannot be made to stop between instructions only")
        _Flag.offset = candidate
    return _Flag.offset


def stop_at_block_boundaries(uc: Uc) -> None:
    """Make every later stop of `uc` land between instructions (see the module's text).
    Call before `uc` translates code: blocks translated earlier keep their looks."""
    ctypes.c_bool.from_address(engine_address(uc) + no_exit_request_offset()).value = True
