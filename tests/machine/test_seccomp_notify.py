"""Filters loaded for real, each in a forked child: an errno action, and user notification
answered by this process as supervisor (seccomp(2), seccomp_unotify(2))."""

from __future__ import annotations

import errno
import os
import platform
import signal
import socket
import struct
from collections.abc import Callable

from unirealm.machine import seccomp as sc

NR_FCHDIR = {"x86_64": 81, "aarch64": 50}[platform.machine()]
REPORT = struct.Struct("=i")


def forked(body: Callable[[socket.socket], None]) -> tuple[int, socket.socket]:
    """Run `body` in a child with one end of a socket pair; the child ends with it."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            parent.close()
            body(child)
        except BaseException:
            code = 70
        os._exit(code)
    child.close()
    return pid, parent


def fchdir_errno(fd: int) -> int:
    """0 if fchdir(fd) works, else its errno (os.fchdir is that one system call)."""
    try:
        os.fchdir(fd)
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_a_loaded_errno_rule_fails_the_call_and_no_listener_is_returned() -> None:
    def body(sock: socket.socket) -> None:
        refused, let = os.open("/", os.O_RDONLY), os.open("/", os.O_RDONLY)
        f = sc.Filter(sc.SCMP_ACT_ALLOW)
        f.add(sc.scmp_act_errno(errno.EACCES), "fchdir", sc.Arg(0, sc.SCMP_CMP_EQ, refused))
        listener = f.load()
        sock.send(REPORT.pack(-2 if listener is None else listener) + REPORT.pack(fchdir_errno(refused))
                  + REPORT.pack(fchdir_errno(let)))

    pid, sock = forked(body)
    report = sock.recv(64)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    listener, on_zero, on_one = (REPORT.unpack_from(report, i * REPORT.size)[0] for i in range(3))
    assert listener == -2
    assert on_zero == errno.EACCES
    assert on_one == 0  # the rule's argument comparison: another descriptor is let through


def test_the_supervisor_sees_the_call_and_fails_or_continues_it() -> None:
    def body(sock: socket.socket) -> None:
        root = os.open("/", os.O_RDONLY)
        os.dup2(root, 100)
        f = sc.Filter(sc.SCMP_ACT_ALLOW)
        f.add(sc.SCMP_ACT_NOTIFY, "fchdir", sc.Arg(0, sc.SCMP_CMP_EQ, 100))
        listener = f.load()
        assert listener is not None
        socket.send_fds(sock, [b"L"], [listener])
        os.close(listener)
        first = fchdir_errno(100)
        second = fchdir_errno(100)
        sock.send(REPORT.pack(first) + REPORT.pack(second))
        fchdir_errno(100)  # the supervisor kills this process before answering

    pid, sock = forked(body)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        assert len(fds) == 1
        listener = fds[0]
        note = sc.receive(listener)
        assert (note.nr, note.pid, note.args[0]) == (NR_FCHDIR, pid, 100)
        sc.respond(listener, note, errno.EACCES)
        again = sc.receive(listener)
        assert again.id != note.id and again.nr == NR_FCHDIR and again.pid == pid
        sc.respond(listener, again)  # continue: the call is made as asked
        report = sock.recv(64)
        assert REPORT.unpack_from(report, 0)[0] == errno.EACCES
        assert REPORT.unpack_from(report, REPORT.size)[0] == 0
        last = sc.receive(listener)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sc.respond(listener, last, errno.EPERM)  # the caller is gone: no error
        sc.respond(listener, last)
        os.close(listener)
    finally:
        sock.close()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_response_to_a_listener_that_is_not_one_raises() -> None:
    r, w = os.pipe()
    try:
        note = sc.Notification(1, os.getpid(), NR_FCHDIR, (0,) * 6)
        for error in (0, errno.EPERM):
            try:
                sc.respond(r, note, error)
            except OSError as exc:
                assert exc.errno in (errno.ENOTTY, errno.EINVAL)
            else:
                raise AssertionError("respond on a pipe succeeded")
    finally:
        os.close(r)
        os.close(w)


def test_the_notification_ioctls_are_the_kernels_numbers() -> None:
    # linux/seccomp.h: SECCOMP_IOWR(0, struct seccomp_notif) and SECCOMP_IOWR(1, struct
    # seccomp_notif_resp), _IOC(_IOC_READ|_IOC_WRITE, '!', nr, size); the structs are 80 and 24 bytes
    assert sc.NOTIF.size == 80 and sc.NOTIF_RESP.size == 24
    assert sc.SECCOMP_IOCTL_NOTIF_RECV == 0xC050_2100
    assert sc.SECCOMP_IOCTL_NOTIF_SEND == 0xC018_2101
    assert sc._iowr(0, 80) == 0xC050_2100 and sc._iowr(1, 24) == 0xC018_2101
    assert sc._iowr(2, 8) == 0xC008_2102
