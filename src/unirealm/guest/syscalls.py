"""The Linux syscall layer (AArch64, asm-generic numbering): the table assembled from the
subsystems that implement the syscalls, and the dispatch every SVC goes through.

Arguments in x0..x5, number in x8, result in x0 (negative errno on failure). Anything not
implemented returns -ENOSYS and is logged once, by name. Each subsystem registers its own
handlers where it implements them (guest/systable.py's SyscallSet):

| subsystem | module | syscalls |
|---|---|---|
| files (VFS) | `fileio.py`, `namei.py`, `poll.py` | descriptors and I/O; names and metadata; readiness |
| memory | `mman.py` | brk, mmap, munmap, mprotect, madvise, mremap, msync, mlock |
| process | `fork.py`, `procinfo.py` | clone, execve, wait4; ids, limits, uname, sysinfo, exit_group |
| threads, futex | `threads.py` | exit, futex, set_tid_address, set_robust_list, sched_* |
| time | `clock.py` | clock_*, gettimeofday, nanosleep, getrandom |
| signals | `signals.py`, `sigframe.py` | rt_sigaction, rt_sigprocmask, rt_sigpending, rt_sigsuspend, rt_sigtimedwait, rt_sigreturn, sigaltstack, kill, tkill, tgkill, setitimer, getitimer |
| sockets | `net/socket.py`, `net/sockopt.py` | socket, bind, listen, accept, connect, send/recv; setsockopt, getsockopt |

configfs (guest/tsm.py) has no syscalls of its own, as on Linux: it is reached through the
VFS (mkdirat, openat, read, write, unlinkat). Struct layouts are the arm64 ones.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import clock, fileio, fork, mman, namei, poll, procinfo, signals, threads
from .errors import BrokenPipe
from .net import socket
from .sched import Interrupted
from .sysctx import AT_FDCWD, SyscallContext, SyscallLog
from .systable import NAMES, NR, SyscallSet, assemble
from .uapi import SIGPIPE
from .vfs import FsError

if TYPE_CHECKING:
    from .process import Process

__all__ = ["AT_FDCWD", "NAMES", "NR", "SUBSYSTEMS", "Syscalls"]

Handler = Callable[..., int | None]
SUBSYSTEMS: tuple[SyscallSet, ...] = (fileio.calls, namei.calls, poll.calls, mman.calls, fork.calls, procinfo.calls,
                                      threads.calls, clock.calls, signals.calls, socket.calls)
# Run outside the CPU's SVC hook: they read or rewrite more registers than x0.
SLOW_PATH = frozenset({NR["clone"], NR["execve"], NR["rt_sigreturn"]})
TRACE_PATHS = {"openat", "faccessat", "newfstatat", "readlinkat", "unlinkat", "mkdirat", "statx", "faccessat2"}


class Syscalls(fileio.FileIo, namei.Namei, poll.Poll, mman.Mman, fork.Fork, procinfo.ProcInfo, threads.Threads,
               clock.Clock, signals.Signals, socket.SocketCalls, SyscallContext):
    """One process's syscall layer: every subsystem's handlers bound to it."""

    TABLE: dict[int, tuple[str, str]] = {}  # nr -> (subsystem, method): assembled below

    def __init__(self, process: Process, log: SyscallLog | None = None) -> None:
        super().__init__(process, log)
        self.table: dict[int, Handler] = {nr: getattr(self, method) for nr, (_, method) in self.TABLE.items()}
        self.trace = "strace" in process.kernel.options
        self.slow_path = SLOW_PATH

    def for_child(self, child: Process) -> Syscalls:
        """A forked child's layer: its own handlers, this one's log of what was said."""
        return Syscalls(child, self.log)

    # --- dispatch -----------------------------------------------------------------------
    def dispatch(self) -> None:
        nr, *args = self.p.syscall_args()
        result = self.handle(nr, args)
        if result is not None:
            self.p.set_result(result)

    def handle(self, nr: int, args: list[int]) -> int | None:
        """Run (and trace) one syscall; its result (None: x0 is not to be written)."""
        result = self.call(nr, args)
        if self.trace:
            shown = ", ".join(hex(a) for a in args[:4])
            if NAMES.get(nr, "") in TRACE_PATHS:
                with_path = self.p.read_cstring(args[1]) if args[1] else b""
                shown += f" {with_path!r}"
            self.p.kernel.log(f"[{self.p.current.tid}] {NAMES.get(nr, nr)}({shown}) = {result}", error=True)
        return result

    def call(self, nr: int, args: list[int]) -> int | None:
        handler = self.table.get(nr)
        if handler is None:
            if nr not in self.log.warned:
                self.log.warned.add(nr)
                self.p.kernel.log(f"syscall {NAMES.get(nr, nr)} is not supported (ENOSYS)")
            return -errno.ENOSYS
        try:
            return handler(*args)
        except Interrupted as stop:
            self.p.current.syscall_x0 = args[0]  # what a restart runs the syscall with again
            return -stop.code
        except BrokenPipe:
            self.thread_signal(SIGPIPE)
            return -errno.EPIPE
        except FsError as exc:
            return -exc.errno
        except MemoryError:
            return -errno.EFAULT


Syscalls.TABLE = assemble(SUBSYSTEMS, Syscalls)
