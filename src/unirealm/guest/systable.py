"""The syscall shim's core, as in Unikraft's syscall_shim: the AArch64 syscall numbers
(asm-generic, include/uapi/asm-generic/unistd.h), the registration each subsystem uses for
the syscalls it implements, and the table assembled from those registrations.

A subsystem module declares `calls = SyscallSet("files")` and marks each handler with
`@calls("openat")` (several names for one handler: `@calls("getuid", "geteuid")`). The
handlers are methods of the subsystem's mixin class; guest/syscalls.py composes the mixins
into one per-process class and binds the assembled table to it. `assemble` refuses a name
that is not a syscall, a name two subsystems claim, and a handler that is not there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

NR: dict[str, int] = {
    "getcwd": 17, "eventfd2": 19, "epoll_create1": 20, "epoll_ctl": 21, "epoll_pwait": 22, "dup": 23,
    "dup3": 24, "fcntl": 25, "ioctl": 29, "flock": 32, "mknodat": 33, "mkdirat": 34, "unlinkat": 35,
    "symlinkat": 36, "linkat": 37, "renameat": 38, "statfs": 43, "fstatfs": 44, "truncate": 45, "ftruncate": 46, "fallocate": 47,
    "faccessat": 48, "chdir": 49, "fchdir": 50, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55,
    "openat": 56, "close": 57, "pipe2": 59, "getdents64": 61, "lseek": 62, "read": 63, "write": 64,
    "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68, "preadv": 69, "pwritev": 70, "sendfile": 71,
    "pselect6": 72, "ppoll": 73, "readlinkat": 78, "newfstatat": 79, "fstat": 80, "sync": 81, "fsync": 82,
    "fdatasync": 83, "utimensat": 88, "exit": 93, "exit_group": 94, "set_tid_address": 96, "futex": 98,
    "set_robust_list": 99, "nanosleep": 101, "getitimer": 102, "setitimer": 103, "clock_gettime": 113, "clock_getres": 114,
    "clock_nanosleep": 115, "sched_setaffinity": 122, "sched_getaffinity": 123, "sched_yield": 124,
    "kill": 129, "tkill": 130, "tgkill": 131, "sigaltstack": 132, "rt_sigsuspend": 133, "rt_sigaction": 134,
    "rt_sigprocmask": 135, "rt_sigpending": 136, "rt_sigtimedwait": 137, "rt_sigreturn": 139,
    "setpgid": 154, "getpgid": 155, "getsid": 156, "setsid": 157, "getgroups": 158, "uname": 160,
    "getrlimit": 163, "setrlimit": 164, "getrusage": 165, "umask": 166, "prctl": 167, "gettimeofday": 169,
    "getpid": 172, "getppid": 173, "getuid": 174, "geteuid": 175, "getgid": 176, "getegid": 177,
    "gettid": 178, "sysinfo": 179, "socket": 198, "socketpair": 199, "bind": 200, "listen": 201,
    "accept": 202, "connect": 203, "getsockname": 204, "getpeername": 205, "sendto": 206, "recvfrom": 207,
    "setsockopt": 208, "getsockopt": 209, "shutdown": 210, "sendmsg": 211, "recvmsg": 212, "brk": 214, "munmap": 215, "mremap": 216, "clone": 220,
    "execve": 221, "mmap": 222, "fadvise64": 223, "mprotect": 226, "msync": 227, "mlock": 228,
    "munlock": 229, "madvise": 233, "accept4": 242, "wait4": 260, "prlimit64": 261, "renameat2": 276, "getrandom": 278,
    "membarrier": 283, "statx": 291, "rseq": 293, "clone3": 435, "close_range": 436, "faccessat2": 439,
}
NAMES = {v: k for k, v in NR.items()}

F = TypeVar("F", bound=Callable[..., object])


class SyscallSet:
    """The syscalls one subsystem implements: syscall name -> the method that handles it."""

    def __init__(self, subsystem: str) -> None:
        self.subsystem = subsystem
        self.methods: dict[str, str] = {}

    def __call__(self, *names: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            for name in names:
                if name in self.methods:
                    raise ValueError(f"{self.subsystem}: {name} registered twice")
                self.methods[name] = fn.__name__
            return fn

        return register

    @classmethod
    def of_methods(cls, subsystem: str, owner: type, prefix: str = "sys_") -> SyscallSet:
        """The table of a class whose handlers are named after their syscalls (`sys_socket`)."""
        calls = cls(subsystem)
        for attr in vars(owner):
            if attr.startswith(prefix):
                calls.methods[attr[len(prefix) :]] = attr
        return calls


def assemble(sets: Iterable[SyscallSet], owner: type) -> dict[int, tuple[str, str]]:
    """syscall number -> (subsystem, method name on `owner`), from every subsystem's set."""
    table: dict[int, tuple[str, str]] = {}
    for calls in sets:
        for name, method in calls.methods.items():
            nr = NR.get(name)
            if nr is None:
                raise ValueError(f"{calls.subsystem}: {name} is not an AArch64 syscall")
            if nr in table:
                raise ValueError(f"{name}: registered by {table[nr][0]} and {calls.subsystem}")
            if not callable(getattr(owner, method, None)):
                raise ValueError(f"{calls.subsystem}: {name} names {method}, which {owner.__name__} lacks")
            table[nr] = (calls.subsystem, method)
    return table
