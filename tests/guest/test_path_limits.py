"""path_resolution(7)'s limits, against the host kernel: a path of PATH_MAX (4096) bytes or
more (no NUL within PATH_MAX) and a component longer than NAME_MAX (255) bytes are
ENAMETOOLONG, for looking up and for creating; one byte less is an ordinary path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .fs_support import AT_FDCWD, O_CREAT, O_WRONLY, Fs


def host_errno(call: object, *args: object) -> int:
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


def guest_stat(fs: Fs, path: str) -> int | None:
    raw = path.encode()
    fs.p.write(fs.buf, raw + b"\0")  # the whole string, however long, in one buffer
    return fs("newfstatat", AT_FDCWD, fs.buf, fs.buf + 0x8000, 0)


def guest_create(fs: Fs, path: str) -> int | None:
    fs.p.write(fs.buf, path.encode() + b"\0")
    return fs("openat", AT_FDCWD, fs.buf, O_CREAT | O_WRONLY, 0o644)


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_a_path_of_path_max_bytes_is_too_long(fs: Fs, extra: int) -> None:
    path = "/" * (4095 + extra - len("tmp")) + "tmp"  # 4095 bytes resolve; 4096 and more do not
    want = host_errno(os.stat, path)
    assert want == (0 if extra == 0 else errno.ENAMETOOLONG)
    got = guest_stat(fs, path)
    assert got == -want


@pytest.mark.parametrize("length", [255, 256, 300])
def test_a_component_over_name_max_is_too_long(fs: Fs, length: int, tmp_path: Path) -> None:
    name = "n" * length
    want = host_errno(os.stat, str(tmp_path / name))
    assert want == (errno.ENOENT if length == 255 else errno.ENAMETOOLONG)
    assert guest_stat(fs, "/tmp/" + name) == -want
    assert guest_stat(fs, "/tmp/" + name + "/x") == -want  # a directory on the way, too
    created = host_errno(lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), str(tmp_path / name))
    got = guest_create(fs, "/tmp/" + name)
    assert got is not None
    assert (got >= 0) == (created == 0) and (got >= 0 or got == -created)
    assert fs("mkdirat", AT_FDCWD, fs.cstr("/tmp/d" + name[1:]), 0o755) == -host_errno(os.mkdir, str(tmp_path / ("d" + name[1:])))


def test_name_max_counts_bytes_not_characters(fs: Fs, tmp_path: Path) -> None:
    name = "é" * 128  # 256 bytes of UTF-8 in 128 characters
    want = host_errno(os.stat, str(tmp_path / name))
    assert want == errno.ENAMETOOLONG
    assert guest_stat(fs, "/tmp/" + name) == -want
