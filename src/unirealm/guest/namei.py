"""The files subsystem's name and metadata syscalls: stat/statx, statfs/fstatfs, readlink, access,
getdents64, mkdir/unlink/symlink/link/rename, the working directory and umask, chmod and
chown, utimensat (the namespace is guest/vfs.py's)."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from .sysctx import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    SyscallContext,
    _s32,
)
from .systable import SyscallSet
from .uapi import NSEC, TIMESPEC_SIZE, timespec_ns
from .vfs import (
    DT,
    NAME_MAX,
    Clock,
    DirFile,
    DirInode,
    FsError,
    Inode,
    LinkInode,
)

TMPFS_MAGIC, PROC_SUPER_MAGIC = 0x01021994, 0x9FA0  # include/uapi/linux/magic.h
ST_NOSUID, ST_NODEV, ST_NOEXEC, ST_RELATIME = 0x2, 0x4, 0x8, 0x400  # f_flags (statfs(2))

if TYPE_CHECKING:
    pass

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
AT_SYMLINK_FOLLOW, AT_EACCESS = 0x400, 0x200
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
STATX_BASIC_STATS = 0x7FF

calls = SyscallSet("files")


class Namei(SyscallContext):
    def stat_bytes(self, node: Inode) -> bytes:
        size = node.size()
        t = node.mtime_ns
        return struct.pack("<QQIIIIQQqiiqqQqQqQII", node.st_dev, node.ino, node.mode, node.nlink, node.uid, node.gid,
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

    @calls("newfstatat")
    def sys_newfstatat(self, dirfd: int, pathp: int, buf: int, flags: int, *_: int) -> int:
        self.p.write(buf, self.stat_bytes(self._stat_target(dirfd, pathp, flags)))
        return 0

    @calls("fstat")
    def sys_fstat(self, fd: int, buf: int, *_: int) -> int:
        f = self.file(fd)
        self.p.write(buf, self.stat_bytes(f.inode if f.inode is not None else Inode(0o20620)))
        return 0

    @calls("statx")
    def sys_statx(self, dirfd: int, pathp: int, flags: int, mask: int, buf: int, *_: int) -> int:
        node = self._stat_target(dirfd, pathp, flags)
        size = node.size()
        t = node.mtime_ns
        ts = struct.pack("<qIi", t // NSEC, t % NSEC, 0)
        out = struct.pack("<IIQIIIHHQQQQ", STATX_BASIC_STATS, 4096, 0, node.nlink, node.uid, node.gid,
                          node.mode, 0, node.ino, size, node.blocks(), 0)
        out += ts * 4 + struct.pack("<IIII", node.rdev >> 8, node.rdev & 0xFF,
                                                                    node.st_dev >> 8, node.st_dev & 0xFF)
        self.p.write(buf, out.ljust(256, b"\0"))
        return 0

    # struct statfs (include/uapi/asm-generic/statfs.h, 64-bit words): f_type, f_bsize,
    # f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_fsid (two ints), f_namelen, f_frsize,
    # f_flags, f_spare[4]: 120 bytes.
    def statfs_bytes(self, node: Inode, path: str) -> bytes:
        query = getattr(node, "statfs", None)
        if query is not None:  # a 9p share: its server's answer
            r = query()
            words = (r["type"], r["bsize"], r["blocks"], r["bfree"], r["bavail"], r["files"], r["ffree"],
                     r["fsid"], r["namelen"], r["bsize"], ST_RELATIME)  # f_frsize: f_bsize (vfs_statfs)
        elif path == "/proc" or path.startswith("/proc/"):
            words = (PROC_SUPER_MAGIC, GRANULE_SIZE, 0, 0, 0, 0, 0, 0, NAME_MAX, GRANULE_SIZE,
                     ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_RELATIME)
        else:  # the root file system lives in guest RAM: its room is the free RAM
            pages = self.p.kernel.pages
            total, free = pages.total // GRANULE_SIZE, pages.free_bytes // GRANULE_SIZE
            words = (TMPFS_MAGIC, GRANULE_SIZE, total, free, free, total, free, 0, NAME_MAX, GRANULE_SIZE, ST_RELATIME)
        return struct.pack("<11Q", *(w & (1 << 64) - 1 for w in words)) + bytes(32)

    @calls("statfs")
    def sys_statfs(self, pathp: int, buf: int, *_: int) -> int:
        node, canon = self.lookup(AT_FDCWD, self.path(pathp))
        self.p.write(buf, self.statfs_bytes(node, canon))
        return 0

    @calls("fstatfs")
    def sys_fstatfs(self, fd: int, buf: int, *_: int) -> int:
        f = self.file(fd)
        node = f.inode if f.inode is not None else Inode(0o20620)
        self.p.write(buf, self.statfs_bytes(node, f.path))
        return 0

    @calls("readlinkat")
    def sys_readlinkat(self, dirfd: int, pathp: int, buf: int, size: int, *_: int) -> int:
        if _s32(size) <= 0:
            return -errno.EINVAL  # readlink(2): bufsiz is not positive
        node = self.lookup(dirfd, self.path(pathp), follow=False)[0]
        if not isinstance(node, LinkInode):
            return -errno.EINVAL
        target = node.target.encode()[:size]
        self.p.write(buf, target)
        return len(target)

    @calls("faccessat")
    def sys_faccessat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        return self._access(dirfd, pathp, mode, 0)

    def _access(self, dirfd: int, pathp: int, mode: int, flags: int) -> int:
        """access(2) for root: F_OK/R_OK/W_OK always, X_OK when some execute bit is set or on a
        directory; EINVAL for an unknown mode or flag bit."""
        if mode & ~7 or flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            return -errno.EINVAL
        node = self._stat_target(dirfd, pathp, flags)
        if mode & 1 and not node.mode & 0o111 and not isinstance(node, DirInode):
            return -errno.EACCES
        return 0

    @calls("faccessat2")
    def sys_faccessat2(self, dirfd: int, pathp: int, mode: int, flags: int, *_: int) -> int:
        return self._access(dirfd, pathp, mode, flags)

    @calls("getdents64")
    def sys_getdents64(self, fd: int, buf: int, count: int, *_: int) -> int:
        f = self.file(fd)
        if not isinstance(f, DirFile):
            return -errno.ENOTDIR
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

    @calls("mkdirat")
    def sys_mkdirat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        path = self.path(pathp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(dirfd, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        parent.mkdir(name, mode & ~self.umask & 0o1777)  # mkdir(2): set-user/group-ID bits dropped
        return 0

    @calls("unlinkat")
    def sys_unlinkat(self, dirfd: int, pathp: int, flags: int, *_: int) -> int:
        if flags & ~AT_REMOVEDIR:
            return -errno.EINVAL
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

    @calls("symlinkat")
    def sys_symlinkat(self, target: int, dirfd: int, linkp: int, *_: int) -> int:
        text = self.path(target)
        if not text:
            return -errno.ENOENT  # symlink(2): an empty target
        path = self.path(linkp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(dirfd, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        parent.add(name, LinkInode(text))
        return 0

    @calls("linkat")
    def sys_linkat(self, olddir: int, oldp: int, newdir: int, newp: int, flags: int, *_: int) -> int:
        if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            return -errno.EINVAL
        node = self._stat_target(olddir, oldp,
                                 flags & AT_EMPTY_PATH | (0 if flags & AT_SYMLINK_FOLLOW else AT_SYMLINK_NOFOLLOW))
        path = self.path(newp)
        parent, name, _canon = self.vfs.parent_of(path, self.base_dir(newdir, path))
        if parent.get(name) is not None:
            return -errno.EEXIST
        if isinstance(node, DirInode):
            return -errno.EPERM
        parent.link(name, node)
        return 0

    @calls("renameat2")
    def sys_renameat2(self, olddir: int, oldp: int, newdir: int, newp: int, flags: int, *_: int) -> int:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) or \
                (flags & RENAME_EXCHANGE and flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)):
            return -errno.EINVAL
        if flags & RENAME_WHITEOUT:
            return -errno.EPERM  # whiteouts are for overlay filesystems' privileged mounters
        op, np_ = self.path(oldp), self.path(newp)
        src_dir, src_name, src_canon = self.vfs.parent_of(op, self.base_dir(olddir, op))
        dst_dir, dst_name, dst_canon = self.vfs.parent_of(np_, self.base_dir(newdir, np_))
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
        moved = src_canon.rstrip("/") + "/" + src_name
        if isinstance(node, DirInode) and (dst_canon + "/").startswith(moved + "/"):
            return -errno.EINVAL  # rename(2): a directory into its own subdirectory
        if isinstance(existing, DirInode):
            if not isinstance(node, DirInode):
                return -errno.EISDIR
            if existing.children:
                return -errno.ENOTEMPTY
        elif existing is not None and isinstance(node, DirInode):
            return -errno.ENOTDIR
        src_dir.move(src_name, dst_dir, dst_name, node)
        return 0

    @calls("renameat")
    def sys_renameat(self, olddir: int, oldp: int, newdir: int, newp: int, *_: int) -> int:
        return self.sys_renameat2(olddir, oldp, newdir, newp, 0)

    @calls("getcwd")
    def sys_getcwd(self, buf: int, size: int, *_: int) -> int:
        raw = self.cwd.encode() + b"\0"
        if size < len(raw):
            return -errno.ERANGE
        self.p.write(buf, raw)
        return len(raw)

    @calls("chdir")
    def sys_chdir(self, pathp: int, *_: int) -> int:
        node, canon = self.vfs.walk(self.path(pathp), self.cwd)
        if not isinstance(node, DirInode):
            return -errno.ENOTDIR
        self.cwd = canon
        return 0

    @calls("fchdir")
    def sys_fchdir(self, fd: int, *_: int) -> int:
        f = self.file(fd)
        if not isinstance(f, DirFile):
            return -errno.ENOTDIR
        self.cwd = f.path
        return 0

    @calls("umask")
    def sys_umask(self, mask: int, *_: int) -> int:
        old, self.umask = self.umask, mask & 0o777
        return old

    @calls("fchmodat")
    def sys_fchmodat(self, dirfd: int, pathp: int, mode: int, *_: int) -> int:
        node = self.lookup(dirfd, self.path(pathp))[0]
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    @calls("fchmod")
    def sys_fchmod(self, fd: int, mode: int, *_: int) -> int:
        f = self.file(fd)
        if f.inode is not None:
            f.inode.mode = (f.inode.mode & ~0o7777) | (mode & 0o7777)
        return 0

    @calls("fchownat", "fchown")
    def sys_fchownat(self, *_: int) -> int:
        return 0

    @calls("utimensat")
    def sys_utimensat(self, dirfd: int, pathp: int, times: int, flags: int, *_: int) -> int:
        """utimensat(2): the times are [atime, mtime] (NULL: both now; UTIME_NOW, UTIME_OMIT);
        an inode keeps one time, the modification time."""
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            return -errno.EINVAL
        mtime: int | None = Clock.now_ns()
        if times:
            raw = self.p.read(times, 2 * TIMESPEC_SIZE)
            given = []
            for half in (raw[:TIMESPEC_SIZE], raw[TIMESPEC_SIZE:]):
                nsec = int.from_bytes(half[8:], "little")
                given.append(None if nsec == UTIME_OMIT else mtime if nsec == UTIME_NOW else timespec_ns(half))
            mtime = given[1]
        node = self._stat_target(dirfd, pathp, flags) if pathp else self.file(dirfd).inode
        if node is not None and mtime is not None:
            node.mtime_ns = mtime
        return 0
