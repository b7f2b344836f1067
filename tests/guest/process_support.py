"""Syscalls as EL0 makes them, on a real Process over the fake CPU of
tests/guest/test_syscall_fuzz.py: arguments as 64-bit registers, results as signed values
(None: the call blocked or replaced the program, x0 is not written)."""

from __future__ import annotations

from unirealm.guest import syscalls as sc
from unirealm.guest.process import Process

MASK = (1 << 64) - 1
WILD = 0xDEAD_0000_0000  # a user address mapped nowhere


def call(p: Process, name: str, *args: int) -> int | None:
    result = p.syscalls.call(sc.NR[name], [a & MASK for a in (*args, 0, 0, 0, 0, 0, 0)][:6])
    if result is None:
        return None
    result &= MASK
    return result - (1 << 64) if result >> 63 else result


def scratch(p: Process, size: int = 0x4000) -> int:
    """Fresh anonymous read-write memory (mmap PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS)."""
    addr = call(p, "mmap", 0, size, 3, 0x22, -1, 0)
    assert addr is not None and addr > 0
    return addr
