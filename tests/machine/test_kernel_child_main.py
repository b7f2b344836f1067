"""A kernel process's start (machine/kernel_child.main), in this process's children: it waits
for SETUP, and before it says HELLO (msg 4: the child's numbers of the memory file and its
read-only twin, the seccomp listener by SCM_RIGHTS) it has bounded its address space, closed
every other descriptor, ignored the terminal's signals, tied its life to its parent's and
installed its filter; it ends quietly when the channel closes. Seen from /proc of the child."""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

import pytest

from unirealm.machine import kernel_child as kc
from unirealm.machine import seccomp as sc
from unirealm.machine.el0space import El0Space

from .channel_layout import (
    DATA_ABORT,
    F_PROBE,
    GRANT,
    GRANT_FMT,
    HELLO,
    HELLO_FMT,
    NO_IAR1,
    RESUME,
    RESUME_FMT,
    SETUP,
    SETUP_FMT,
    SMC,
    TRAP,
    TRAP_FMT,
)
from .pykernel_support import image

WAIT = 30.0  # seconds a child may take on a loaded machine
RAM = 0x4000_0000  # the image's IPA
PAGE = 4096


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmSize:")).split()[1]) << 10


def _status(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as status:
        return next(x for x in status if x.startswith(field + ":")).split(":", 1)[1].strip()


def _eventfd_count(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return int(next(x for x in info if x.startswith("eventfd-count:")).split()[1], 16)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@dataclass
class Started:
    """A kernel process (`pid`, kc.main in a grandchild of this process) and its parent
    (`parent`), which ends when told: `end_parent(wait=True)` has it reap the kernel
    process first and returns that one's exit code."""

    sock: socket.socket
    chan: int  # the channel's number in the kernel process
    pid: int
    parent: int
    control: int
    report: TextIO

    def end_parent(self, wait: bool) -> int | None:
        os.write(self.control, b"w" if wait else b"x")
        os.close(self.control)
        code = int(self.report.readline()) if wait else None
        self.report.close()
        _, status = os.waitpid(self.parent, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return code


def ends_quietly_without_setup() -> None:
    """kc.main, here: its engine gone before SETUP, it returns 0 having cleared its environment
    and imported what a kernel may use (the environment is restored afterwards)."""
    tcg_buffer = El0Space.tcg_buffer_size
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine.close()  # no SETUP will come
    saved = dict(os.environ)
    try:
        assert kc.main([str(theirs.detach())]) == 0
        assert dict(os.environ) == {}
        assert all(name in sys.modules for name in kc.PRELOAD)
        assert El0Space.tcg_buffer_size == 32 << 20  # each EL0 CPU's translation buffer
    finally:
        os.environ.update(saved)
        El0Space.tcg_buffer_size = tcg_buffer


def start() -> Started:
    ends_quietly_without_setup()  # what the child does first, seen here
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine.settimeout(WAIT)
    report_r, report_w = os.pipe()
    control_r, control_w = os.pipe()
    parent = os.fork()
    if parent == 0:  # pragma: no cover - the kernel process's parent
        try:
            os.close(report_r)
            os.close(control_w)
            mine.close()
            pid = os.fork()
            if pid == 0:  # the kernel process
                code = 99
                try:
                    code = kc.main([str(theirs.fileno())])
                finally:
                    os._exit(code)
            theirs.close()
            os.write(report_w, f"{pid}\n".encode())
            if os.read(control_r, 1) == b"w":
                _, status = os.waitpid(pid, 0)
                os.write(report_w, f"{os.waitstatus_to_exitcode(status)}\n".encode())
        finally:
            os._exit(0)
    os.close(report_w)
    os.close(control_r)
    chan = theirs.fileno()
    theirs.close()
    report = os.fdopen(report_r)
    pid = int(report.readline())
    return Started(mine, chan, pid, parent, control_w, report)


@pytest.fixture
def memory() -> Iterator[tuple[int, int, int]]:
    memfd = os.memfd_create("unirealm-dram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, 1 << 20)
    ro = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)
    irq = os.eventfd(0, os.EFD_CLOEXEC)
    yield memfd, ro, irq
    for fd in (memfd, ro, irq):
        os.close(fd)


def setup_and_hello(child: Started, memory: tuple[int, int, int], limit: int,
                    model: bytes = b"max") -> tuple[int, int, int]:
    """SETUP sent, HELLO received: (the child's memory file, its twin, the listener here)."""
    socket.send_fds(child.sock, [SETUP_FMT.pack(SETUP, limit, model)], list(memory))
    msg, fds, _, _ = socket.recv_fds(child.sock, 512, 1)
    assert len(msg) == HELLO_FMT.size and msg[0] == HELLO and len(fds) == 1
    _, child_memfd, child_ro = HELLO_FMT.unpack(msg)
    return child_memfd, child_ro, fds[0]


def test_a_kernel_process_whose_engine_goes_first_ends_quietly() -> None:
    ends_quietly_without_setup()


def test_a_started_kernel_process_is_bounded_filtered_and_alone_with_its_channel(
        memory: tuple[int, int, int]) -> None:
    child = start()
    limit = _vm_size() + (1 << 30)
    try:
        child_memfd, child_ro, listener = setup_and_hello(child, memory, limit)
        try:
            assert os.readlink(f"/proc/self/fd/{listener}") == "anon_inode:seccomp notify"
        finally:
            os.close(listener)
        fd_dir = f"/proc/{child.pid}/fd"
        _until(lambda: "0" not in os.listdir(fd_dir), "stdin still open")  # closed after HELLO
        names = {int(n) for n in os.listdir(fd_dir)}
        assert len(names) == 4 and {child.chan, child_memfd, child_ro} < names
        (irq,) = names - {child.chan, child_memfd, child_ro}
        assert os.readlink(f"{fd_dir}/{irq}") == "anon_inode:[eventfd]"
        for fd in (child_memfd, child_ro):
            assert os.stat(f"{fd_dir}/{fd}").st_ino == os.fstat(memory[0]).st_ino
        with open(f"/proc/{child.pid}/fdinfo/{child_ro}") as info:
            flags = int(next(x for x in info if x.startswith("flags:")).split()[1], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        with open(f"/proc/{child.pid}/limits") as limits:
            line = next(x for x in limits if x.startswith("Max address space"))
        assert line.split()[3:5] == [str(limit), str(limit)]
        assert _status(child.pid, "Seccomp") == "2"  # a filter
        ignored = int(_status(child.pid, "SigIgn"), 16)
        for sig in (1, 2, 13, 15):  # SIGHUP, SIGINT, SIGPIPE, SIGTERM
            assert ignored & (1 << (sig - 1))
        # the interrupt watchdog reads what the engine writes to the eventfd
        os.eventfd_write(memory[2], 1)
        _until(lambda: _eventfd_count(memory[2]) == 0, "the host's interrupt was not read")
        child.sock.close()  # the VM ends: the kernel process with it
        assert child.end_parent(wait=True) == 0
    finally:
        child.sock.close()


def test_a_started_kernel_process_dies_with_its_parent(memory: tuple[int, int, int]) -> None:
    child = start()
    try:
        _, _, listener = setup_and_hello(child, memory, _vm_size() + (1 << 30))
        os.close(listener)
        assert child.end_parent(wait=False) is None
        ready, _, _ = select.select([child.sock], [], [], WAIT)
        assert ready and child.sock.recv(512) == b""  # its end of the channel closed: it is gone
    finally:
        child.sock.close()


def test_a_started_kernel_process_boots_the_image_at_the_first_resume_on_the_cpu_setup_named(
        memory: tuple[int, int, int]) -> None:
    kernel = b"def boot(cpu):\n    cpu.smc(*cpu.cpu_model.encode())\n"  # its CPU model, in x0..
    data = image({"k.py": kernel})
    os.pwrite(memory[0], data, 0)
    pages = -(-len(data) // PAGE)
    child = start()
    try:
        _, child_ro, listener = setup_and_hello(child, memory, _vm_size() + (1 << 30), b"cortex-a710")
        try:
            child.sock.send(RESUME_FMT.pack(RESUME, 0, 0, NO_IAR1, RAM, *(0,) * 31, 0, 0))
            # the header's read misses: asked as a probe at the image's page, granted read-only
            trap = TRAP_FMT.unpack(child.sock.recv(1024))
            assert trap[:2] == (TRAP, DATA_ABORT) and trap[2] & F_PROBE and trap[36] == RAM
            child.sock.send(GRANT_FMT.pack(GRANT, 0, pages, RAM, 0))
            # its mmap of the twin at WINDOW + RAM waits for this side's approval
            ready, _, _ = select.select([listener], [], [], WAIT)
            assert ready
            note = sc.receive(listener)
            addr, length, prot, _, fd, offset = note.args
            assert (note.pid, note.nr) == (child.pid, sc.syscall_number("mmap"))
            assert (addr, length, prot, fd & 0xFFFF_FFFF, offset) == (kc.WINDOW + RAM, pages * PAGE, 1, child_ro, 0)
            sc.respond(listener, note, 0)
            trap = TRAP_FMT.unpack(child.sock.recv(1024))
            assert trap[:2] == (TRAP, SMC) and trap[5:16] == tuple(b"cortex-a710")
        finally:
            os.close(listener)
        child.sock.close()  # the VM ends while its kernel waits in the SMC
        assert child.end_parent(wait=True) == 0
    finally:
        child.sock.close()
