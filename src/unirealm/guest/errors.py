"""The errno a file or memory operation fails with, raised as FsError(errno) and turned into
-errno by the syscall layer."""

from __future__ import annotations

import errno


class FsError(Exception):
    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(f"{errno.errorcode.get(code, code)} {what}".strip())
        self.errno = code
