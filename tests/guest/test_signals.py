"""The signal syscalls (guest/signals.py) on a real Process over the fake CPU of
tests/guest/test_syscall_fuzz.py, with Linux's answers (rt_sigaction(2), sigprocmask(2),
sigaltstack(2), kill(2), signal(7)): sigset_t is 8 bytes, signal n at bit n - 1; SIGKILL
and SIGSTOP can be neither caught nor blocked."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import pytest
from unicorn.arm64_const import UC_ARM64_REG_PC

from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.sched import ProcessExit

from .process_support import WILD, call, scratch
from .test_syscall_fuzz import make_process

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGINT, SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGTERM, SIGCHLD, SIGSTOP = 2, 9, 10, 11, 12, 15, 17, 19


def bit(sig: int) -> int:
    return 1 << (sig - 1)


@pytest.fixture
def proc() -> Iterator[Process]:
    try:
        yield make_process()
    finally:
        Store.current = None


def mask_of(p: Process, buf: int) -> int:
    assert call(p, "rt_sigprocmask", SIG_BLOCK, 0, buf, 8) == 0
    return int.from_bytes(p.read(buf, 8), "little")


def set_mask(p: Process, buf: int, how: int, mask: int, size: int = 8) -> int | None:
    p.write(buf, mask.to_bytes(8, "little"))
    return call(p, "rt_sigprocmask", how, buf, buf + 8, size)


def test_sigprocmask_block_unblock_setmask(proc: Process) -> None:
    buf = scratch(proc)
    assert mask_of(proc, buf + 64) == 0
    assert set_mask(proc, buf, SIG_BLOCK, bit(SIGUSR1) | bit(SIGINT)) == 0
    assert int.from_bytes(proc.read(buf + 8, 8), "little") == 0  # the old mask
    assert set_mask(proc, buf, SIG_BLOCK, bit(SIGTERM)) == 0
    assert int.from_bytes(proc.read(buf + 8, 8), "little") == bit(SIGUSR1) | bit(SIGINT)
    assert mask_of(proc, buf + 64) == bit(SIGUSR1) | bit(SIGINT) | bit(SIGTERM)
    assert set_mask(proc, buf, SIG_UNBLOCK, bit(SIGINT) | bit(SIGCHLD)) == 0
    assert mask_of(proc, buf + 64) == bit(SIGUSR1) | bit(SIGTERM)
    assert set_mask(proc, buf, SIG_SETMASK, bit(SIGUSR2) | bit(64)) == 0
    assert int.from_bytes(proc.read(buf + 8, 8), "little") == bit(SIGUSR1) | bit(SIGTERM)
    assert mask_of(proc, buf + 64) == bit(SIGUSR2) | bit(64)


def test_sigkill_and_sigstop_are_never_blocked(proc: Process) -> None:
    buf = scratch(proc)
    assert set_mask(proc, buf, SIG_SETMASK, (1 << 64) - 1) == 0
    assert mask_of(proc, buf + 64) == ((1 << 64) - 1) & ~(bit(SIGKILL) | bit(SIGSTOP))
    assert set_mask(proc, buf, SIG_SETMASK, 0) == 0
    assert set_mask(proc, buf, SIG_BLOCK, bit(SIGKILL) | bit(SIGSTOP) | bit(SIGUSR1)) == 0
    assert mask_of(proc, buf + 64) == bit(SIGUSR1)


def test_sigprocmask_refusals(proc: Process) -> None:
    buf = scratch(proc)
    assert set_mask(proc, buf, SIG_BLOCK, bit(SIGUSR1)) == 0
    proc.write(buf + 8, b"\xaa" * 8)
    # A bad `how` is EINVAL, the mask and the old-mask buffer left as they were.
    assert set_mask(proc, buf, 3, bit(SIGTERM)) == -errno.EINVAL
    assert proc.read(buf + 8, 8) == b"\xaa" * 8
    assert mask_of(proc, buf + 64) == bit(SIGUSR1)
    # A sigsetsize other than sizeof(sigset_t) is EINVAL, even without a set.
    for size in (0, 4, 7, 9, 16, 128):
        assert set_mask(proc, buf, SIG_SETMASK, 0, size) == -errno.EINVAL
        assert call(proc, "rt_sigprocmask", SIG_BLOCK, 0, buf + 8, size) == -errno.EINVAL
    assert mask_of(proc, buf + 64) == bit(SIGUSR1)
    # Neither set: nothing to do.
    assert call(proc, "rt_sigprocmask", 99, 0, 0, 8) == 0
    assert call(proc, "rt_sigprocmask", SIG_SETMASK, WILD, 0, 8) == -errno.EFAULT
    assert call(proc, "rt_sigprocmask", SIG_BLOCK, 0, WILD, 8) == -errno.EFAULT
    assert mask_of(proc, buf + 64) == bit(SIGUSR1)


def test_thread_masks_are_per_thread(proc: Process) -> None:
    buf = scratch(proc)
    assert set_mask(proc, buf, SIG_SETMASK, bit(SIGUSR2)) == 0
    assert proc.current.sigmask == bit(SIGUSR2)


def sigaction(handler: int, flags: int = 0, restorer: int = 0, mask: int = 0) -> bytes:
    return struct.pack("<QQQQ", handler, flags, restorer, mask)  # arm64 struct k_sigaction


def test_sigaction_records_and_returns_the_old_action(proc: Process) -> None:
    buf = scratch(proc)
    first, second = sigaction(0x401000, 0x04000000, 0x402000, bit(SIGINT)), sigaction(1)
    proc.write(buf, first)
    proc.write(buf + 32, b"\xee" * 32)
    assert call(proc, "rt_sigaction", SIGUSR1, buf, buf + 32, 8) == 0
    assert proc.read(buf + 32, 32) == bytes(32)  # SIG_DFL, nothing set
    proc.write(buf, second)
    assert call(proc, "rt_sigaction", SIGUSR1, buf, buf + 32, 8) == 0
    assert proc.read(buf + 32, 32) == first
    assert call(proc, "rt_sigaction", SIGUSR1, 0, buf + 64, 8) == 0
    assert proc.read(buf + 64, 32) == second
    assert call(proc, "rt_sigaction", SIGUSR2, 0, buf + 64, 8) == 0
    assert proc.read(buf + 64, 32) == bytes(32)
    for sig in (1, 64):
        assert call(proc, "rt_sigaction", sig, buf, 0, 8) == 0
        assert proc.state.sigactions[sig] == second


def test_sigaction_refusals(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, sigaction(0x401000))
    for sig in (0, 65, 1 << 32, (1 << 64) - 1):
        assert call(proc, "rt_sigaction", sig, buf, buf + 32, 8) == -errno.EINVAL
    for sig in (SIGKILL, SIGSTOP):
        assert call(proc, "rt_sigaction", sig, buf, 0, 8) == -errno.EINVAL
        assert call(proc, "rt_sigaction", sig, 0, buf + 32, 8) == 0  # reading them is allowed
    for size in (0, 4, 16):
        assert call(proc, "rt_sigaction", SIGUSR1, buf, 0, size) == -errno.EINVAL
    assert proc.state.sigactions == {}
    assert call(proc, "rt_sigaction", SIGUSR1, WILD, 0, 8) == -errno.EFAULT
    assert call(proc, "rt_sigaction", SIGUSR1, 0, WILD, 8) == -errno.EFAULT


def test_sigaltstack(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf + 24, b"\xee" * 24)
    assert call(proc, "sigaltstack", 0, buf + 24) == 0
    assert struct.unpack("<QiiQ", proc.read(buf + 24, 24)) == (0, 2, 0, 0)  # SS_DISABLE
    stack = struct.pack("<QiiQ", buf + 0x1000, 0, 0, 0x2000)
    proc.write(buf, stack)
    assert call(proc, "sigaltstack", buf, buf + 24) == 0
    assert struct.unpack("<QiiQ", proc.read(buf + 24, 24)) == (0, 2, 0, 0)
    assert call(proc, "sigaltstack", 0, buf + 48) == 0
    assert proc.read(buf + 48, 24) == stack
    assert call(proc, "sigaltstack", WILD, 0) == -errno.EFAULT
    assert call(proc, "sigaltstack", 0, WILD) == -errno.EFAULT


@pytest.mark.parametrize("name", ["kill", "tkill", "tgkill"])
def test_a_fatal_signal_ends_the_process_with_128_plus_it(proc: Process, name: str) -> None:
    args = {"kill": (proc.pid,), "tkill": (proc.current.tid,), "tgkill": (proc.pid, proc.current.tid)}[name]
    proc.uc.reg_write(UC_ARM64_REG_PC, 0x400080)  # after the svc of tiny_elf
    for sig in (SIGINT, 6, SIGKILL, SIGSEGV, SIGTERM):
        assert call(proc, name, *args, sig) == 0  # queued: the syscall itself returns
        with pytest.raises(ProcessExit) as ended:
            proc.syscalls.do_signal()  # the return to EL0 takes the default action
        assert ended.value.status == 128 + sig


@pytest.mark.parametrize("name", ["kill", "tkill", "tgkill"])
def test_signal_zero_and_ignored_signals_return_0(proc: Process, name: str) -> None:
    args = {"kill": (proc.pid,), "tkill": (proc.current.tid,), "tgkill": (proc.pid, proc.current.tid)}[name]
    for sig in (0, SIGCHLD, 28):  # SIGCHLD and SIGWINCH are ignored by default
        assert call(proc, name, *args, sig) == 0
    for sig in (65, 1 << 32):
        assert call(proc, name, *args, sig) == -errno.EINVAL
