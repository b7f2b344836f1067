"""A process's file descriptor table (Linux's files_struct): fd -> open file and its
close-on-exec flag. Open files are shared by reference count: install, dup and fork take a
reference, close drops it, and the last close closes the file."""

from __future__ import annotations

import errno
from collections.abc import Iterator

from .vfs import FsError, OpenFile

FD_MAX = 1024  # RLIMIT_NOFILE


class FdEntry:
    __slots__ = ("cloexec", "file")

    def __init__(self, file: OpenFile, cloexec: bool) -> None:
        self.file = file
        self.cloexec = cloexec


class FdTable:
    def __init__(self) -> None:
        self.entries: dict[int, FdEntry] = {}

    def __contains__(self, fd: int) -> bool:
        return fd in self.entries

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, fd: int) -> FdEntry | None:
        return self.entries.get(fd)

    def items(self) -> list[tuple[int, FdEntry]]:
        return list(self.entries.items())

    def file(self, fd: int) -> OpenFile:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(errno.EBADF)
        return entry.file

    def install(self, file: OpenFile, cloexec: bool = False, lowest: int = 0) -> int:
        fd = lowest
        while fd in self.entries:
            fd += 1
        if fd >= FD_MAX:
            raise FsError(errno.EMFILE)
        file.refs += 1
        self.entries[fd] = FdEntry(file, cloexec)
        return fd

    def install_at(self, fd: int, file: OpenFile, cloexec: bool) -> None:
        """dup3: `file` at exactly `fd`, closing what was there."""
        if fd in self.entries:
            self.close(fd)
        file.refs += 1
        self.entries[fd] = FdEntry(file, cloexec)

    def close(self, fd: int) -> None:
        entry = self.entries.pop(fd, None)
        if entry is None:
            raise FsError(errno.EBADF)
        entry.file.refs -= 1
        if entry.file.refs == 0:
            entry.file.close()

    def close_all(self) -> None:
        for fd in list(self.entries):
            self.close(fd)

    def close_on_exec(self) -> None:
        for fd in [fd for fd, e in self.entries.items() if e.cloexec]:
            self.close(fd)

    def copy(self) -> FdTable:
        """fork: the same open files (one more reference each) at the same numbers."""
        table = FdTable()
        for fd, entry in self.entries.items():
            entry.file.refs += 1
            table.entries[fd] = FdEntry(entry.file, entry.cloexec)
        return table
