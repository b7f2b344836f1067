"""Pipes, eventfds and epoll instances against pipe(7), eventfd(2) and epoll(7): the
objects directly and through the syscalls of a real process."""

from __future__ import annotations

import errno
import struct

import pytest
from unicorn import arm64_const as a64

from unirealm.guest.errors import BrokenPipe, FsError
from unirealm.guest.pagecache import PAGE
from unirealm.guest.pipes import EpollFile, EventFd, Pipe, PipeEnd
from unirealm.guest.procfs import mount_system
from unirealm.guest.sched import ProcessExit
from unirealm.guest.vfs import FIONREAD, POLLERR, POLLHUP, POLLIN, POLLOUT, WouldBlock

from .fs_support import O_NONBLOCK, Fs

S_IFIFO = 0o010000
EFD_SEMAPHORE = 1
EPOLL_CTL_ADD = 1
CAPACITY = 65536  # pipe(7): the default capacity since Linux 2.6.11


class Mem:
    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}

    def write(self, addr: int, raw: bytes) -> None:
        self.data[addr] = raw


def ends() -> tuple[Pipe, PipeEnd, PipeEnd]:
    p = Pipe()
    return p, PipeEnd(p, O_NONBLOCK, False), PipeEnd(p, O_NONBLOCK, True)


def test_a_pipe_is_a_fifo_in_order_across_pages() -> None:
    _p, r, w = ends()
    data = bytes(range(256)) * 40  # 10240 bytes: three pages
    assert w.write(data) == len(data)
    got = b""
    for size in (1, PAGE - 1, 5, PAGE, 100000):
        got += r.read(size)
    assert got == data
    with pytest.raises(WouldBlock):
        r.read(1)


def test_consumed_pages_are_given_back() -> None:
    p, r, w = ends()
    w.write(b"a" * (3 * PAGE))
    assert sorted(p.buf.pages.pages) == [0, 1, 2]
    r.read(PAGE - 1)
    assert sorted(p.buf.pages.pages) == [0, 1, 2]  # page 0 still has an unread byte
    r.read(PAGE + 11)
    assert sorted(p.buf.pages.pages) == [2] and len(p.buf) == PAGE - 10
    assert r.read(PAGE) == b"a" * (PAGE - 10)
    w.write(b"tail")
    assert r.read(10) == b"tail"


def test_capacity_and_pipe_buf_atomicity() -> None:
    p, r, w = ends()
    assert w.write(b"x" * (CAPACITY + 100)) == CAPACITY  # a large write is partial
    assert not w.poll() & POLLOUT and r.poll() & POLLIN
    with pytest.raises(WouldBlock):
        w.write(b"y")
    r.read(10)
    assert not w.poll() & POLLOUT  # Linux counts pages: the first one is still held
    with pytest.raises(WouldBlock):
        w.write(b"z")
    r.read(PAGE - 10)
    assert w.poll() & POLLOUT  # a page given back
    assert w.write(b"z" * 4000) == 4000
    with pytest.raises(WouldBlock):
        w.write(b"z" * 97)  # <= PIPE_BUF and no room for all of it: nothing is written
    assert len(p.buf) == CAPACITY - PAGE + 4000
    assert w.write(b"z" * 96) == 96  # what is left of the last page
    with pytest.raises(WouldBlock):
        w.write(b"z")
    r.read(2 * CAPACITY)
    r.read(0)
    assert w.write(b"q" * 4096) == 4096


def test_ends_refuse_the_wrong_direction_and_report_hangups() -> None:
    p, r, w = ends()
    with pytest.raises(FsError) as exc:
        r.write(b"x")
    assert exc.value.errno == errno.EBADF
    with pytest.raises(FsError) as exc:
        w.read(1)
    assert exc.value.errno == errno.EBADF
    assert r.read(0) == b""  # a zero-length read does not wait
    assert r.poll() == 0 and w.poll() == POLLOUT
    assert p.inode.mode == S_IFIFO | 0o600
    w.write(b"ab")
    w.close()
    assert p.writers == 0 and r.poll() == POLLIN | POLLHUP
    assert r.read(5) == b"ab" and r.read(5) == b""  # EOF once the writers are gone
    p2, r2, w2 = ends()
    second = PipeEnd(p2, 0, False)
    r2.close()
    assert p2.readers == 1 and w2.write(b"k") == 1
    second.close()
    assert p2.readers == 0 and w2.poll() == POLLERR | POLLOUT
    with pytest.raises(BrokenPipe):
        w2.write(b"x")


def test_fionread_and_other_ioctls() -> None:
    _p, r, w = ends()
    w.write(b"12345")
    mem = Mem()
    assert r.ioctl(FIONREAD, 0x40, mem) == 0 and mem.data[0x40] == (5).to_bytes(4, "little")
    with pytest.raises(FsError) as exc:
        r.ioctl(0x5401, 0x40, mem)  # TCGETS: not a terminal
    assert exc.value.errno == errno.ENOTTY


def test_eventfd_counter_and_semaphore() -> None:
    e = EventFd(3, O_NONBLOCK, False)
    assert e.poll() == POLLIN | POLLOUT
    assert e.read(8) == (3).to_bytes(8, "little")
    assert e.poll() == POLLOUT
    with pytest.raises(WouldBlock):
        e.read(8)
    with pytest.raises(FsError) as exc:
        e.read(7)
    assert exc.value.errno == errno.EINVAL
    assert e.write((5).to_bytes(8, "little")) == 8 and e.write((2).to_bytes(8, "little") + b"junk") == 8
    assert e.read(16) == (7).to_bytes(8, "little")
    s = EventFd(2, 0, True)
    assert s.read(8) == (1).to_bytes(8, "little") and s.read(8) == (1).to_bytes(8, "little")
    with pytest.raises(WouldBlock):
        s.read(8)


def test_eventfd_write_limits() -> None:
    e = EventFd(0, O_NONBLOCK, False)
    for bad in (b"\1" * 7, b"\xff" * 8):
        with pytest.raises(FsError) as exc:
            e.write(bad)
        assert exc.value.errno == errno.EINVAL
    top = 0xFFFF_FFFF_FFFF_FFFE
    assert e.write((top - 1).to_bytes(8, "little")) == 8
    assert e.poll() == POLLIN | POLLOUT
    assert e.write((1).to_bytes(8, "little")) == 8  # the largest value the counter holds
    assert e.poll() == POLLIN  # no room for even 1 more
    with pytest.raises(WouldBlock):
        e.write((1).to_bytes(8, "little"))
    assert e.read(8) == top.to_bytes(8, "little")
    assert e.write((0x0100).to_bytes(8, "big")) == 8  # the counter is little-endian
    assert e.read(8) == (1 << 48).to_bytes(8, "little")


def test_an_epoll_instance_is_readable_when_a_file_is_ready() -> None:
    ep = EpollFile(0)
    assert ep.poll() == 0
    e = EventFd(0, O_NONBLOCK, False)
    ep.interest[3] = (e, POLLIN, 0)
    assert ep.poll() == 0
    e.write((1).to_bytes(8, "little"))
    assert ep.poll() == POLLIN


def test_pipe_through_the_syscalls(fs: Fs) -> None:
    assert fs("pipe2", fs.buf, O_NONBLOCK) == 0
    rfd, wfd = struct.unpack("<ii", fs.p.read(fs.buf, 8))
    assert fs.fstat(rfd).mode == S_IFIFO | 0o600 and fs.fstat(rfd).ino == fs.fstat(wfd).ino
    assert fs.write(wfd, b"x" * (CAPACITY - 1)) == CAPACITY - 1
    assert fs.write(wfd, b"yy") == -errno.EAGAIN  # atomic: not one byte of the two
    assert fs("ioctl", rfd, FIONREAD, fs.buf + 0x100) == 0
    assert int.from_bytes(fs.p.read(fs.buf + 0x100, 4), "little") == CAPACITY - 1
    assert fs("fcntl", wfd, 1032) == CAPACITY  # F_GETPIPE_SZ
    assert fs("close", rfd) == 0
    assert fs.write(wfd, b"z") == -errno.EPIPE  # and SIGPIPE, which is taken on the way back to EL0
    fs.p.uc.reg_write(a64.UC_ARM64_REG_PC, 0x400104)  # EL0's PC after its svc
    with pytest.raises(ProcessExit) as ended:
        fs.p.syscalls.do_signal()  # its default action ends the process
    assert ended.value.args[0] == 128 + 13
    assert ended.value.signal == 13  # killed by SIGPIPE: the parent's wait4 sees WIFSIGNALED


def test_eventfd_through_the_syscalls(fs: Fs) -> None:
    efd = fs("eventfd2", 0, O_NONBLOCK | EFD_SEMAPHORE)
    assert efd is not None and efd >= 0
    assert fs.read(efd, 8) == -errno.EAGAIN
    assert fs.write(efd, (2).to_bytes(8, "little")) == 8
    assert fs.read(efd, 8) == (1).to_bytes(8, "little")
    assert fs.read(efd, 4) == -errno.EINVAL
    assert fs("eventfd2", 0, 0x10) == -errno.EINVAL
    ep = fs("epoll_create1", 0)
    assert ep is not None and ep >= 0
    fs.p.write(fs.buf + 0x200, struct.pack("<IxxxxQ", POLLIN, 77))
    assert fs("epoll_ctl", ep, EPOLL_CTL_ADD, efd, fs.buf + 0x200) == 0
    fds = struct.pack("<iHH", ep, POLLIN, 0)
    fs.p.write(fs.buf + 0x300, fds)
    assert fs("ppoll", fs.buf + 0x300, 1, 0, 0, 0) is not None
    assert struct.unpack("<iHH", fs.p.read(fs.buf + 0x300, 8))[2] == POLLIN  # the semaphore still holds 1


def test_anonymous_files_name_themselves_in_proc(fs: Fs) -> None:
    mount_system(fs.p)
    efd, ep = fs("eventfd2", 0, 0), fs("epoll_create1", 0)
    assert efd is not None and ep is not None
    assert fs("pipe2", fs.buf + 0x100, 0) == 0
    rfd = struct.unpack("<i", fs.p.read(fs.buf + 0x100, 4))[0]
    out = fs.buf + 0x400
    for fd, want in ((efd, b"anon_inode:[eventfd]"), (ep, b"anon_inode:[eventpoll]"),
                     (rfd, f"pipe:[{fs.fstat(rfd).ino}]".encode())):
        n = fs("readlinkat", -100, fs.cstr(f"/proc/self/fd/{fd}"), out, 64)
        assert n == len(want) and fs.p.read(out, n) == want
    assert fs.fstat(ep).ino == fs.fstat(ep).ino  # one inode per instance
    assert fs.fstat(ep).ino != fs.fstat(efd).ino
