"""The threads subsystem (guest/threads.py) on a real Process over the fake CPU of
tests/guest/test_syscall_fuzz.py, called through the syscall table as EL0 would: clone of a
thread (its registers, stack, TLS and TID stores), thread exit and CLONE_CHILD_CLEARTID's
wake-up, futex(2) with Linux's checks in Linux's order (the timeout first, then the clock,
then the command's: EFAULT, EINVAL, ENOSYS, EAGAIN, ETIMEDOUT) and its wake counts, and the
small thread syscalls (set_robust_list(2), sched_getaffinity(2), sched_setaffinity(2))."""

from __future__ import annotations

import errno
import struct

import pytest
from unicorn import arm64_const as a64

from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.sched import BLOCKED, DEAD, RUNNABLE, ProcessExit, Thread
from unirealm.guest.threads import (
    CLONE_CHILD_CLEARTID,
    CLONE_CHILD_SETTID,
    CLONE_FILES,
    CLONE_FS,
    CLONE_PARENT_SETTID,
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_SYSVSEM,
    CLONE_THREAD,
    CLONE_VM,
    FUTEX_CLOCK_REALTIME,
    FUTEX_CMP_REQUEUE,
    FUTEX_REQUEUE,
    FUTEX_WAIT,
    FUTEX_WAIT_BITSET,
    FUTEX_WAKE,
    FUTEX_WAKE_BITSET,
)

from .process_support import WILD, call, scratch
from .test_syscall_fuzz import make_process

NSEC = 1_000_000_000
PRIVATE = 128  # FUTEX_PRIVATE_FLAG
# what glibc's pthread_create passes
PTHREAD_FLAGS = (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS
                 | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID)


@pytest.fixture
def proc() -> Process:
    try:
        yield make_process()
    finally:
        Store.current = None


def waiters(p: Process, n: int, addr: int, bitset: int = 0xFFFFFFFF) -> list[Thread]:
    """`n` threads of `p` parked in FUTEX_WAIT on `addr`, as if each had called it."""
    out = []
    for _ in range(n):
        t = p.sched.new_thread(p)
        p.sched.futex_wait(t, (p, addr), bitset, None)
        out.append(t)
    return out


def timespec(p: Process, addr: int, sec: int, nsec: int) -> int:
    p.write(addr, struct.pack("<qq", sec, nsec))
    return addr


# --- clone of a thread ---------------------------------------------------------------------
def test_pthread_create_clone(proc: Process) -> None:
    buf = scratch(proc)
    proc.uc.reg_write(a64.UC_ARM64_REG_X9, 99)
    proc.current.sigmask = 1 << 4
    tid = call(proc, "clone", PTHREAD_FLAGS, buf + 0x3000, buf + 8, 0x5151, buf + 16)
    assert tid is not None and tid > proc.pid
    (main, t) = proc.threads
    assert main is proc.current and t.tid == tid and t.proc is proc
    assert t.state == RUNNABLE and t in proc.sched.runq and proc.sched.live == 2
    assert proc.read(buf + 8, 4) == struct.pack("<I", tid)  # CLONE_PARENT_SETTID
    assert proc.read(buf + 16, 4) == bytes(4)  # no CLONE_CHILD_SETTID
    assert t.clear_tid == buf + 16 and t.sigmask == 1 << 4
    assert t.ctx is not None
    assert t.ctx.reg_read(a64.UC_ARM64_REG_X0) == 0
    assert t.ctx.reg_read(a64.UC_ARM64_REG_SP) == buf + 0x3000
    assert t.ctx.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 0x5151
    assert t.ctx.reg_read(a64.UC_ARM64_REG_X9) == 99
    assert t.ctx.reg_read(a64.UC_ARM64_REG_PC) == proc.uc.reg_read(a64.UC_ARM64_REG_PC)


def test_thread_clone_without_a_stack_or_tls_keeps_the_callers(proc: Process) -> None:
    buf = scratch(proc)
    sp = proc.uc.reg_read(a64.UC_ARM64_REG_SP)
    proc.uc.reg_write(a64.UC_ARM64_REG_TPIDR_EL0, 0x4242)
    tid = call(proc, "clone", CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_CHILD_SETTID, 0, 0, 0x9999, buf)
    t = proc.threads[1]
    assert t.ctx is not None and t.ctx.reg_read(a64.UC_ARM64_REG_SP) == sp
    assert t.ctx.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 0x4242  # no CLONE_SETTLS: 0x9999 unused
    assert proc.read(buf, 4) == struct.pack("<I", tid)  # CHILD_SETTID: the same memory
    assert t.clear_tid == 0


def test_thread_clone_tid_store_to_a_wild_pointer_is_efault(proc: Process) -> None:
    assert call(proc, "clone", CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_PARENT_SETTID, 0, WILD, 0, 0) \
        == -errno.EFAULT


# --- thread exit ---------------------------------------------------------------------------
def test_exit_of_the_last_thread_ends_the_process(proc: Process) -> None:
    with pytest.raises(ProcessExit) as end:
        call(proc, "exit", 0x1234)
    assert end.value.status == 0x34


def test_exit_of_a_thread_clears_its_tid_and_wakes_the_joiner(proc: Process) -> None:
    buf = scratch(proc)
    call(proc, "clone", PTHREAD_FLAGS, buf + 0x3000, buf + 8, 0, buf + 16)
    main, t = proc.threads
    proc.write(buf + 16, struct.pack("<I", t.tid))
    # main joins: FUTEX_WAIT on the TID word
    assert call(proc, "futex", buf + 16, FUTEX_WAIT, t.tid, 0, 0, 0) is None
    assert main.state == BLOCKED
    proc.sched.runq.remove(t)
    proc.sched.switch(main, t)
    assert call(proc, "exit", 0) is None
    assert t.state == DEAD and proc.threads == [main]
    assert proc.read(buf + 16, 4) == bytes(4)
    assert main.state == RUNNABLE and main.result == 0


def test_exit_with_a_clear_tid_address_no_longer_mapped(proc: Process) -> None:
    call(proc, "clone", CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_CHILD_CLEARTID, 0, 0, 0, WILD)
    main, t = proc.threads
    proc.sched.runq.remove(t)
    proc.sched.switch(main, t)
    assert call(proc, "exit", 0) is None  # the store faults silently, as Linux's put_user there
    assert t.state == DEAD and proc.threads == [main]


def test_set_tid_address_and_gettid(proc: Process) -> None:
    assert call(proc, "set_tid_address", 0x1230) == proc.current.tid == proc.pid
    assert proc.current.clear_tid == 0x1230
    assert call(proc, "gettid") == proc.pid


def test_set_robust_list_takes_only_its_own_size(proc: Process) -> None:
    assert call(proc, "set_robust_list", 0x5000, 24) == 0
    assert proc.current.robust_list == (0x5000, 24)
    for length in (0, 16, 23, 25, 1 << 32 | 24):
        assert call(proc, "set_robust_list", 0x6000, length) == -errno.EINVAL
    assert proc.current.robust_list == (0x5000, 24)


# --- affinity ------------------------------------------------------------------------------
def test_sched_getaffinity(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, b"\xff" * 16)
    assert call(proc, "sched_getaffinity", 0, 128, buf) == 8
    assert proc.read(buf, 16) == (1).to_bytes(8, "little") + b"\xff" * 8
    assert call(proc, "sched_getaffinity", proc.pid, 8, buf) == 8
    for size in (0, 4, 7, 9, 12):  # not a whole number of longs
        assert call(proc, "sched_getaffinity", 0, size, buf) == -errno.EINVAL
    assert call(proc, "sched_getaffinity", 0, 8, WILD) == -errno.EFAULT
    assert call(proc, "sched_getaffinity", proc.pid + 1000, 8, buf) == -errno.ESRCH
    assert call(proc, "sched_getaffinity", -1, 8, buf) == -errno.ESRCH


def test_sched_setaffinity(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, (0b11).to_bytes(8, "little"))
    assert call(proc, "sched_setaffinity", 0, 8, buf) == 0
    assert call(proc, "sched_setaffinity", proc.pid, 1, buf) == 0
    proc.write(buf, (0b10).to_bytes(8, "little"))  # only CPU 1, which does not exist
    assert call(proc, "sched_setaffinity", 0, 8, buf) == -errno.EINVAL
    assert call(proc, "sched_setaffinity", 0, 0, buf) == -errno.EINVAL  # an empty mask
    assert call(proc, "sched_setaffinity", 0, 8, WILD) == -errno.EFAULT
    proc.write(buf, (1).to_bytes(8, "little"))
    assert call(proc, "sched_setaffinity", proc.pid + 1000, 8, buf) == -errno.ESRCH


def test_sched_yield_and_membarrier(proc: Process) -> None:
    assert call(proc, "sched_yield") == 0
    assert not proc.sched.runq  # alone: it goes on
    call(proc, "clone", CLONE_VM | CLONE_THREAD | CLONE_SIGHAND, 0, 0, 0, 0)
    main, t = proc.threads
    assert call(proc, "sched_yield") == 0
    assert list(proc.sched.runq) == [t, main]  # behind the thread that can run
    assert call(proc, "membarrier", 0, 0) == 0


# --- futex ---------------------------------------------------------------------------------
def test_futex_wait_parks_on_the_word(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 5))
    me = proc.current
    assert call(proc, "futex", buf, FUTEX_WAIT | PRIVATE, 5, 0, 0, 0) is None
    assert me.state == BLOCKED and me.futex == ((proc, buf), 0xFFFFFFFF) and me.deadline is None


def test_futex_wait_compares_32_bits(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 5))
    assert call(proc, "futex", buf, FUTEX_WAIT, 6, 0, 0, 0) == -errno.EAGAIN
    assert call(proc, "futex", buf, FUTEX_WAIT, 0xFFFF_FFFF_0000_0005, 0, 0, 0) is None  # val is a u32


def test_futex_wait_timeouts(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 1))
    me = proc.current
    now = proc.sched.now_ns()
    ts = timespec(proc, buf + 64, 2, 500)
    assert call(proc, "futex", buf, FUTEX_WAIT, 1, ts, 0, 0) is None  # relative
    assert now + 2 * NSEC + 500 <= me.deadline <= proc.sched.now_ns() + 2 * NSEC + 500
    proc.sched.wake(me)
    assert call(proc, "futex", buf, FUTEX_WAIT_BITSET, 1, timespec(proc, buf + 64, 50, 7), 0, 0b100) is None
    assert me.deadline == 50 * NSEC + 7 and me.futex == ((proc, buf), 0b100)  # absolute CLOCK_MONOTONIC
    proc.sched.wake(me)
    proc.kernel.realtime_offset_ns = 1000 * NSEC
    assert call(proc, "futex", buf, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, 1,
                timespec(proc, buf + 64, 1050, 0), 0, 1) is None
    assert me.deadline == 50 * NSEC  # absolute CLOCK_REALTIME, on the monotonic clock
    proc.sched.wake(me)


def test_futex_wait_past_its_deadline_is_etimedout(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 1))
    assert call(proc, "futex", buf, FUTEX_WAIT, 1, timespec(proc, buf + 64, 0, 0), 0, 0) == -errno.ETIMEDOUT
    assert call(proc, "futex", buf, FUTEX_WAIT_BITSET, 1, timespec(proc, buf + 64, 0, 1), 0, 1) == -errno.ETIMEDOUT
    # the value is compared first: a changed word is EAGAIN even when the time is up
    assert call(proc, "futex", buf, FUTEX_WAIT, 2, timespec(proc, buf + 64, 0, 0), 0, 0) == -errno.EAGAIN
    assert proc.current.state != BLOCKED


@pytest.mark.parametrize("sec, nsec", [(-1, 0), (0, -1), (0, NSEC), (1, 1 << 40)])
def test_futex_wait_with_an_invalid_timespec_is_einval(proc: Process, sec: int, nsec: int) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 1))
    ts = timespec(proc, buf + 64, sec, nsec)
    assert call(proc, "futex", buf, FUTEX_WAIT, 1, ts, 0, 0) == -errno.EINVAL
    assert call(proc, "futex", buf, FUTEX_WAIT, 2, ts, 0, 0) == -errno.EINVAL  # before the compare
    assert call(proc, "futex", buf + 1, FUTEX_WAIT, 1, ts, 0, 0) == -errno.EINVAL


def test_futex_checks_come_in_linuxs_order(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 1))
    # the timeout is read first: a wild one is EFAULT even on a misaligned word
    assert call(proc, "futex", buf + 2, FUTEX_WAIT, 1, WILD, 0, 0) == -errno.EFAULT
    # FUTEX_CLOCK_REALTIME is only for FUTEX_WAIT_BITSET (Linux 5.13 on)
    for cmd in (FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        assert call(proc, "futex", buf, cmd | FUTEX_CLOCK_REALTIME, 1, 0, buf + 8, 1) == -errno.ENOSYS, cmd
    assert call(proc, "futex", buf + 2, FUTEX_WAKE | FUTEX_CLOCK_REALTIME, 1, 0, 0, 0) == -errno.ENOSYS
    # an unknown command is ENOSYS whatever the word
    assert call(proc, "futex", buf + 1, 2, 0, 0, 0, 0) == -errno.ENOSYS  # FUTEX_FD, gone since 2.6.26
    assert call(proc, "futex", buf, 0x7F, 0, 0, 0, 0) == -errno.ENOSYS


@pytest.mark.parametrize("op", [FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_REQUEUE,
                                FUTEX_CMP_REQUEUE])
def test_futex_on_a_misaligned_word_is_einval(proc: Process, op: int) -> None:
    buf = scratch(proc)
    for off in (1, 2, 3):
        assert call(proc, "futex", buf + off, op | PRIVATE, 0, 0, buf + 8, 1) == -errno.EINVAL


def test_futex_requeue_to_a_misaligned_word_is_einval(proc: Process) -> None:
    buf = scratch(proc)
    waiters(proc, 2, buf)
    assert call(proc, "futex", buf, FUTEX_REQUEUE, 0, 1, buf + 6, 0) == -errno.EINVAL
    assert len(proc.sched.futexes[(proc, buf)]) == 2


def test_futex_on_a_wild_word_is_efault(proc: Process) -> None:
    assert call(proc, "futex", WILD, FUTEX_WAIT, 0, 0, 0, 0) == -errno.EFAULT
    assert call(proc, "futex", WILD, FUTEX_CMP_REQUEUE, 0, 0, WILD + 8, 0) == -errno.EFAULT
    assert call(proc, "futex", WILD, FUTEX_WAKE, 1, 0, 0, 0) == 0  # nobody waits there


def test_futex_zero_bitsets_are_einval(proc: Process) -> None:
    buf = scratch(proc)
    assert call(proc, "futex", buf, FUTEX_WAIT_BITSET, 0, 0, 0, 0) == -errno.EINVAL
    assert call(proc, "futex", buf, FUTEX_WAKE_BITSET, 1, 0, 0, 0) == -errno.EINVAL
    assert call(proc, "futex", buf, FUTEX_WAKE_BITSET, 1, 0, 0, 1 << 32) == -errno.EINVAL  # val3 is a u32


def test_futex_wake_counts(proc: Process) -> None:
    buf = scratch(proc)
    ts = waiters(proc, 5, buf)
    assert call(proc, "futex", buf, FUTEX_WAKE | PRIVATE, 2, 0, 0, 0) == 2
    assert [t.state for t in ts] == [RUNNABLE, RUNNABLE, BLOCKED, BLOCKED, BLOCKED]
    # futex_wake's count is an int and at least one is woken: 0 and negative wake one
    assert call(proc, "futex", buf, FUTEX_WAKE, 0, 0, 0, 0) == 1
    assert call(proc, "futex", buf, FUTEX_WAKE, 0xFFFF_FFFF, 0, 0, 0) == 1
    assert call(proc, "futex", buf, FUTEX_WAKE, 0x7FFF_FFFF, 0, 0, 0) == 1  # INT_MAX: all that are left
    assert call(proc, "futex", buf, FUTEX_WAKE, 0x7FFF_FFFF, 0, 0, 0) == 0
    assert all(t.result == 0 for t in ts)


def test_futex_wake_only_its_own_word_and_bitset(proc: Process) -> None:
    buf = scratch(proc)
    a = waiters(proc, 1, buf, 0b01)
    b = waiters(proc, 1, buf, 0b10)
    other = waiters(proc, 1, buf + 4)
    assert call(proc, "futex", buf, FUTEX_WAKE_BITSET, 10, 0, 0, 0b10) == 1
    assert b[0].state == RUNNABLE and a[0].state == BLOCKED and other[0].state == BLOCKED
    assert call(proc, "futex", buf, FUTEX_WAKE, 10, 0, 0, 0b10) == 1  # FUTEX_WAKE ignores val3
    assert a[0].state == RUNNABLE and other[0].state == BLOCKED


def test_futex_requeue_moves_the_rest(proc: Process) -> None:
    buf = scratch(proc)
    ts = waiters(proc, 4, buf)
    # wake 1, move up to 2 (the count to move travels in the timeout register)
    assert call(proc, "futex", buf, FUTEX_REQUEUE, 1, 2, buf + 8, 0) == 3
    assert ts[0].state == RUNNABLE
    assert proc.sched.futexes[(proc, buf + 8)] == ts[1:3] and proc.sched.futexes[(proc, buf)] == [ts[3]]
    assert call(proc, "futex", buf, FUTEX_REQUEUE, 0, 0, buf + 8, 0) == 0  # wake 0 is 0 here
    assert call(proc, "futex", buf + 8, FUTEX_WAKE, 5, 0, 0, 0) == 2


@pytest.mark.parametrize("nr_wake, nr_requeue", [(-1, 0), (0, -1), (0xFFFF_FFFF, 1), (1, 0x8000_0000)])
def test_futex_requeue_with_negative_counts_is_einval(proc: Process, nr_wake: int, nr_requeue: int) -> None:
    buf = scratch(proc)
    ts = waiters(proc, 2, buf)
    assert call(proc, "futex", buf, FUTEX_REQUEUE, nr_wake, nr_requeue, buf + 8, 0) == -errno.EINVAL
    assert call(proc, "futex", buf, FUTEX_CMP_REQUEUE, nr_wake, nr_requeue, buf + 8, 0) == -errno.EINVAL
    assert [t.state for t in ts] == [BLOCKED, BLOCKED]


def test_futex_cmp_requeue_compares_the_word(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<I", 7))
    ts = waiters(proc, 3, buf)
    assert call(proc, "futex", buf, FUTEX_CMP_REQUEUE, 1, 5, buf + 8, 8) == -errno.EAGAIN
    assert [t.state for t in ts] == [BLOCKED] * 3
    assert call(proc, "futex", buf, FUTEX_CMP_REQUEUE, 1, 5, buf + 8, 0xFFFF_FFFF_0000_0007) == 3  # a u32
    assert (proc, buf) not in proc.sched.futexes and len(proc.sched.futexes[(proc, buf + 8)]) == 2


def test_tid_stores_are_one_word(proc: Process) -> None:
    """CLONE_PARENT_SETTID, CLONE_CHILD_SETTID and CLONE_CHILD_CLEARTID write a 32-bit word:
    the bytes after it are left alone."""
    buf = scratch(proc)
    proc.write(buf, b"\xaa" * 32)
    flags = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
    tid = call(proc, "clone", flags, 0, buf, 0, buf + 16)
    assert proc.read(buf, 8) == struct.pack("<I", tid) + b"\xaa" * 4
    assert proc.read(buf + 16, 8) == struct.pack("<I", tid) + b"\xaa" * 4
    main, t = proc.threads
    proc.sched.runq.remove(t)
    proc.sched.switch(main, t)
    assert call(proc, "exit", 0) is None
    assert proc.read(buf + 16, 8) == bytes(4) + b"\xaa" * 4
