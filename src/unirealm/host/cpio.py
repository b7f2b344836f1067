"""Writing newc cpio archives (initrds) from a directory tree; format in arch/cpio.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from unirealm.arch.cpio import Entry, gzip_archive, pack_archive


def entries_from_dir(root: Path) -> list[Entry]:
    """The tree under `root`, parents before children, names relative to `root`, owned by
    root:root, each file as its own inode (hard links are stored as copies)."""
    entries: list[Entry] = []
    ino = 721
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        names = sorted(dirnames + filenames)
        for name in names:
            path = here / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            mode = st.st_mode
            data = b""
            if stat.S_ISLNK(mode):
                data = os.fsencode(os.readlink(path))
            elif stat.S_ISREG(mode):
                data = path.read_bytes()
            elif not stat.S_ISDIR(mode):
                rdev = st.st_rdev if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
                entries.append(Entry(rel, mode, b"", ino, nlink=1, mtime=int(st.st_mtime),
                                     rdevmajor=os.major(rdev), rdevminor=os.minor(rdev)))
                ino += 1
                continue
            nlink = 2 if stat.S_ISDIR(mode) else 1
            entries.append(Entry(rel, mode, data, ino, nlink=nlink, mtime=int(st.st_mtime)))
            ino += 1
    return entries


def write_initrd(root: Path, compress: bool = False) -> bytes:
    if not root.is_dir():
        raise NotADirectoryError(str(root))
    data = pack_archive(entries_from_dir(root))
    return gzip_archive(data) if compress else data
