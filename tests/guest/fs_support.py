"""File syscalls as EL0 makes them, on a real Process (tests/guest/process_support.py):
paths and buffers placed in the process's memory, stat(2) records decoded by the
asm-generic layout arm64 uses."""

from __future__ import annotations

import struct
from typing import NamedTuple

from unirealm.guest.process import Process

from .process_support import call, scratch

AT_FDCWD = -100
# open(2)'s flags on arm64 (include/uapi/asm-generic/fcntl.h, arch/arm64/include/uapi/asm/fcntl.h)
O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_NONBLOCK = 0o100, 0o200, 0o1000, 0o2000, 0o4000
O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_PATH = 0o40000, 0o100000, 0o2000000, 0o10000000
O_TMPFILE = 0o20000000 | O_DIRECTORY
SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4


class Stat(NamedTuple):
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int


class Fs:
    """A process's file calls: strings go to a fresh page each, data to `buf`."""

    def __init__(self, p: Process) -> None:
        self.p = p
        self.strings = scratch(p, 0x10000)
        self.next = 0
        self.buf = scratch(p, 0x10000)

    def __call__(self, name: str, *args: int) -> int | None:
        return call(self.p, name, *args)

    def cstr(self, text: str | bytes) -> int:
        raw = text.encode() if isinstance(text, str) else text
        addr = self.strings + self.next
        self.p.write(addr, raw + b"\0")
        self.next = (self.next + len(raw) + 16) & ~7 & 0xFFFF
        return addr

    def open(self, path: str, flags: int = 0, mode: int = 0o644, dirfd: int = AT_FDCWD) -> int:
        r = self("openat", dirfd, self.cstr(path), flags, mode)
        assert r is not None
        return r

    def write(self, fd: int, data: bytes) -> int | None:
        self.p.write(self.buf, data)
        return self("write", fd, self.buf, len(data))

    def read(self, fd: int, n: int) -> bytes | int:
        r = self("read", fd, self.buf, n)
        assert r is not None
        return self.p.read(self.buf, r) if r >= 0 else r

    def pread(self, fd: int, n: int, off: int) -> bytes | int:
        r = self("pread64", fd, self.buf, n, off)
        assert r is not None
        return self.p.read(self.buf, r) if r >= 0 else r

    def pwrite(self, fd: int, data: bytes, off: int) -> int | None:
        self.p.write(self.buf, data)
        return self("pwrite64", fd, self.buf, len(data), off)

    def fstat(self, fd: int) -> Stat:
        assert self("fstat", fd, self.buf + 0x8000) == 0
        return self._stat()

    def lstat(self, path: str) -> Stat:
        assert self("newfstatat", AT_FDCWD, self.cstr(path), self.buf + 0x8000, 0x100) == 0
        return self._stat()

    def _stat(self) -> Stat:
        _dev, ino, mode, nlink, uid, gid, rdev = struct.unpack_from("<QQIIIIQ", self.p.read(self.buf + 0x8000, 40))
        size, _blksize, _pad, blocks = struct.unpack_from("<qiiq", self.p.read(self.buf + 0x8000 + 48, 24))
        return Stat(ino, mode, nlink, uid, gid, rdev, size, blocks)

    def read_file(self, path: str) -> bytes:
        fd = self.open(path)
        assert fd >= 0
        out = self.read(fd, 1 << 16)
        assert isinstance(out, bytes)
        self("close", fd)
        return out
