"""The Linux arm64 user-ABI structs more than one subsystem's syscalls read or write, declared
once here:

- struct __kernel_timespec (include/uapi/linux/time_types.h): tv_sec, tv_nsec, two
  64-bit signed longs. nanosleep, clock_gettime, ppoll, pselect6, futex take it.
- struct __kernel_old_timeval (the same header): tv_sec, tv_usec, two longs on arm64.
  gettimeofday, SO_RCVTIMEO/SO_SNDTIMEO take it.
- struct iovec (include/uapi/linux/uio.h): iov_base, iov_len, two unsigned 64-bit words.
- the signal numbers (include/uapi/asm-generic/signal.h, which arm64 uses): signals send
  and deliver them, a fault raises them, a process ends of them.
- what the kernel says it is (uname(2), /proc/sys/kernel, /etc/hostname), RLIM_INFINITY and
  the last capability number: procinfo's syscalls and /proc both show them.

A timespec a caller hands in is valid when tv_sec >= 0 and 0 <= tv_nsec < 10^9, Linux's
timespec64_valid; an invalid one is EINVAL.
"""

from __future__ import annotations

import errno
import struct

from .errors import FsError

NSEC = 1_000_000_000
TIMESPEC = struct.Struct("<qq")
TIMEVAL = struct.Struct("<qq")
IOVEC = struct.Struct("<QQ")
TIMESPEC_SIZE = TIMESPEC.size
TIMEVAL_SIZE = TIMEVAL.size
IOVEC_SIZE = IOVEC.size

SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL = 1, 2, 3, 4, 5, 6, 7, 8, 9
SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGCHLD, SIGCONT = 10, 11, 12, 13, 14, 15, 17, 18
SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH, SIGSYS = 19, 20, 21, 22, 23, 28, 31
SIGRTMIN = 32
NSIG = 64

UTS_SYSNAME, UTS_NODENAME, UTS_RELEASE, UTS_VERSION, UTS_MACHINE = "Linux", "unirealm", "6.1.0-unirealm", "#1 SMP", "aarch64"
RLIM_INFINITY = (1 << 64) - 1
CAP_LAST_CAP = 40  # CAP_CHECKPOINT_RESTORE, the last in Linux 6.1


def pack_timespec(ns: int) -> bytes:
    """A non-negative time in nanoseconds as a struct timespec."""
    return TIMESPEC.pack(*divmod(ns, NSEC))


def pack_timeval(ns: int) -> bytes:
    """A non-negative time in nanoseconds as a struct timeval (microseconds, truncated)."""
    return TIMEVAL.pack(*divmod(ns // 1000, 1_000_000))


def timespec_ns(raw: bytes) -> int:
    """The nanoseconds a caller's struct timespec holds; FsError(EINVAL) unless it is valid
    (timespec64_valid)."""
    sec, nsec = TIMESPEC.unpack(raw)
    if sec < 0 or not 0 <= nsec < NSEC:
        raise FsError(errno.EINVAL, "timespec out of range")
    return sec * NSEC + nsec
