"""The descriptor syscalls (guest/fileio.py) on a real Process, with Linux's answers:
open(2) (EEXIST, ELOOP for O_NOFOLLOW, ENOTDIR, O_CREAT through a dangling link, the umask,
O_TMPFILE, O_PATH), close_range(2), read(2)/write(2)/readv(2)/writev(2) (EBADF, EFAULT, a
short transfer at the first fault, IOV_MAX), pread(2)/pwrite(2) (EINVAL for a negative
offset, ESPIPE on a pipe), sendfile(2), truncate(2), dup3(2), fcntl(2), pipe2(2), eventfd(2)."""

from __future__ import annotations

import errno
import struct

from unirealm.guest.devfiles import NullFile
from unirealm.guest.vfs import DevInode, OpenFile

from .fs_support import (
    AT_FDCWD,
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    SEEK_CUR,
    SEEK_SET,
    Fs,
)
from .process_support import WILD, scratch

F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW = range(8)
F_DUPFD_CLOEXEC, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ = 1030, 36, 37, 38, 1032
F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
CLOSE_RANGE_CLOEXEC = 4


def cloexec(fs: Fs, fd: int) -> int | None:
    return fs("fcntl", fd, F_GETFD, 0)


def pipe(fs: Fs, flags: int = 0) -> tuple[int, int]:
    assert fs("pipe2", fs.buf + 0x9000, flags) == 0
    r, w = struct.unpack("<ii", fs.p.read(fs.buf + 0x9000, 8))
    return r, w


# --- open ---------------------------------------------------------------------------------
def test_o_creat_applies_the_umask_and_o_excl_refuses_an_existing_file(fs: Fs) -> None:
    fd = fs.open("/tmp/new", O_CREAT | O_EXCL | O_WRONLY, 0o777)
    assert fd >= 0 and fs.fstat(fd).mode & 0o7777 == 0o755  # umask 022
    assert fs("umask", 0o077) == 0o022
    assert fs.fstat(fs.open("/tmp/new2", O_CREAT | O_WRONLY, 0o17666)).mode & 0o7777 == 0o7600
    assert fs.open("/tmp/new", O_CREAT | O_EXCL | O_WRONLY) == -errno.EEXIST
    assert fs.open("/tmp", O_CREAT | O_EXCL | O_RDONLY) == -errno.EEXIST
    assert fs.open("/tmp/new", O_CREAT | O_WRONLY) >= 0  # without O_EXCL: the existing file
    assert fs.open("/tmp/new", O_EXCL | O_RDONLY) >= 0  # O_EXCL without O_CREAT: no check
    assert fs.fstat(fs.open("/tmp/fresh", O_CREAT | O_RDWR)).size == 0
    assert fs.open("/tmp/none") == -errno.ENOENT
    assert fs.open("/nodir/f", O_CREAT | O_WRONLY) == -errno.ENOENT
    assert fs.open("/tmp/new/x", O_CREAT | O_WRONLY) == -errno.ENOTDIR


def test_o_creat_through_a_dangling_link_creates_its_target(fs: Fs) -> None:
    assert fs("symlinkat", fs.cstr("target"), AT_FDCWD, fs.cstr("/tmp/link")) == 0
    fd = fs.open("/tmp/link", O_CREAT | O_WRONLY)
    assert fd >= 0 and fs.write(fd, b"via link") == 8
    assert fs.read_file("/tmp/target") == b"via link"
    assert fs.lstat("/tmp/link").mode & 0o170000 == 0o120000  # the link stays a link


def test_o_nofollow_o_path_and_o_directory(fs: Fs) -> None:
    fs.open("/tmp/f", O_CREAT | O_WRONLY)
    assert fs("symlinkat", fs.cstr("/tmp/f"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    assert fs.open("/tmp/l", O_NOFOLLOW) == -errno.ELOOP
    assert fs.open("/tmp/l", O_NOFOLLOW | O_CREAT | O_WRONLY) == -errno.ELOOP
    lp = fs.open("/tmp/l", O_NOFOLLOW | O_PATH)
    assert lp >= 0 and fs.fstat(lp).mode & 0o170000 == 0o120000
    assert fs.read(lp, 1) == -errno.EBADF and fs.write(lp, b"x") == -errno.EBADF
    assert fs.open("/tmp/f", O_DIRECTORY) == -errno.ENOTDIR
    assert fs.open("/tmp/l", O_DIRECTORY) == -errno.ENOTDIR
    fp = fs.open("/tmp/f", O_PATH)
    assert fp >= 0 and fs.read(fp, 1) == -errno.EBADF
    dp = fs.open("/tmp", O_PATH)
    assert dp >= 0 and fs.open("f", O_RDONLY, dirfd=dp) >= 0  # an O_PATH directory is a dirfd
    assert fs.open("f", O_RDONLY, dirfd=fp) == -errno.ENOTDIR
    assert fs.open("/tmp/f", O_RDONLY, dirfd=fp) >= 0  # an absolute path ignores dirfd
    assert fs("openat", AT_FDCWD, 0, 0, 0) == -errno.EFAULT
    assert fs("openat", AT_FDCWD, WILD, 0, 0) == -errno.EFAULT


def test_o_tmpfile_is_an_unnamed_file(fs: Fs) -> None:
    fd = fs.open("/tmp", O_TMPFILE | O_RDWR, 0o666)
    assert fd >= 0 and fs.fstat(fd).size == 0
    assert fs.write(fd, b"anon") == 4 and fs.pread(fd, 4, 0) == b"anon"
    assert fs.fstat(fd).mode & 0o7777 == 0o644
    d = fs.open("/tmp", O_DIRECTORY)
    n = fs("getdents64", d, fs.buf + 0x4000, 4096)
    assert n == 2 * 24  # only . and ..
    assert fs.open("/tmp/none", O_TMPFILE | O_RDWR) == -errno.ENOENT


def test_o_cloexec_and_close(fs: Fs) -> None:
    fs.open("/tmp/f", O_CREAT | O_WRONLY)
    a, b = fs.open("/tmp/f", O_CLOEXEC), fs.open("/tmp/f")
    assert (cloexec(fs, a), cloexec(fs, b)) == (1, 0)
    assert fs("fcntl", a, F_GETFL, 0) == O_RDONLY  # O_CLOEXEC is the descriptor's, not the file's
    assert fs("close", a) == 0 and fs("close", a) == -errno.EBADF
    assert fs("close", -1) == -errno.EBADF
    assert fs("close", (1 << 32) | b) == 0  # an int: the high bits are not the fd's


def test_close_range(fs: Fs) -> None:
    fs.open("/tmp/f", O_CREAT | O_WRONLY)
    fds = [fs.open("/tmp/f") for _ in range(6)]
    assert fs("close_range", fds[1], fds[2], 0) == 0
    assert cloexec(fs, fds[1]) == -errno.EBADF and cloexec(fs, fds[2]) == -errno.EBADF
    assert cloexec(fs, fds[0]) == 0 and cloexec(fs, fds[3]) == 0
    assert fs("close_range", fds[3], fds[4], CLOSE_RANGE_CLOEXEC) == 0
    assert (cloexec(fs, fds[3]), cloexec(fs, fds[4]), cloexec(fs, fds[5])) == (1, 1, 0)
    assert fs("close_range", fds[5], fds[4], 0) == -errno.EINVAL  # first > last
    assert fs("close_range", 0, 100, 1) == -errno.EINVAL  # no such flag
    assert cloexec(fs, fds[5]) == 0
    assert fs("close_range", fds[5], 0xFFFFFFFF, 0) == 0  # ~0U: to the end
    assert cloexec(fs, fds[5]) == -errno.EBADF and cloexec(fs, fds[0]) == 0


# --- read and write -----------------------------------------------------------------------
def test_read_write_refusals(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    assert fs("read", 99, fs.buf, 1) == -errno.EBADF and fs("write", 99, fs.buf, 1) == -errno.EBADF
    assert fs("write", fd, WILD, 4) == -errno.EFAULT
    assert fs.write(fd, b"abcd") == 4
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    assert fs("read", fd, WILD, 4) == -errno.EFAULT
    assert fs("lseek", fd, 0, SEEK_CUR) == 0  # nothing was taken
    assert fs("write", fd, fs.buf, 0) == 0 and fs("read", fd, fs.buf, 0) == 0


def test_a_transfer_stops_at_the_first_faulting_page(fs: Fs) -> None:
    buf = scratch(fs.p, 0x2000)
    assert fs("munmap", buf + 0x1000, 0x1000) == 0
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    fs.p.write(buf + 0x1000 - 6, b"123456")
    assert fs("write", fd, buf + 0x1000 - 6, 100) == 6
    assert fs("pwrite64", fd, buf + 0x1000 - 3, 100, 10) == 3
    assert fs.read_file("/tmp/f") == b"123456" + bytes(4) + b"456"
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    assert fs("read", fd, buf + 0x1000 - 4, 100) == 4 and fs.p.read(buf + 0x1000 - 4, 4) == b"1234"
    assert fs("lseek", fd, 0, SEEK_CUR) == 4  # what did not fit stays unread
    assert fs("pread64", fd, buf + 0x1000 - 2, 100, 11) == 2 and fs.p.read(buf + 0x1000 - 2, 2) == b"56"
    assert fs("pread64", fd, buf + 0x1000, 100, 0) == -errno.EFAULT


def iovecs(fs: Fs, at: int, parts: list[tuple[int, int]]) -> int:
    fs.p.write(at, b"".join(struct.pack("<QQ", b, n) for b, n in parts))
    return at


def test_readv_and_writev(fs: Fs) -> None:
    fd = fs.open("/tmp/v", O_CREAT | O_RDWR)
    b = fs.buf
    fs.p.write(b, b"hello world!")
    iov = iovecs(fs, b + 0x1000, [(b, 5), (b + 100, 0), (b + 5, 7)])
    assert fs("writev", fd, iov, 3) == 12
    assert fs.read_file("/tmp/v") == b"hello world!"
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    iov = iovecs(fs, b + 0x1000, [(b + 0x200, 3), (b + 0x300, 0), (b + 0x400, 4), (b + 0x500, 100), (b + 0x600, 5)])
    assert fs("readv", fd, iov, 5) == 12  # the fourth is short: the fifth gets nothing
    assert fs.p.read(b + 0x200, 3) == b"hel" and fs.p.read(b + 0x400, 4) == b"lo w"
    assert fs.p.read(b + 0x500, 5) == b"orld!"
    assert fs("readv", fd, iov, 5) == 0  # EOF
    assert fs("writev", fd, iov, 0) == 0 and fs("readv", fd, iov, 0) == 0
    zero = iovecs(fs, b + 0x1000, [(b, 0), (WILD, 0)])
    assert fs("writev", fd, zero, 2) == 0


def test_iovec_counts_and_faults(fs: Fs) -> None:
    fd = fs.open("/tmp/v", O_CREAT | O_RDWR)
    b = fs.buf
    many = iovecs(fs, b + 0x1000, [(b, 1)] * 1025)
    assert fs("writev", fd, many, 1025) == -errno.EINVAL  # more than IOV_MAX
    assert fs("readv", fd, many, 1025) == -errno.EINVAL
    assert fs("pwritev", fd, many, 1025, 0) == -errno.EINVAL
    assert fs("writev", fd, many, 1024) == 1024
    assert fs("writev", fd, WILD, 1) == -errno.EFAULT
    bad = iovecs(fs, b + 0x1800, [(WILD, 4)])
    assert fs("writev", fd, bad, 1) == -errno.EFAULT
    part = iovecs(fs, b + 0x1000, [(b, 3), (WILD, 4), (b, 3)])
    assert fs("writev", fd, part, 3) == 3  # up to the first fault
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    assert fs("readv", fd, part, 3) == 3  # the data before the fault is delivered
    assert fs("readv", fd, bad, 1) == -errno.EFAULT
    r = fs.open("/tmp/v", O_RDONLY)
    assert fs("writev", r, part, 1) == -errno.EBADF and fs("pwritev", r, part, 1, 0) == -errno.EBADF
    assert fs("readv", fs.open("/tmp/v", O_WRONLY), part, 1) == -errno.EBADF


def test_positioned_io(fs: Fs) -> None:
    fd = fs.open("/tmp/p", O_CREAT | O_RDWR)
    assert fs.pwrite(fd, b"abcdef", 2) == 6
    assert fs.pread(fd, 3, 3) == b"bcd" and fs("lseek", fd, 0, SEEK_CUR) == 0
    assert fs.pread(fd, 10, 100) == b""
    for neg in (-1, -(1 << 63)):
        assert fs.pwrite(fd, b"x", neg) == -errno.EINVAL
        assert fs.pread(fd, 1, neg) == -errno.EINVAL
        assert fs("preadv", fd, fs.buf, 0, neg) == -errno.EINVAL
        assert fs("pwritev", fd, fs.buf, 0, neg) == -errno.EINVAL
    b = fs.buf
    fs.p.write(b + 0x100, b"XYZ")
    iov = iovecs(fs, b + 0x1000, [(b + 0x100, 2), (b + 0x102, 1)])
    assert fs("pwritev", fd, iov, 2, 4) == 3
    assert fs.read_file("/tmp/p") == b"\0\0abXYZf"
    iov = iovecs(fs, b + 0x1000, [(b + 0x200, 2), (b + 0x300, 10), (b + 0x400, 4)])
    assert fs("preadv", fd, iov, 3, 3) == 5  # 2, then 3 of 10: short, the third gets none
    assert fs.p.read(b + 0x200, 2) == b"bX" and fs.p.read(b + 0x300, 3) == b"YZf"
    assert fs("lseek", fd, 0, SEEK_CUR) == 0
    assert fs("preadv", fs.open("/tmp/p", O_WRONLY), iov, 3, 0) == -errno.EBADF
    r, w = pipe(fs)
    assert fs.pwrite(w, b"x", 0) == -errno.ESPIPE and fs.pread(r, 1, 0) == -errno.ESPIPE
    assert fs("lseek", r, 0, SEEK_SET) == -errno.ESPIPE


def test_sendfile(fs: Fs) -> None:
    src = fs.open("/tmp/src", O_CREAT | O_RDWR)
    assert fs.write(src, b"0123456789") == 10
    dst = fs.open("/tmp/dst", O_CREAT | O_WRONLY)
    off = fs.buf + 0x800
    fs.p.write(off, (3).to_bytes(8, "little"))
    assert fs("sendfile", dst, src, off, 4) == 4
    assert int.from_bytes(fs.p.read(off, 8), "little") == 7 and fs("lseek", src, 0, SEEK_CUR) == 10
    assert fs("lseek", src, 8, SEEK_SET) == 8
    assert fs("sendfile", dst, src, 0, 100) == 2 and fs("lseek", src, 0, SEEK_CUR) == 10
    assert fs("sendfile", dst, src, 0, 100) == 0
    assert fs.read_file("/tmp/dst") == b"345689"
    fs.p.write(off, (-1).to_bytes(8, "little", signed=True))
    assert fs("sendfile", dst, src, off, 4) == -errno.EINVAL
    assert fs("sendfile", src, dst, 0, 4) == -errno.EBADF  # the input is write-only
    assert fs("sendfile", fs.open("/tmp/src"), src, 0, 4) == -errno.EBADF  # the output is read-only
    assert fs("sendfile", 99, src, 0, 4) == -errno.EBADF


def test_truncate_and_ftruncate(fs: Fs) -> None:
    fd = fs.open("/tmp/t", O_CREAT | O_RDWR)
    fs.write(fd, b"abcdef")
    assert fs("ftruncate", fd, 3) == 0 and fs.read_file("/tmp/t") == b"abc"
    assert fs("ftruncate", fd, 5) == 0 and fs.read_file("/tmp/t") == b"abc\0\0"
    assert fs("ftruncate", fd, -1) == -errno.EINVAL
    assert fs("ftruncate", fs.open("/tmp/t"), 1) == -errno.EINVAL  # not open for writing
    assert fs("ftruncate", fs.open("/tmp", O_DIRECTORY), 1) == -errno.EINVAL
    assert fs("ftruncate", 99, 1) == -errno.EBADF
    path = fs.cstr("/tmp/t")
    assert fs("truncate", path, 1) == 0 and fs.read_file("/tmp/t") == b"a"
    assert fs("truncate", path, -5) == -errno.EINVAL
    assert fs("truncate", fs.cstr("/tmp"), 0) == -errno.EISDIR
    fs.p.vfs.install("/dev/null", DevInode(0x0103, lambda flags, path: NullFile(None, flags, path)))
    assert fs("truncate", fs.cstr("/dev/null"), 0) == -errno.EINVAL  # not a regular file
    assert fs("truncate", fs.cstr("/tmp/none"), 0) == -errno.ENOENT


def test_sync_calls(fs: Fs) -> None:
    fd = fs.open("/tmp/s", O_CREAT | O_RDWR)
    assert fs("fsync", fd) == 0 and fs("fdatasync", fd) == 0 and fs("sync") == 0
    assert fs("fsync", 99) == -errno.EBADF
    assert fs("flock", fd, 2) == 0 and fs("flock", 99, 2) == -errno.EBADF
    assert fs("fadvise64", fd, 0, 0, 0) == 0


# --- descriptors --------------------------------------------------------------------------
def test_dup_and_dup3(fs: Fs) -> None:
    fd = fs.open("/tmp/d", O_CREAT | O_RDWR)
    d = fs("dup", fd)
    assert d == fd + 1 and cloexec(fs, d) == 0
    assert fs.write(d, b"ab") == 2 and fs("lseek", fd, 0, SEEK_CUR) == 2  # one open file
    assert fs("dup", 99) == -errno.EBADF
    assert fs("dup3", fd, 10, O_CLOEXEC) == 10 and cloexec(fs, 10) == 1
    assert fs("dup3", d, 10, 0) == 10 and cloexec(fs, 10) == 0  # replaces what was there
    assert fs("dup3", fd, fd, 0) == -errno.EINVAL
    assert fs("dup3", 50, 50, 0) == -errno.EINVAL  # before the descriptor is looked up
    assert fs("dup3", fd, 11, 1) == -errno.EINVAL  # only O_CLOEXEC
    assert fs("dup3", fd, 11, O_NONBLOCK) == -errno.EINVAL
    assert fs("dup3", fd, 1024, 0) == -errno.EBADF  # RLIMIT_NOFILE
    assert fs("dup3", fd, -1, 0) == -errno.EBADF
    assert fs("dup3", 99, 11, 0) == -errno.EBADF
    assert fs("dup3", fd, 1023, 0) == 1023
    assert cloexec(fs, 11) == -errno.EBADF


def test_fcntl_descriptor_commands(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    assert fs("fcntl", fd, F_DUPFD, 20) == 20 and cloexec(fs, 20) == 0
    assert fs("fcntl", fd, F_DUPFD, 20) == 21
    assert fs("fcntl", fd, F_DUPFD_CLOEXEC, 0) == fd + 1 and cloexec(fs, fd + 1) == 1
    assert fs("fcntl", fd, F_DUPFD, 1024) == -errno.EINVAL
    assert fs("fcntl", fd, F_DUPFD, -1) == -errno.EINVAL
    assert fs("fcntl", fd, F_SETFD, 1) == 0 and cloexec(fs, fd) == 1
    assert fs("fcntl", fd, F_SETFD, 2) == 0 and cloexec(fs, fd) == 0
    assert fs("fcntl", 99, F_GETFD, 0) == -errno.EBADF
    assert fs("fcntl", fd, 9999, 0) == -errno.EINVAL


def test_fcntl_status_flags(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_EXCL | O_TRUNC | O_RDWR)
    assert fs("fcntl", fd, F_GETFL, 0) == O_RDWR  # the open-time flags are gone
    assert fs("fcntl", fd, F_SETFL, O_APPEND | O_NONBLOCK | O_WRONLY | O_CREAT) == 0
    assert fs("fcntl", fd, F_GETFL, 0) == O_RDWR | O_APPEND | O_NONBLOCK
    assert fs.write(fd, b"x") == 1 and fs.pwrite(fd, b"y", 0) == 1
    assert fs.read_file("/tmp/f") == b"xy"  # O_APPEND, set late, is honoured
    assert fs("fcntl", fd, F_SETFL, 0) == 0 and fs("fcntl", fd, F_GETFL, 0) == O_RDWR
    assert fs.pwrite(fd, b"Z", 0) == 1 and fs.read_file("/tmp/f") == b"Zy"
    r, _ = pipe(fs)
    assert fs("fcntl", r, F_GETPIPE_SZ, 0) == 65536  # 16 pages
    assert fs("fcntl", r, F_SETFL, O_NONBLOCK) == 0 and fs.read(r, 1) == -errno.EAGAIN


def test_fcntl_locks(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    lock = fs.buf + 0x700
    flock = "<hhxxxxqqixxxx"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (32 bytes)
    fs.p.write(lock, struct.pack(flock, F_WRLCK, SEEK_SET, 5, 10, 1234) + b"\xcc" * 8)
    for cmd in (F_GETLK, F_OFD_GETLK):
        assert fs("fcntl", fd, cmd, lock) == 0
        l_type, whence, start, length, pid = struct.unpack(flock, fs.p.read(lock, 32))
        assert l_type == F_UNLCK and (whence, start, length, pid) == (SEEK_SET, 5, 10, 1234)
        fs.p.write(lock, struct.pack("<h", F_RDLCK))
    assert fs.p.read(lock + 32, 8) == b"\xcc" * 8
    for cmd in (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW):
        assert fs("fcntl", fd, cmd, lock) == 0
    assert fs("fcntl", fd, F_GETLK, WILD) == -errno.EFAULT


def test_ioctl_on_a_file_is_enotty(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    assert fs("ioctl", fd, 0x5401, fs.buf) == -errno.ENOTTY  # TCGETS
    assert fs("ioctl", 99, 0x5401, fs.buf) == -errno.EBADF


def test_pipe2(fs: Fs) -> None:
    r, w = pipe(fs)
    assert w == r + 1 and (cloexec(fs, r), cloexec(fs, w)) == (0, 0)
    assert fs("fcntl", r, F_GETFL, 0) == O_RDONLY and fs("fcntl", w, F_GETFL, 0) == O_WRONLY
    assert fs.write(w, b"hi") == 2 and fs.read(r, 10) == b"hi"
    assert fs.write(r, b"x") == -errno.EBADF and fs.read(w, 1) == -errno.EBADF
    r2, w2 = pipe(fs, O_CLOEXEC | O_NONBLOCK)
    assert (cloexec(fs, r2), cloexec(fs, w2)) == (1, 1)
    assert fs("fcntl", r2, F_GETFL, 0) == O_RDONLY | O_NONBLOCK
    assert fs("fcntl", w2, F_GETFL, 0) == O_WRONLY | O_NONBLOCK
    assert fs.read(r2, 1) == -errno.EAGAIN
    assert fs("pipe2", fs.buf, 1) == -errno.EINVAL  # no such flag
    assert fs("pipe2", fs.buf, O_APPEND) == -errno.EINVAL
    assert fs("pipe2", WILD, 0) == -errno.EFAULT


def test_eventfd2(fs: Fs) -> None:
    e = fs("eventfd2", 3, 0)
    assert e is not None and e >= 0 and cloexec(fs, e) == 0
    assert fs.read(e, 8) == (3).to_bytes(8, "little")
    assert fs("fcntl", e, F_GETFL, 0) == O_RDWR
    sem = fs("eventfd2", 2, 1 | O_NONBLOCK | O_CLOEXEC)  # EFD_SEMAPHORE
    assert sem is not None and cloexec(fs, sem) == 1
    assert fs.read(sem, 8) == (1).to_bytes(8, "little") and fs.read(sem, 8) == (1).to_bytes(8, "little")
    assert fs.read(sem, 8) == -errno.EAGAIN
    assert fs("eventfd2", (1 << 32) | 5, 0) is not None
    assert fs("eventfd2", 0, 2) == -errno.EINVAL
    assert fs("eventfd2", 0, O_APPEND) == -errno.EINVAL


def getcwd(fs: Fs) -> str:
    n = fs("getcwd", fs.buf + 0xA000, 256)
    assert n is not None and n > 0
    return fs.p.read(fs.buf + 0xA000, n).split(b"\0")[0].decode()


def test_paths_relative_to_a_directory_descriptor(fs: Fs) -> None:
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/sub"), 0o755) == 0
    d = fs.open("/tmp/sub", O_DIRECTORY)
    made = fs.open("made", O_CREAT | O_WRONLY, 0o600, dirfd=d)
    assert made >= 0 and fs.write(made, b"rel") == 3
    assert fs.read_file("/tmp/sub/made") == b"rel"
    assert fs.open("made", O_CREAT | O_EXCL | O_WRONLY, dirfd=d) == -errno.EEXIST
    t = fs.open(".", O_TMPFILE | O_RDWR, dirfd=d)
    assert t >= 0 and fs.write(t, b"x") == 1
    inner = fs.open("..", O_DIRECTORY, dirfd=d)
    assert fs("fchdir", inner) == 0 and getcwd(fs) == "/tmp"
    dp = fs.open("sub", O_PATH, dirfd=inner)
    assert fs("fchdir", dp) == 0 and getcwd(fs) == "/tmp/sub"
    assert fs.open("made", O_RDONLY) >= 0  # now relative to the new working directory


def test_the_open_files_know_their_canonical_paths(fs: Fs) -> None:
    layer = fs.p.syscalls
    assert layer.open_path(AT_FDCWD, "/top", O_CREAT | O_WRONLY, 0o644).path == "/top"
    assert layer.open_path(AT_FDCWD, "/tmp/./f", O_CREAT | O_WRONLY, 0o644).path == "/tmp/f"
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/boX"), 0o755) == 0
    assert layer.open_path(AT_FDCWD, "/tmp/boX/f", O_CREAT | O_WRONLY, 0o644).path == "/tmp/boX/f"
    assert layer.open_path(AT_FDCWD, "/tmp/../tmp/f", O_RDONLY, 0).path == "/tmp/f"
    assert fs("symlinkat", fs.cstr("/tmp/f"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    assert layer.open_path(AT_FDCWD, "/tmp/l", O_RDONLY, 0).path == "/tmp/f"
    assert layer.open_path(AT_FDCWD, "/tmp/l", O_PATH | O_NOFOLLOW, 0).path == "/tmp/l"
    assert layer.open_path(AT_FDCWD, "/tmp/l", O_PATH, 0).path == "/tmp/f"
    assert layer.open_path(AT_FDCWD, "/tmp", O_TMPFILE | O_RDWR, 0o600).path.startswith("/tmp/#")


def test_writev_with_empty_iovecs_after_the_data(fs: Fs) -> None:
    fd = fs.open("/tmp/w", O_CREAT | O_RDWR)
    b = fs.buf
    fs.p.write(b, b"abc")
    iov = iovecs(fs, b + 0x1000, [(b, 0), (b, 3), (b, 0), (WILD, 0)])
    assert fs("writev", fd, iov, 4) == 3
    assert fs("pwritev", fd, iov, 4, 10) == 3
    assert fs.read_file("/tmp/w") == b"abc" + bytes(7) + b"abc"


class Narrow(OpenFile):
    """A file that can take only 4 bytes now (a socket's free send space)."""

    def __init__(self) -> None:
        super().__init__(None, O_WRONLY, "narrow")
        self.got: list[bytes] = []

    def io_limit(self, size: int, write: bool) -> int:
        return min(size, 4)

    def write(self, data: bytes) -> int:
        self.got.append(data)
        return len(data)


def test_writev_gathers_no_more_than_the_file_takes_now(fs: Fs) -> None:
    f = Narrow()
    fd = fs.p.syscalls.install(f)
    b = fs.buf
    fs.p.write(b, b"abcdef")
    iov = iovecs(fs, b + 0x1000, [(b, 3), (b + 3, 3)])
    assert fs("writev", fd, iov, 2) == 4
    assert f.got == [b"abcd"]
    assert fs("write", fd, b, 6) == 4 and f.got[-1] == b"abcd"


def test_writev_from_read_only_memory(fs: Fs) -> None:
    buf = scratch(fs.p, 0x1000)
    fs.p.write(buf, b"constant")
    assert fs("mprotect", buf, 0x1000, 1) == 0  # PROT_READ
    fd = fs.open("/tmp/ro", O_CREAT | O_RDWR)
    iov = iovecs(fs, fs.buf + 0x1000, [(buf, 5), (buf + 5, 3)])
    assert fs("writev", fd, iov, 2) == 8 and fs("pwritev", fd, iov, 2, 8) == 8
    assert fs("write", fd, buf, 8) == 8  # at the position writev left: 8
    assert fs.read_file("/tmp/ro") == b"constant" * 2
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    assert fs("read", fd, buf, 8) == -errno.EFAULT  # no writing into read-only memory
    assert fs.p.read(buf, 8) == b"constant"
