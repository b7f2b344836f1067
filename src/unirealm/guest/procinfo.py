"""The process subsystem's identity and resource syscalls: exit_group, pids and ids,
process groups, rlimits and rusage, uname, prctl, sysinfo."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .process import TASK_COMM_LEN
from .sched import ProcessExit
from .sysctx import (
    SyscallContext,
)
from .systable import SyscallSet
from .uapi import (
    CAP_LAST_CAP,
    NSEC,
    NSIG,
    RLIM_INFINITY,
    UTS_MACHINE,
    UTS_NODENAME,
    UTS_RELEASE,
    UTS_SYSNAME,
    UTS_VERSION,
)

if TYPE_CHECKING:
    pass

RLIMIT_STACK, RLIMIT_CORE, RLIMIT_NOFILE, RLIMIT_SIGPENDING = 3, 4, 7, 11
SIGPENDING_MAX = 32767  # queued signals per user: max_threads / 2 for pid_max 32768 (/proc/PID/status SigQ)
# prctl(2) options (include/uapi/linux/prctl.h)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_GET_KEEPCAPS, PR_SET_KEEPCAPS, PR_SET_NAME, PR_GET_NAME, PR_GET_SECCOMP = 7, 8, 15, 16, 21
PR_CAPBSET_READ, PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 23, 29, 30
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 38, 39, 41, 42
DEFAULT_TIMER_SLACK_NS = 50_000
UTSNAME_FIELD = 65

calls = SyscallSet("process")


class ProcInfo(SyscallContext):
    @calls("exit_group")
    def sys_exit_group(self, status: int, *_: int) -> int:
        raise ProcessExit(status & 0xFF)

    @calls("getpid")
    def sys_getpid(self, *_: int) -> int:
        return self.p.pid

    @calls("getppid")
    def sys_getppid(self, *_: int) -> int:
        parent = self.p.parent
        return parent.pid if parent is not None and parent.exit_status is None else 0

    @calls("getuid", "geteuid", "getgid", "getegid")
    def sys_getuid(self, *_: int) -> int:
        return 0

    @calls("getpgid", "getsid", "setsid")
    def sys_getpgid(self, *_: int) -> int:
        return self.p.pid

    @calls("setpgid")
    def sys_setpgid(self, *_: int) -> int:
        return 0

    @calls("getgroups")
    def sys_getgroups(self, *_: int) -> int:
        return 0

    @calls("prlimit64")
    def sys_prlimit64(self, pid: int, resource: int, new: int, old: int, *_: int) -> int:
        if old:
            limits = {RLIMIT_STACK: (8 << 20, RLIM_INFINITY), RLIMIT_CORE: (0, RLIM_INFINITY),
                      RLIMIT_NOFILE: (1024, 1024), RLIMIT_SIGPENDING: (SIGPENDING_MAX, SIGPENDING_MAX)}.get(
                resource, (RLIM_INFINITY, RLIM_INFINITY))
            self.p.write(old, struct.pack("<QQ", *limits))
        return 0

    @calls("getrlimit")
    def sys_getrlimit(self, resource: int, old: int, *_: int) -> int:
        return self.sys_prlimit64(0, resource, 0, old)

    @calls("setrlimit")
    def sys_setrlimit(self, *_: int) -> int:
        return 0

    @calls("getrusage")
    def sys_getrusage(self, who: int, buf: int, *_: int) -> int:
        self.p.write(buf, bytes(144))
        return 0

    @calls("uname")
    def sys_uname(self, buf: int, *_: int) -> int:
        fields = [UTS_SYSNAME, UTS_NODENAME, UTS_RELEASE, UTS_VERSION, UTS_MACHINE, "(none)"]
        self.p.write(buf, b"".join(f.encode().ljust(UTSNAME_FIELD, b"\0") for f in fields))
        return 0

    @calls("prctl")
    def sys_prctl(self, option: int, arg2: int, arg3: int, arg4: int, arg5: int, *_: int) -> int:
        """prctl(2) as kernel/sys.c answers it, for the options a process here has; any other
        is EINVAL (as Linux answers an option it does not know)."""
        t, st = self.p.current, self.p.state
        option &= 0xFFFFFFFF  # an int
        if option == PR_GET_NAME:
            self.p.write(arg2, t.comm.encode("utf-8", "surrogateescape").ljust(TASK_COMM_LEN, b"\0"))
        elif option == PR_SET_NAME:  # up to 15 bytes of a string, the rest cut
            raw = self.p.read_cstring(arg2, TASK_COMM_LEN - 1)[:TASK_COMM_LEN - 1]
            t.comm = raw.decode("utf-8", "surrogateescape")
        elif option == PR_SET_PDEATHSIG:
            if not 0 <= arg2 <= NSIG:  # valid_signal
                return -errno.EINVAL
            self.p.pdeath_signal = arg2
        elif option == PR_GET_PDEATHSIG:
            self.p.write(arg2, struct.pack("<i", self.p.pdeath_signal))
        elif option == PR_GET_DUMPABLE:
            return st.dumpable
        elif option == PR_SET_DUMPABLE:
            if arg2 not in (0, 1):  # SUID_DUMP_DISABLE or SUID_DUMP_USER
                return -errno.EINVAL
            st.dumpable = arg2
        elif option == PR_GET_KEEPCAPS:
            return st.keepcaps
        elif option == PR_SET_KEEPCAPS:
            if arg2 not in (0, 1):
                return -errno.EINVAL
            st.keepcaps = arg2
        elif option == PR_GET_SECCOMP:
            return 0  # SECCOMP_MODE_DISABLED: no filter is installed in a process here
        elif option == PR_CAPBSET_READ:
            return 1 if 0 <= arg2 <= CAP_LAST_CAP else -errno.EINVAL  # root holds every capability
        elif option == PR_GET_TIMERSLACK:
            return st.timer_slack_ns
        elif option == PR_SET_TIMERSLACK:
            st.timer_slack_ns = arg2 if 0 < arg2 < 1 << 63 else DEFAULT_TIMER_SLACK_NS
        elif option in (PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS):
            if option == PR_SET_NO_NEW_PRIVS and (arg2 != 1 or arg3 or arg4 or arg5):
                return -errno.EINVAL
            if option == PR_GET_NO_NEW_PRIVS:
                return -errno.EINVAL if arg2 or arg3 or arg4 or arg5 else st.no_new_privs
            st.no_new_privs = 1  # it cannot be unset
        elif option in (PR_SET_THP_DISABLE, PR_GET_THP_DISABLE):
            if arg3 or arg4 or arg5 or (option == PR_GET_THP_DISABLE and arg2):
                return -errno.EINVAL
            if option == PR_GET_THP_DISABLE:
                return st.thp_disable
            st.thp_disable = int(bool(arg2))
        else:
            return -errno.EINVAL
        return 0

    @calls("sysinfo")
    def sys_sysinfo(self, buf: int, *_: int) -> int:
        pages = self.p.kernel.pages
        uptime = (self.now_ns() - self.p.state.start_ns) // NSEC
        threads = self.p.sched.live
        # struct sysinfo: ... procs (the threads), totalhigh, freehigh, mem_unit (1: sizes in bytes)
        info = struct.pack("<q3Q6QHH4x2QI", uptime, 0, 0, 0, pages.total, pages.free_bytes, 0, 0, 0, 0, threads, 0,
                           0, 0, 1)
        self.p.write(buf, info.ljust(112, b"\0"))
        return 0
