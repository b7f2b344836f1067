"""The name and metadata calls against the Linux man pages (stat(2), statx(2), readlink(2),
access(2), getdents64(2), mkdir(2), unlink(2), symlink(2), link(2), rename(2), getcwd(3),
chdir(2), umask(2), chmod(2), utimensat(2)): results and errno, on a real process."""

from __future__ import annotations

import errno
import struct

from unirealm.guest.procfs import mount_system

from .fs_support import AT_FDCWD, O_CREAT, O_DIRECTORY, O_RDONLY, O_WRONLY, Fs

S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = 0x100, 0x200, 0x400, 0x1000
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
F_OK, X_OK, W_OK, R_OK = 0, 1, 2, 4
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
DT_DIR, DT_REG, DT_LNK = 4, 8, 10


def make(fs: Fs, path: str, data: bytes = b"", mode: int = 0o644) -> None:
    fd = fs.open(path, O_CREAT | O_WRONLY, mode)
    assert fd >= 0
    if data:
        assert fs.write(fd, data) == len(data)
    assert fs("close", fd) == 0


def raw_stat(fs: Fs, path: str, flags: int = 0, dirfd: int = AT_FDCWD) -> tuple[int, ...] | int:
    """struct stat (asm-generic, 128 bytes) as its 20 fields, or the errno."""
    r = fs("newfstatat", dirfd, fs.cstr(path), fs.buf + 0x8000, flags)
    assert r is not None
    if r < 0:
        return r
    return struct.unpack("<QQIIIIQQqiiqqQqQqQII", fs.p.read(fs.buf + 0x8000, 128))


def mode_of(fs: Fs, path: str, flags: int = AT_SYMLINK_NOFOLLOW) -> int:
    st = raw_stat(fs, path, flags)
    assert isinstance(st, tuple)
    return st[2]


def test_stat_fields_and_padding(fs: Fs) -> None:
    make(fs, "/tmp/f", b"hello")
    st = raw_stat(fs, "/tmp/f")
    assert isinstance(st, tuple)
    _dev, ino, mode, nlink, _uid, _gid, rdev, pad1, size, blksize, pad2, _blocks = st[:12]
    assert mode & S_IFMT == S_IFREG and mode & 0o777 == 0o644 and nlink == 1 and rdev == 0
    assert size == 5 and blksize > 0 and pad1 == 0 and pad2 == 0 and st[18:] == (0, 0)
    assert fs.fstat(fs.open("/tmp/f")).ino == ino
    assert raw_stat(fs, "/tmp/missing") == -errno.ENOENT
    assert raw_stat(fs, "/tmp/f/x") == -errno.ENOTDIR


def test_stat_empty_path_and_nofollow(fs: Fs) -> None:
    make(fs, "/tmp/f")
    fd = fs.open("/tmp/f")
    ino = fs.fstat(fd).ino
    assert raw_stat(fs, "", 0, fd) == -errno.ENOENT  # an empty path needs AT_EMPTY_PATH
    st = raw_stat(fs, "", AT_EMPTY_PATH, fd)
    assert isinstance(st, tuple) and st[1] == ino
    assert fs("chdir", fs.cstr("/tmp")) == 0
    here, tmp = raw_stat(fs, "", AT_EMPTY_PATH), raw_stat(fs, "/tmp")
    assert isinstance(here, tuple) and isinstance(tmp, tuple) and here[1] == tmp[1]
    assert here[2] & S_IFMT == S_IFDIR
    assert fs("symlinkat", fs.cstr("f"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    assert mode_of(fs, "/tmp/l") & S_IFMT == S_IFLNK
    assert mode_of(fs, "/tmp/l", 0) & S_IFMT == S_IFREG
    r, w = fs.buf + 0x9000, 0
    assert fs("pipe2", r, 0) == 0
    w = int.from_bytes(fs.p.read(r, 4), "little")
    st = raw_stat(fs, "", AT_EMPTY_PATH, w)
    assert isinstance(st, tuple) and st[2] & S_IFMT == 0o010000  # S_IFIFO


def statx(fs: Fs, path: str, flags: int = 0, dirfd: int = AT_FDCWD) -> bytes | int:
    r = fs("statx", dirfd, fs.cstr(path), flags, 0x7FF, fs.buf + 0x8000)
    assert r is not None
    return fs.p.read(fs.buf + 0x8000, 256) if r == 0 else r


def test_statx_layout(fs: Fs) -> None:
    make(fs, "/tmp/f", b"x" * 5000, 0o640)
    fd = fs.open("/tmp/f")
    st = fs.fstat(fd)
    out = statx(fs, "/tmp/f")
    assert isinstance(out, bytes)
    mask, _blksize, attrs, nlink, uid, gid, mode = struct.unpack_from("<IIQIIIH", out)
    assert mask & 0x7FF == 0x7FF and attrs == 0 and nlink == 1 and (uid, gid) == (st.uid, st.gid)
    assert mode == S_IFREG | 0o640
    ino, size, blocks = struct.unpack_from("<QQQ", out, 0x20)
    assert (ino, size, blocks) == (st.ino, 5000, st.blocks)
    assert statx(fs, "", 0, fd) == -errno.ENOENT
    again = statx(fs, "", AT_EMPTY_PATH, fd)
    assert isinstance(again, bytes) and struct.unpack_from("<Q", again, 0x20)[0] == st.ino
    assert statx(fs, "/tmp/none") == -errno.ENOENT


def test_readlinkat(fs: Fs) -> None:
    make(fs, "/tmp/f")
    assert fs("symlinkat", fs.cstr("some/target"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    link, buf = fs.cstr("/tmp/l"), fs.buf
    fs.p.write(buf, b"#" * 16)
    assert fs("readlinkat", AT_FDCWD, link, buf, 64) == 11
    assert fs.p.read(buf, 12) == b"some/target#"  # no terminating NUL
    assert fs("readlinkat", AT_FDCWD, link, buf, 4) == 4 and fs.p.read(buf, 5) == b"some/"  # the rest of the buffer untouched
    assert fs("readlinkat", AT_FDCWD, link, buf, 0) == -errno.EINVAL
    assert fs("readlinkat", AT_FDCWD, link, buf, -1) == -errno.EINVAL
    assert fs("readlinkat", AT_FDCWD, fs.cstr("/tmp/f"), buf, 64) == -errno.EINVAL
    assert fs("readlinkat", AT_FDCWD, fs.cstr("/tmp/no"), buf, 64) == -errno.ENOENT


def test_faccessat(fs: Fs) -> None:
    make(fs, "/tmp/f")
    make(fs, "/tmp/x", mode=0o100)
    f = fs.cstr("/tmp/f")
    assert fs("faccessat", AT_FDCWD, f, F_OK) == 0
    assert fs("faccessat", AT_FDCWD, f, R_OK | W_OK) == 0  # root
    assert fs("faccessat", AT_FDCWD, f, X_OK) == -errno.EACCES
    assert fs("faccessat", AT_FDCWD, f, 8) == -errno.EINVAL
    assert fs("faccessat", AT_FDCWD, fs.cstr("/tmp/x"), X_OK) == 0
    assert fs("faccessat", AT_FDCWD, fs.cstr("/tmp"), X_OK) == 0
    assert fs("faccessat", AT_FDCWD, fs.cstr("/tmp/none"), F_OK) == -errno.ENOENT
    assert fs("symlinkat", fs.cstr("/nowhere"), AT_FDCWD, fs.cstr("/tmp/d")) == 0
    d = fs.cstr("/tmp/d")
    assert fs("faccessat2", AT_FDCWD, d, F_OK, 0) == -errno.ENOENT
    assert fs("faccessat2", AT_FDCWD, d, F_OK, AT_SYMLINK_NOFOLLOW) == 0
    assert fs("faccessat2", AT_FDCWD, f, X_OK, 0) == -errno.EACCES
    assert fs("faccessat2", AT_FDCWD, f, F_OK, 0x1) == -errno.EINVAL
    fd = fs.open("/tmp/f")
    assert fs("faccessat2", fd, fs.cstr(""), F_OK, AT_EMPTY_PATH) == 0


def dents(fs: Fs, fd: int, count: int) -> list[tuple[int, int, int, int, bytes]] | int:
    n = fs("getdents64", fd, fs.buf, count)
    assert n is not None
    if n < 0:
        return n
    raw, out, at = fs.p.read(fs.buf, n), [], 0
    while at < n:
        ino, off, reclen, kind = struct.unpack_from("<QqHB", raw, at)
        out.append((ino, off, reclen, kind, raw[at + 19 : at + reclen].rstrip(b"\0")))
        at += reclen
    return out


def test_getdents64_records(fs: Fs) -> None:
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/d"), 0o755) == 0
    make(fs, "/tmp/d/file")
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/d/sub"), 0o755) == 0
    assert fs("symlinkat", fs.cstr("file"), AT_FDCWD, fs.cstr("/tmp/d/ln")) == 0
    fd = fs.open("/tmp/d", O_DIRECTORY)
    assert dents(fs, fd, 8) == -errno.EINVAL  # smaller than one record
    first = dents(fs, fd, 24)  # "." needs 24 bytes: one record only
    assert isinstance(first, list) and [e[4] for e in first] == [b"."] and first[0][2] == 24
    rest = dents(fs, fd, 4096)
    assert isinstance(rest, list)
    names = {e[4]: e for e in rest}
    assert set(names) == {b"..", b"file", b"sub", b"ln"}
    for _ino, _off, reclen, _kind, name in rest:
        assert reclen == (19 + len(name) + 1 + 7) // 8 * 8
    assert names[b"file"][3] == DT_REG and names[b"sub"][3] == DT_DIR and names[b"ln"][3] == DT_LNK
    assert names[b"file"][0] == fs.lstat("/tmp/d/file").ino
    offs = [first[0][1]] + [e[1] for e in rest]
    assert offs == sorted(set(offs))
    assert dents(fs, fd, 4096) == []  # the end
    assert fs("getdents64", fs.open("/tmp/d/file"), fs.buf, 4096) == -errno.ENOTDIR


def test_mkdirat(fs: Fs) -> None:
    assert fs("umask", 0o027) == 0o022
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/a"), 0o777) == 0
    assert mode_of(fs, "/tmp/a") == S_IFDIR | 0o750
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/a"), 0o777) == -errno.EEXIST
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/s"), 0o7777) == 0
    assert mode_of(fs, "/tmp/s") == S_IFDIR | 0o1750  # the sticky bit stays, set-ID bits go
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/no/a"), 0o777) == -errno.ENOENT
    make(fs, "/tmp/f")
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/f/a"), 0o777) == -errno.ENOTDIR
    d = fs.open("/tmp/a", O_DIRECTORY)
    assert fs("mkdirat", d, fs.cstr("in"), 0o700) == 0
    assert mode_of(fs, "/tmp/a/in") == S_IFDIR | 0o700
    assert fs("mkdirat", fs.open("/tmp/f"), fs.cstr("in"), 0o700) == -errno.ENOTDIR


def test_unlinkat(fs: Fs) -> None:
    make(fs, "/tmp/f")
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/d"), 0o755) == 0
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/e"), 0o755) == 0
    make(fs, "/tmp/e/x")
    f, d, e = fs.cstr("/tmp/f"), fs.cstr("/tmp/d"), fs.cstr("/tmp/e")
    assert fs("unlinkat", AT_FDCWD, f, 0x1) == -errno.EINVAL
    assert fs("unlinkat", AT_FDCWD, d, 0) == -errno.EISDIR
    assert fs("unlinkat", AT_FDCWD, f, AT_REMOVEDIR) == -errno.ENOTDIR
    assert fs("unlinkat", AT_FDCWD, e, AT_REMOVEDIR) == -errno.ENOTEMPTY
    assert fs("unlinkat", AT_FDCWD, d, AT_REMOVEDIR) == 0
    assert raw_stat(fs, "/tmp/d") == -errno.ENOENT
    assert fs("linkat", AT_FDCWD, f, AT_FDCWD, fs.cstr("/tmp/g"), 0) == 0
    assert fs.lstat("/tmp/g").nlink == 2
    assert fs("unlinkat", AT_FDCWD, f, 0) == 0
    assert fs.lstat("/tmp/g").nlink == 1
    assert fs("unlinkat", AT_FDCWD, f, 0) == -errno.ENOENT
    assert fs("unlinkat", AT_FDCWD, fs.cstr("/tmp/none/x"), 0) == -errno.ENOENT


def test_symlinkat(fs: Fs) -> None:
    make(fs, "/tmp/f")
    assert fs("symlinkat", fs.cstr("f"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    assert fs("symlinkat", fs.cstr("f"), AT_FDCWD, fs.cstr("/tmp/l")) == -errno.EEXIST
    assert fs("symlinkat", fs.cstr("f"), AT_FDCWD, fs.cstr("/tmp/f")) == -errno.EEXIST
    assert fs("symlinkat", fs.cstr(""), AT_FDCWD, fs.cstr("/tmp/e")) == -errno.ENOENT
    assert raw_stat(fs, "/tmp/e", AT_SYMLINK_NOFOLLOW) == -errno.ENOENT
    d = fs.open("/tmp", O_DIRECTORY)
    assert fs("symlinkat", fs.cstr("/tmp/f"), d, fs.cstr("m")) == 0
    assert fs.read_file("/tmp/m") == b""


def test_linkat(fs: Fs) -> None:
    make(fs, "/tmp/f", b"data")
    assert fs("symlinkat", fs.cstr("f"), AT_FDCWD, fs.cstr("/tmp/l")) == 0
    f, ln = fs.cstr("/tmp/f"), fs.cstr("/tmp/l")
    assert fs("linkat", AT_FDCWD, f, AT_FDCWD, fs.cstr("/tmp/h"), 0) == 0
    assert fs.lstat("/tmp/h").ino == fs.lstat("/tmp/f").ino and fs.lstat("/tmp/f").nlink == 2
    assert fs("linkat", AT_FDCWD, f, AT_FDCWD, fs.cstr("/tmp/h"), 0) == -errno.EEXIST
    assert fs("linkat", AT_FDCWD, ln, AT_FDCWD, fs.cstr("/tmp/ls"), 0) == 0  # the link itself
    assert fs.lstat("/tmp/ls").mode & S_IFMT == S_IFLNK
    assert fs("linkat", AT_FDCWD, ln, AT_FDCWD, fs.cstr("/tmp/lf"), AT_SYMLINK_FOLLOW) == 0
    assert fs.lstat("/tmp/lf").ino == fs.lstat("/tmp/f").ino
    assert fs("linkat", AT_FDCWD, fs.cstr("/tmp"), AT_FDCWD, fs.cstr("/tmp/dl"), 0) == -errno.EPERM
    assert fs("linkat", AT_FDCWD, f, AT_FDCWD, fs.cstr("/tmp/z"), 0x1) == -errno.EINVAL
    assert fs("linkat", AT_FDCWD, fs.cstr("/tmp/no"), AT_FDCWD, fs.cstr("/tmp/z"), 0) == -errno.ENOENT
    fd = fs.open("/tmp/f")
    assert fs("linkat", fd, fs.cstr(""), AT_FDCWD, fs.cstr("/tmp/z"), 0) == -errno.ENOENT
    assert fs("linkat", fd, fs.cstr(""), AT_FDCWD, fs.cstr("/tmp/z"), AT_EMPTY_PATH) == 0
    assert fs.read_file("/tmp/z") == b"data"


def rename(fs: Fs, old: str, new: str, flags: int = 0) -> int | None:
    return fs("renameat2", AT_FDCWD, fs.cstr(old), AT_FDCWD, fs.cstr(new), flags)


def test_renameat2(fs: Fs) -> None:
    make(fs, "/tmp/a", b"A")
    make(fs, "/tmp/b", b"B")
    assert rename(fs, "/tmp/a", "/tmp/b", RENAME_NOREPLACE) == -errno.EEXIST
    assert rename(fs, "/tmp/a", "/tmp/b", RENAME_NOREPLACE | RENAME_EXCHANGE) == -errno.EINVAL
    assert rename(fs, "/tmp/a", "/tmp/b", 8) == -errno.EINVAL
    assert rename(fs, "/tmp/a", "/tmp/b", RENAME_EXCHANGE) == 0
    assert fs.read_file("/tmp/a") == b"B" and fs.read_file("/tmp/b") == b"A"
    assert rename(fs, "/tmp/a", "/tmp/c", RENAME_EXCHANGE) == -errno.ENOENT
    assert rename(fs, "/tmp/a", "/tmp/c", RENAME_NOREPLACE) == 0
    assert raw_stat(fs, "/tmp/a") == -errno.ENOENT and fs.read_file("/tmp/c") == b"B"
    assert rename(fs, "/tmp/none", "/tmp/x") == -errno.ENOENT
    assert rename(fs, "/tmp/c", "/tmp/b") == 0  # replaces
    assert fs.read_file("/tmp/b") == b"B" and raw_stat(fs, "/tmp/c") == -errno.ENOENT
    for d in ("/tmp/d", "/tmp/e", "/tmp/full"):
        assert fs("mkdirat", AT_FDCWD, fs.cstr(d), 0o755) == 0
    make(fs, "/tmp/full/x")
    assert rename(fs, "/tmp/b", "/tmp/d") == -errno.EISDIR
    assert rename(fs, "/tmp/d", "/tmp/b") == -errno.ENOTDIR
    assert rename(fs, "/tmp/d", "/tmp/full") == -errno.ENOTEMPTY
    assert rename(fs, "/tmp/d", "/tmp/d/in") == -errno.EINVAL
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/d/in"), 0o755) == 0
    assert rename(fs, "/tmp/d", "/tmp/d/in/deeper") == -errno.EINVAL
    assert rename(fs, "/tmp/dd", "/tmp/d/x") == -errno.ENOENT
    assert rename(fs, "/tmp/d", "/tmp/e") == 0  # over an empty directory
    assert raw_stat(fs, "/tmp/e/in") != -errno.ENOENT and raw_stat(fs, "/tmp/d") == -errno.ENOENT
    assert fs("linkat", AT_FDCWD, fs.cstr("/tmp/b"), AT_FDCWD, fs.cstr("/tmp/b2"), 0) == 0
    assert rename(fs, "/tmp/b", "/tmp/b2") == 0  # the same inode: nothing happens
    assert fs.read_file("/tmp/b") == b"B" and fs.read_file("/tmp/b2") == b"B"
    assert rename(fs, "/tmp/b", "/tmp/w", RENAME_WHITEOUT) == -errno.EPERM
    assert fs("renameat", AT_FDCWD, fs.cstr("/tmp/b2"), AT_FDCWD, fs.cstr("/tmp/full/x")) == 0
    assert fs.read_file("/tmp/full/x") == b"B"


def test_getcwd_chdir_fchdir(fs: Fs) -> None:
    buf = fs.buf
    assert fs("chdir", fs.cstr("/tmp")) == 0
    assert fs("getcwd", buf, 64) == 5 and fs.p.read(buf, 5) == b"/tmp\0"
    assert fs("getcwd", buf, 5) == 5
    assert fs("getcwd", buf, 4) == -errno.ERANGE
    assert fs("mkdirat", AT_FDCWD, fs.cstr("sub"), 0o755) == 0
    assert fs("chdir", fs.cstr("sub")) == 0
    assert fs("getcwd", buf, 64) == 9 and fs.p.read(buf, 9) == b"/tmp/sub\0"
    assert fs("chdir", fs.cstr("..")) == 0 and fs("getcwd", buf, 64) == 5
    make(fs, "/tmp/f")
    assert fs("chdir", fs.cstr("f")) == -errno.ENOTDIR
    assert fs("chdir", fs.cstr("nothing")) == -errno.ENOENT
    assert fs("fchdir", fs.open("/tmp/f")) == -errno.ENOTDIR
    assert fs("fchdir", fs.open("/tmp/sub", O_DIRECTORY | O_RDONLY)) == 0
    assert fs("getcwd", buf, 64) == 9 and fs.p.read(buf, 9) == b"/tmp/sub\0"


def test_umask_chmod(fs: Fs) -> None:
    assert fs("umask", 0o7777) == 0o022
    assert fs("umask", 0o022) == 0o777
    make(fs, "/tmp/f")
    assert fs("fchmodat", AT_FDCWD, fs.cstr("/tmp/f"), 0o104751) == 0  # the type bits are not the caller's
    assert mode_of(fs, "/tmp/f") == S_IFREG | 0o4751
    fd = fs.open("/tmp/f")
    assert fs("fchmod", fd, 0o600) == 0
    assert fs.fstat(fd).mode == S_IFREG | 0o600
    assert fs("fchmodat", AT_FDCWD, fs.cstr("/tmp/no"), 0o600) == -errno.ENOENT


def mtime(fs: Fs, path: str) -> tuple[int, int]:
    st = raw_stat(fs, path)
    assert isinstance(st, tuple)
    return st[16], st[17]


def test_utimensat(fs: Fs) -> None:
    make(fs, "/tmp/f")
    f, times = fs.cstr("/tmp/f"), fs.buf + 0x9000
    fs.p.write(times, struct.pack("<qqqq", 5, 0, 1_000_000, 123))
    assert fs("utimensat", AT_FDCWD, f, times, 0) == 0
    assert mtime(fs, "/tmp/f") == (1_000_000, 123)
    fs.p.write(times, struct.pack("<qqqq", 5, 0, 7, UTIME_OMIT))
    assert fs("utimensat", AT_FDCWD, f, times, 0) == 0
    assert mtime(fs, "/tmp/f") == (1_000_000, 123)
    fs.p.write(times, struct.pack("<qqqq", 0, 0, 2, 10**9))
    assert fs("utimensat", AT_FDCWD, f, times, 0) == -errno.EINVAL
    fs.p.write(times, struct.pack("<qqqq", 0, 0, -1, 0))
    assert fs("utimensat", AT_FDCWD, f, times, 0) == -errno.EINVAL
    assert fs("utimensat", AT_FDCWD, f, 0, 0x1) == -errno.EINVAL
    fs.p.write(times, struct.pack("<qqqq", 0, UTIME_OMIT, 42, 1))
    fd = fs.open("/tmp/f")
    assert fs("utimensat", fd, 0, times, 0) == 0  # NULL path: the file dirfd names
    assert mtime(fs, "/tmp/f") == (42, 1)
    fs.p.write(times, struct.pack("<qqqq", 0, 0, 0, UTIME_NOW))
    assert fs("utimensat", AT_FDCWD, f, times, 0) == 0
    assert mtime(fs, "/tmp/f") != (42, 1)
    assert fs("utimensat", AT_FDCWD, fs.cstr("/tmp/none"), 0, 0) == -errno.ENOENT


def test_stat_of_a_device_without_an_inode_and_access_other_exec(fs: Fs) -> None:
    mount_system(fs.p)
    fd = fs.open("/dev/urandom")
    assert fd >= 0
    st = raw_stat(fs, "", AT_EMPTY_PATH, fd)
    assert isinstance(st, tuple) and st[2] & S_IFMT == 0o020000  # S_IFCHR, as fstat says
    assert fs.fstat(fd).mode & S_IFMT == 0o020000
    make(fs, "/tmp/o", mode=0o001)  # root may execute with any one execute bit
    assert fs("faccessat", AT_FDCWD, fs.cstr("/tmp/o"), X_OK) == 0
    make(fs, "/tmp/w", mode=0o602)
    assert fs("faccessat", AT_FDCWD, fs.cstr("/tmp/w"), X_OK) == -errno.EACCES
