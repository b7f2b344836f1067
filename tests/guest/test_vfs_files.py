"""The ramfs's inodes and open files (guest/vfs.py), through the syscalls and directly, with
Linux's answers: open(2) (EISDIR, ENXIO, O_TRUNC only with write access), lseek(2) (EINVAL
for a negative result or an unknown whence, ENXIO for SEEK_DATA/SEEK_HOLE at or past EOF),
read(2)/write(2) (EISDIR, EBADF, O_APPEND), getdents64(2)'s records, stat(2)'s st_size and
st_blocks (512-byte units; a hole takes none), tty ioctls (ENOTTY), path walks (ENOENT,
ENOTDIR, ELOOP after 40 links)."""

from __future__ import annotations

import errno
import struct
from types import SimpleNamespace

import pytest

from unirealm.arch.cpio import S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG
from unirealm.guest.devfiles import ConsoleFile, NullFile, RandomFile, ZeroFile
from unirealm.guest.vfs import (
    FIONREAD,
    O_APPEND,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NONBLOCK,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    POLLHUP,
    POLLIN,
    POLLOUT,
    TCGETS,
    TCSETS,
    TIOCGPGRP,
    TIOCGWINSZ,
    DevInode,
    DirFile,
    DirInode,
    FsError,
    Inode,
    LinkInode,
    OpenFile,
    RegFile,
    RegInode,
    Vfs,
    WouldBlock,
)

from .fs_support import SEEK_CUR, SEEK_DATA, SEEK_END, SEEK_HOLE, SEEK_SET, Fs

S_IFSOCK = 0o140000


def raises(code: int, fn: object, *args: object) -> None:
    with pytest.raises(FsError) as exc:
        fn(*args)  # type: ignore[operator]
    assert exc.value.errno == code


# --- inodes -------------------------------------------------------------------------------
def test_new_inodes_are_root_owned_with_distinct_numbers(fs: Fs) -> None:
    a, b = fs.open("/tmp/a", O_CREAT | O_WRONLY), fs.open("/tmp/b", O_CREAT | O_WRONLY)
    sa, sb = fs.fstat(a), fs.fstat(b)
    assert (sa.uid, sa.gid, sa.nlink, sa.rdev) == (0, 0, 1, 0)
    assert sa.ino != sb.ino
    assert sa.mode & 0o170000 == S_IFREG
    assert fs.lstat("/tmp").mode & 0o170000 == S_IFDIR and fs.lstat("/tmp").nlink == 2


def test_st_blocks_counts_only_the_pages_holding_data(fs: Fs) -> None:
    fd = fs.open("/tmp/sparse", O_CREAT | O_RDWR)
    assert fs.fstat(fd).blocks == 0
    assert fs.pwrite(fd, b"x", 1 << 20) == 1
    st = fs.fstat(fd)
    assert st.size == (1 << 20) + 1 and st.blocks == 4096 // 512  # one page: the hole takes none
    assert fs.pread(fd, 4, 0) == bytes(4)


def test_inode_blocks_round_up_to_512_bytes() -> None:
    assert LinkInode("x" * 512).blocks() == 1
    assert LinkInode("x" * 513).blocks() == 2
    assert Inode(S_IFSOCK).blocks() == 0
    assert RegInode(loader=lambda: b"y" * 1025).blocks() == 3


def test_a_socket_or_fifo_inode_cannot_be_opened() -> None:
    raises(errno.ENXIO, Inode(S_IFSOCK).open, O_RDONLY, "/s")
    assert Inode(S_IFSOCK).kind == S_IFSOCK and Inode(S_IFSOCK).size() == 0


def test_symlink_size_is_the_target_length_in_bytes(fs: Fs) -> None:
    assert fs("symlinkat", fs.cstr("/tmp/\u00e9t\u00e9"), -100, fs.cstr("/tmp/l")) == 0
    st = fs.lstat("/tmp/l")
    assert st.mode & 0o170000 == S_IFLNK and st.size == len("/tmp/\u00e9t\u00e9".encode())
    assert st.mode & 0o7777 == 0o777  # a symlink's permissions are all set
    assert LinkInode(lambda: "abc").size() == 3 and LinkInode(lambda: "abc").target == "abc"


def test_a_payload_file_is_read_from_its_loader_until_written() -> None:
    loads: list[int] = []

    def loader() -> bytes:
        loads.append(1)
        return b"payload!"

    node = RegInode(loader=loader)
    assert node.pages is None and node.size() == 8
    assert node.read_at(3, 3) == b"loa" and node.data == b"payload!"
    assert len(loads) == 1  # loaded once
    assert node.write_at(0, b"P") == 1
    assert node.pages is not None and node.loader is None
    assert node.data == b"Payload!" and node.size() == 8
    assert RegInode(gen=lambda: b"now").read_at(0, 10) == b""  # a generated file's own inode is empty


def test_a_generated_file_is_made_at_each_open() -> None:
    n = [0]

    def gen() -> bytes:
        n[0] += 1
        return b"gen %d" % n[0]

    node = RegInode(gen=gen, mode=0o444)
    f1, f2 = node.open(O_RDONLY, "/proc/x"), node.open(O_RDONLY, "/proc/x")
    assert f1.read(100) == b"gen 1" and f2.read(100) == b"gen 2" and f1.read(100) == b""
    assert isinstance(f1, RegFile) and f1.inode.mode & 0o777 == 0o444 and f1.path == "/proc/x"


def test_write_and_truncate_update_mtime(fs: Fs) -> None:
    node = RegInode(b"abc", mtime_ns=5)
    assert node.mtime_ns == 5
    node.write_at(3, b"d")
    assert node.mtime_ns != 5
    node.mtime_ns = 5
    node.truncate(1)
    assert node.mtime_ns != 5 and node.data == b"a"


def test_o_trunc_needs_write_access(fs: Fs) -> None:
    fd = fs.open("/tmp/t", O_CREAT | O_WRONLY)
    assert fs.write(fd, b"keep") == 4
    assert fs.open("/tmp/t", O_RDONLY | O_TRUNC) >= 0
    assert fs.read_file("/tmp/t") == b"keep"
    assert fs.open("/tmp/t", O_RDWR | O_TRUNC) >= 0
    assert fs.read_file("/tmp/t") == b""
    assert fs.write(fd, b"x") == 1 and fs.open("/tmp/t", O_WRONLY | O_TRUNC) >= 0
    assert fs.read_file("/tmp/t") == b""


# --- directories --------------------------------------------------------------------------
def test_a_directory_opens_read_only(fs: Fs) -> None:
    assert fs.open("/tmp", O_WRONLY) == -errno.EISDIR
    assert fs.open("/tmp", O_RDWR) == -errno.EISDIR
    d = fs.open("/tmp", O_RDONLY | O_DIRECTORY)
    assert d >= 0
    assert fs.read(d, 10) == -errno.EISDIR
    assert fs.pread(d, 10, 0) == -errno.EISDIR
    assert fs.write(d, b"x") == -errno.EBADF


def getdents(fs: Fs, fd: int, count: int = 4096) -> list[tuple[int, int, int, int, str]]:
    n = fs("getdents64", fd, fs.buf, count)
    assert n is not None and n >= 0
    raw, out, at = fs.p.read(fs.buf, n), [], 0
    while at < n:
        ino, off, reclen, dtype = struct.unpack_from("<QqHB", raw, at)
        name = raw[at + 19 : at + reclen].split(b"\0")[0].decode()
        out.append((ino, off, reclen, dtype, name))
        at += reclen
    return out


def test_getdents64_lists_dot_dotdot_then_sorted_entries(fs: Fs) -> None:
    assert fs("mkdirat", -100, fs.cstr("/tmp/d"), 0o755) == 0
    fs.open("/tmp/d/zeta", O_CREAT | O_WRONLY)
    fs.open("/tmp/d/alpha", O_CREAT | O_WRONLY)
    assert fs("mkdirat", -100, fs.cstr("/tmp/d/sub"), 0o755) == 0
    assert fs("symlinkat", fs.cstr("alpha"), -100, fs.cstr("/tmp/d/link")) == 0
    d = fs.open("/tmp/d", O_DIRECTORY)
    ents = getdents(fs, d)
    assert [e[4] for e in ents] == [".", "..", "alpha", "link", "sub", "zeta"]
    assert [e[3] for e in ents] == [4, 4, 8, 10, 4, 8]  # DT_DIR, DT_REG, DT_LNK
    assert ents[0][0] == fs.lstat("/tmp/d").ino and ents[1][0] == fs.lstat("/tmp").ino
    assert ents[2][0] == fs.lstat("/tmp/d/alpha").ino
    for _, _, reclen, _, name in ents:
        assert reclen % 8 == 0 and reclen >= 19 + len(name) + 1
    assert [e[1] for e in ents] == sorted(e[1] for e in ents) and len({e[1] for e in ents}) == len(ents)
    assert getdents(fs, d) == []  # the end


def test_getdents64_resumes_and_rewinds(fs: Fs) -> None:
    for name in ("a", "b", "c"):
        fs.open(f"/tmp/{name}", O_CREAT | O_WRONLY)
    d = fs.open("/tmp", O_DIRECTORY)
    first = getdents(fs, d, 48)  # room for two 24-byte records
    assert [e[4] for e in first] == [".", ".."]
    assert [e[4] for e in getdents(fs, d)] == ["a", "b", "c"]
    assert fs("getdents64", d, fs.buf, 10) == 0  # at the end, even with a small buffer
    assert fs("lseek", d, 0, SEEK_SET) == 0
    fs.open("/tmp/d2", O_CREAT | O_WRONLY)
    assert [e[4] for e in getdents(fs, d)] == [".", "..", "a", "b", "c", "d2"]  # a rewind lists afresh
    assert fs("lseek", d, 0, SEEK_SET) == 0
    assert fs("getdents64", d, fs.buf, 10) == -errno.EINVAL  # too small for one record
    assert fs("lseek", d, 1, SEEK_CUR) == -errno.EINVAL
    assert fs("lseek", d, -1, SEEK_SET) == -errno.EINVAL
    assert fs("lseek", d, 0, SEEK_END) == -errno.EINVAL


def test_directory_inode_changes() -> None:
    root, other = DirInode(), DirInode()
    assert root.parent is root and root.nlink == 2 and root.empty()
    root.mkdir("sub", 0o700)
    sub = root.get("sub")
    assert isinstance(sub, DirInode) and sub.parent is root and sub.mode == S_IFDIR | 0o700
    assert not root.empty()
    f = RegInode(b"x")
    root.add("f", f)
    root.link("g", f)
    assert f.nlink == 2 and root.get("g") is f
    root.remove("g", f)
    assert f.nlink == 1 and root.get("g") is None
    root.move("sub", other, "moved", sub)
    assert root.get("sub") is None and other.get("moved") is sub and sub.parent is other
    other.add("h", RegInode(b"h"))
    root.exchange("f", other, "h")
    assert isinstance(root.get("f"), RegInode) and root.get("f").data == b"h"  # type: ignore[union-attr]
    assert other.get("h") is f


def test_a_dynamic_directory_cannot_be_changed() -> None:
    node = RegInode(b"")
    d = DirInode(dynamic=lambda: {"x": node})
    assert d.get("x") is node and d.children == {"x": node}
    raises(errno.EPERM, d.add, "y", RegInode(b""))
    raises(errno.EPERM, d.remove, "x", node)
    raises(errno.EPERM, d.link, "z", node)


def test_moves_to_another_kind_of_directory_are_exdev() -> None:
    class Remote(DirInode):
        def move(self, name: str, dst: DirInode, dst_name: str, node: Inode) -> None:
            raise AssertionError

        def exchange(self, name: str, dst: DirInode, dst_name: str) -> None:
            raise AssertionError

    local, remote = DirInode(), Remote()
    f = local.add("f", RegInode(b""))
    remote.add("g", RegInode(b""))
    raises(errno.EXDEV, local.move, "f", remote, "f", f)
    raises(errno.EXDEV, local.exchange, "f", remote, "g")
    assert local.get("f") is f


def test_dirfile_keeps_its_path() -> None:
    d = DirInode()
    f = d.open(O_RDONLY, "/some/dir")
    assert isinstance(f, DirFile) and f.path == "/some/dir" and f.inode is d and f.listing is None


# --- open files ---------------------------------------------------------------------------
def test_access_modes_and_the_flags_kept() -> None:
    r, w, rw = (OpenFile(None, m, "/x") for m in (O_RDONLY, O_WRONLY, O_RDWR))
    assert (r.readable, r.writable, w.readable, w.writable, rw.readable, rw.writable) == (
        True, False, False, True, True, True)
    assert (r.poll(), w.poll(), rw.poll()) == (POLLIN, POLLOUT, POLLIN | POLLOUT)
    path = OpenFile(None, O_PATH | O_RDWR, "/x")
    assert not path.readable and not path.writable and path.poll() == 0
    assert OpenFile(None, O_NONBLOCK, "/x").nonblock and not r.nonblock
    # Open-time flags are not the file's (F_GETFL shows none of them).
    f = OpenFile(None, O_RDWR | O_CREAT | O_EXCL | O_TRUNC | 0o400 | 0o2000000 | O_APPEND, "/x")
    assert f.flags == O_RDWR | O_APPEND
    assert (f.pos, f.refs, f.inode, f.path) == (0, 0, None, "/x") and not f.is_tty()


def test_a_plain_open_file_refuses_io() -> None:
    f = OpenFile(None, O_RDWR, "/x")
    raises(errno.EINVAL, f.read, 1)
    raises(errno.EINVAL, f.write, b"x")
    raises(errno.ESPIPE, f.pread, 1, 0)
    raises(errno.ESPIPE, f.pwrite, b"x", 0)
    raises(errno.ESPIPE, f.seek, 0, 0)
    raises(errno.ENOTTY, f.ioctl, TCGETS, 0, None)
    assert f.io_limit(77, True) == 77 and f.io_limit(5, False) == 5


def test_read_write_and_the_file_position(fs: Fs) -> None:
    fd = fs.open("/tmp/f", O_CREAT | O_RDWR)
    assert fs.write(fd, b"hello") == 5 and fs.write(fd, b" world") == 6
    assert fs("lseek", fd, 0, SEEK_CUR) == 11
    assert fs.pread(fd, 5, 6) == b"world" and fs("lseek", fd, 0, SEEK_CUR) == 11  # pread keeps the position
    assert fs("lseek", fd, 0, SEEK_SET) == 0
    assert fs.read(fd, 4) == b"hell" and fs.read(fd, 4) == b"o wo" and fs.read(fd, 10) == b"rld"
    assert fs.read(fd, 10) == b""
    assert fs.pwrite(fd, b"J", 0) == 1 and fs("lseek", fd, 0, SEEK_CUR) == 11
    assert fs.read_file("/tmp/f") == b"Jello world"


def test_o_append_writes_at_the_end(fs: Fs) -> None:
    fd = fs.open("/tmp/log", O_CREAT | O_WRONLY)
    assert fs.write(fd, b"0123456789") == 10
    ap = fs.open("/tmp/log", O_WRONLY | O_APPEND)
    assert fs("lseek", ap, 2, SEEK_SET) == 2
    assert fs.write(ap, b"ab") == 2
    assert fs("lseek", ap, 0, SEEK_CUR) == 12  # after the data written
    assert fs.write(fd, b"XY") == 2  # the other description's position: 10
    assert fs.write(ap, b"cd") == 2
    assert fs.read_file("/tmp/log") == b"0123456789XYcd"
    # pwrite(2), BUGS: with O_APPEND, Linux appends whatever the offset.
    assert fs.pwrite(ap, b"!", 0) == 1
    assert fs.read_file("/tmp/log") == b"0123456789XYcd!"


def test_read_and_write_need_the_access_mode(fs: Fs) -> None:
    w = fs.open("/tmp/m", O_CREAT | O_WRONLY)
    r = fs.open("/tmp/m", O_RDONLY)
    assert fs.read(w, 1) == -errno.EBADF and fs.pread(w, 1, 0) == -errno.EBADF
    assert fs.write(r, b"x") == -errno.EBADF and fs.pwrite(r, b"x", 0) == -errno.EBADF
    node = RegInode(b"abc")
    raises(errno.EBADF, RegFile(node, O_WRONLY, "/m").pread, 1, 0)
    raises(errno.EBADF, RegFile(node, O_RDONLY, "/m").pwrite, b"x", 0)


def test_lseek_whences(fs: Fs) -> None:
    fd = fs.open("/tmp/s", O_CREAT | O_RDWR)
    fs.write(fd, b"x" * 100)
    assert fs("lseek", fd, 10, SEEK_SET) == 10
    assert fs("lseek", fd, 5, SEEK_CUR) == 15
    assert fs("lseek", fd, -5, SEEK_CUR) == 10
    assert fs("lseek", fd, -1, SEEK_END) == 99
    assert fs("lseek", fd, 50, SEEK_END) == 150  # past the end is allowed
    assert fs("lseek", fd, 0, SEEK_CUR) == 150
    assert fs("lseek", fd, -1, SEEK_SET) == -errno.EINVAL
    assert fs("lseek", fd, -151, SEEK_CUR) == -errno.EINVAL
    assert fs("lseek", fd, -101, SEEK_END) == -errno.EINVAL
    assert fs("lseek", fd, 0, 5) == -errno.EINVAL
    assert fs("lseek", fd, 0, SEEK_CUR) == 150  # a refused seek leaves the position


def test_seek_data_and_seek_hole(fs: Fs) -> None:
    fd = fs.open("/tmp/h", O_CREAT | O_RDWR)
    page = 4096
    assert fs.pwrite(fd, b"a", 2 * page + 10) == 1  # a hole, then data in the third page
    assert fs.pwrite(fd, b"b", 5 * page) == 1  # another hole, data in the sixth
    size = 5 * page + 1
    assert fs("lseek", fd, 0, SEEK_DATA) == 2 * page
    assert fs("lseek", fd, 0, SEEK_CUR) == 2 * page  # it moves the position
    assert fs("lseek", fd, 2 * page + 100, SEEK_DATA) == 2 * page + 100
    assert fs("lseek", fd, 3 * page, SEEK_DATA) == 5 * page
    assert fs("lseek", fd, 0, SEEK_HOLE) == 0
    assert fs("lseek", fd, 2 * page + 5, SEEK_HOLE) == 3 * page
    assert fs("lseek", fd, 4 * page, SEEK_HOLE) == 4 * page
    assert fs("lseek", fd, 5 * page, SEEK_HOLE) == size  # EOF is a hole
    assert fs("lseek", fd, size, SEEK_DATA) == -errno.ENXIO
    assert fs("lseek", fd, size, SEEK_HOLE) == -errno.ENXIO
    assert fs("lseek", fd, -1, SEEK_DATA) == -errno.ENXIO
    assert fs("lseek", fd, -1, SEEK_HOLE) == -errno.ENXIO
    assert fs("ftruncate", fd, 7 * page) == 0  # a hole to EOF after the last data
    assert fs("lseek", fd, 5 * page + 1, SEEK_DATA) == 5 * page + 1  # tmpfs's data is page-granular
    assert fs("lseek", fd, 5 * page + 1, SEEK_HOLE) == 6 * page
    assert fs("lseek", fd, 6 * page, SEEK_DATA) == -errno.ENXIO


def test_seek_data_in_a_payload_file_is_all_data() -> None:
    f = RegFile(RegInode(loader=lambda: b"z" * 5000), O_RDONLY, "/p")
    assert f.seek(100, SEEK_DATA) == 100 and f.seek(100, SEEK_HOLE) == 5000
    raises(errno.ENXIO, f.seek, 5000, SEEK_DATA)


def test_dev_files() -> None:
    null, zero = NullFile(None, O_RDWR, "/dev/null"), ZeroFile(None, O_RDWR, "/dev/zero")
    assert null.read(10) == b"" and null.pread(10, 5) == b"" and null.write(b"abc") == 3
    assert null.pwrite(b"ab", 9) == 2 and null.seek(100, SEEK_SET) == 0
    assert zero.read(5) == bytes(5) and zero.pread(3, 100) == bytes(3) and zero.write(b"ab") == 2
    rand = RandomFile(lambda: 0x0807060504030201, O_RDONLY, "/dev/urandom")
    assert rand.read(11) == bytes(range(1, 9)) + bytes(range(1, 4))
    assert rand.pread(3, 1000) == b"\x01\x02\x03"
    assert len(rand.read(3 << 20)) == 1 << 20  # one read returns at most 1 MiB
    dev = DevInode(0x0105, lambda flags, path: NullFile(None, flags, path))
    f = dev.open(O_RDWR, "/dev/x")
    assert f.inode is dev and dev.rdev == 0x0105 and dev.kind == S_IFCHR and f.path == "/dev/x"


# --- the console --------------------------------------------------------------------------
class Console:
    def __init__(self, data: bytes = b"", eof: bool = False) -> None:
        self.data, self.eof = data, eof

    def input_state(self) -> tuple[bool, bool]:
        return bool(self.data), self.eof

    def read(self, size: int) -> bytes:
        out, self.data = self.data[:size], self.data[size:]
        return out


class Mem:
    def __init__(self) -> None:
        self.mem = bytearray(256)

    def read(self, va: int, n: int) -> bytes:
        return bytes(self.mem[va : va + n])

    def write(self, va: int, data: bytes) -> None:
        self.mem[va : va + len(data)] = data


def console_file(console: Console | None, tty: bool = True) -> tuple[ConsoleFile, list[bytes]]:
    out: list[bytes] = []
    kernel = SimpleNamespace(console=console, write_console=out.append)
    return ConsoleFile(kernel, O_RDWR, "/dev/console", tty), out  # type: ignore[arg-type]


def test_console_reads_writes_and_polls() -> None:
    f, out = console_file(Console(b"line\n"))
    assert f.poll() == POLLIN | POLLOUT
    assert f.read(0) == b"" and f.read(2) == b"li" and f.read(100) == b"ne\n"
    assert f.poll() == POLLOUT
    with pytest.raises(WouldBlock):
        f.read(1)
    assert f.write(b"out") == 3 and out == [b"out"]
    eof, _ = console_file(Console(eof=True))
    assert eof.poll() == POLLIN | POLLOUT | POLLHUP and eof.read(5) == b""
    none, _ = console_file(None)
    assert none.poll() == POLLIN | POLLOUT | POLLHUP and none.read(5) == b""
    assert f.is_tty() and f.path == "/dev/console"


def test_console_terminal_ioctls() -> None:
    f, _ = console_file(Console(b"x"))
    mem = Mem()
    assert f.ioctl(TCGETS, 0, mem) == 0
    termios = mem.read(0, 36)
    c_iflag, c_oflag, c_cflag, c_lflag = struct.unpack_from("<IIII", termios)
    assert c_lflag & 0o2 and c_lflag & 0o10  # ICANON, ECHO
    assert c_oflag & 0o1 and c_oflag & 0o4  # OPOST, ONLCR
    assert c_iflag & 0o400 and c_iflag & 0o2000  # ICRNL, IXON
    assert c_cflag & 0o60 == 0o60 and c_cflag & 0o200  # CS8, CREAD
    assert termios[17 + 4] == 4  # c_cc[VEOF]: ^D
    mem.write(100, b"\x07" * 36)
    assert f.ioctl(TCSETS, 100, mem) == 0
    assert f.ioctl(TCGETS, 200 - 36, mem) == 0 and mem.read(200 - 36, 36) == b"\x07" * 36
    mem.write(0, b"\xff" * 16)
    assert f.ioctl(TIOCGWINSZ, 0, mem) == 0
    rows, cols, xpix, ypix = struct.unpack_from("<HHHH", mem.read(0, 8))
    assert (rows, cols, xpix, ypix) == (24, 80, 0, 0) and mem.read(8, 8) == b"\xff" * 8
    mem.write(0, b"\xff" * 8)
    assert f.ioctl(TIOCGPGRP, 0, mem) == 0 and mem.read(0, 8) == (1).to_bytes(4, "little") + b"\xff" * 4
    mem.write(0, b"\xff" * 8)
    assert f.ioctl(FIONREAD, 0, mem) == 0 and mem.read(0, 8) == (1).to_bytes(4, "little") + b"\xff" * 4
    empty, _ = console_file(Console())
    assert empty.ioctl(FIONREAD, 0, mem) == 0 and mem.read(0, 4) == bytes(4)
    for req in (0x5414, 0x5410, 0x5403, 0x5404):  # TIOCSWINSZ, TIOCSPGRP, TCSETSW, TCSETSF
        assert f.ioctl(req, 0, mem) == 0
    raises(errno.ENOTTY, f.ioctl, 0x5499, 0, mem)  # no such tty ioctl
    serial, _ = console_file(Console(), tty=False)
    raises(errno.ENOTTY, serial.ioctl, TCGETS, 0, mem)
    assert not serial.is_tty()


# --- paths --------------------------------------------------------------------------------
@pytest.fixture
def vfs() -> Vfs:
    v = Vfs()
    v.install("/a/b/file", RegInode(b"F"))
    links = {"rel": "b", "abs": "/a/b/file", "up": "../a/b", "dot": ".", "dangling": "/nowhere"}
    for name, target in links.items():
        v.install(f"/a/{name}", LinkInode(target))
    return v


def test_walk_resolves_relative_paths_and_links(vfs: Vfs) -> None:
    assert vfs.walk("b/file", cwd="/a")[1] == "/a/b/file"
    assert vfs.walk("b/file", cwd="/a/")[1] == "/a/b/file"
    assert vfs.walk("./b/./file", cwd="/a")[1] == "/a/b/file"
    assert vfs.walk("/a/rel/file")[1] == "/a/b/file"
    assert vfs.walk("/a/up/file")[1] == "/a/b/file"
    assert vfs.walk("/a/dot/b")[1] == "/a/b"
    assert vfs.walk("/a/dot")[1] == "/a"
    assert vfs.walk("/a/abs")[1] == "/a/b/file"
    node, canon = vfs.walk("/a/abs", follow=False)
    assert isinstance(node, LinkInode) and canon == "/a/abs"
    assert vfs.walk("/a/rel/file", follow=False)[1] == "/a/b/file"  # only the last link is kept
    assert vfs.walk("/")[1] == "/" and vfs.walk("/..")[0] is vfs.root
    assert vfs.walk("..", cwd="/a/b")[1] == "/a"
    assert vfs.walk("/a/b/")[1] == "/a/b"
    assert vfs.walk("b", "/a")[1] == "/a/b"


def test_walk_errors(vfs: Vfs) -> None:
    raises(errno.ENOENT, vfs.walk, "/a/dangling")
    raises(errno.ENOENT, vfs.walk, "/a/missing")
    raises(errno.ENOENT, vfs.walk, "")
    raises(errno.ENOTDIR, vfs.walk, "/a/b/file/")
    raises(errno.ENOTDIR, vfs.walk, "/a/abs/")
    raises(errno.ENOTDIR, vfs.walk, "/a/b/file/x")
    with pytest.raises(FsError) as exc:
        vfs.walk("/a/missing")
    assert "/a/missing" in str(exc.value)


def test_forty_links_resolve_the_forty_first_is_eloop() -> None:
    v = Vfs()
    v.install("/t", RegInode(b"t"))
    v.install("/l0", LinkInode("/t"))
    for i in range(1, 41):
        v.install(f"/l{i}", LinkInode(f"l{i - 1}"))
    assert v.walk("/l39")[1] == "/t"  # 40 links
    raises(errno.ELOOP, v.walk, "/l40")


def test_parent_of(vfs: Vfs) -> None:
    parent, name, canon = vfs.parent_of("/a/b/new")
    assert parent is vfs.walk("/a/b")[0] and name == "new" and canon == "/a/b"
    assert vfs.parent_of("new/", cwd="/a/b")[1:] == ("new", "/a/b")
    assert vfs.parent_of("/top")[1:] == ("top", "/")
    assert vfs.parent_of("/top", cwd="/a/b")[1:] == ("top", "/")  # absolute: the cwd plays no part
    assert vfs.parent_of("/a/rel/x")[2] == "/a/b"
    raises(errno.EEXIST, vfs.parent_of, "/")
    raises(errno.EINVAL, vfs.parent_of, "/a/.")
    raises(errno.EINVAL, vfs.parent_of, "/a/..")
    raises(errno.ENOTDIR, vfs.parent_of, "/a/b/file/x")
    raises(errno.ENOENT, vfs.parent_of, "/none/x")


def test_makedirs_and_install(vfs: Vfs) -> None:
    d = vfs.makedirs("/a/rel/new/deeper", 0o700)
    assert vfs.walk("/a/b/new/deeper")[0] is d and d.mode == S_IFDIR | 0o700
    raises(errno.ENOTDIR, vfs.makedirs, "/a/abs/x")  # a link to a file
    raises(errno.ENOTDIR, vfs.makedirs, "/a/b/file/x")
    assert vfs.makedirs("/x/y").parent is vfs.walk("/x")[0]
    sub = vfs.walk("/a/b")[0]
    got = vfs.install("/a/b/", DirInode(0o750, uid=5, gid=6, mtime_ns=77))
    assert got is sub and sub.mode == S_IFDIR | 0o750 and (sub.uid, sub.gid, sub.mtime_ns) == (5, 6, 77)
    assert vfs.read_file("/a/abs") == b"F"
    raises(errno.EISDIR, vfs.read_file, "/a/b")
    vfs.install("/dev/n", DevInode(0x0103, lambda f, p: NullFile(None, f, p)))
    raises(errno.EACCES, vfs.read_file, "/dev/n")


def test_makedirs_follows_a_link_to_a_directory() -> None:
    v = Vfs()
    v.makedirs("/real/dir")
    v.install("/alias", LinkInode("/real"))
    v.install("/real/rlink", LinkInode("dir"))
    assert v.makedirs("/alias/dir/x") is v.walk("/real/dir/x")[0]
    assert v.makedirs("/real/rlink/y") is v.walk("/real/dir/y")[0]  # a relative link: from its directory
    assert v.makedirs("/alias/rlink/z") is v.walk("/real/dir/z")[0]


def test_the_root_has_the_standard_directories() -> None:
    v = Vfs()
    assert sorted(v.root.children) == ["dev", "etc", "proc", "tmp"]
    assert v.walk("/tmp")[0].mode == S_IFDIR | 0o1777 and v.walk("/etc")[0].mode == S_IFDIR | 0o755


def test_a_shared_mapping_holds_a_reference_on_the_cache_page(fs: Fs) -> None:
    node = RegInode(b"x" * 5000)
    store = node.file_pages().store
    ipa = node.map_page(1)
    assert ipa == node.file_pages().page(1) and store.refs[ipa] == 2  # the cache's and the mapping's
    node.unmap_page(ipa)
    assert store.refs[ipa] == 1
    node.sync_pages()
    assert node.data == b"x" * 5000


def test_a_generated_files_own_inode_takes_writes() -> None:
    node = RegInode(gen=lambda: b"made")
    assert node.size() == 0 and node.file_pages().size == 0
    assert node.write_at(0, b"w") == 1 and node.data == b"w"
