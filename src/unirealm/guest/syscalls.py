"""The Linux syscall layer (AArch64, asm-generic numbering, include/uapi/asm-generic/unistd.h).

Arguments in x0..x5, number in x8, result in x0 (negative errno on failure). Anything not
implemented returns -ENOSYS and is logged once, by name. Struct layouts are the arm64 ones:
`struct stat` 128 bytes, `struct epoll_event` 16 bytes, `struct statx` 256 bytes.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .net.socket import SocketCalls
from .vfs import (
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_PATH,
    O_TMPFILE,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    ConsoleFile,
    DirFile,
    DirInode,
    EpollFile,
    EventFd,
    FsError,
    Inode,
    LinkInode,
    OpenFile,
    Pipe,
    PipeEnd,
    RegFile,
    RegInode,
    Vfs,
    WouldBlock,
)

if TYPE_CHECKING:
    from .process import Process

NR: dict[str, int] = {
    "getcwd": 17, "eventfd2": 19, "epoll_create1": 20, "epoll_ctl": 21, "epoll_pwait": 22, "dup": 23,
    "dup3": 24, "fcntl": 25, "ioctl": 29, "flock": 32, "mknodat": 33, "mkdirat": 34, "unlinkat": 35,
    "symlinkat": 36, "linkat": 37, "renameat": 38, "truncate": 45, "ftruncate": 46, "fallocate": 47,
    "faccessat": 48, "chdir": 49, "fchdir": 50, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55,
    "openat": 56, "close": 57, "pipe2": 59, "getdents64": 61, "lseek": 62, "read": 63, "write": 64,
    "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68, "preadv": 69, "pwritev": 70, "sendfile": 71,
    "pselect6": 72, "ppoll": 73, "readlinkat": 78, "newfstatat": 79, "fstat": 80, "sync": 81, "fsync": 82,
    "fdatasync": 83, "utimensat": 88, "exit": 93, "exit_group": 94, "set_tid_address": 96, "futex": 98,
    "set_robust_list": 99, "nanosleep": 101, "clock_gettime": 113, "clock_getres": 114,
    "clock_nanosleep": 115, "sched_setaffinity": 122, "sched_getaffinity": 123, "sched_yield": 124,
    "kill": 129, "tkill": 130, "tgkill": 131, "sigaltstack": 132, "rt_sigaction": 134, "rt_sigprocmask": 135,
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

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 1, 2, 0x10, 0x20, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MADV_DONTNEED, MADV_FREE = 4, 8
RLIMIT_STACK, RLIMIT_NOFILE = 3, 7
WNOHANG = 1
RLIM_INFINITY = (1 << 64) - 1
UTSNAME_FIELD = 65
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW = 0, 1, 2, 3, 4, 5, 6, 7
F_DUPFD_CLOEXEC, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ = 1030, 36, 37, 38, 1032
F_UNLCK = 2
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLET, EPOLLONESHOT = 1 << 31, 1 << 30
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
STATX_BASIC_STATS = 0x7FF
NSEC = 1_000_000_000

# Run outside the CPU's SVC hook: they read or rewrite more registers than x0.
SLOW_PATH = frozenset({NR["clone"], NR["execve"]})
TRACE_PATHS = {"openat", "faccessat", "newfstatat", "readlinkat", "unlinkat", "mkdirat", "statx", "faccessat2"}
REALTIME_CLOCKS = (0, 5, 8)  # CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM

Handler = Callable[..., int]


# fallocate(2) modes (include/uapi/linux/falloc.h) and Linux's MAX_LFS_FILESIZE
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FALLOC_FL_SUPPORTED_MASK = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40  # + COLLAPSE/ZERO/INSERT/UNSHARE_RANGE
MAX_FILE_SIZE = (1 << 63) - 1


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _errno(exc: FsError) -> int:
    return -exc.errno


class FdEntry:
    __slots__ = ("cloexec", "file")

    def __init__(self, file: OpenFile, cloexec: bool) -> None:
        self.file = file
        self.cloexec = cloexec


class Syscalls(SocketCalls):
    def __init__(self, process: Process) -> None:
        self.p = process
        self.table: dict[int, Handler] = {}
        for name, nr in NR.items():
            fn = getattr(self, f"sys_{name}", None)
            if fn is not None:
                self.table[nr] = fn
        self.warned: set[int] = set()
        self.warned_clone = False
        self.counts: dict[int, int] = {}
        self.fds: dict[int, FdEntry] = {}
        self.cwd = "/"
        self.umask = 0o022
        self.trace = "strace" in getattr(process.kernel, "options", {})
        self.slow_path = SLOW_PATH

    # --- dispatch -----------------------------------------------------------------------
    def dispatch(self) -> None:
        nr, *args = self.p.syscall_args()
        result = self.handle(nr, args)
        if result is not None:
            self.p.set_result(result)

    def handle(self, nr: int, args: list[int]) -> int | None:
        """Count, run and trace one syscall; its result (None: x0 is not to be written)."""
        self.counts[nr] = self.counts.get(nr, 0) + 1
        if not self.trace:
            return self.call(nr, args)
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
            if nr not in self.warned:
                self.warned.add(nr)
                self.p.kernel.log(f"syscall {NAMES.get(nr, nr)} is not supported (ENOSYS)")
            return -errno.ENOSYS
        try:
            return handler(*args)
        except FsError as exc:
            return -exc.errno
        except MemoryError:
            return -errno.EFAULT

    # --- helpers ------------------------------------------------------------------------
    @property
    def vfs(self) -> Vfs:
        return self.p.vfs

    def file(self, fd: int) -> OpenFile:
        entry = self.fds.get(_s32(fd))
        if entry is None:
            raise FsError(errno.EBADF)
        return entry.file

    def install(self, file: OpenFile, cloexec: bool = False, lowest: int = 0) -> int:
        fd = lowest
        while fd in self.fds:
            fd += 1
        if fd >= 1024:
            raise FsError(errno.EMFILE)
        file.refs += 1
        self.fds[fd] = FdEntry(file, cloexec)
        return fd

    def close_fd(self, fd: int) -> None:
        entry = self.fds.pop(fd, None)
        if entry is None:
            raise FsError(errno.EBADF)
        entry.file.refs -= 1
        if entry.file.refs == 0:
            entry.file.close()

    def path(self, addr: int) -> str:
        if not addr:
            raise MemoryError
        return self.p.read_cstring(addr).decode("utf-8", "surrogateescape")

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

    # --- process ------------------------------------------------------------------------
    def sys_exit(self, status: int, *_: int) -> int | None:
        return self.p.exit_thread(status & 0xFF)

    def sys_exit_group(self, status: int, *_: int) -> int:
        from .sched import ProcessExit

        raise ProcessExit(status & 0xFF)

    def sys_set_tid_address(self, addr: int, *_: int) -> int:
        self.p.current.clear_tid = addr
        return self.p.current.tid

    def sys_set_robust_list(self, head: int, length: int, *_: int) -> int:
        if length != 24:
            return -errno.EINVAL
        self.p.current.robust_list = (head, length)
        return 0

    def sys_getpid(self, *_: int) -> int:
        return self.p.pid

    def sys_gettid(self, *_: int) -> int:
        return self.p.current.tid

    def sys_getppid(self, *_: int) -> int:
        parent = self.p.parent
        return parent.pid if parent is not None and parent.exit_status is None else 0

    def sys_getuid(self, *_: int) -> int:
        return 0

    sys_geteuid = sys_getgid = sys_getegid = sys_getuid

    def sys_getpgid(self, *_: int) -> int:
        return self.p.pid

    sys_getsid = sys_setsid = sys_getpgid

    def sys_setpgid(self, *_: int) -> int:
        return 0

    def sys_getgroups(self, *_: int) -> int:
        return 0

    def sys_prlimit64(self, pid: int, resource: int, new: int, old: int, *_: int) -> int:
        if old:
            limits = {RLIMIT_STACK: (8 << 20, RLIM_INFINITY), RLIMIT_NOFILE: (1024, 1024)}.get(
                resource, (RLIM_INFINITY, RLIM_INFINITY))
            self.p.write(old, struct.pack("<QQ", *limits))
        return 0

    def sys_getrlimit(self, resource: int, old: int, *_: int) -> int:
        return self.sys_prlimit64(0, resource, 0, old)

    def sys_setrlimit(self, *_: int) -> int:
        return 0

    def sys_getrusage(self, who: int, buf: int, *_: int) -> int:
        self.p.write(buf, bytes(144))
        return 0

    def sys_uname(self, buf: int, *_: int) -> int:
        fields = ["Linux", "unirealm", "6.1.0-unirealm", "#1 SMP", "aarch64", "(none)"]
        self.p.write(buf, b"".join(f.encode().ljust(UTSNAME_FIELD, b"\0") for f in fields))
        return 0

    def sys_prctl(self, option: int, arg2: int, *_: int) -> int:
        if option == 16:  # PR_GET_NAME
            self.p.write(arg2, self.p.argv[0].rsplit("/", 1)[-1].encode()[:15].ljust(16, b"\0"))
        return 0

    def sys_sysinfo(self, buf: int, *_: int) -> int:
        pages = self.p.kernel.pages
        uptime = (self.now_ns() - self.p.start_ns) // NSEC
        info = struct.pack("<q3Q6QHH", uptime, 0, 0, 0, pages.total, pages.free_bytes, 0, 0, 0, 0, 1, 0)
        self.p.write(buf, info.ljust(112, b"\0"))
        return 0

    def sys_sched_getaffinity(self, pid: int, size: int, mask: int, *_: int) -> int:
        if size < 8:
            return -errno.EINVAL
        self.p.write(mask, (1).to_bytes(8, "little"))
        return 8

    def sys_sched_setaffinity(self, *_: int) -> int:
        return 0

    def sys_sched_yield(self, *_: int) -> int | None:
        return self.p.yield_thread()

    def sys_rt_sigaction(self, sig: int, act: int, oldact: int, sigsetsize: int, *_: int) -> int:
        if not 1 <= sig <= 64 or (sig in (9, 19) and act):
            return -errno.EINVAL
        if oldact:
            self.p.write(oldact, self.p.sigactions.get(sig, bytes(32)))
        if act:
            self.p.sigactions[sig] = self.p.read(act, 32)
        return 0

    def sys_rt_sigprocmask(self, how: int, new: int, old: int, *_: int) -> int:
        t = self.p.current
        if old:
            self.p.write(old, t.sigmask.to_bytes(8, "little"))
        if new:
            m = int.from_bytes(self.p.read(new, 8), "little")
            t.sigmask = {0: t.sigmask | m, 1: t.sigmask & ~m, 2: m}.get(how, t.sigmask)
        return 0

    def sys_sigaltstack(self, ss: int, old: int, *_: int) -> int:
        t = self.p.current
        if old:
            self.p.write(old, t.altstack or struct.pack("<QiiQ", 0, 2, 0, 0))  # SS_DISABLE
        if ss:
            t.altstack = self.p.read(ss, 24)
        return 0

    def sys_kill(self, pid: int, sig: int, *_: int) -> int:
        if sig == 0:
            return 0
        from .sched import ProcessExit

        if sig in (6, 9, 15, 2, 11):
            self.p.kernel.log(f"{self.p.argv[0]}: killed by signal {sig}")
            raise ProcessExit(128 + sig)
        return 0

    def sys_tgkill(self, tgid: int, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tgid, sig)

    def sys_tkill(self, tid: int, sig: int, *_: int) -> int:
        return self.sys_kill(tid, sig)

    def sys_wait4(self, pid: int, wstatus: int, options: int, rusage: int, *_: int) -> int:
        pid = _s32(pid)
        children = [c for c in self.p.children if pid <= 0 or c.pid == pid]
        if not children:
            return -errno.ECHILD

        def zombie() -> Process | None:
            return next((c for c in children if c.exit_status is not None), None)

        if zombie() is None:
            if options & WNOHANG:
                return 0
            if not self.block(lambda: zombie() is not None, console=False, what=f"wait4({pid})"):
                return -errno.ECHILD
        child = zombie()
        if child is None or child.exit_status is None:
            return -errno.ECHILD
        self.p.children.remove(child)
        if wstatus:
            self.p.write(wstatus, ((child.exit_status & 0xFF) << 8).to_bytes(4, "little"))
        if rusage:
            self.p.write(rusage, bytes(144))
        return child.pid

    def _strings(self, addr: int) -> list[str]:
        out: list[str] = []
        while addr:
            ptr = int.from_bytes(self.p.read(addr + 8 * len(out), 8), "little")
            if not ptr:
                break
            if len(out) >= 4096:
                raise FsError(errno.E2BIG)
            out.append(self.p.read_cstring(ptr, 1 << 17).decode("utf-8", "surrogateescape"))
        return out

    def sys_membarrier(self, *_: int) -> int:
        return 0

    # --- memory -------------------------------------------------------------------------
    def sys_brk(self, addr: int, *_: int) -> int:
        return self.p.set_brk(addr)

    def sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        from .process import page_up

        if length == 0 or offset & 0xFFF:
            return -errno.EINVAL
        if length > 1 << 48:  # more than the address space (TASK_SIZE)
            return -errno.ENOMEM
        data = None
        name = "anon"
        shared_file = None
        if not flags & MAP_ANONYMOUS:
            f = self.file(fd)
            if not isinstance(f, RegFile):
                return -errno.ENODEV
            if not f.readable or (flags & 3 == MAP_SHARED and prot & 2 and not f.writable):
                return -errno.EACCES
            name = f.path
            if flags & 3 == MAP_SHARED:
                shared_file = f.inode  # the file's own pages, coherent with read and write
            else:
                data = f.inode.data
        size = page_up(length)
        if prot & 2 and (flags & 3 != MAP_SHARED or shared_file is None) and not self.p.may_commit(size):
            return -errno.ENOMEM
        fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
        if fixed and addr & 0xFFF:
            return -errno.EINVAL
        start = self.p.map_region(addr if fixed else 0, size, prot & 7, name, data, offset, shared_file)
        return start

    def sys_munmap(self, addr: int, length: int, *_: int) -> int:
        from .process import page_up

        if addr & 0xFFF or length == 0:
            return -errno.EINVAL
        self.p.unmap(addr, addr + page_up(length))
        return 0

    def sys_mprotect(self, addr: int, length: int, prot: int, *_: int) -> int:
        from .process import page_up

        # do_mprotect_pkey's checks in order; this CPU has neither BTI nor MTE
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
        if grows == PROT_GROWSDOWN | PROT_GROWSUP or addr & 0xFFF:
            return -errno.EINVAL
        if not length:
            return 0
        end = (addr + page_up(length)) & (2**64 - 1)
        if end <= addr:
            return -errno.ENOMEM
        if prot & ~0xF:  # PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM
            return -errno.EINVAL
        return self.p.protect(addr, end, prot & 7)

    def sys_madvise(self, addr: int, length: int, advice: int, *_: int) -> int:
        from .process import page_up

        if advice in (MADV_DONTNEED, MADV_FREE):
            self.p.discard(addr, addr + page_up(length))
        return 0

    def sys_mremap(self, old: int, old_size: int, new_size: int, flags: int, new_addr: int, *_: int) -> int:
        from .process import page_up

        if old & 0xFFF or new_size == 0:
            return -errno.EINVAL
        if new_size > 1 << 48 or not self.p.may_commit(page_up(new_size) - page_up(old_size)):
            return -errno.ENOMEM
        return self.p.remap(old, page_up(old_size), page_up(new_size), bool(flags & MREMAP_MAYMOVE),
                            new_addr if flags & MREMAP_FIXED else None)

    def sys_msync(self, addr: int, length: int, *_: int) -> int:
        self.p.sync_shared()
        return 0

    def sys_mlock(self, *_: int) -> int:
        return 0

    sys_munlock = sys_fadvise64 = sys_mlock

    # --- files --------------------------------------------------------------------------
    def sys_openat(self, dirfd: int, pathp: int, flags: int, mode: int, *_: int) -> int:
        path = self.path(pathp)
        return self.install(self.open_path(dirfd, path, flags, mode), bool(flags & O_CLOEXEC))

    def open_path(self, dirfd: int, path: str, flags: int, mode: int = 0) -> OpenFile:
        base = self.base_dir(dirfd, path)
        if flags & O_TMPFILE == O_TMPFILE:
            node, canon = self.vfs.walk(path, base)
            return RegFile(RegInode(b"", mode & ~self.umask), flags, canon + "/#tmpfile")
        try:
            node, canon = self.vfs.walk(path, base, follow=not flags & O_NOFOLLOW)
            if flags & O_CREAT and flags & O_EXCL:
                raise FsError(errno.EEXIST)
        except FsError as exc:
            if exc.errno != errno.ENOENT or not flags & O_CREAT:
                raise
            parent, name, dcanon = self.vfs.parent_of(path, base)
            dangling = parent.get(name)
            if isinstance(dangling, LinkInode):
                parent, name, dcanon = self.vfs.parent_of(dangling.target, dcanon)
            node = parent.add(name, RegInode(b"", mode & ~self.umask & 0o7777))
            canon = dcanon.rstrip("/") + "/" + name
        if isinstance(node, LinkInode):
            if flags & O_PATH:
                return OpenFile(node, flags, canon)
            raise FsError(errno.ELOOP)
        if flags & O_DIRECTORY and not isinstance(node, DirInode):
            raise FsError(errno.ENOTDIR)
        if flags & O_PATH:
            if isinstance(node, DirInode):
                return DirFile(node, flags, canon)
            return OpenFile(node, flags, canon)
        return node.open(flags, canon)

    def sys_close(self, fd: int, *_: int) -> int:
        self.close_fd(_s32(fd))
        return 0

    def sys_close_range(self, first: int, last: int, flags: int, *_: int) -> int:
        for fd in [f for f in self.fds if first <= f <= last]:
            if flags & 4:  # CLOSE_RANGE_CLOEXEC
                self.fds[fd].cloexec = True
            else:
                self.close_fd(fd)
        return 0

    def _io(self, f: OpenFile, op: Callable[[], Any], want: int) -> Any:
        """Run a read/write, waiting while it would block (unless O_NONBLOCK)."""
        while True:
            try:
                return op()
            except WouldBlock:
                if f.nonblock:
                    raise FsError(errno.EAGAIN) from None
                if not self.block(lambda: bool(f.poll() & (want | POLLERR | POLLHUP)),
                                  console=isinstance(f, ConsoleFile) or getattr(f, "external", False),
                                  what=f"{'read from' if want == POLLIN else 'write to'} {f.path}"):
                    raise FsError(errno.EAGAIN) from None

    def user_span(self, buf: int, count: int, write: bool) -> int:
        """How much of [buf, buf+count) a copy may use: the part before the first page that
        faults (a short transfer, as Linux's); EFAULT if that is nothing."""
        n = self.p.accessible(buf, count, write)
        if count and not n:
            raise MemoryError
        return n

    def sys_read(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not f.readable:
            return -errno.EBADF
        count = self.user_span(buf, min(count, 1 << 24), True)
        data = self._io(f, lambda: f.read(count), POLLIN)
        if data:
            self.p.write(buf, data)
        return len(data)

    def sys_write(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        data = self.p.read(buf, self.user_span(buf, min(count, 1 << 24), False))
        return self._io(f, lambda: f.write(data), POLLOUT)

    def _iovecs(self, iov: int, iovcnt: int) -> list[tuple[int, int]]:
        if iovcnt > 1024:
            raise FsError(errno.EINVAL)
        raw = self.p.read(iov, 16 * iovcnt) if iovcnt else b""
        return [struct.unpack_from("<QQ", raw, 16 * i) for i in range(iovcnt)]

    def sys_readv(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        total = 0
        for base, length in self._iovecs(iov, iovcnt):
            if not length:
                continue
            r = self.sys_read(fd, base, length)
            if r < 0:
                return r if total == 0 else total
            total += r
            if r < length:
                break
        return total

    def sys_writev(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        data = self._gather(self._iovecs(iov, iovcnt))
        if not data:
            return 0
        return self._io(f, lambda: f.write(data), POLLOUT)

    def _gather(self, iovecs: list[tuple[int, int]]) -> bytes:
        """The bytes of an iovec array up to the first page that faults (EFAULT if none)."""
        out = bytearray()
        for base, length in iovecs:
            n = self.p.accessible(base, length, False)
            out += self.p.read(base, n)
            if n < length:
                if not out:
                    raise MemoryError
                break
        return bytes(out)

    def sys_pread64(self, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.readable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        data = f.pread(self.user_span(buf, min(count, 1 << 24), True), offset)
        if data:
            self.p.write(buf, data)
        return len(data)

    def sys_pwrite64(self, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        return f.pwrite(self.p.read(buf, self.user_span(buf, min(count, 1 << 24), False)), offset)

    def sys_preadv(self, fd: int, iov: int, iovcnt: int, offset: int, *_: int) -> int:
        total = 0
        for base, length in self._iovecs(iov, iovcnt):
            r = self.sys_pread64(fd, base, length, offset + total)
            if r < 0:
                return r
            total += r
            if r < length:
                break
        return total

    def sys_pwritev(self, fd: int, iov: int, iovcnt: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        return f.pwrite(self._gather(self._iovecs(iov, iovcnt)), offset)

    def sys_sendfile(self, out_fd: int, in_fd: int, offp: int, count: int, *_: int) -> int:
        src, dst = self.file(in_fd), self.file(out_fd)
        if offp:
            off = int.from_bytes(self.p.read(offp, 8), "little")
            data = src.pread(count, off)
            self.p.write(offp, (off + len(data)).to_bytes(8, "little"))
        else:
            data = src.read(count)
        return dst.write(data) if data else 0

    def sys_lseek(self, fd: int, offset: int, whence: int, *_: int) -> int:
        return self.file(fd).seek(_s64(offset), whence)

    def sys_ftruncate(self, fd: int, length: int, *_: int) -> int:
        f = self.file(fd)
        if _s64(length) < 0 or not isinstance(f, RegFile) or not f.writable:
            return -errno.EINVAL
        f.truncate(length)
        return 0

    def sys_truncate(self, pathp: int, length: int, *_: int) -> int:
        if _s64(length) < 0:
            return -errno.EINVAL
        node = self.vfs.walk(self.path(pathp), self.cwd)[0]
        if not isinstance(node, RegInode):
            return -errno.EISDIR if isinstance(node, DirInode) else -errno.EINVAL
        node.truncate(length)
        return 0

    def sys_fallocate(self, fd: int, mode: int, offset: int, length: int, *_: int) -> int:
        """vfs_fallocate's checks in Linux's order; ramfs and 9p files take mode 0 (allocate,
        growing the size), FALLOC_FL_KEEP_SIZE, and FALLOC_FL_PUNCH_HOLE | KEEP_SIZE."""
        f = self.file(fd)
        mode, offset, length = mode & 0xFFFFFFFF, _s64(offset), _s64(length)
        if offset < 0 or length <= 0:
            return -errno.EINVAL
        if mode & ~FALLOC_FL_SUPPORTED_MASK:
            return -errno.EOPNOTSUPP
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            return -errno.EOPNOTSUPP
        if not f.writable:
            return -errno.EBADF
        if isinstance(f, PipeEnd):
            return -errno.ESPIPE
        if isinstance(f, DirFile):
            return -errno.EISDIR
        if not isinstance(f, RegFile):
            return -errno.ENODEV
        if offset + length > MAX_FILE_SIZE:
            return -errno.EFBIG
        if mode not in (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE):
            return -errno.EOPNOTSUPP  # the range operations: not in ramfs or 9p
        size = f.inode.size()
        if mode & FALLOC_FL_PUNCH_HOLE:
            end = min(offset + length, size)
            if end > offset:
                f.punch(offset, end - offset)
        elif not mode & FALLOC_FL_KEEP_SIZE and offset + length > size:
            f.truncate(offset + length)
        return 0

    def sys_fsync(self, fd: int, *_: int) -> int:
        self.file(fd).fsync()
        return 0

    sys_fdatasync = sys_fsync

    def sys_sync(self, *_: int) -> int:
        return 0

    def sys_flock(self, fd: int, op: int, *_: int) -> int:
        self.file(fd)
        return 0

    def sys_dup(self, fd: int, *_: int) -> int:
        return self.install(self.file(fd))

    def sys_dup3(self, old: int, new: int, flags: int, *_: int) -> int:
        f = self.file(old)
        old, new = _s32(old), _s32(new)
        if old == new or new < 0 or new >= 1024:
            return -errno.EINVAL
        if new in self.fds:
            self.close_fd(new)
        f.refs += 1
        self.fds[new] = FdEntry(f, bool(flags & O_CLOEXEC))
        return new

    def sys_fcntl(self, fd: int, cmd: int, arg: int, *_: int) -> int:
        f = self.file(fd)
        entry = self.fds[_s32(fd)]
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            return self.install(f, cmd == F_DUPFD_CLOEXEC, lowest=arg)
        if cmd == F_GETFD:
            return int(entry.cloexec)
        if cmd == F_SETFD:
            entry.cloexec = bool(arg & 1)
            return 0
        if cmd == F_GETFL:
            return f.flags
        if cmd == F_SETFL:
            f.flags = (f.flags & ~(O_APPEND | O_NONBLOCK)) | (arg & (O_APPEND | O_NONBLOCK))
            return 0
        if cmd in (F_GETLK, F_OFD_GETLK):
            lock = bytearray(self.p.read(arg, 32))
            lock[0:2] = F_UNLCK.to_bytes(2, "little")
            self.p.write(arg, bytes(lock))
            return 0
        if cmd in (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW):
            return 0  # one process: every lock is granted
        if cmd == F_GETPIPE_SZ:
            return 65536
        return -errno.EINVAL

    def sys_ioctl(self, fd: int, req: int, arg: int, *_: int) -> int:
        return self.file(fd).ioctl(req & 0xFFFFFFFF, arg, self.p)

    def sys_pipe2(self, fds: int, flags: int, *_: int) -> int:
        pipe = Pipe()
        r = PipeEnd(pipe, flags & O_NONBLOCK, False)
        w = PipeEnd(pipe, flags & O_NONBLOCK, True)
        rfd = self.install(r, bool(flags & O_CLOEXEC))
        wfd = self.install(w, bool(flags & O_CLOEXEC))
        self.p.write(fds, struct.pack("<ii", rfd, wfd))
        return 0

    def sys_eventfd2(self, initval: int, flags: int, *_: int) -> int:
        return self.install(EventFd(initval & 0xFFFFFFFF, flags & O_NONBLOCK, bool(flags & 1)),
                            bool(flags & O_CLOEXEC))

    # stat
    def stat_bytes(self, node: Inode) -> bytes:
        size = node.size()
        t = node.mtime_ns
        return struct.pack("<QQIIIIQQqiiqqQqQqQII", 0x801, node.ino, node.mode, node.nlink, node.uid, node.gid,
                           node.rdev, 0, size, 4096, 0, node.blocks(), t // NSEC, t % NSEC,
                           t // NSEC, t % NSEC, t // NSEC, t % NSEC, 0, 0)

    def _stat_target(self, dirfd: int, pathp: int, flags: int) -> Inode:
        path = self.path(pathp)
        if not path:
            if not flags & AT_EMPTY_PATH:
                raise FsError(errno.ENOENT)
            if _s32(dirfd) == AT_FDCWD:
                node, _ = self.vfs.walk(self.cwd)
                return node
            f = self.file(dirfd)
            return f.inode if f.inode is not None else Inode(0o20620)
        node = self.lookup(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW)[0]
        return node

    def sys_newfstatat(self, dirfd: int, pathp: int, buf: int, flags: int, *_: int) -> int:
        self.p.write(buf, self.stat_bytes(self._stat_target(dirfd, pathp, flags)))
        return 0

    def sys_fstat(self, fd: int, buf: int, *_: int) -> int:
        f = self.file(fd)
        self.p.write(buf, self.stat_bytes(f.inode if f.inode is not None else Inode(0o20620)))
        return 0

    def sys_statx(self, dirfd: int, pathp: int, flags: int, mask: int, buf: int, *_: int) -> int:
        node = self._stat_target(dirfd, pathp, flags)
        size = node.size()
        t = node.mtime_ns
        ts = struct.pack("<qIi", t // NSEC, t % NSEC, 0)
        out = struct.pack("<IIQIIIHHQQQQ", STATX_BASIC_STATS, 4096, 0, node.nlink, node.uid, node.gid,
                          node.mode, 0, node.ino, size, node.blocks(), 0)
        out += ts * 4 + struct.pack("<IIII", node.rdev >> 8, node.rdev & 0xFF, 8, 1)
        self.p.write(buf, out.ljust(256, b"\0"))
        return 0

    def sys_readlinkat(self, dirfd: int, pathp: int, buf: int, size: int, *_: int) -> int:
        node = self.lookup(dirfd, self.path(pathp), follow=False)[0]
        if not isinstance(node, LinkInode):
            return -errno.EINVAL
        target = node.target.encode()[:size]
        self.p.write(buf, target)
        return len(target)

    def sys_faccessat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        node = self.lookup(dirfd, self.path(pathp))[0]
        if mode & 1 and not node.mode & 0o111 and not isinstance(node, DirInode):
            return -errno.EACCES
        return 0

    def sys_faccessat2(self, dirfd: int, pathp: int, mode: int, flags: int, *_: int) -> int:
        return self.sys_faccessat(dirfd, pathp, mode)

    def sys_getdents64(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not isinstance(f, DirFile):
            return -errno.ENOTDIR
        from .vfs import DT

        entries = f.entries()
        out = bytearray()
        while f.pos < len(entries):
            name, node = entries[f.pos]
            raw = name.encode("utf-8", "surrogateescape") + b"\0"
            reclen = (19 + len(raw) + 7) & ~7
            if len(out) + reclen > count:
                if not out:
                    return -errno.EINVAL
                break
            rec = struct.pack("<QqHB", node.ino, f.pos + 1, reclen, DT.get(node.kind, 0)) + raw
            out += rec.ljust(reclen, b"\0")
            f.pos += 1
        self.p.write(buf, bytes(out))
        return len(out)

    def sys_mkdirat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        path = self.path(pathp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(dirfd, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        parent.mkdir(name, mode & ~self.umask & 0o7777)
        return 0

    def sys_unlinkat(self, dirfd: int, pathp: int, flags: int, *_: int) -> int:
        path = self.path(pathp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(dirfd, path))
        node = parent.get(name)
        if node is None:
            return -errno.ENOENT
        if flags & AT_REMOVEDIR:
            if not isinstance(node, DirInode):
                return -errno.ENOTDIR
            if not node.empty():
                return -errno.ENOTEMPTY
        elif isinstance(node, DirInode):
            return -errno.EISDIR
        parent.remove(name, node)
        return 0

    def sys_symlinkat(self, target: int, dirfd: int, linkp: int, *_: int) -> int:
        path = self.path(linkp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(dirfd, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        parent.add(name, LinkInode(self.path(target)))
        return 0

    def sys_linkat(self, olddir: int, oldp: int, newdir: int, newp: int, flags: int, *_: int) -> int:
        node = self.lookup(olddir, self.path(oldp), follow=bool(flags & 0x400))[0]
        path = self.path(newp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(newdir, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        if isinstance(node, DirInode):
            return -errno.EPERM
        parent.link(name, node)
        return 0

    def sys_renameat2(self, olddir: int, oldp: int, newdir: int, newp: int, flags: int, *_: int) -> int:
        op, np_ = self.path(oldp), self.path(newp)
        src_dir, src_name, _canon = self.vfs.parent_of(op, self.base_dir(olddir, op))
        dst_dir, dst_name, _canon = self.vfs.parent_of(np_, self.base_dir(newdir, np_))
        node = src_dir.get(src_name)
        if node is None:
            return -errno.ENOENT
        existing = dst_dir.get(dst_name)
        if flags & RENAME_NOREPLACE and existing is not None:
            return -errno.EEXIST
        if flags & RENAME_EXCHANGE:
            if existing is None:
                return -errno.ENOENT
            src_dir.exchange(src_name, dst_dir, dst_name)
            return 0
        if existing is node:
            return 0
        if isinstance(existing, DirInode):
            if not isinstance(node, DirInode):
                return -errno.EISDIR
            if existing.children:
                return -errno.ENOTEMPTY
        elif existing is not None and isinstance(node, DirInode):
            return -errno.ENOTDIR
        src_dir.move(src_name, dst_dir, dst_name, node)
        return 0

    def sys_renameat(self, olddir: int, oldp: int, newdir: int, newp: int, *_: int) -> int:
        return self.sys_renameat2(olddir, oldp, newdir, newp, 0)

    def sys_getcwd(self, buf: int, size: int, *_: int) -> int:
        raw = self.cwd.encode() + b"\0"
        if size < len(raw):
            return -errno.ERANGE
        self.p.write(buf, raw)
        return len(raw)

    def sys_chdir(self, pathp: int, *_: int) -> int:
        node, canon = self.vfs.walk(self.path(pathp), self.cwd)
        if not isinstance(node, DirInode):
            return -errno.ENOTDIR
        self.cwd = canon
        return 0

    def sys_fchdir(self, fd: int, *_: int) -> int:
        f = self.file(fd)
        if not isinstance(f, DirFile):
            return -errno.ENOTDIR
        self.cwd = f.path
        return 0

    def sys_umask(self, mask: int, *_: int) -> int:
        old, self.umask = self.umask, mask & 0o777
        return old

    def sys_fchmodat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        node = self.lookup(dirfd, self.path(pathp))[0]
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def sys_fchmod(self, fd: int, mode: int, *_: int) -> int:
        f = self.file(fd)
        if f.inode is not None:
            f.inode.mode = (f.inode.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def sys_fchownat(self, *_: int) -> int:
        return 0

    sys_fchown = sys_fchownat

    def sys_utimensat(self, dirfd: int, pathp: int, times: int, flags: int, *_: int) -> int:
        node = self._stat_target(dirfd, pathp, flags | (AT_EMPTY_PATH if not pathp else 0)) if pathp else \
            self.file(dirfd).inode
        if node is not None:
            node.mtime_ns = self.now_ns()
        return 0

    # --- waiting ------------------------------------------------------------------------
    def _poll_fds(self, items: list[tuple[int, int]]) -> list[int]:
        out = []
        for fd, events in items:
            if fd < 0:
                out.append(0)
                continue
            entry = self.fds.get(fd)
            if entry is None:
                out.append(POLLNVAL)
                continue
            out.append(entry.file.poll() & (events | POLLERR | POLLHUP))
        return out

    def _timeout(self, ts: int) -> int | None:
        if not ts:
            return None
        sec, nsec = struct.unpack("<qq", self.p.read(ts, 16))
        return max(0, sec * NSEC + nsec)

    def sys_ppoll(self, fds: int, nfds: int, tsp: int, *_: int) -> int:
        if nfds > 1024:
            return -errno.EINVAL
        raw = self.p.read(fds, 8 * nfds) if nfds else b""
        items = [struct.unpack_from("<ihh", raw, 8 * i)[:2] for i in range(nfds)]
        result: list[int] = []

        def ready() -> bool:
            nonlocal result
            result = self._poll_fds(items)
            return any(result)

        self.block(ready, self._timeout(tsp), self.on_console(fd for fd, _ in items), "ppoll")
        out = bytearray(raw)
        for i, rev in enumerate(result):
            struct.pack_into("<h", out, 8 * i + 6, rev)
        if nfds:
            self.p.write(fds, bytes(out))
        return sum(1 for r in result if r)

    def sys_pselect6(self, nfds: int, rp: int, wp: int, ep: int, tsp: int, *_: int) -> int:
        nbytes = (nfds + 63) // 64 * 8
        sets = [int.from_bytes(self.p.read(a, nbytes), "little") if a else 0 for a in (rp, wp)]
        res: list[int] = [0, 0]

        def ready() -> bool:
            res[0] = res[1] = 0
            for fd in range(nfds):
                for k, want in ((0, POLLIN | POLLHUP | POLLERR), (1, POLLOUT | POLLERR)):
                    if sets[k] >> fd & 1:
                        entry = self.fds.get(fd)
                        if entry is None or entry.file.poll() & want:
                            res[k] |= 1 << fd
            return bool(res[0] or res[1])

        watched = [fd for fd in range(nfds) if (sets[0] | sets[1]) >> fd & 1]
        self.block(ready, self._timeout(tsp), self.on_console(watched), "pselect6")
        for k, a in enumerate((rp, wp)):
            if a:
                self.p.write(a, res[k].to_bytes(nbytes, "little"))
        if ep:
            self.p.write(ep, bytes(nbytes))
        return bin(res[0]).count("1") + bin(res[1]).count("1")

    def sys_epoll_create1(self, flags: int, *_: int) -> int:
        return self.install(EpollFile(0), bool(flags & O_CLOEXEC))

    def sys_epoll_ctl(self, epfd: int, op: int, fd: int, event: int, *_: int) -> int:
        ep = self.file(epfd)
        if not isinstance(ep, EpollFile):
            return -errno.EINVAL
        target = self.file(fd)
        fd = _s32(fd)
        if op == EPOLL_CTL_DEL:
            if ep.interest.pop(fd, None) is None:
                return -errno.ENOENT
            return 0
        events, data = struct.unpack("<IxxxxQ", self.p.read(event, 16))
        if op == EPOLL_CTL_ADD:
            if fd in ep.interest:
                return -errno.EEXIST
        elif op == EPOLL_CTL_MOD:
            if fd not in ep.interest:
                return -errno.ENOENT
        else:
            return -errno.EINVAL
        ep.interest[fd] = (target, events, data)
        return 0

    def sys_epoll_pwait(self, epfd: int, events: int, maxevents: int, timeout: int, *_: int) -> int:
        ep = self.file(epfd)
        if not isinstance(ep, EpollFile) or _s32(maxevents) <= 0:
            return -errno.EINVAL
        found: list[tuple[int, int, int]] = []

        def ready() -> bool:
            found.clear()
            for fd, (f, want, data) in list(ep.interest.items()):
                rev = f.poll() & (want | POLLERR | POLLHUP)
                if rev:
                    found.append((fd, rev, data))
                    if len(found) >= maxevents:
                        break
            return bool(found)

        t = _s32(timeout)
        self.block(ready, None if t < 0 else t * 1_000_000, self.on_console(ep.interest), "epoll_pwait")
        out = b"".join(struct.pack("<IxxxxQ", rev, data) for _, rev, data in found)
        for fd, _rev, _data in found:
            f, want, data = ep.interest[fd]
            if want & EPOLLONESHOT:
                ep.interest[fd] = (f, 0, data)
        if out:
            self.p.write(events, out)
        return len(found)

    # --- time and entropy ---------------------------------------------------------------
    def clock_ns(self, clock: int) -> int:
        """The reading of a POSIX clock: the realtime ones are the monotonic clock (the
        architected counter, as the vDSO reads it) plus the wall-clock offset from the RTC."""
        if clock in REALTIME_CLOCKS:
            return self.p.kernel.realtime_ns()
        return self.now_ns()

    def sys_clock_gettime(self, clock: int, tp: int, *_: int) -> int:
        ns = self.clock_ns(clock)
        self.p.write(tp, struct.pack("<qq", ns // NSEC, ns % NSEC))
        return 0

    def sys_clock_getres(self, clock: int, tp: int, *_: int) -> int:
        if tp:
            self.p.write(tp, struct.pack("<qq", 0, max(1, NSEC // self.p.cpu.cntfrq)))
        return 0

    def sys_gettimeofday(self, tv: int, *_: int) -> int:
        if tv:
            ns = self.p.kernel.realtime_ns()
            self.p.write(tv, struct.pack("<qq", ns // NSEC, (ns // 1000) % 1_000_000))
        return 0

    def _sleep(self, ns: int) -> int:
        self.block(lambda: False, ns, console=False, what="sleeping")
        return 0

    def sys_nanosleep(self, req: int, rem: int, *_: int) -> int:
        t = self._timeout(req)
        return self._sleep(t or 0)

    def sys_clock_nanosleep(self, clock: int, flags: int, req: int, rem: int, *_: int) -> int:
        t = self._timeout(req) or 0
        if flags & 1:  # TIMER_ABSTIME, on the clock clock_gettime reports
            t = max(0, t - self.clock_ns(clock))
        return self._sleep(t)

    def sys_getrandom(self, buf: int, count: int, *_: int) -> int:
        count = min(count, 1 << 20)
        out = bytearray()
        while len(out) < count:
            out += self.p.cpu.rndr().to_bytes(8, "little")
        self.p.write(buf, bytes(out[:count]))
        return count

    # --- threads ------------------------------------------------------------------------
    def sys_clone(self, flags: int, stack: int, ptid: int, tls: int, ctid: int, *_: int) -> int | None:
        return self.p.clone(flags, stack, ptid, tls, ctid)

    def sys_clone3(self, *_: int) -> int:
        return -errno.ENOSYS  # glibc falls back to clone

    def sys_futex(self, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int | None:
        return self.p.futex(uaddr, op, val, timeout, uaddr2, val3)

    def sys_execve(self, pathp: int, argvp: int, envpp: int, *_: int) -> int | None:
        return self.p.execve(self.path(pathp), self._strings(argvp), self._strings(envpp))

