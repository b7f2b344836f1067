"""What a started kernel process is given (machine/kernel_spawn.py): an empty environment, no
terminal, a session of its own, / as its directory, its channel as its only inherited
descriptor; and what binding it to a VM hands over, seen from /proc of the child."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
from collections.abc import Iterator

import pytest

from unirealm.machine import kernel_spawn
from unirealm.machine.kernel_spawn import Spawn

from .channel_layout import HELLO_FMT


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    s = Spawn()
    yield s
    s.discard()


def test_the_interpreter_starts_bare(spawn: Spawn) -> None:
    pid = spawn.proc.pid
    with open(f"/proc/{pid}/environ", "rb") as env:
        assert env.read() == b""
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
    assert os.getsid(pid) == pid  # its own session: no terminal's signals
    assert (spawn.limit, spawn.cpu_model, spawn.memfd_ro, spawn.irq) == (0, "", -1, -1)


def test_an_inheritable_descriptor_of_this_process_does_not_reach_it() -> None:
    marker = os.memfd_create("unirealm-marker", 0)
    os.set_inheritable(marker, True)
    s = Spawn()
    try:
        with pytest.raises(FileNotFoundError):
            os.readlink(f"/proc/{s.proc.pid}/fd/{marker}")
        for name in os.listdir(f"/proc/{s.proc.pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # a file the interpreter closed meanwhile
                assert "unirealm-marker" not in os.readlink(f"/proc/{s.proc.pid}/fd/{name}")
    finally:
        s.discard()
        os.close(marker)


def test_binding_hands_over_the_memory_file_its_read_only_twin_and_the_limit(spawn: Spawn) -> None:
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, 1 << 20)
    try:
        assert spawn.bind(memfd, 768 << 20, "max") is spawn
        assert (spawn.limit, spawn.cpu_model) == (768 << 20, "max")
        assert os.fstat(spawn.memfd_ro).st_ino == os.fstat(memfd).st_ino
        assert fcntl.fcntl(spawn.memfd_ro, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        for fd in (spawn.memfd_ro, spawn.irq):
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        os.eventfd_write(spawn.irq, 1)  # an eventfd
        assert os.eventfd_read(spawn.irq) == 1
        ready, _, _ = select.select([spawn.sock], [], [], 60)
        assert ready
        msg, fds, _, _ = socket.recv_fds(spawn.sock, 512, 1)
        for fd in fds:
            os.close(fd)
        assert len(msg) == HELLO_FMT.size and msg[0] == 4 and len(fds) == 1
        _, child_memfd, child_ro = HELLO_FMT.unpack(msg)
        pid = spawn.proc.pid
        assert os.stat(f"/proc/{pid}/fd/{child_memfd}").st_ino == os.fstat(memfd).st_ino
        assert os.stat(f"/proc/{pid}/fd/{child_ro}").st_ino == os.fstat(memfd).st_ino
        with open(f"/proc/{pid}/fdinfo/{child_ro}") as info:
            flags = int(next(x for x in info if x.startswith("flags:")).split()[1], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        with open(f"/proc/{pid}/limits") as limits:
            line = next(x for x in limits if x.startswith("Max address space"))
        assert line.split()[3:5] == [str(768 << 20), str(768 << 20)]
    finally:
        os.close(memfd)


def test_binding_a_child_that_died_is_found_later_not_now(spawn: Spawn) -> None:
    spawn.proc.kill()
    spawn.proc.wait()
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    try:
        assert spawn.bind(memfd, 1 << 30, "max") is spawn
    finally:
        os.close(memfd)


def test_discarding_ends_the_child_and_closes_what_binding_opened() -> None:
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    s = Spawn().bind(memfd, 1 << 30, "max")
    ro, irq = s.memfd_ro, s.irq
    s.discard()
    assert s.proc.returncode is not None and s.sock.fileno() == -1
    assert (s.memfd_ro, s.irq) == (-1, -1)
    for fd in (ro, irq):
        with pytest.raises(OSError):
            os.fstat(fd)
    os.close(memfd)
    s.discard()  # twice: nothing left to close


def test_no_early_interpreter_for_the_in_process_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_spawn.discard_early()
    monkeypatch.setenv(kernel_spawn.IN_PROCESS_ENV, "1")
    kernel_spawn.start_early()
    assert kernel_spawn._EARLY == []
    monkeypatch.setenv(kernel_spawn.IN_PROCESS_ENV, "0")
    kernel_spawn.start_early()
    assert len(kernel_spawn._EARLY) == 1
    early = kernel_spawn._EARLY[0]
    assert kernel_spawn.take() is early and kernel_spawn._EARLY == []
    other = kernel_spawn.take()  # none waiting: a new one
    try:
        assert other is not early and other.proc.poll() is None
    finally:
        early.discard()
        other.discard()
