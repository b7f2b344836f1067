"""The time subsystem's syscalls: POSIX clocks (the architected counter; the realtime
clocks add the RTC's wall-clock offset), sleeping, and getrandom (RNDR).

Clock ids are Linux's (include/uapi/linux/time.h); a negative id is a CPU-time clock
(clock_getcpuclockid(3)): ~pid << 3 | perthread << 2 | which, pid 0 meaning the caller.
CPU time is read as the monotonic clock: the process has the CPU whenever it is not idle."""

from __future__ import annotations

import errno
import struct

from .errors import FsError
from .sched import ERESTART_RESTARTBLOCK, ERESTARTNOHAND, Interrupted
from .sysctx import (
    SyscallContext,
    _s32,
)
from .systable import SyscallSet
from .uapi import NSEC, TIMESPEC_SIZE, pack_timespec, pack_timeval, timespec_ns

CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3
CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME = 4, 5, 6, 7
CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI = 8, 9, 11
# TAI is the realtime clock plus the TAI offset, which is 0 until NTP sets it.
REALTIME_CLOCKS = (CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM, CLOCK_TAI)
# The clocks clock_nanosleep may sleep on; the other known ones have no nsleep (EOPNOTSUPP).
SLEEP_CLOCKS = (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_BOOTTIME,
                CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI)
KNOWN_CLOCKS = (*SLEEP_CLOCKS, CLOCK_THREAD_CPUTIME_ID, CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE,
                CLOCK_MONOTONIC_COARSE)
CPUCLOCK_PERTHREAD, CPUCLOCK_MAX = 4, 3
TIMER_ABSTIME = 1
GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE = 1, 2, 4
GETRANDOM_MAX = 1 << 20  # the bytes one getrandom returns at most (a short read beyond)

calls = SyscallSet("time")


class Clock(SyscallContext):
    def clock_ns(self, clock: int) -> int:
        """The reading of a POSIX clock: the realtime ones are the monotonic clock (the
        architected counter, as the vDSO reads it) plus the wall-clock offset from the RTC."""
        if clock in REALTIME_CLOCKS:
            return self.p.kernel.realtime_ns()
        return self.now_ns()

    def _cpu_clock(self, clock: int) -> bool:
        """Whether negative `clock` names a CPU-time clock of this process or of one of its threads."""
        if clock & 3 == CPUCLOCK_MAX:
            return False  # no such counter; a posix-clock device's descriptor too (CLOCKFD): there are none
        pid = ~(clock >> 3)
        if clock & CPUCLOCK_PERTHREAD:
            return pid == 0 or any(t.tid == pid for t in self.p.threads)
        return pid in (0, self.p.pid)

    def _clock(self, clock: int) -> int:
        """The clock id of a register (a clockid_t), EINVAL if no such clock exists."""
        clock = _s32(clock)
        if clock in KNOWN_CLOCKS or (clock < 0 and self._cpu_clock(clock)):
            return clock
        raise FsError(errno.EINVAL)

    @calls("clock_gettime")
    def sys_clock_gettime(self, clock: int, tp: int, *_: int) -> int:
        ns = self.clock_ns(self._clock(clock))
        self.p.write(tp, pack_timespec(ns))
        return 0

    @calls("clock_getres")
    def sys_clock_getres(self, clock: int, tp: int, *_: int) -> int:
        self._clock(clock)
        if tp:
            self.p.write(tp, pack_timespec(max(1, NSEC // self.p.cpu.cntfrq)))
        return 0

    @calls("gettimeofday")
    def sys_gettimeofday(self, tv: int, tz: int, *_: int) -> int:
        if tv:
            ns = self.p.kernel.realtime_ns()
            self.p.write(tv, pack_timeval(ns))
        if tz:
            self.p.write(tz, struct.pack("<ii", 0, 0))  # struct timezone: UTC, no DST
        return 0

    def _request(self, req: int) -> int:
        """The struct timespec a sleep asks for, in ns: EFAULT if it cannot be read (NULL
        included), EINVAL unless 0 <= tv_sec and 0 <= tv_nsec < 10^9 (timespec64_valid)."""
        if not req:
            raise MemoryError
        return timespec_ns(self.p.read(req, TIMESPEC_SIZE))

    def _sleep(self, ns: int, rem: int = 0, code: int = ERESTART_RESTARTBLOCK) -> int:
        """Sleep `ns`; a signal cuts it short with the time left written to `rem` (if
        given) and `code`: EINTR once a handler runs (ERESTART_RESTARTBLOCK, or for an
        absolute sleep ERESTARTNOHAND), else the sleep starts again."""
        if ns > 0:
            start = self.now_ns()
            try:
                self.block(lambda: False, ns, console=False, what="sleeping")
            except Interrupted:
                if rem:
                    self.p.write(rem, pack_timespec(max(0, ns - (self.now_ns() - start))))
                raise Interrupted(code) from None
        return 0

    @calls("nanosleep")
    def sys_nanosleep(self, req: int, rem: int, *_: int) -> int:
        return self._sleep(self._request(req), rem)

    @calls("clock_nanosleep")
    def sys_clock_nanosleep(self, clock: int, flags: int, req: int, rem: int, *_: int) -> int:
        """Linux's checks in its order: the clock (EINVAL), whether it can be slept on
        (EOPNOTSUPP), the request (EFAULT, EINVAL). TIMER_ABSTIME sleeps until the clock
        reads the request; a time already past returns at once."""
        clock = self._clock(clock)
        if clock >= 0 and clock not in SLEEP_CLOCKS:
            return -errno.EOPNOTSUPP
        t = self._request(req)
        if clock < 0 and clock & CPUCLOCK_PERTHREAD and ~(clock >> 3) in (0, self.p.current.tid):
            return -errno.EINVAL  # the caller's own CPU clock: it cannot advance while it sleeps
        if flags & TIMER_ABSTIME:
            return self._sleep(t - self.clock_ns(clock), 0, ERESTARTNOHAND)
        return self._sleep(t, rem)

    @calls("getrandom")
    def sys_getrandom(self, buf: int, count: int, flags: int, *_: int) -> int:
        flags &= 0xFFFFFFFF
        if flags & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) or \
                flags & (GRND_RANDOM | GRND_INSECURE) == GRND_RANDOM | GRND_INSECURE:
            return -errno.EINVAL
        count = self.user_span(buf, min(count, GETRANDOM_MAX), True)
        out = bytearray()
        while len(out) < count:
            out += self.p.cpu.rndr().to_bytes(8, "little")
        if count:
            self.p.write(buf, bytes(out[:count]))
        return count
