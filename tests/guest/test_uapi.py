"""guest/uapi.py's struct layouts against bytes the host's own C library and kernel produce
and consume (x86-64 and arm64 Linux share them: two longs for timespec and timeval, two
pointer-sized words for iovec)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import time

import pytest

from unirealm.guest.errors import FsError
from unirealm.guest.uapi import IOVEC, NSEC, TIMESPEC, TIMEVAL, pack_timespec, pack_timeval, timespec_ns

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLOCK_MONOTONIC = 1


def test_timespec_is_what_clock_gettime_writes() -> None:
    buf = ctypes.create_string_buffer(TIMESPEC.size)
    before = time.monotonic_ns()
    assert libc.clock_gettime(CLOCK_MONOTONIC, buf) == 0
    after = time.monotonic_ns()
    assert before <= timespec_ns(buf.raw) <= after


def test_a_packed_timespec_is_what_nanosleep_takes() -> None:
    start = time.monotonic_ns()
    assert libc.nanosleep(ctypes.c_char_p(pack_timespec(20_000_000)), None) == 0
    assert time.monotonic_ns() - start >= 20_000_000
    bad = ctypes.c_char_p(TIMESPEC.pack(0, NSEC))
    assert libc.nanosleep(bad, None) == -1 and ctypes.get_errno() == errno.EINVAL


def test_timeval_is_what_so_rcvtimeo_takes_and_gives() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, pack_timeval(2 * NSEC + 500_000_999))  # whole jiffies at any HZ
        assert TIMEVAL.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, TIMEVAL.size)) == (2, 500_000)


def test_iovec_is_what_readv_takes() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"abcdefgh")
        a, b = ctypes.create_string_buffer(3), ctypes.create_string_buffer(5)
        vec = IOVEC.pack(ctypes.addressof(a), 3) + IOVEC.pack(ctypes.addressof(b), 5)
        assert libc.readv(r, ctypes.c_char_p(vec), 2) == 8
        assert (a.raw, b.raw) == (b"abc", b"defgh")
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(("sec", "nsec"), [(-1, 0), (0, -1), (0, NSEC), (5, 1 << 62)])
def test_timespec_ns_refuses_what_timespec64_valid_refuses(sec: int, nsec: int) -> None:
    with pytest.raises(FsError) as exc:
        timespec_ns(TIMESPEC.pack(sec, nsec))
    assert exc.value.errno == errno.EINVAL


def test_timespec_ns_edges() -> None:
    assert timespec_ns(TIMESPEC.pack(0, NSEC - 1)) == NSEC - 1
    assert timespec_ns(TIMESPEC.pack(3, 0)) == 3 * NSEC
    assert pack_timespec(3 * NSEC + 7) == TIMESPEC.pack(3, 7)
    assert pack_timeval(1_999_999) == TIMEVAL.pack(0, 1999)
