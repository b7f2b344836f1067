"""The system directories of the first process's VFS: /dev (null, zero, random, the
console), /proc (self — the calling process: exe, cwd, fd/, maps, cmdline, environ, stat,
status — cpuinfo, meminfo, stat), /sys/devices/system/cpu and the /etc files programs look
for; and the console on descriptors 0, 1 and 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .process import Process
from .vfs import (
    O_RDWR,
    ConsoleFile,
    DevInode,
    DirInode,
    Inode,
    LinkInode,
    NullFile,
    RandomFile,
    RegInode,
    ZeroFile,
)

if TYPE_CHECKING:
    from .interfaces import Kernel


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
    proc = vfs.makedirs("proc")
    self_dir = DirInode(0o555, dynamic=lambda: proc_self(p))
    proc.add("self", self_dir)
    proc.add(str(p.pid), self_dir)
    proc.add("cpuinfo", RegInode(mode=0o444, gen=cpuinfo))
    proc.add("meminfo", RegInode(mode=0o444, gen=lambda: meminfo(kernel)))
    proc.add("stat", RegInode(mode=0o444, gen=lambda: b"cpu  0 0 0 0 0 0 0 0 0 0\nbtime 0\n"))
    sysd = vfs.makedirs("sys/devices/system/cpu")
    sysd.add("online", RegInode(b"0\n", 0o444))
    sysd.add("possible", RegInode(b"0\n", 0o444))
    etc = vfs.makedirs("etc")
    for name, text in (("passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("group", b"root:x:0:\n"),
                       ("hostname", b"unirealm\n")):
        if etc.get(name) is None:
            etc.add(name, RegInode(text))
    # the console: fds 0, 1, 2 (a terminal only with the kernel option `tty`)
    for fd in range(3):
        p.state.fds.install(ConsoleFile(kernel, O_RDWR, "/dev/console", tty), lowest=fd)


def proc_self(p: Process) -> dict[str, Inode]:
    """/proc/self: the calling process's view."""
    current = p.sched.current
    if current is not None and current.proc is not p and isinstance(current.proc, Process):
        p = current.proc
    fd_dir = DirInode(0o500, dynamic=lambda: {
        str(fd): LinkInode(e.file.path) for fd, e in sorted(p.state.fds.items())})
    return {
        "exe": LinkInode(p.exe_path),
        "cwd": LinkInode(p.state.cwd),
        "fd": fd_dir,
        "maps": RegInode(mode=0o444, gen=lambda: maps(p)),
        "cmdline": RegInode(mode=0o444, gen=lambda: b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in p.argv)),
        "environ": RegInode(mode=0o444, gen=lambda: b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in p.state.envp)),
        "stat": RegInode(mode=0o444, gen=lambda: f"{p.pid} (app) R 0 1 1 0 -1\n".encode()),
        "status": RegInode(mode=0o444, gen=lambda: f"Name:\tapp\nPid:\t{p.pid}\nThreads:\t"
                                                 f"{len(p.threads)}\n".encode()),
    }


def maps(p: Process) -> bytes:
    lines = []
    for v in sorted(p.mm.vmas, key=lambda v: v.start):
        if v.end <= v.start:
            continue
        perms = ("r" if v.prot & 1 else "-") + ("w" if v.prot & 2 else "-") + ("x" if v.prot & 4 else "-")
        perms += "s" if v.shared is not None else "p"
        name = {"anon": "", "heap": "[heap]", "stack": "[stack]", "elf": p.exe_path}.get(v.name, v.name)
        off = max(0, v.start - v.data_va) if v.data is not None else 0
        lines.append(f"{v.start:08x}-{v.end:08x} {perms} {off:08x} 00:00 0{' ' * 19}{name}".rstrip())
    return ("\n".join(lines) + "\n").encode()


def cpuinfo() -> bytes:
    return (b"processor\t: 0\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\n"
            b"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
            b"CPU revision\t: 3\n\n")


def meminfo(kernel: Kernel) -> bytes:
    total = kernel.pages.total >> 10
    free = kernel.pages.free_bytes >> 10
    return (f"MemTotal:       {total:8d} kB\nMemFree:        {free:8d} kB\n"
            f"MemAvailable:   {free:8d} kB\n").encode()
