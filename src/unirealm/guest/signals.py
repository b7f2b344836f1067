"""The signals subsystem: handlers and masks are recorded (rt_sigaction, rt_sigprocmask,
sigaltstack); a fatal signal sent with kill/tkill/tgkill ends the process with 128 + sig.
No signal is delivered to a handler."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .sched import ProcessExit
from .sysctx import (
    SyscallContext,
)
from .systable import SyscallSet

if TYPE_CHECKING:
    pass

calls = SyscallSet("signals")


class Signals(SyscallContext):
    @calls("rt_sigaction")
    def sys_rt_sigaction(self, sig: int, act: int, oldact: int, sigsetsize: int, *_: int) -> int:
        if not 1 <= sig <= 64 or (sig in (9, 19) and act):
            return -errno.EINVAL
        if oldact:
            self.p.write(oldact, self.p.state.sigactions.get(sig, bytes(32)))
        if act:
            self.p.state.sigactions[sig] = self.p.read(act, 32)
        return 0

    @calls("rt_sigprocmask")
    def sys_rt_sigprocmask(self, how: int, new: int, old: int, *_: int) -> int:
        t = self.p.current
        if old:
            self.p.write(old, t.sigmask.to_bytes(8, "little"))
        if new:
            m = int.from_bytes(self.p.read(new, 8), "little")
            t.sigmask = {0: t.sigmask | m, 1: t.sigmask & ~m, 2: m}.get(how, t.sigmask)
        return 0

    @calls("sigaltstack")
    def sys_sigaltstack(self, ss: int, old: int, *_: int) -> int:
        t = self.p.current
        if old:
            self.p.write(old, t.altstack or struct.pack("<QiiQ", 0, 2, 0, 0))  # SS_DISABLE
        if ss:
            t.altstack = self.p.read(ss, 24)
        return 0

    @calls("kill")
    def sys_kill(self, pid: int, sig: int, *_: int) -> int:
        if sig == 0:
            return 0
        if sig in (6, 9, 15, 2, 11):
            self.p.kernel.log(f"{self.p.argv[0]}: killed by signal {sig}", error=True)
            raise ProcessExit(128 + sig)
        return 0

    @calls("tgkill")
    def sys_tgkill(self, tgid: int, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tgid, sig)

    @calls("tkill")
    def sys_tkill(self, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tid, sig)
