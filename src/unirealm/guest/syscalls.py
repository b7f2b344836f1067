"""The Linux syscall layer (AArch64, asm-generic numbering, include/uapi/asm-generic/unistd.h).

Arguments in x0..x5, number in x8, result in x0 (negative errno on failure). Anything not
implemented returns -ENOSYS and is logged once, by name.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Any

NR: dict[str, int] = {
    "getcwd": 17, "fcntl": 25, "ioctl": 29, "mkdirat": 34, "unlinkat": 35, "faccessat": 48, "chdir": 49,
    "openat": 56, "close": 57, "pipe2": 59, "getdents64": 61, "lseek": 62, "read": 63, "write": 64,
    "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68, "ppoll": 73, "readlinkat": 78, "newfstatat": 79,
    "fstat": 80, "fsync": 82, "exit": 93, "exit_group": 94, "set_tid_address": 96, "futex": 98,
    "set_robust_list": 99, "nanosleep": 101, "clock_gettime": 113, "clock_nanosleep": 115, "sched_yield": 124,
    "sigaltstack": 132, "rt_sigaction": 134, "rt_sigprocmask": 135, "uname": 160, "getrlimit": 163,
    "umask": 166, "prctl": 167, "gettimeofday": 169, "getpid": 172, "getppid": 173, "getuid": 174,
    "geteuid": 175, "getgid": 176, "getegid": 177, "gettid": 178, "sysinfo": 179, "socket": 198,
    "brk": 214, "munmap": 215, "mremap": 216, "clone": 220, "mmap": 222, "mprotect": 226, "madvise": 233,
    "prlimit64": 261, "getrandom": 278, "statx": 291, "rseq": 293, "clone3": 435,
}
NAMES = {v: k for k, v in NR.items()}

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MAP_ANONYMOUS = 0x20
MAP_FIXED = 0x10
S_IFCHR = 0o020000
RLIMIT_STACK = 3
RLIM_INFINITY = (1 << 64) - 1
CLOCK_REALTIME = 0
UTSNAME_FIELD = 65

Handler = Callable[..., int]


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


class Syscalls:
    def __init__(self, process: Any) -> None:
        self.p = process
        self.table: dict[int, Handler] = {}
        for name, nr in NR.items():
            fn = getattr(self, f"sys_{name}", None)
            if fn is not None:
                self.table[nr] = fn
        self.warned: set[int] = set()
        self.counts: dict[int, int] = {}

    def dispatch(self) -> None:
        space = self.p.space
        nr = space.gpr(8)
        args = [space.gpr(i) for i in range(6)]
        self.counts[nr] = self.counts.get(nr, 0) + 1
        handler = self.table.get(nr)
        if handler is None:
            if nr not in self.warned:
                self.warned.add(nr)
                self.p.kernel.log(f"syscall {NAMES.get(nr, nr)} is not supported (ENOSYS)")
            result = -errno.ENOSYS
        else:
            try:
                result = handler(*args)
            except MemoryError:
                result = -errno.EFAULT
        space.set_gpr(0, result)

    # --- process ------------------------------------------------------------------------
    def sys_exit(self, status: int, *_: int) -> int:
        from .process import ProcessExit

        raise ProcessExit(status)

    sys_exit_group = sys_exit

    def sys_set_tid_address(self, *_: int) -> int:
        return self.p.pid

    def sys_set_robust_list(self, *_: int) -> int:
        return 0

    def sys_getpid(self, *_: int) -> int:
        return self.p.pid

    sys_gettid = sys_getpid

    def sys_getppid(self, *_: int) -> int:
        return 0

    def sys_getuid(self, *_: int) -> int:
        return 0

    sys_geteuid = sys_getgid = sys_getegid = sys_getuid

    def sys_prlimit64(self, pid: int, resource: int, new: int, old: int, *_: int) -> int:
        if old:
            limits = (8 << 20, RLIM_INFINITY) if resource == RLIMIT_STACK else (RLIM_INFINITY, RLIM_INFINITY)
            self.p.write(old, struct.pack("<QQ", *limits))
        return 0

    def sys_uname(self, buf: int, *_: int) -> int:
        fields = ["Linux", "unirealm", "6.1.0-unirealm", "#1 SMP", "aarch64", "(none)"]
        self.p.write(buf, b"".join(f.encode().ljust(UTSNAME_FIELD, b"\0") for f in fields))
        return 0

    def sys_prctl(self, option: int, arg2: int, *_: int) -> int:
        if option == 16:  # PR_GET_NAME
            self.p.write(arg2, self.p.argv[0].rsplit("/", 1)[-1].encode()[:15].ljust(16, b"\0"))
        return 0

    def sys_rt_sigaction(self, *_: int) -> int:
        return 0

    sys_rt_sigprocmask = sys_sigaltstack = sys_rt_sigaction

    # --- memory -------------------------------------------------------------------------
    def sys_brk(self, addr: int, *_: int) -> int:
        from .process import PROT_READ, PROT_WRITE, page_up

        p = self.p
        if addr and addr >= p.brk_start:
            old_top, new_top = page_up(p.brk), page_up(addr)
            if new_top < old_top:
                p.unmap(new_top, old_top)
            for v in p.vmas:
                if v.name == "heap":
                    v.end = max(new_top, v.start)
                    break
            else:
                p.add_vma(p.brk_start, new_top, PROT_READ | PROT_WRITE, "heap")
            p.brk = addr
        return p.brk

    def sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        from .process import page_up

        if length == 0:
            return -errno.EINVAL
        if not flags & MAP_ANONYMOUS:
            return -errno.ENODEV
        size = page_up(length)
        p = self.p
        if flags & MAP_FIXED:
            p.unmap(addr, addr + size)
            start = addr
        else:
            start = p.mmap_next
            p.mmap_next += size + 0x1000  # keep a guard gap
        p.add_vma(start, start + size, prot & 7, "anon")
        return start

    def sys_munmap(self, addr: int, length: int, *_: int) -> int:
        from .process import page_up

        self.p.unmap(addr, addr + page_up(length))
        return 0

    def sys_mprotect(self, addr: int, length: int, prot: int, *_: int) -> int:
        from .process import page_up

        self.p.protect(addr, addr + page_up(length), prot & 7)
        return 0

    def sys_madvise(self, *_: int) -> int:
        return 0

    # --- files: the console only, for now ----------------------------------------------
    def sys_write(self, fd: int, buf: int, count: int, *_: int) -> int:
        if fd not in (1, 2):
            return -errno.EBADF
        data = self.p.read(buf, count)
        self.p.kernel.write_console(data)
        return count

    def sys_writev(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        total = 0
        for i in range(iovcnt):
            base, length = struct.unpack("<QQ", self.p.read(iov + 16 * i, 16))
            r = self.sys_write(fd, base, length)
            if r < 0:
                return r
            total += r
        return total

    def sys_read(self, fd: int, buf: int, count: int, *_: int) -> int:
        if fd != 0:
            return -errno.EBADF
        console = self.p.kernel.console
        data = console.read(count) if console is not None else b""
        self.p.write(buf, data)
        return len(data)

    def _stat_console(self, buf: int) -> int:
        # struct stat (asm-generic, 128 bytes): a character device, as a tty would be
        st = struct.pack("<QQIIIIQQqiiqqqqqqqii", 0x16, 1, S_IFCHR | 0o620, 1, 0, 0, 0x8801, 0, 0, 1024, 0,
                         0, 0, 0, 0, 0, 0, 0, 0, 0)
        self.p.write(buf, st[:128].ljust(128, b"\0"))
        return 0

    def sys_fstat(self, fd: int, buf: int, *_: int) -> int:
        if fd in (0, 1, 2):
            return self._stat_console(buf)
        return -errno.EBADF

    def sys_newfstatat(self, dirfd: int, path: int, buf: int, flags: int, *_: int) -> int:
        if flags & AT_EMPTY_PATH and self.p.read_cstring(path) == b"":
            return self.sys_fstat(_s64(dirfd) & 0xFFFFFFFF if _s64(dirfd) >= 0 else -1, buf)
        return -errno.ENOENT

    def sys_ioctl(self, *_: int) -> int:
        return -errno.ENOTTY

    def sys_readlinkat(self, dirfd: int, path: int, buf: int, size: int, *_: int) -> int:
        if self.p.read_cstring(path) != b"/proc/self/exe":
            return -errno.ENOENT
        target = self.p.exe_path.encode()[:size]
        self.p.write(buf, target)
        return len(target)

    # --- time and entropy ---------------------------------------------------------------
    def sys_clock_gettime(self, clock: int, tp: int, *_: int) -> int:
        ns = self.p.cpu.cntvct() * 1_000_000_000 // self.p.cpu.cntfrq
        self.p.write(tp, struct.pack("<qq", ns // 1_000_000_000, ns % 1_000_000_000))
        return 0

    def sys_gettimeofday(self, tv: int, *_: int) -> int:
        if tv:
            ns = self.p.cpu.cntvct() * 1_000_000_000 // self.p.cpu.cntfrq
            self.p.write(tv, struct.pack("<qq", ns // 1_000_000_000, (ns // 1000) % 1_000_000))
        return 0

    def sys_getrandom(self, buf: int, count: int, *_: int) -> int:
        count = min(count, 1 << 20)
        out = bytearray()
        while len(out) < count:
            out += self.p.cpu.rndr().to_bytes(8, "little")
        self.p.write(buf, bytes(out[:count]))
        return count
