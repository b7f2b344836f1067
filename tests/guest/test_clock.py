"""The time syscalls (guest/clock.py) on a real Process over the fake CPU of
tests/guest/test_syscall_fuzz.py, with Linux's answers: clock_gettime(2) / clock_getres(2)
(EINVAL for a clock that does not exist, clockid_t being 32 bits; EFAULT for a bad buffer),
gettimeofday(2), nanosleep(2) and clock_nanosleep(2) (EINVAL unless 0 <= tv_sec and
0 <= tv_nsec < 10^9, EFAULT for an unreadable request, EOPNOTSUPP for a clock that cannot be
slept on, TIMER_ABSTIME sleeping until the named clock reads the request), getrandom(2)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import pytest

from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.sched import Blocked

from .process_support import WILD, call, scratch
from .test_syscall_fuzz import make_process

NSEC = 1_000_000_000
REALTIME, MONOTONIC, PROCESS_CPU, THREAD_CPU, MONO_RAW, RT_COARSE, MONO_COARSE, BOOTTIME = range(8)
RT_ALARM, BOOT_ALARM, TAI = 8, 9, 11
TIMER_ABSTIME = 1
EPOCH_OFFSET = 1_700_000_000 * NSEC + 250_000_000  # the wall clock's distance from the counter
RNDR = 0x1234_5678_9ABC_DEF0  # the fake CPU's RNDR value
SLACK = 200_000  # ns: the fake counter moves 1 us per read


class Timer:
    """The GIC and the virtual timer: a WFI with a deadline wakes when the counter reaches it."""

    def __init__(self, p: Process) -> None:
        self.cpu = p.kernel.cpu
        self.deadlines: list[int | None] = []

    def wait(self, deadline: int | None) -> int:
        self.deadlines.append(deadline)
        assert deadline is not None, "a sleep that never ends"
        self.cpu.t = max(self.cpu.t, deadline)  # cntfrq is 1 GHz: a tick is a nanosecond
        return 1


@pytest.fixture
def proc() -> Iterator[Process]:
    try:
        p = make_process()
        cpu = p.kernel.cpu
        p.kernel.realtime_ns = lambda: cpu.cntvct() + EPOCH_OFFSET
        timer = Timer(p)
        p.kernel.irq, p.kernel.wait = timer, timer.wait
        yield p
    finally:
        Store.current = None


def ts(p: Process, buf: int) -> tuple[int, int]:
    sec, nsec = struct.unpack("<qq", p.read(buf, 16))
    return sec, nsec


def cpu_clock(pid: int, which: int = 2, thread: bool = False) -> int:
    """clock_getcpuclockid's encoding: ~pid << 3 | perthread << 2 | which."""
    return (~pid << 3) | (4 if thread else 0) | which


def test_gettime_splits_the_clock_into_seconds_and_nanoseconds(proc: Process) -> None:
    buf = scratch(proc)
    proc.kernel.cpu.t = 5 * NSEC + 7 - 1000  # the next counter read is 5 s + 7 ns
    assert call(proc, "clock_gettime", MONOTONIC, buf) == 0
    assert ts(proc, buf) == (5, 7)
    proc.kernel.cpu.t = 3 * NSEC - 1 - 1000
    assert call(proc, "clock_gettime", BOOTTIME, buf) == 0
    assert ts(proc, buf) == (2, NSEC - 1)


@pytest.mark.parametrize("clock", [REALTIME, RT_COARSE, RT_ALARM, TAI])
def test_realtime_clocks_read_the_wall_clock(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    assert call(proc, "clock_gettime", clock, buf) == 0
    sec, nsec = ts(proc, buf)
    assert sec == EPOCH_OFFSET // NSEC and 0 <= nsec < NSEC


@pytest.mark.parametrize("clock", [MONOTONIC, PROCESS_CPU, THREAD_CPU, MONO_RAW, MONO_COARSE, BOOTTIME,
                                   BOOT_ALARM, cpu_clock(0), cpu_clock(0, thread=True), cpu_clock(0, 0),
                                   cpu_clock(0, 1)])
def test_monotonic_and_cpu_clocks_read_the_counter(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    proc.kernel.cpu.t = 42 * NSEC
    assert call(proc, "clock_gettime", clock, buf) == 0
    assert ts(proc, buf)[0] == 42


def test_a_second_threads_clock_is_a_thread_clock_not_a_process_clock(proc: Process) -> None:
    buf = scratch(proc)
    other = proc.sched.new_thread(proc)
    proc.sched.live -= 1  # counted as not alive: the caller may still wait in place
    assert other.tid != proc.pid
    assert call(proc, "clock_gettime", cpu_clock(other.tid, thread=True), buf) == 0
    assert call(proc, "clock_gettime", cpu_clock(other.tid), buf) == -errno.EINVAL  # not a process
    proc.write(buf, struct.pack("<qq", 0, 1000))
    result, slept = sleep(proc, "clock_nanosleep", cpu_clock(other.tid, thread=True), 0, buf, 0)
    assert result == 0 and 1000 <= slept <= 1000 + SLACK  # another thread's clock may be slept on


def test_cpu_clocks_of_this_process_and_its_thread_by_id(proc: Process) -> None:
    buf = scratch(proc)
    tid = proc.current.tid
    assert call(proc, "clock_gettime", cpu_clock(proc.pid), buf) == 0
    assert call(proc, "clock_gettime", cpu_clock(tid, thread=True), buf) == 0
    assert call(proc, "clock_getres", cpu_clock(proc.pid, 1), buf) == 0
    # Nobody else's: no such process, no such thread.
    others = (4242, proc.pid + 1, proc.pid + 2, 2 * proc.pid, 2 * proc.pid + 1, tid + 1, 2 * tid + 1)
    for clock in [cpu_clock(pid) for pid in others] + [cpu_clock(pid, thread=True) for pid in others]:
        assert call(proc, "clock_gettime", clock, buf) == -errno.EINVAL
        assert call(proc, "clock_getres", clock, buf) == -errno.EINVAL


@pytest.mark.parametrize("clock", [10, 12, 15, 16, 0x7FFF_FFFF, -1, -5, cpu_clock(0, 3), cpu_clock(0, 3, True),
                                   (1 << 32) - 5])
def test_unknown_clocks_are_einval_and_write_nothing(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    proc.write(buf, b"\xaa" * 16)
    assert call(proc, "clock_gettime", clock, buf) == -errno.EINVAL
    assert call(proc, "clock_getres", clock, buf) == -errno.EINVAL
    assert call(proc, "clock_getres", clock, 0) == -errno.EINVAL
    assert proc.read(buf, 16) == b"\xaa" * 16


def test_clockid_is_the_low_32_bits_of_the_register(proc: Process) -> None:
    buf = scratch(proc)
    assert call(proc, "clock_gettime", (1 << 32) | REALTIME, buf) == 0
    assert ts(proc, buf)[0] == EPOCH_OFFSET // NSEC


def test_gettime_to_a_bad_buffer_is_efault(proc: Process) -> None:
    assert call(proc, "clock_gettime", MONOTONIC, WILD) == -errno.EFAULT
    assert call(proc, "clock_gettime", REALTIME, 0) == -errno.EFAULT


def test_getres_is_the_counter_period(proc: Process) -> None:
    buf = scratch(proc)
    assert call(proc, "clock_getres", MONOTONIC, 0) == 0  # no buffer: just whether the clock exists
    assert call(proc, "clock_getres", REALTIME, buf) == 0
    assert ts(proc, buf) == (0, 1)  # a 1 GHz counter: 1 ns
    proc.kernel.cpu.cntfrq = 62_500_000
    assert call(proc, "clock_getres", BOOTTIME, buf) == 0
    assert ts(proc, buf) == (0, 16)
    proc.kernel.cpu.cntfrq = 4 * NSEC  # finer than a nanosecond still reports one
    assert call(proc, "clock_getres", MONOTONIC, buf) == 0
    assert ts(proc, buf) == (0, 1)
    assert call(proc, "clock_getres", MONOTONIC, WILD) == -errno.EFAULT


def test_gettimeofday_gives_seconds_microseconds_and_a_utc_timezone(proc: Process) -> None:
    buf = scratch(proc)
    proc.kernel.realtime_ns = lambda: 1_650_000_123 * NSEC + 456_789_321
    proc.write(buf, b"\xff" * 32)
    assert call(proc, "gettimeofday", buf, buf + 16) == 0
    assert struct.unpack("<qq", proc.read(buf, 16)) == (1_650_000_123, 456_789)
    assert proc.read(buf + 16, 16) == bytes(8) + b"\xff" * 8  # struct timezone is two ints
    assert call(proc, "gettimeofday", 0, 0) == 0
    proc.write(buf, b"\xff" * 16)
    assert call(proc, "gettimeofday", 0, buf) == 0
    assert proc.read(buf, 16) == bytes(8) + b"\xff" * 8
    assert call(proc, "gettimeofday", WILD, 0) == -errno.EFAULT


def sleep(p: Process, name: str, *args: int) -> tuple[int | None, int]:
    """The call's result and how long it slept (ns of the counter)."""
    before = p.kernel.cpu.t
    result = call(p, name, *args)
    return result, p.kernel.cpu.t - before


@pytest.mark.parametrize(("sec", "nsec"), [(0, 1_000_000), (2, 500), (0, NSEC - 1), (1, 0), (0, 1)])
def test_nanosleep_sleeps_at_least_the_request(proc: Process, sec: int, nsec: int) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", sec, nsec))
    result, slept = sleep(proc, "nanosleep", buf, 0)
    want = sec * NSEC + nsec
    assert result == 0 and want <= slept <= want + SLACK
    result, slept = sleep(proc, "clock_nanosleep", MONOTONIC, 0, buf, 0)
    assert result == 0 and want <= slept <= want + SLACK


def test_with_other_threads_a_sleep_parks_the_thread_until_its_deadline(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", 1, 5))
    proc.sched.live += 1  # another thread is alive: the sleeper is parked, not idled in place
    try:
        before = proc.kernel.cpu.t
        with pytest.raises(Blocked) as exc:
            call(proc, "nanosleep", buf, 0)
    finally:
        proc.sched.live -= 1
    parked = exc.value
    assert parked.what == "sleeping" and parked.console is False and parked.ready() is False
    assert parked.deadline is not None and before + NSEC + 5 <= parked.deadline <= before + NSEC + 5 + SLACK


def test_a_zero_sleep_returns_at_once(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, bytes(16))
    timer: Timer = proc.kernel.irq
    assert sleep(proc, "nanosleep", buf, 0)[0] == 0
    assert sleep(proc, "clock_nanosleep", REALTIME, 0, buf, 0)[0] == 0
    assert timer.deadlines == []


BAD_TIMESPECS = [(0, -1), (0, NSEC), (0, NSEC + 5), (-1, 0), (-1, 500), (5, -(1 << 63)), (0, (1 << 63) - 1),
                 (-(1 << 63), 0)]


@pytest.mark.parametrize(("sec", "nsec"), BAD_TIMESPECS)
def test_a_bad_timespec_is_einval_without_sleeping(proc: Process, sec: int, nsec: int) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", sec, nsec))
    timer: Timer = proc.kernel.irq
    assert call(proc, "nanosleep", buf, buf + 16) == -errno.EINVAL
    for clock in (REALTIME, MONOTONIC, BOOTTIME, TAI):
        for flags in (0, TIMER_ABSTIME):
            assert call(proc, "clock_nanosleep", clock, flags, buf, buf + 16) == -errno.EINVAL
    assert timer.deadlines == []


def test_an_unreadable_request_is_efault(proc: Process) -> None:
    assert call(proc, "nanosleep", 0, 0) == -errno.EFAULT
    assert call(proc, "nanosleep", WILD, 0) == -errno.EFAULT
    assert call(proc, "clock_nanosleep", MONOTONIC, 0, 0, 0) == -errno.EFAULT
    assert call(proc, "clock_nanosleep", REALTIME, TIMER_ABSTIME, WILD, 0) == -errno.EFAULT


@pytest.mark.parametrize("clock", [10, 12, 16, -1, -5, cpu_clock(4242), 0x7FFF_FFFF])
def test_clock_nanosleep_on_an_unknown_clock_is_einval(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", 0, 1000))
    assert call(proc, "clock_nanosleep", clock, 0, buf, 0) == -errno.EINVAL
    assert call(proc, "clock_nanosleep", clock, 0, 0, 0) == -errno.EINVAL  # the clock is checked first


@pytest.mark.parametrize("clock", [THREAD_CPU, MONO_RAW, RT_COARSE, MONO_COARSE])
def test_clock_nanosleep_on_a_clock_without_sleep_is_eopnotsupp(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", 0, 1000))
    assert call(proc, "clock_nanosleep", clock, 0, buf, 0) == -errno.EOPNOTSUPP
    assert call(proc, "clock_nanosleep", clock, 0, WILD, 0) == -errno.EOPNOTSUPP  # before the request


def test_clock_nanosleep_on_the_callers_own_thread_clock_is_einval(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, struct.pack("<qq", 0, 1000))
    for clock in (cpu_clock(0, thread=True), cpu_clock(proc.current.tid, thread=True)):
        assert call(proc, "clock_nanosleep", clock, 0, buf, 0) == -errno.EINVAL
        assert call(proc, "clock_nanosleep", clock, 0, WILD, 0) == -errno.EFAULT  # the request first
    result, slept = sleep(proc, "clock_nanosleep", cpu_clock(0), 0, buf, 0)  # the process's clock sleeps
    assert result == 0 and 1000 <= slept <= 1000 + SLACK


@pytest.mark.parametrize("clock", [MONOTONIC, BOOTTIME, REALTIME, TAI, PROCESS_CPU])
def test_timer_abstime_sleeps_until_the_clock_reads_the_request(proc: Process, clock: int) -> None:
    buf, now = scratch(proc), scratch(proc)
    assert call(proc, "clock_gettime", clock, now) == 0
    sec, nsec = ts(proc, now)
    target = sec * NSEC + nsec + 3_000_000
    proc.write(buf, struct.pack("<qq", target // NSEC, target % NSEC))
    assert call(proc, "clock_nanosleep", clock, TIMER_ABSTIME, buf, 0) == 0
    assert call(proc, "clock_gettime", clock, now) == 0
    sec, nsec = ts(proc, now)
    assert target <= sec * NSEC + nsec <= target + SLACK


@pytest.mark.parametrize("clock", [MONOTONIC, REALTIME])
def test_timer_abstime_in_the_past_returns_at_once(proc: Process, clock: int) -> None:
    buf = scratch(proc)
    timer: Timer = proc.kernel.irq
    proc.kernel.cpu.t = 10 * NSEC
    proc.write(buf, struct.pack("<qq", 9, 0))
    assert call(proc, "clock_nanosleep", clock, TIMER_ABSTIME, buf, 0) == 0
    proc.write(buf, bytes(16))
    assert call(proc, "clock_nanosleep", clock, TIMER_ABSTIME, buf, 0) == 0
    assert timer.deadlines == []


def test_flags_other_than_timer_abstime_leave_a_relative_sleep(proc: Process) -> None:
    buf = scratch(proc)
    proc.kernel.cpu.t = 10 * NSEC
    proc.write(buf, struct.pack("<qq", 0, 2_000_000))  # as absolute time: long past
    for flags in (2, 0x100, 1 << 32):
        result, slept = sleep(proc, "clock_nanosleep", MONOTONIC, flags, buf, 0)
        assert result == 0 and 2_000_000 <= slept <= 2_000_000 + SLACK


def test_getrandom_fills_exactly_count_bytes_from_rndr(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, b"\xee" * 64)
    stream = RNDR.to_bytes(8, "little") * 8
    for flags in (0, 1, 2, 4, 5):  # GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE
        assert call(proc, "getrandom", buf, 21, flags) == 21
        assert proc.read(buf, 64) == stream[:21] + b"\xee" * 43
    assert call(proc, "getrandom", buf, 0, 0) == 0
    assert call(proc, "getrandom", 0, 0, 0) == 0  # nothing to copy: no fault


@pytest.mark.parametrize("flags", [8, 0x10, 0x80000000, 2 | 4, 1 | 2 | 4])
def test_getrandom_bad_flags_are_einval(proc: Process, flags: int) -> None:
    buf = scratch(proc)
    proc.write(buf, b"\xee" * 16)
    assert call(proc, "getrandom", buf, 16, flags) == -errno.EINVAL
    assert proc.read(buf, 16) == b"\xee" * 16


def test_getrandom_stops_at_the_first_fault(proc: Process) -> None:
    buf = scratch(proc, 0x2000)
    assert call(proc, "munmap", buf + 0x1000, 0x1000) == 0
    assert call(proc, "getrandom", buf + 0x1000 - 12, 64, 0) == 12
    assert proc.read(buf + 0x1000 - 12, 12) == (RNDR.to_bytes(8, "little") * 2)[:12]
    assert call(proc, "getrandom", buf + 0x1000, 64, 0) == -errno.EFAULT
    assert call(proc, "getrandom", WILD, 1, 0) == -errno.EFAULT


def test_a_huge_getrandom_is_a_short_read(proc: Process) -> None:
    size = 3 << 20
    buf = scratch(proc, size)
    n = call(proc, "getrandom", buf, size, 0)
    assert n is not None and 256 <= n < size
    assert proc.read(buf, n) == RNDR.to_bytes(8, "little") * (n // 8) + RNDR.to_bytes(8, "little")[: n % 8]
    assert proc.read(buf + n, 16) == bytes(16)  # untouched past the count it returned
