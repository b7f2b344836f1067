"""The syscall layer's dispatch (guest/syscalls.py): x8 selects the call and x0-x5 carry its
arguments (the AArch64 Linux syscall ABI), the result goes back in x0, an unknown number is
ENOSYS, logged once, and the `strace` kernel option logs each call with the path it names."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from unicorn import arm64_const as a64

from unirealm.guest import syscalls as sc
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process

from .test_syscall_fuzz import make_process

MASK = (1 << 64) - 1


@pytest.fixture
def traced() -> Iterator[tuple[Process, list[tuple[str, bool]]]]:
    try:
        p = make_process()
        logged: list[tuple[str, bool]] = []
        p.kernel.log = lambda text, error=False, level=None: logged.append((text, error))
        p.kernel.options = {"strace": ""}
        p.syscalls = sc.Syscalls(p)
        yield p, logged
    finally:
        Store.current = None


def test_x8_selects_the_call_and_x0_gets_its_result() -> None:
    try:
        p = make_process()
        p.uc.reg_write(a64.UC_ARM64_REG_X8, sc.NR["getpid"])
        p.uc.reg_write(a64.UC_ARM64_REG_X0, 0x5555)
        p.syscalls.dispatch()
        assert p.uc.reg_read(a64.UC_ARM64_REG_X0) == p.pid
        p.uc.reg_write(a64.UC_ARM64_REG_X8, 4095)  # no such call
        p.syscalls.dispatch()
        assert p.uc.reg_read(a64.UC_ARM64_REG_X0) == -errno.ENOSYS & MASK
        assert not p.syscalls.trace  # only with the `strace` option
    finally:
        Store.current = None


def test_an_unknown_call_is_enosys_and_logged_once(traced: tuple[Process, list[tuple[str, bool]]]) -> None:
    p, logged = traced
    p.syscalls.trace = False
    for _ in range(3):
        assert p.syscalls.handle(4094, [0] * 6) == -errno.ENOSYS
    assert [t for t, _ in logged] == ["syscall 4094 is not supported (ENOSYS)"]


def test_strace_logs_each_call_its_arguments_and_the_path(traced: tuple[Process, list[tuple[str, bool]]]) -> None:
    p, logged = traced
    assert p.syscalls.trace
    result = p.syscalls.handle(sc.NR["getpid"], [1, 2, 3, 4, 5, 6])
    assert logged[-1] == (f"[{p.current.tid}] getpid(0x1, 0x2, 0x3, 0x4) = {result}", True)  # shown under `quiet`
    path = p.syscalls.handle(sc.NR["mmap"], [0, 4096, 3, 0x22, MASK, 0])  # PROT_READ|WRITE, private anonymous
    assert path is not None and path > 0
    p.write(path, b"/nope\0")
    result = p.syscalls.handle(sc.NR["openat"], [-100 & MASK, path, 0, 0, 0, 0])
    assert result == -errno.ENOENT
    assert logged[-1] == (f"[{p.current.tid}] openat({hex(-100 & MASK)}, {hex(path)}, 0x0, 0x0 b'/nope') = -2",
                          True)
    p.syscalls.handle(sc.NR["openat"], [-100 & MASK, 0, 0, 0, 0, 0])
    assert logged[-1][0].endswith("openat(0xffffffffffffff9c, 0x0, 0x0, 0x0 b'') = -14")
