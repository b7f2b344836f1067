"""The time subsystem's syscalls: POSIX clocks (the architected counter; the realtime
clocks add the RTC's wall-clock offset), sleeping, and getrandom (RNDR)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .sysctx import (
    NSEC,
    SyscallContext,
)
from .systable import SyscallSet

if TYPE_CHECKING:
    pass

REALTIME_CLOCKS = (0, 5, 8)  # CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM

calls = SyscallSet("time")


class Clock(SyscallContext):
    def clock_ns(self, clock: int) -> int:
        """The reading of a POSIX clock: the realtime ones are the monotonic clock (the
        architected counter, as the vDSO reads it) plus the wall-clock offset from the RTC."""
        if clock in REALTIME_CLOCKS:
            return self.p.kernel.realtime_ns()
        return self.now_ns()

    @calls("clock_gettime")
    def sys_clock_gettime(self, clock: int, tp: int, *_: int) -> int:
        ns = self.clock_ns(clock)
        self.p.write(tp, struct.pack("<qq", ns // NSEC, ns % NSEC))
        return 0

    @calls("clock_getres")
    def sys_clock_getres(self, clock: int, tp: int, *_: int) -> int:
        if tp:
            self.p.write(tp, struct.pack("<qq", 0, max(1, NSEC // self.p.cpu.cntfrq)))
        return 0

    @calls("gettimeofday")
    def sys_gettimeofday(self, tv: int, *_: int) -> int:
        if tv:
            ns = self.p.kernel.realtime_ns()
            self.p.write(tv, struct.pack("<qq", ns // NSEC, (ns // 1000) % 1_000_000))
        return 0

    def _sleep(self, ns: int) -> int:
        self.block(lambda: False, ns, console=False, what="sleeping")
        return 0

    @calls("nanosleep")
    def sys_nanosleep(self, req: int, rem: int, *_: int) -> int:
        t = self._timeout(req)
        return self._sleep(t or 0)

    @calls("clock_nanosleep")
    def sys_clock_nanosleep(self, clock: int, flags: int, req: int, rem: int, *_: int) -> int:
        t = self._timeout(req) or 0
        if flags & 1:  # TIMER_ABSTIME, on the clock clock_gettime reports
            t = max(0, t - self.clock_ns(clock))
        return self._sleep(t)

    @calls("getrandom")
    def sys_getrandom(self, buf: int, count: int, *_: int) -> int:
        count = min(count, 1 << 20)
        out = bytearray()
        while len(out) < count:
            out += self.p.cpu.rndr().to_bytes(8, "little")
        self.p.write(buf, bytes(out[:count]))
        return count
