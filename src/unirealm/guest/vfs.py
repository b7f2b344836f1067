"""The unikernel's virtual file system: a ramfs (from the initrd and the image payload),
devfs, procfs, and the open-file objects of files and directories; the device files (null,
zero, random, the console) are guest/devfiles.py's, pipes, eventfds and epoll instances
guest/pipes.py's.

Everything lives in kernel memory; errors are raised as FsError(errno) and turned into
-errno by the syscall layer.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..arch.cpio import S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG
from .errors import FsError
from .pagecache import PAGE, FilePages

if TYPE_CHECKING:
    from .interfaces import UserMemory

O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR = 3, 0, 1, 2
O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_APPEND, O_NONBLOCK = 0o100, 0o200, 0o400, 0o1000, 0o2000, 0o4000
O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_PATH = 0o40000, 0o100000, 0o2000000, 0o10000000
O_TMPFILE = 0o20000000 | O_DIRECTORY
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 1, 2, 4, 8, 0x10, 0x20
DT = {S_IFREG: 8, S_IFDIR: 4, S_IFLNK: 10, S_IFCHR: 2, S_IFIFO: 1}
SYMLOOP_MAX = 40

_inos = itertools.count(2)


class WouldBlock(Exception):
    """The operation cannot complete now (empty pipe, full pipe, ...)."""


class Clock:
    now_ns: Callable[[], int] = staticmethod(lambda: 0)


# --- inodes -------------------------------------------------------------------------------
ROOT_DEV = 0x801  # st_dev of the root file system's files (8:1)


class Inode:
    st_dev = ROOT_DEV  # the file system's device number (procfs and each 9p mount have their own)

    def __init__(self, mode: int, uid: int = 0, gid: int = 0, mtime_ns: int | None = None) -> None:
        self.ino = next(_inos)
        self.mode = mode
        self.uid, self.gid = uid, gid
        self.nlink = 1
        self.mtime_ns = Clock.now_ns() if mtime_ns is None else mtime_ns
        self.rdev = 0

    @property
    def kind(self) -> int:
        return self.mode & S_IFMT

    def size(self) -> int:
        return 0

    def blocks(self) -> int:
        """st_blocks: 512-byte units of storage."""
        return (self.size() + 511) // 512

    def open(self, flags: int, path: str) -> OpenFile:
        raise FsError(errno.ENXIO)


class RegInode(Inode):
    """A regular file. Its contents are page-cache pages in guest RAM (`pages`); a file of the
    image's payload (`loader`) is read from there until it is first written or shared-mapped;
    a procfs file (`gen`) makes its contents at open time."""

    def __init__(self, data: bytes | bytearray = b"", mode: int = 0o644, loader: Callable[[], bytes] | None = None,
                 gen: Callable[[], bytes] | None = None, **kw: Any) -> None:
        super().__init__(S_IFREG | (mode & 0o7777), **kw)
        self.loader = loader
        self.gen = gen
        self._image: bytes | None = None
        self.pages: FilePages | None = FilePages(data) if loader is None and gen is None else None

    def _loaded(self) -> bytes:
        if self._image is None:
            assert self.loader is not None
            self._image = self.loader()
        return self._image

    @property
    def data(self) -> bytes:
        """The whole file (exec, private file mappings)."""
        return self.read_at(0, self.size())

    def file_pages(self) -> FilePages:
        """The contents as page-cache pages (a payload file is copied in on first need)."""
        if self.pages is None:
            self.pages = FilePages(self._loaded() if self.loader is not None else b"")
            self.loader = self._image = None
        return self.pages

    def read_at(self, offset: int, size: int) -> bytes:
        if self.pages is not None:
            return self.pages.read(offset, size)
        if self.loader is not None:
            return self._loaded()[offset : offset + size]
        return b""

    def write_at(self, offset: int, data: bytes) -> int:
        n = self.file_pages().write(offset, data)
        self.mtime_ns = Clock.now_ns()
        return n

    def truncate(self, length: int) -> None:
        self.file_pages().truncate(length)
        self.mtime_ns = Clock.now_ns()

    def punch(self, offset: int, length: int) -> None:
        self.file_pages().punch(offset, length)

    def size(self) -> int:
        if self.pages is not None:
            return self.pages.size
        return len(self._loaded()) if self.loader is not None else 0

    def blocks(self) -> int:
        if self.pages is not None:
            return len(self.pages.pages) * (PAGE // 512)  # a hole takes none
        return super().blocks()

    # MAP_SHARED: the process maps the cache pages themselves, each with a reference
    def map_page(self, idx: int) -> int:
        pages = self.file_pages()
        return pages.store.ref(pages.page(idx))

    def unmap_page(self, ipa: int) -> None:
        self.file_pages().store.unref(ipa)

    def sync_pages(self) -> None:
        """Write mapped pages back to where the file lives (nothing to do in RAM)."""

    def open(self, flags: int, path: str) -> OpenFile:
        if self.gen is not None:
            return RegFile(RegInode(self.gen(), mode=self.mode), flags, path)
        if flags & O_TRUNC and (flags & O_ACCMODE) != O_RDONLY:
            self.truncate(0)
        return RegFile(self, flags, path)


class DirInode(Inode):
    def __init__(self, mode: int = 0o755, parent: DirInode | None = None,
                 dynamic: Callable[[], dict[str, Inode]] | None = None, **kw: Any) -> None:
        super().__init__(S_IFDIR | (mode & 0o7777), **kw)
        self._children: dict[str, Inode] = {}
        self.parent = parent or self
        self.dynamic = dynamic
        self.nlink = 2

    @property
    def children(self) -> dict[str, Inode]:
        return self.dynamic() if self.dynamic is not None else self._children

    def get(self, name: str) -> Inode | None:
        return self.children.get(name)

    def add(self, name: str, node: Inode) -> Inode:
        if self.dynamic is not None:
            raise FsError(errno.EPERM)
        self._children[name] = node
        if isinstance(node, DirInode):
            node.parent = self
        return node

    def open(self, flags: int, path: str) -> OpenFile:
        if flags & O_ACCMODE != O_RDONLY:
            raise FsError(errno.EISDIR)
        return DirFile(self, flags, path)

    # Changes to the directory's entries (a 9p directory sends them to its server).
    def mkdir(self, name: str, mode: int) -> None:
        self.add(name, DirInode(mode))

    def empty(self) -> bool:
        """May rmdir remove it?"""
        return not self.children

    def remove(self, name: str, node: Inode) -> None:
        if self.dynamic is not None:
            raise FsError(errno.EPERM)
        del self._children[name]
        node.nlink -= 1

    def move(self, name: str, dst: DirInode, dst_name: str, node: Inode) -> None:
        if type(dst).move is not DirInode.move:
            raise FsError(errno.EXDEV)
        del self._children[name]
        dst._children[dst_name] = node
        if isinstance(node, DirInode):
            node.parent = dst

    def exchange(self, name: str, dst: DirInode, dst_name: str) -> None:
        if type(dst).exchange is not DirInode.exchange:
            raise FsError(errno.EXDEV)
        self._children[name], dst._children[dst_name] = dst._children[dst_name], self._children[name]

    def link(self, name: str, node: Inode) -> None:
        if self.dynamic is not None:
            raise FsError(errno.EPERM)
        self._children[name] = node
        node.nlink += 1


class LinkInode(Inode):
    def __init__(self, target: str | Callable[[], str], **kw: Any) -> None:
        super().__init__(S_IFLNK | 0o777, **kw)
        self._target = target

    @property
    def target(self) -> str:
        return self._target() if callable(self._target) else self._target

    def size(self) -> int:
        return len(self.target.encode())


class DevInode(Inode):
    """A character device; `factory(flags, path)` opens it."""

    def __init__(self, rdev: int, factory: Callable[[int, str], OpenFile], mode: int = 0o666) -> None:
        super().__init__(S_IFCHR | mode)
        self.rdev = rdev
        self.factory = factory

    def open(self, flags: int, path: str) -> OpenFile:
        f = self.factory(flags, path)
        f.inode = self
        return f


# --- open file descriptions ---------------------------------------------------------------
class OpenFile:
    def __init__(self, inode: Inode | None, flags: int, path: str) -> None:
        self.inode = inode
        self.flags = flags & ~(O_CLOEXEC | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)  # open-time only, as Linux's
        self.path = path
        self.pos = 0
        self.refs = 0

    @property
    def readable(self) -> bool:
        return (self.flags & O_ACCMODE) in (O_RDONLY, O_RDWR) and not self.flags & O_PATH

    @property
    def writable(self) -> bool:
        return (self.flags & O_ACCMODE) in (O_WRONLY, O_RDWR) and not self.flags & O_PATH

    @property
    def nonblock(self) -> bool:
        return bool(self.flags & O_NONBLOCK)

    def read(self, size: int) -> bytes:
        raise FsError(errno.EINVAL)

    def write(self, data: bytes) -> int:
        raise FsError(errno.EINVAL)

    def io_timeout(self, write: bool) -> int | None:
        """How long (ns) a blocking read or write may wait (None: for ever); a socket's
        SO_RCVTIMEO/SO_SNDTIMEO, after which the call fails with EAGAIN."""
        return None

    def io_limit(self, size: int, write: bool) -> int:
        """How many of `size` bytes one read or write can move now, so that the syscall layer
        copies no more than that from or to the app (a socket's free send space, the bytes it
        holds); the rest of the app's buffer is left for its next call."""
        return size

    def pread(self, size: int, offset: int) -> bytes:
        raise FsError(errno.ESPIPE)

    def pwrite(self, data: bytes, offset: int) -> int:
        raise FsError(errno.ESPIPE)

    def seek(self, offset: int, whence: int) -> int:
        raise FsError(errno.ESPIPE)

    def poll(self) -> int:
        return (POLLIN if self.readable else 0) | (POLLOUT if self.writable else 0)

    def wakeups(self, events: int) -> int | None:
        """The wake-ups an epoll entry waiting for `events` got from this file (EPOLLET), keys
        filtered as ep_poll_callback does; None: not counted, its entries are level-triggered."""
        return None

    def ioctl(self, req: int, arg: int, mem: UserMemory) -> int:
        raise FsError(errno.ENOTTY)

    def close(self) -> None:
        pass

    def fsync(self) -> None:
        pass

    def is_tty(self) -> bool:
        return False


class RegFile(OpenFile):
    inode: RegInode

    def read(self, size: int) -> bytes:
        out = self.pread(size, self.pos)
        self.pos += len(out)
        return out

    def pread(self, size: int, offset: int) -> bytes:
        if not self.readable:
            raise FsError(errno.EBADF)
        return self.inode.read_at(offset, size)

    def write(self, data: bytes) -> int:
        if self.flags & O_APPEND:
            self.pos = self.inode.size()
        n = self.pwrite(data, self.pos)
        self.pos += n
        return n

    def pwrite(self, data: bytes, offset: int) -> int:
        if not self.writable:
            raise FsError(errno.EBADF)
        return self.inode.write_at(offset, data)

    def seek(self, offset: int, whence: int) -> int:
        size = self.inode.size()
        base = {0: 0, 1: self.pos, 2: size}.get(whence)
        if whence in (3, 4):  # SEEK_DATA, SEEK_HOLE
            if offset < 0 or offset >= size:
                raise FsError(errno.ENXIO)
            base, offset = self._seek_data(offset, whence == 3), 0
        if base is None or base + offset < 0:
            raise FsError(errno.EINVAL)
        self.pos = base + offset
        return self.pos

    def _seek_data(self, offset: int, data: bool) -> int:
        """SEEK_DATA: the next offset with data; SEEK_HOLE: the next hole (EOF at the end)."""
        pages = self.inode.pages
        size = self.inode.size()
        extents = pages.data_extents() if pages is not None else [(0, size)]
        for lo, hi in extents:
            if data and offset < hi:
                return max(lo, offset)
            if not data and offset < lo:
                return offset
            if not data and offset < hi:
                return hi
        if data:
            raise FsError(errno.ENXIO)
        return offset

    def truncate(self, length: int) -> None:
        self.inode.truncate(length)

    def punch(self, offset: int, length: int) -> None:
        self.inode.punch(offset, length)


class DirFile(OpenFile):
    inode: DirInode

    def __init__(self, inode: DirInode, flags: int, path: str) -> None:
        super().__init__(inode, flags, path)
        self.listing: list[tuple[str, Inode]] | None = None

    def read(self, size: int) -> bytes:
        raise FsError(errno.EISDIR)

    def pread(self, size: int, offset: int) -> bytes:
        raise FsError(errno.EISDIR)

    def seek(self, offset: int, whence: int) -> int:
        if whence != 0 or offset < 0:
            raise FsError(errno.EINVAL)
        self.pos = offset
        if offset == 0:
            self.listing = None
        return offset

    def entries(self) -> list[tuple[str, Inode]]:
        if self.listing is None:
            node = self.inode
            self.listing = [(".", node), ("..", node.parent), *sorted(node.children.items())]
        return self.listing


# termios (asm-generic): c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]
TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGPGRP, TIOCSPGRP, TIOCGWINSZ, TIOCSWINSZ, FIONREAD = (
    0x5401, 0x5402, 0x5403, 0x5404, 0x540F, 0x5410, 0x5413, 0x5414, 0x541B)

NAME_MAX = 255  # the longest name a directory entry takes, in bytes


class Vfs:
    def __init__(self) -> None:
        self.root = DirInode()
        # /proc/mounts' lines: (source, mount point, file system type, options)
        self.mounts: list[tuple[str, str, str, str]] = [("rootfs", "/", "rootfs", "rw")]
        for d in ("dev", "proc", "tmp", "etc"):
            self.root.add(d, DirInode(0o1777 if d == "tmp" else 0o755))

    # paths
    def walk(self, path: str, cwd: str = "/", follow: bool = True, _depth: int = 0) -> tuple[Inode, str]:
        """The inode at `path` and its canonical absolute path."""
        if not path:
            raise FsError(errno.ENOENT)
        full = path if path.startswith("/") else cwd.rstrip("/") + "/" + path
        parts = [p for p in full.split("/") if p and p != "."]
        stack: list[tuple[str, DirInode]] = []
        node: Inode = self.root
        links = _depth
        i = 0
        while i < len(parts):
            name = parts[i]
            if not isinstance(node, DirInode):
                raise FsError(errno.ENOTDIR)
            if name == "..":
                if stack:
                    _, node = stack.pop()
                i += 1
                continue
            if len(name) > NAME_MAX // 4 and len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, full)
            child = node.get(name)
            if child is None:
                raise FsError(errno.ENOENT, full)
            last = i == len(parts) - 1
            if isinstance(child, LinkInode) and (follow or not last):
                links += 1
                if links > SYMLOOP_MAX:
                    raise FsError(errno.ELOOP)
                target = child.target
                rest = parts[i + 1 :]
                if target.startswith("/"):
                    stack, node = [], self.root
                    parts = [p for p in target.split("/") if p and p != "."] + rest
                else:
                    parts = [p for p in target.split("/") if p and p != "."] + rest
                i = 0
                if not parts:
                    break
                continue
            stack.append((name, node))
            node = child
            i += 1
        canon = "/" + "/".join(n for n, _ in stack)
        if full.endswith("/") and not isinstance(node, DirInode):
            raise FsError(errno.ENOTDIR)
        return node, canon

    def parent_of(self, path: str, cwd: str = "/") -> tuple[DirInode, str, str]:
        """(directory, last name, canonical path of the directory) for creating `path`."""
        full = path if path.startswith("/") else cwd.rstrip("/") + "/" + path
        stripped = full.rstrip("/")
        head, _, name = stripped.rpartition("/")
        if not name or name in (".", ".."):
            raise FsError(errno.EEXIST if not name else errno.EINVAL)
        parent, canon = self.walk(head or "/", cwd)
        if len(name) > NAME_MAX // 4 and len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG, full)
        if not isinstance(parent, DirInode):
            raise FsError(errno.ENOTDIR)
        return parent, name, canon

    def makedirs(self, path: str, mode: int = 0o755) -> DirInode:
        node: DirInode = self.root
        here = "/"  # the canonical path of `node`
        for part in [p for p in path.split("/") if p]:
            child = node.get(part)
            canon = here.rstrip("/") + "/" + part
            if isinstance(child, LinkInode):  # a relative target is taken from the link's directory
                child, canon = self.walk(part, here)
            if child is None:
                child = node.add(part, DirInode(mode))
            if not isinstance(child, DirInode):
                raise FsError(errno.ENOTDIR, path)
            node, here = child, canon
        return node

    def install(self, path: str, node: Inode) -> Inode:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.makedirs(head)
        existing = parent.get(name)
        if isinstance(existing, DirInode) and isinstance(node, DirInode):  # as initramfs: chown, chmod
            existing.mode = node.mode
            existing.uid, existing.gid, existing.mtime_ns = node.uid, node.gid, node.mtime_ns
            return existing
        return parent.add(name, node)

    def read_file(self, path: str) -> bytes:
        node, _ = self.walk(path)
        if not isinstance(node, RegInode):
            raise FsError(errno.EISDIR if isinstance(node, DirInode) else errno.EACCES, path)
        return node.data

