"""The system directories of the first process's VFS: /dev (null, zero, random, the
console), /proc (guest/procpid.py: a directory per process, self and thread-self; cpuinfo,
meminfo, stat, uptime, loadavg, version, mounts, filesystems, sys/kernel), /sys/devices/system/cpu
and the /etc files programs look for; and the console on descriptors 0, 1 and 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .devfiles import ConsoleFile, NullFile, RandomFile, ZeroFile
from .process import Process
from .proctree import proc_root
from .uapi import UTS_NODENAME
from .vfs import O_RDWR, DevInode, DirInode, LinkInode, RegInode

if TYPE_CHECKING:
    pass


def mount_system(p: Process) -> None:
    """/dev, /proc, /sys/devices/system/cpu and /etc for the first process, and its
    console descriptors 0, 1 and 2."""
    vfs, kernel = p.vfs, p.kernel
    tty = "tty" in kernel.options
    rndr = p.cpu.rndr
    dev = vfs.makedirs("dev")
    for name, rdev, factory in (
        ("null", 0x103, lambda f, path: NullFile(None, f, path)),
        ("zero", 0x105, lambda f, path: ZeroFile(None, f, path)),
        ("random", 0x108, lambda f, path: RandomFile(rndr, f, path)),
        ("urandom", 0x109, lambda f, path: RandomFile(rndr, f, path)),
        ("tty", 0x500, lambda f, path: ConsoleFile(kernel, f, path, True)),
        ("console", 0x501, lambda f, path: ConsoleFile(kernel, f, path, True)),
        ("ttyS0", 0x440, lambda f, path: ConsoleFile(kernel, f, path, True)),
    ):
        dev.add(name, DevInode(rdev, factory))
    dev.add("stdin", LinkInode("/proc/self/fd/0"))
    dev.add("stdout", LinkInode("/proc/self/fd/1"))
    dev.add("stderr", LinkInode("/proc/self/fd/2"))
    dev.add("fd", LinkInode("/proc/self/fd"))
    dev.add("shm", DirInode(0o1777))
    vfs.root.add("proc", proc_root(p))
    vfs.mounts.append(("proc", "/proc", "proc", "rw,nosuid,nodev,noexec,relatime"))
    sysd = vfs.makedirs("sys/devices/system/cpu")
    sysd.add("online", RegInode(b"0\n", 0o444))
    sysd.add("possible", RegInode(b"0\n", 0o444))
    etc = vfs.makedirs("etc")
    for name, text in (("passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("group", b"root:x:0:\n"),
                       ("hostname", f"{UTS_NODENAME}\n".encode())):
        if etc.get(name) is None:
            etc.add(name, RegInode(text))
    # the console: fds 0, 1, 2 (a terminal only with the kernel option `tty`)
    for fd in range(3):
        p.state.fds.install(ConsoleFile(kernel, O_RDWR, "/dev/console", tty), lowest=fd)
