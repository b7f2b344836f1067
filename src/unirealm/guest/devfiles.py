"""The device files of /dev as open files: null, zero, random/urandom (RNDR) and the
console (ttyS0 or hvc0, stdin through the kernel's console, terminal ioctls)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import FsError
from .vfs import (
    FIONREAD,
    POLLHUP,
    POLLIN,
    POLLOUT,
    TCGETS,
    TCSETS,
    TCSETSF,
    TCSETSW,
    TIOCGPGRP,
    TIOCGWINSZ,
    TIOCSPGRP,
    TIOCSWINSZ,
    OpenFile,
    WouldBlock,
)

if TYPE_CHECKING:
    from .interfaces import Kernel, UserMemory


class NullFile(OpenFile):
    def read(self, size: int) -> bytes:
        return b""

    def write(self, data: bytes) -> int:
        return len(data)

    def pread(self, size: int, offset: int) -> bytes:
        return b""

    def pwrite(self, data: bytes, offset: int) -> int:
        return len(data)

    def seek(self, offset: int, whence: int) -> int:
        return 0


class ZeroFile(NullFile):
    def read(self, size: int) -> bytes:
        return bytes(size)

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(size)


class RandomFile(NullFile):
    def __init__(self, rndr: Callable[[], int], flags: int, path: str) -> None:
        super().__init__(None, flags, path)
        self.rndr = rndr

    def read(self, size: int) -> bytes:
        size = min(size, 1 << 20)
        out = bytearray()
        while len(out) < size:
            out += self.rndr().to_bytes(8, "little")
        return bytes(out[:size])

    pread = lambda self, size, offset: self.read(size)  # noqa: E731


DEFAULT_TERMIOS = (0x500).to_bytes(4, "little") + (0x5).to_bytes(4, "little") + (0xBF).to_bytes(4, "little") + \
    (0x8A3B).to_bytes(4, "little") + b"\0" + bytes([3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22, 0, 0, 0])


class ConsoleFile(OpenFile):
    """The console: ttyS0 (the ns16550) or hvc0 (the virtio-console). `tty` says whether it
    answers terminal ioctls (TCGETS...)."""

    def __init__(self, kernel: Kernel, flags: int, path: str, tty: bool) -> None:
        super().__init__(None, flags, path)
        self.kernel = kernel
        self.tty = tty
        self.termios = bytearray(DEFAULT_TERMIOS)

    def read(self, size: int) -> bytes:
        console = self.kernel.console
        if console is None or size == 0:
            return b""
        if not self.poll() & POLLIN:
            raise WouldBlock()  # the syscall layer waits (and other threads run meanwhile)
        return console.read(size)

    def write(self, data: bytes) -> int:
        self.kernel.write_console(data)
        return len(data)

    def poll(self) -> int:
        console = self.kernel.console
        if console is None:
            return POLLIN | POLLOUT | POLLHUP
        ready, eof = console.input_state()
        if ready:
            return POLLIN | POLLOUT
        if eof:
            return POLLIN | POLLOUT | POLLHUP
        return POLLOUT

    def is_tty(self) -> bool:
        return self.tty

    def ioctl(self, req: int, arg: int, mem: UserMemory) -> int:
        if not self.tty:
            raise FsError(errno.ENOTTY)
        if req == TCGETS:
            mem.write(arg, bytes(self.termios))
        elif req in (TCSETS, TCSETSW, TCSETSF):
            self.termios[:] = mem.read(arg, 36)
        elif req == TIOCGWINSZ:
            mem.write(arg, (24).to_bytes(2, "little") + (80).to_bytes(2, "little") + bytes(4))
        elif req == TIOCSWINSZ:
            pass
        elif req == TIOCGPGRP:
            mem.write(arg, (1).to_bytes(4, "little"))
        elif req == TIOCSPGRP:
            pass
        elif req == FIONREAD:
            mem.write(arg, (1 if self.poll() & POLLIN else 0).to_bytes(4, "little"))
        else:
            raise FsError(errno.ENOTTY)  # no tty ioctl of that number (Linux's ENOIOCTLCMD)
        return 0


# --- the file system ----------------------------------------------------------------------
