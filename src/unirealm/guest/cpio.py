"""The initrd: a newc cpio archive (optionally gzip-compressed) in guest RAM, unpacked into
the VFS at boot. The format is in arch/cpio.py (shared with the host's writer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..arch.cpio import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, CpioError, iter_archive
from .vfs import DirInode, LinkInode, RegInode, Vfs

if TYPE_CHECKING:
    from .interfaces import Cpu

__all__ = ["CpioError", "load_cpio", "read_initrd"]


def read_initrd(cpu: Cpu, start: int, end: int) -> bytes:
    """The initrd bytes the VMM placed at /chosen linux,initrd-start..end."""
    return cpu.read(start, max(0, end - start))


def load_cpio(vfs: Vfs, data: bytes) -> int:
    """Unpack an initrd into `vfs`; returns the number of members."""
    count = 0
    for e in iter_archive(data):
        name = e.name
        while name.startswith("./"):
            name = name[2:]
        name = name.strip("/")
        count += 1
        if not name or name == ".":
            continue
        kind = e.mode & S_IFMT
        mt = e.mtime * 1_000_000_000
        if kind == S_IFDIR:
            vfs.install(name, DirInode(e.mode, uid=e.uid, gid=e.gid, mtime_ns=mt))
        elif kind == S_IFREG:
            vfs.install(name, RegInode(e.data, e.mode, uid=e.uid, gid=e.gid, mtime_ns=mt))
        elif kind == S_IFLNK:
            vfs.install(name, LinkInode(e.data.decode("utf-8", "surrogateescape"), uid=e.uid, gid=e.gid))
    return count
