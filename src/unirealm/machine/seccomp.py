"""Seccomp filters (libseccomp through ctypes) and the supervisor side of user notification.

A realm process installs a filter built here before it runs any image code: an allowlist
of system calls, each optionally restricted by argument comparisons, every other call
failing with EPERM. Calls the filter routes to SCMP_ACT_NOTIFY stop the caller until the
supervisor (the monitor's process, holding the listener descriptor the child sends it)
answers: continue the call as made, or fail it with an errno. The arguments the supervisor
judges are register values (no pointers), so the decision cannot be raced.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from dataclasses import dataclass

LIBSECCOMP = "libseccomp.so.2"

SCMP_ACT_KILL_PROCESS = 0x8000_0000
SCMP_ACT_NOTIFY = 0x7FC0_0000
SCMP_ACT_ALLOW = 0x7FFF_0000
SCMP_ACT_LOG = 0x7FFC_0000


def scmp_act_errno(err: int) -> int:
    return 0x0005_0000 | (err & 0xFFFF)


# enum scmp_compare
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
# enum scmp_filter_attr
SCMP_FLTATR_CTL_TSYNC = 4


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp"""

    _fields_ = (("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64))


@dataclass(frozen=True)
class Arg:
    """One argument comparison: argument `index` `op` `a` (MASKED_EQ: arg & a == b)."""

    index: int
    op: int
    a: int
    b: int = 0


class SeccompError(OSError):
    pass


def _lib() -> ctypes.CDLL:
    # The soname first: find_library runs `ldconfig -p` in a subprocess (tens of ms in the
    # kernel process's start, and it could not run once the filter is in).
    try:
        lib = ctypes.CDLL(LIBSECCOMP, use_errno=True)
    except OSError:
        from ctypes.util import find_library

        lib = ctypes.CDLL(find_library("seccomp") or LIBSECCOMP, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp))
    lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_notify_fd.argtypes = (ctypes.c_void_p,)
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


class Filter:
    """A filter under construction: rules, then `load()` (for this process, all threads)."""

    def __init__(self, default_action: int) -> None:
        self._lib = _lib()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise SeccompError(errno.EINVAL, "seccomp_init failed")
        self._check(self._lib.seccomp_attr_set(self._ctx, SCMP_FLTATR_CTL_TSYNC, 1), "TSYNC")

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc < 0:
            raise SeccompError(-rc, f"seccomp: {what}: {errno.errorcode.get(-rc, rc)}")

    def add(self, action: int, name: str, *args: Arg) -> None:
        nr = self._lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            raise SeccompError(errno.ENOSYS, f"seccomp: unknown system call {name}")
        cmps = (_ArgCmp * max(1, len(args)))(*(_ArgCmp(a.index, a.op, a.a, a.b) for a in args))
        self._check(self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(args), cmps), name)

    def export_bpf(self) -> bytes:
        """The filter as the kernel would get it: struct sock_filter records, native order."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            self._check(self._lib.seccomp_export_bpf(self._ctx, fd), "export")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def load(self) -> int | None:
        """Install the filter; the user-notification listener's descriptor if it has one."""
        self._check(self._lib.seccomp_load(self._ctx), "load")
        fd = self._lib.seccomp_notify_fd(self._ctx)
        return fd if fd >= 0 else None


# --- the supervisor's side: struct seccomp_notif / seccomp_notif_resp (linux/seccomp.h) ---
NOTIF = struct.Struct("=QII iI Q 6Q")  # id, pid, flags, data.nr, data.arch, data.ip, data.args
NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("!") << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _iowr(0, NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _iowr(1, NOTIF_RESP.size)


@dataclass(frozen=True)
class Notification:
    id: int
    pid: int
    nr: int
    args: tuple[int, ...]


def receive(listener: int) -> Notification:
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf)
    nid, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
    return Notification(nid, pid, nr, tuple(args))


def respond(listener: int, note: Notification, error: int = 0) -> None:
    """Let the call go ahead as made (error 0), or fail it with `error`."""
    flags = 0 if error else SECCOMP_USER_NOTIF_FLAG_CONTINUE
    buf = bytearray(NOTIF_RESP.pack(note.id, 0, -error if error else 0, flags))
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, buf)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # the caller died meanwhile
            raise


def syscall_number(name: str) -> int:
    nr = _lib().seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        raise SeccompError(errno.ENOSYS, f"seccomp: unknown system call {name}")
    return nr
