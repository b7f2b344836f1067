"""The errno a file or memory operation fails with, raised as FsError(errno) and turned into
-errno by the syscall layer."""

from __future__ import annotations

import errno


class FsError(Exception):
    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(f"{errno.errorcode.get(code, code)} {what}".strip())
        self.errno = code


class BrokenPipe(FsError):
    """EPIPE on a write whose other end is gone (a pipe without readers, a stream socket shut
    down for writing): the syscall layer also raises SIGPIPE at the calling thread (pipe(7),
    send(2)); a send with MSG_NOSIGNAL turns it into a plain FsError(EPIPE)."""

    def __init__(self, what: str = "") -> None:
        super().__init__(errno.EPIPE, what)
