"""VFS semantics: path walks, symlinks, files, pipes, eventfds, the syscall layer's fd table."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from unirealm.guest import fileio
from unirealm.guest import syscalls as sc
from unirealm.guest.pipes import Pipe, PipeEnd
from unirealm.guest.process import ProcState
from unirealm.guest.vfs import (
    O_CREAT,
    O_RDWR,
    O_WRONLY,
    POLLHUP,
    POLLIN,
    DirInode,
    FsError,
    LinkInode,
    RegInode,
    Vfs,
    WouldBlock,
)


@pytest.fixture
def vfs() -> Vfs:
    v = Vfs()
    v.install("/usr/lib/x/libfoo.so.1.2", RegInode(b"ELF"))
    v.install("/usr/lib/x/libfoo.so.1", LinkInode("libfoo.so.1.2"))
    v.install("/lib", LinkInode("/usr/lib"))
    v.install("/loop", LinkInode("/loop"))
    return v


def test_symlinks_relative_absolute_and_dotdot(vfs: Vfs) -> None:
    node, canon = vfs.walk("/lib/x/libfoo.so.1")
    assert isinstance(node, RegInode) and canon == "/usr/lib/x/libfoo.so.1.2"
    assert vfs.walk("x/../x/libfoo.so.1", cwd="/lib")[1] == "/usr/lib/x/libfoo.so.1.2"
    assert vfs.walk("/../../usr")[1] == "/usr"
    node, _ = vfs.walk("/lib/x/libfoo.so.1", follow=False)
    assert isinstance(node, LinkInode)


@pytest.mark.parametrize(("path", "code"), [("/nope", errno.ENOENT), ("/loop", errno.ELOOP),
                                             ("/usr/lib/x/libfoo.so.1.2/x", errno.ENOTDIR), ("", errno.ENOENT)])
def test_walk_errors(vfs: Vfs, path: str, code: int) -> None:
    with pytest.raises(FsError) as exc:
        vfs.walk(path)
    assert exc.value.errno == code


def test_regular_file_io(vfs: Vfs) -> None:
    parent, name, _ = vfs.parent_of("/tmp/f")
    node = parent.add(name, RegInode(b""))
    f = node.open(O_RDWR, "/tmp/f")
    assert f.write(b"hello") == 5
    assert f.pwrite(b"XY", 8) == 2
    assert bytes(node.data) == b"hello\0\0\0XY"
    assert f.seek(0, 0) == 0 and f.read(5) == b"hello"
    f.truncate(3)
    assert node.size() == 3
    assert isinstance(vfs.walk("/tmp")[0], DirInode)


def test_pipe_semantics() -> None:
    p = Pipe()
    r, w = PipeEnd(p, 0, False), PipeEnd(p, 0, True)
    with pytest.raises(WouldBlock):
        r.read(10)
    w.write(b"abc")
    assert r.poll() & POLLIN and r.read(2) == b"ab" and r.read(9) == b"c"
    w.close()
    assert r.read(1) == b"" and r.poll() & POLLHUP
    r.close()


class FakeProcess:
    """Just enough of a Process for the fd-level syscalls: flat memory, a VFS."""

    def __init__(self) -> None:
        self.mem = bytearray(1 << 16)
        self.state = ProcState(["/app"], [], "/app", 0)
        self.vfs = Vfs()
        self.kernel = SimpleNamespace(options={}, log=lambda *a, **k: None, console=None)
        self.current = SimpleNamespace(tid=1, sigmask=0, altstack=None)

    def read(self, va: int, n: int) -> bytes:
        return bytes(self.mem[va : va + n])

    def write(self, va: int, data: bytes) -> None:
        self.mem[va : va + len(data)] = data

    def accessible(self, va: int, n: int, write: bool) -> int:
        return max(0, min(n, len(self.mem) - va))

    def read_cstring(self, va: int, limit: int = 4096) -> bytes:
        return bytes(self.mem[va : min(self.mem.index(0, va), va + limit)])

    def wait(self, ready, timeout, console) -> bool:
        return ready()


def test_syscalls_open_write_stat_getdents_unlink() -> None:
    p = FakeProcess()
    s = sc.Syscalls(p)
    p.write(0x100, b"/tmp/new.txt\0")
    fd = s.call(sc.NR["openat"], [sc.AT_FDCWD & (2**64 - 1), 0x100, O_CREAT | O_WRONLY, 0o644, 0, 0])
    assert fd == 0
    p.write(0x200, b"data!")
    assert s.call(sc.NR["write"], [fd, 0x200, 5, 0, 0, 0]) == 5
    assert s.call(sc.NR["fstat"], [fd, 0x400, 0, 0, 0, 0]) == 0
    assert int.from_bytes(p.mem[0x400 + 48 : 0x408 + 48], "little") == 5  # st_size
    assert s.call(sc.NR["dup3"], [fd, 7, 0, 0, 0, 0]) == 7
    assert s.call(sc.NR["close"], [fd, 0, 0, 0, 0, 0]) == 0
    assert s.call(sc.NR["close"], [fd, 0, 0, 0, 0, 0]) == -errno.EBADF
    p.write(0x300, b"/tmp\0")
    d = s.call(sc.NR["openat"], [sc.AT_FDCWD & (2**64 - 1), 0x300, 0o200000, 0, 0, 0])
    n = s.call(sc.NR["getdents64"], [d, 0x1000, 4096, 0, 0, 0])
    assert n > 0 and b"new.txt\0" in p.mem[0x1000 : 0x1000 + n]
    assert s.call(sc.NR["unlinkat"], [sc.AT_FDCWD & (2**64 - 1), 0x100, 0, 0, 0, 0]) == 0
    assert s.call(sc.NR["openat"], [sc.AT_FDCWD & (2**64 - 1), 0x100, 0, 0, 0, 0]) == -errno.ENOENT
    assert s.call(4242, [0] * 6) == -errno.ENOSYS


def test_pipe2_and_eventfd_through_syscalls() -> None:
    p = FakeProcess()
    s = sc.Syscalls(p)
    assert s.call(sc.NR["pipe2"], [0x100, 0o4000, 0, 0, 0, 0]) == 0  # O_NONBLOCK
    rfd, wfd = int.from_bytes(p.mem[0x100:0x104], "little"), int.from_bytes(p.mem[0x104:0x108], "little")
    assert s.call(sc.NR["read"], [rfd, 0x200, 10, 0, 0, 0]) == -errno.EAGAIN
    p.write(0x300, b"xyz")
    assert s.call(sc.NR["write"], [wfd, 0x300, 3, 0, 0, 0]) == 3
    assert s.call(sc.NR["read"], [rfd, 0x200, 10, 0, 0, 0]) == 3 and p.mem[0x200:0x203] == b"xyz"
    efd = s.call(sc.NR["eventfd2"], [2, 0, 0, 0, 0, 0])
    assert s.call(sc.NR["read"], [efd, 0x400, 8, 0, 0, 0]) == 8 and p.mem[0x400] == 2


def test_fallocate_checks_as_linux() -> None:
    p = FakeProcess()
    s = sc.Syscalls(p)
    cwd = sc.AT_FDCWD & (2**64 - 1)
    p.write(0x100, b"/tmp/f\0")
    wfd = s.call(sc.NR["openat"], [cwd, 0x100, O_CREAT | O_WRONLY, 0o644, 0, 0])
    rfd = s.call(sc.NR["openat"], [cwd, 0x100, 0, 0, 0, 0])
    fall = sc.NR["fallocate"]
    assert s.call(fall, [rfd, 0, 0, 4096, 0, 0]) == -errno.EBADF  # read-only fd: nothing grows
    assert s.call(fall, [wfd, 0, 2**64 - 1, 10, 0, 0]) == -errno.EINVAL  # negative offset
    assert s.call(fall, [wfd, 0, 0, 0, 0, 0]) == -errno.EINVAL  # zero length
    assert s.call(fall, [wfd, 0x80, 0, 10, 0, 0]) == -errno.EOPNOTSUPP  # unknown mode bit
    assert s.call(fall, [wfd, fileio.FALLOC_FL_PUNCH_HOLE, 0, 10, 0, 0]) == -errno.EOPNOTSUPP  # without KEEP_SIZE
    assert s.call(fall, [wfd, 0, 2**62, 2**62, 0, 0]) == -errno.EFBIG
    assert s.call(fall, [wfd, fileio.FALLOC_FL_KEEP_SIZE, 0, 4096, 0, 0]) == 0
    assert s.call(sc.NR["fstat"], [rfd, 0x400, 0, 0, 0, 0]) == 0
    assert int.from_bytes(p.mem[0x430:0x438], "little") == 0  # KEEP_SIZE: size unchanged
    assert s.call(fall, [wfd, 0, 0, 6, 0, 0]) == 0
    assert s.call(sc.NR["fstat"], [rfd, 0x400, 0, 0, 0, 0]) == 0
    assert int.from_bytes(p.mem[0x430:0x438], "little") == 6
    p.write(0x200, b"abcdef")
    assert s.call(sc.NR["pwrite64"], [wfd, 0x200, 6, 0, 0, 0]) == 6
    assert s.call(fall, [wfd, fileio.FALLOC_FL_PUNCH_HOLE | fileio.FALLOC_FL_KEEP_SIZE, 1, 2, 0, 0]) == 0
    assert s.call(sc.NR["pread64"], [rfd, 0x300, 10, 0, 0, 0]) == 6 and p.mem[0x300:0x306] == b"a\0\0def"
    assert s.call(sc.NR["pipe2"], [0x500, 0, 0, 0, 0, 0]) == 0
    pw = int.from_bytes(p.mem[0x504:0x508], "little")
    assert s.call(fall, [pw, 0, 0, 10, 0, 0]) == -errno.ESPIPE
