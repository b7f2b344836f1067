"""The files subsystem's descriptor syscalls: open and close, read and write (plain,
vectored, positioned), seek, truncate and fallocate, sync, dup and fcntl, ioctl, pipes and
eventfds (the file objects are guest/vfs.py's)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .fdtable import FD_MAX
from .pipes import EventFd, Pipe, PipeEnd
from .sysctx import (
    SyscallContext,
    _s32,
    _s64,
)
from .systable import SyscallSet
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
    POLLIN,
    POLLOUT,
    DirFile,
    DirInode,
    FsError,
    LinkInode,
    OpenFile,
    RegFile,
    RegInode,
)

if TYPE_CHECKING:
    pass

F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW = 0, 1, 2, 3, 4, 5, 6, 7
F_DUPFD_CLOEXEC, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ = 1030, 36, 37, 38, 1032
F_SETPIPE_SZ = 1031
F_UNLCK = 2
CLOSE_RANGE_UNSHARE, CLOSE_RANGE_CLOEXEC = 2, 4
EFD_SEMAPHORE = 1
O_DIRECT, O_NOTIFICATION_PIPE = 0o200000, O_EXCL  # arm64's; pipe2 takes them
# fallocate(2) modes (include/uapi/linux/falloc.h) and Linux's MAX_LFS_FILESIZE
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FALLOC_FL_SUPPORTED_MASK = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40  # + COLLAPSE/ZERO/INSERT/UNSHARE_RANGE
MAX_FILE_SIZE = (1 << 63) - 1

calls = SyscallSet("files")


class FileIo(SyscallContext):
    @calls("openat")
    def sys_openat(self, dirfd: int, pathp: int, flags: int, mode: int, *_: int) -> int:
        path = self.path(pathp)
        return self.install(self.open_path(dirfd, path, flags, mode), bool(flags & O_CLOEXEC))

    def open_path(self, dirfd: int, path: str, flags: int, mode: int) -> OpenFile:
        base = self.base_dir(dirfd, path)
        if flags & O_TMPFILE == O_TMPFILE:
            node, canon = self.vfs.walk(path, base)
            return RegFile(RegInode(mode=mode & ~self.umask), flags, canon + "/#tmpfile")
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
            node = parent.add(name, RegInode(mode=mode & ~self.umask & 0o7777))
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

    @calls("close")
    def sys_close(self, fd: int, *_: int) -> int:
        self.close_fd(_s32(fd))
        return 0

    @calls("close_range")
    def sys_close_range(self, first: int, last: int, flags: int, *_: int) -> int:
        first, last = first & 0xFFFFFFFF, last & 0xFFFFFFFF  # unsigned ints
        if flags & 0xFFFFFFFF & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
            return -errno.EINVAL
        for fd in [f for f in self.fds if first <= f <= last]:
            if flags & CLOSE_RANGE_CLOEXEC:
                self.fds.entries[fd].cloexec = True
            else:
                self.close_fd(fd)
        return 0

    @calls("read")
    def sys_read(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not f.readable:
            return -errno.EBADF
        cap = min(count, 1 << 24)
        data = self._io(f, lambda: f.read(self.user_span(buf, f.io_limit(cap, False), True)), POLLIN)
        if data:
            self.p.write(buf, data)
        return len(data)

    @calls("write")
    def sys_write(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        cap = min(count, 1 << 24)
        return self._io(f, lambda: f.write(self.p.read(buf, self.user_span(buf, f.io_limit(cap, True), False))),
                        POLLOUT)

    @calls("readv")
    def sys_readv(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        """One read scattered over the iovecs (a socket or pipe waits once, a datagram lands
        whole), as Linux's read_iter; the buffers end before the first page that faults."""
        f = self.file(fd)
        if not f.readable:
            return -errno.EBADF
        spans: list[tuple[int, int]] = []
        for base, length in self._iovecs(iov, iovcnt):
            if not length:
                continue
            n = self.p.accessible(base, length, True)
            if n:
                spans.append((base, n))
            if n < length:
                if not spans:
                    raise MemoryError
                break
        if not spans:
            return 0
        cap = min(sum(n for _, n in spans), 1 << 24)
        data = self._io(f, lambda: f.read(f.io_limit(cap, False)), POLLIN)
        off = 0
        for base, n in spans:
            if off >= len(data):
                break
            self.p.write(base, data[off : off + n])
            off += n
        return len(data)

    @staticmethod
    def _part(total: int, op: Callable[..., int], *args: int) -> int:
        """One iovec's transfer: an error after `total` bytes ends the call with those (-1)."""
        try:
            return op(*args)
        except (FsError, MemoryError):
            if total:
                return -1
            raise

    @calls("writev")
    def sys_writev(self, fd: int, iov: int, iovcnt: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        iovecs = self._iovecs(iov, iovcnt)
        total = sum(length for _, length in iovecs)
        if not total:
            return 0

        def op() -> int:
            limit = f.io_limit(total, True)
            return f.write(self._gather(iovecs, limit)) if limit else f.write(b"")

        return self._io(f, op, POLLOUT)

    def _gather(self, iovecs: list[tuple[int, int]], limit: int | None = None) -> bytes:
        """The bytes of an iovec array (its first `limit` bytes) up to the first page that
        faults (EFAULT if none)."""
        out = bytearray()
        left = (1 << 64) if limit is None else limit
        for base, length in iovecs:
            length = min(length, left)
            if not length:
                if left:
                    continue
                break
            n = self.p.accessible(base, length, False)
            out += self.p.read(base, n)
            left -= n
            if n < length:
                if not out:
                    raise MemoryError
                break
        return bytes(out)

    @calls("pread64")
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

    @calls("pwrite64")
    def sys_pwrite64(self, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        return f.pwrite(self.p.read(buf, self.user_span(buf, min(count, 1 << 24), False)), self._at(f, offset))

    @staticmethod
    def _at(f: OpenFile, offset: int) -> int:
        """Where a positioned write goes: with O_APPEND, Linux appends whatever the offset
        (pwrite(2), BUGS)."""
        return f.inode.size() if f.flags & O_APPEND and isinstance(f, RegFile) else offset

    @calls("preadv")
    def sys_preadv(self, fd: int, iov: int, iovcnt: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.readable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        total = 0
        for base, length in self._iovecs(iov, iovcnt):
            r = self._part(total, self.sys_pread64, fd, base, length, offset + total)
            if r < 0:
                return r if total == 0 else total
            total += r
            if r < length:
                break
        return total

    @calls("pwritev")
    def sys_pwritev(self, fd: int, iov: int, iovcnt: int, offset: int, *_: int) -> int:
        f = self.file(fd)
        if not f.writable:
            return -errno.EBADF
        if _s64(offset) < 0:
            return -errno.EINVAL
        return f.pwrite(self._gather(self._iovecs(iov, iovcnt)), self._at(f, offset))

    @calls("sendfile")
    def sys_sendfile(self, out_fd: int, in_fd: int, offp: int, count: int, *_: int) -> int:
        src, dst = self.file(in_fd), self.file(out_fd)
        if not src.readable or not dst.writable:
            return -errno.EBADF
        count = min(count, 1 << 24)
        if offp:
            off = int.from_bytes(self.p.read(offp, 8), "little", signed=True)
            if off < 0:
                return -errno.EINVAL
            data = src.pread(count, off)
            self.p.write(offp, (off + len(data)).to_bytes(8, "little"))
        else:
            data = src.read(count)
        return dst.write(data) if data else 0

    @calls("lseek")
    def sys_lseek(self, fd: int, offset: int, whence: int, *_: int) -> int:
        return self.file(fd).seek(_s64(offset), whence)

    @calls("ftruncate")
    def sys_ftruncate(self, fd: int, length: int, *_: int) -> int:
        f = self.file(fd)
        if _s64(length) < 0 or not isinstance(f, RegFile) or not f.writable:
            return -errno.EINVAL
        f.truncate(length)
        return 0

    @calls("truncate")
    def sys_truncate(self, pathp: int, length: int, *_: int) -> int:
        if _s64(length) < 0:
            return -errno.EINVAL
        node = self.vfs.walk(self.path(pathp), self.cwd)[0]
        if not isinstance(node, RegInode):
            return -errno.EISDIR if isinstance(node, DirInode) else -errno.EINVAL
        node.truncate(length)
        return 0

    @calls("fallocate")
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

    @calls("fsync", "fdatasync")
    def sys_fsync(self, fd: int, *_: int) -> int:
        self.file(fd).fsync()
        return 0

    @calls("sync")
    def sys_sync(self, *_: int) -> int:
        return 0

    @calls("flock")
    def sys_flock(self, fd: int, op: int, *_: int) -> int:
        self.file(fd)
        return 0

    @calls("dup")
    def sys_dup(self, fd: int, *_: int) -> int:
        return self.install(self.file(fd))

    @calls("dup3")
    def sys_dup3(self, old: int, new: int, flags: int, *_: int) -> int:
        """Linux's order: the flags and old == new (EINVAL), then `new` beyond RLIMIT_NOFILE
        (an unsigned int: a negative one too) and `old` (EBADF)."""
        old, new = old & 0xFFFFFFFF, new & 0xFFFFFFFF
        if flags & 0xFFFFFFFF & ~O_CLOEXEC or old == new:
            return -errno.EINVAL
        if new >= FD_MAX:
            return -errno.EBADF
        self.fds.install_at(new, self.file(old), bool(flags & O_CLOEXEC))
        return new

    @calls("fcntl")
    def sys_fcntl(self, fd: int, cmd: int, arg: int, *_: int) -> int:
        f = self.file(fd)
        entry = self.fds.get(_s32(fd))
        assert entry is not None  # file() found it
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            if arg & 0xFFFFFFFF >= FD_MAX:
                return -errno.EINVAL
            return self.install(f, cmd == F_DUPFD_CLOEXEC, lowest=arg & 0xFFFFFFFF)
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
        if cmd in (F_GETPIPE_SZ, F_SETPIPE_SZ):
            if not isinstance(f, PipeEnd):
                return -errno.EBADF  # pipe_fcntl: not a pipe
            return f.pipe.size if cmd == F_GETPIPE_SZ else f.set_size(arg)
        return -errno.EINVAL

    @calls("ioctl")
    def sys_ioctl(self, fd: int, req: int, arg: int, *_: int) -> int:
        return self.file(fd).ioctl(req & 0xFFFFFFFF, arg, self.p)

    @calls("pipe2")
    def sys_pipe2(self, fds: int, flags: int, *_: int) -> int:
        if flags & 0xFFFFFFFF & ~(O_CLOEXEC | O_NONBLOCK | O_DIRECT | O_NOTIFICATION_PIPE):
            return -errno.EINVAL
        pipe = Pipe()
        r = PipeEnd(pipe, flags & O_NONBLOCK, False)
        w = PipeEnd(pipe, flags & O_NONBLOCK, True)
        rfd = self.install(r, bool(flags & O_CLOEXEC))
        wfd = self.install(w, bool(flags & O_CLOEXEC))
        self.p.write(fds, struct.pack("<ii", rfd, wfd))
        return 0

    @calls("eventfd2")
    def sys_eventfd2(self, initval: int, flags: int, *_: int) -> int:
        if flags & 0xFFFFFFFF & ~(EFD_SEMAPHORE | O_NONBLOCK | O_CLOEXEC):
            return -errno.EINVAL
        return self.install(EventFd(initval & 0xFFFFFFFF, flags & O_NONBLOCK, bool(flags & EFD_SEMAPHORE)),
                            bool(flags & O_CLOEXEC))

    @calls("fadvise64")
    def sys_fadvise64(self, *_: int) -> int:
        return 0  # advice only: ramfs and 9p files have nothing to prefetch
