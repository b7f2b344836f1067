"""F_GETPIPE_SZ / F_SETPIPE_SZ (fcntl(2), pipe(7)) against the host kernel: the size is
rounded up to a power-of-two number of pages, one page at least, from an unsigned int
argument; past 2 GiB it is EINVAL; smaller than the data held it is EBUSY; the new capacity
is what writes fill. Past /proc/sys/fs/pipe-max-size (1 MiB) an unprivileged caller gets
EPERM and one with CAP_SYS_RESOURCE is let through: the realm's processes are root."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator

import pytest

from .fs_support import O_NONBLOCK, Fs

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
PIPE_MAX_SIZE = 1 << 20


@pytest.fixture
def host_pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def guest_pipe(fs: Fs) -> tuple[int, int]:
    assert fs("pipe2", fs.buf, O_NONBLOCK) == 0
    r, w = struct.unpack("<ii", fs.p.read(fs.buf, 8))
    return r, w


def host_fcntl(fd: int, cmd: int, arg: int) -> int:
    try:
        return fcntl.fcntl(fd, cmd, arg)
    except OSError as exc:
        return -(exc.errno or 0)


def host_write(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return -errno.EAGAIN


SIZES = [0, 1, 4095, 4096, 4097, 5000, 65536, 65537, 300_000, PIPE_MAX_SIZE, (1 << 31) + 1, (1 << 32) + 4096,
         (1 << 32) + 20_000]


@pytest.mark.parametrize("size", SIZES)
def test_set_pipe_size_rounds_as_linux(fs: Fs, host_pipe: tuple[int, int], size: int) -> None:
    r, w = guest_pipe(fs)
    want = host_fcntl(host_pipe[1], F_SETPIPE_SZ, size)
    assert fs("fcntl", w, F_SETPIPE_SZ, size) == want
    assert fs("fcntl", r, F_GETPIPE_SZ, 0) == host_fcntl(host_pipe[0], F_GETPIPE_SZ, 0)  # either end


def test_privileged_sizes_past_pipe_max_size(fs: Fs) -> None:
    """pipe_set_size: above pipe-max-size only capable(CAP_SYS_RESOURCE) passes, up to 2 GiB."""
    r, w = guest_pipe(fs)
    assert fs("fcntl", w, F_SETPIPE_SZ, PIPE_MAX_SIZE + 1) == 2 * PIPE_MAX_SIZE
    assert fs("fcntl", w, F_SETPIPE_SZ, 1 << 31) == 1 << 31
    assert fs("fcntl", w, F_SETPIPE_SZ, (1 << 31) + 1) == -errno.EINVAL
    assert fs("fcntl", r, F_GETPIPE_SZ, 0) == 1 << 31  # unchanged by the refusal


def test_a_size_below_the_data_held_is_ebusy(fs: Fs, host_pipe: tuple[int, int]) -> None:
    _r, w = guest_pipe(fs)
    _hr, hw = host_pipe
    assert fs.write(w, b"d" * 10_000) == host_write(hw, b"d" * 10_000) == 10_000
    for size in (4096, 8192, 16384):
        assert fs("fcntl", w, F_SETPIPE_SZ, size) == host_fcntl(hw, F_SETPIPE_SZ, size)
    assert fs("fcntl", w, F_GETPIPE_SZ, 0) == host_fcntl(hw, F_GETPIPE_SZ, 0) == 16384


def test_writes_fill_the_new_capacity(fs: Fs, host_pipe: tuple[int, int]) -> None:
    _r, w = guest_pipe(fs)
    _hr, hw = host_pipe
    assert fs("fcntl", w, F_SETPIPE_SZ, 4096) == host_fcntl(hw, F_SETPIPE_SZ, 4096) == 4096
    got = [fs.write(w, b"a" * 5000), fs.write(w, b"b")]
    want = [host_write(hw, b"a" * 5000), host_write(hw, b"b")]
    assert got == want == [4096, -errno.EAGAIN]
    assert fs("fcntl", w, F_SETPIPE_SZ, 65536) == host_fcntl(hw, F_SETPIPE_SZ, 65536)
    assert fs.write(w, b"c" * 100) == host_write(hw, b"c" * 100) == 100


def test_pipe_size_of_something_else_is_ebadf(fs: Fs) -> None:
    fd = fs.open("/tmp/plain", 0o100 | 2)
    hfd = os.open(os.devnull, os.O_RDWR)
    try:
        for cmd, arg in ((F_GETPIPE_SZ, 0), (F_SETPIPE_SZ, 4096)):
            want = host_fcntl(hfd, cmd, arg)
            assert want == -errno.EBADF
            assert fs("fcntl", fd, cmd, arg) == want
    finally:
        os.close(hfd)
