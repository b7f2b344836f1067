"""The signals subsystem: handlers and masks are recorded (rt_sigaction, rt_sigprocmask,
sigaltstack); a fatal signal sent with kill/tkill/tgkill ends the process with 128 + sig.
A signal the kernel raises at the calling thread (`thread_signal`: SIGPIPE on a broken
pipe or socket) ends the process when its disposition is SIG_DFL and the thread does not
block it; ignored, it is discarded. No signal is delivered to a handler (one that is
installed is not run) and none is kept pending. A signal set is Linux's sigset_t: 64 bits, signal n at
bit n - 1; SIGKILL and SIGSTOP can be neither caught nor blocked."""

from __future__ import annotations

import errno
import struct

from .sched import ProcessExit
from .sysctx import (
    SyscallContext,
)
from .systable import SyscallSet

calls = SyscallSet("signals")

SIGSET_SIZE = 8  # sizeof(sigset_t)
SIGKILL, SIGPIPE, SIGSTOP = 9, 13, 19
SIG_DFL = 0  # sa_handler, the first 8 bytes of struct sigaction
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
NSIG = 64


class Signals(SyscallContext):
    @calls("rt_sigaction")
    def sys_rt_sigaction(self, sig: int, act: int, oldact: int, sigsetsize: int, *_: int) -> int:
        if sigsetsize != SIGSET_SIZE or not 1 <= sig <= NSIG or (sig in (SIGKILL, SIGSTOP) and act):
            return -errno.EINVAL
        if oldact:
            self.p.write(oldact, self.p.state.sigactions.get(sig, bytes(32)))
        if act:
            self.p.state.sigactions[sig] = self.p.read(act, 32)
        return 0

    @calls("rt_sigprocmask")
    def sys_rt_sigprocmask(self, how: int, new: int, old: int, sigsetsize: int, *_: int) -> int:
        if sigsetsize != SIGSET_SIZE:
            return -errno.EINVAL
        t = self.p.current
        before = t.sigmask
        if new:
            m = int.from_bytes(self.p.read(new, SIGSET_SIZE), "little") & ~UNBLOCKABLE
            if how == SIG_BLOCK:
                t.sigmask = before | m
            elif how == SIG_UNBLOCK:
                t.sigmask = before & ~m
            elif how == SIG_SETMASK:
                t.sigmask = m
            else:
                return -errno.EINVAL
        if old:
            self.p.write(old, before.to_bytes(SIGSET_SIZE, "little"))
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
        if not 0 <= sig <= NSIG:
            return -errno.EINVAL
        if sig == 0:
            return 0
        if sig in (6, 9, 15, 2, 11):
            self.die_of(sig)
        return 0

    def die_of(self, sig: int) -> None:
        """The default action of a terminating signal: the process ends with 128 + sig."""
        self.p.kernel.log(f"{self.p.argv[0]}: killed by signal {sig}", error=True)
        raise ProcessExit(128 + sig)

    def thread_signal(self, sig: int) -> None:
        """`sig` (whose default action terminates) raised at the calling thread, as Linux's
        send_sig(sig, current): it ends the process unless blocked, ignored or caught."""
        if self.p.current.sigmask & (1 << (sig - 1)):
            return
        action = self.p.state.sigactions.get(sig)
        if action is None or int.from_bytes(action[:8], "little") == SIG_DFL:
            self.die_of(sig)

    @calls("tgkill")
    def sys_tgkill(self, tgid: int, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tgid, sig)

    @calls("tkill")
    def sys_tkill(self, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tid, sig)
