"""What every subsystem's syscall handlers share: the calling process, its descriptors and
paths, user-memory helpers, and blocking. The subsystems' mixins (guest/fileio.py, namei.py,
poll.py, mman.py, procinfo.py, fork.py, threads.py, clock.py, signals.py, net/socket.py)
derive from SyscallContext; guest/syscalls.py composes them.

Arguments arrive as the raw 64-bit registers; `_s32`/`_s64` give the signed views Linux's
handlers take.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from .devfiles import ConsoleFile
from .fdtable import FdTable
from .uapi import IOVEC, IOVEC_SIZE, TIMESPEC_SIZE, timespec_ns
from .vfs import POLLERR, POLLHUP, POLLIN, DirFile, FsError, Inode, OpenFile, Vfs, WouldBlock

if TYPE_CHECKING:
    from .interfaces import SyscallEntry
    from .process import Process

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096  # the longest path a syscall takes, its NUL included
_R = TypeVar("_R")


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


class SyscallLog:
    """What the kernel has said about syscalls (each once), shared by a process and its forks."""

    def __init__(self) -> None:
        self.warned: set[int] = set()  # unsupported syscall numbers already logged
        self.warned_clone = False


class SyscallContext:
    """The calling process and the helpers its syscall handlers use."""

    for_child: Callable[[Process], SyscallEntry]  # the layer a forked child gets (guest/syscalls.py)

    def __init__(self, process: Process, log: SyscallLog | None = None) -> None:
        self.p = process
        self.log = log if log is not None else SyscallLog()

    # --- the process's files and paths -----------------------------------------------------
    @property
    def fds(self) -> FdTable:
        return self.p.state.fds

    @property
    def cwd(self) -> str:
        return self.p.state.cwd

    @cwd.setter
    def cwd(self, path: str) -> None:
        self.p.state.cwd = path

    @property
    def umask(self) -> int:
        return self.p.state.umask

    @umask.setter
    def umask(self, mask: int) -> None:
        self.p.state.umask = mask


    @property
    def vfs(self) -> Vfs:
        return self.p.vfs

    def file(self, fd: int) -> OpenFile:
        return self.fds.file(_s32(fd))

    def install(self, file: OpenFile, cloexec: bool = False, lowest: int = 0) -> int:
        return self.fds.install(file, cloexec, lowest)

    def close_fd(self, fd: int) -> None:
        self.fds.close(fd)


    def path(self, addr: int) -> str:
        if not addr:
            raise MemoryError
        raw = self.p.read_cstring(addr, PATH_MAX)
        if len(raw) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG)  # getname: no NUL within PATH_MAX bytes
        return raw.decode("utf-8", "surrogateescape")

    def base_dir(self, dirfd: int, path: str) -> str:
        """The directory a relative `path` is taken from."""
        dirfd = _s32(dirfd)
        if path.startswith("/") or dirfd == AT_FDCWD:
            return self.cwd
        f = self.file(dirfd)
        if not isinstance(f, DirFile):
            raise FsError(errno.ENOTDIR)
        return f.path

    def lookup(self, dirfd: int, path: str, follow: bool = True) -> tuple[Inode, str]:
        return self.vfs.walk(path, self.base_dir(dirfd, path), follow)


    # --- user memory and waiting ----------------------------------------------------------

    def block(self, ready: Callable[[], bool], timeout_ns: int | None = None, console: bool = True,
              what: str = "waiting") -> bool:
        """Wait until `ready()`; False on timeout. Other threads run meanwhile; with none, the
        vCPU idles (WFI) while input may arrive on the console (`console`: whether console
        input could make it ready)."""
        return self.p.wait(ready, timeout_ns, console, what)


    def on_console(self, fds: Iterable[int]) -> bool:
        """Whether a device (console input, the NIC) could make one of `fds` ready."""
        return any(isinstance(e.file, ConsoleFile) or getattr(e.file, "external", False)
                   for fd in fds if (e := self.fds.get(fd)) is not None)


    def now_ns(self) -> int:
        return self.p.kernel.monotonic_ns()


    def _timeout(self, ts: int) -> int | None:
        if not ts:
            return None
        return timespec_ns(self.p.read(ts, TIMESPEC_SIZE))


    def user_span(self, buf: int, count: int, write: bool) -> int:
        """How much of [buf, buf+count) a copy may use: the part before the first page that
        faults (a short transfer, as Linux's); EFAULT if that is nothing."""
        n = self.p.accessible(buf, count, write)
        if count and not n:
            raise MemoryError
        return n


    def _iovecs(self, iov: int, iovcnt: int) -> list[tuple[int, int]]:
        if iovcnt > 1024:
            raise FsError(errno.EINVAL)
        raw = self.p.read(iov, IOVEC_SIZE * iovcnt) if iovcnt else b""
        return list(IOVEC.iter_unpack(raw))


    def _io(self, f: OpenFile, op: Callable[[], _R], want: int) -> _R:
        """Run a read/write, waiting while it would block (unless O_NONBLOCK), at most the
        file's `io_timeout` in all (then EAGAIN, as sock_rcvtimeo/sock_sndtimeo bound it)."""
        timeout = f.io_timeout(want != POLLIN)
        deadline = None if timeout is None else self.now_ns() + timeout
        while True:
            try:
                return op()
            except WouldBlock:
                if f.nonblock:
                    raise FsError(errno.EAGAIN) from None
                left = None if deadline is None else max(0, deadline - self.now_ns())
                if not self.block(lambda: bool(f.poll() & (want | POLLERR | POLLHUP)), left,
                                  console=isinstance(f, ConsoleFile) or getattr(f, "external", False),
                                  what=f"{'read from' if want == POLLIN else 'write to'} {f.path}"):
                    raise FsError(errno.EAGAIN) from None
