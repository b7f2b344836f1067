"""The VMM's console: ttyS0 (the 16550 kvmtool's guests print to) or, with `--console
virtio`, hvc0, and the host's stdin fed to it as the guest polls for input."""

from __future__ import annotations

import os
import select
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from .devices.ns16550 import Ns16550

if TYPE_CHECKING:
    from .devices.virtio_console import VirtioConsoleDevice


@dataclass
class Console:
    """ttyS0, or hvc0 with `--console virtio`: guest output to `output`, `input` fed in as
    the guest polls for it. With hvc0 the host's stdin goes to it alone (ttyS0 reads as at
    end of input); ttyS0's output still reaches `output`."""

    output: BinaryIO
    input: BinaryIO | None
    virtio: bool = False
    access_platform: bool = False
    uart: Ns16550 = field(init=False)
    hvc: VirtioConsoleDevice | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.uart = Ns16550(output=self._write, name="ttyS0")
        if self.virtio:
            from .devices.virtio_console import VirtioConsole, VirtioConsoleDevice

            self.hvc = VirtioConsoleDevice(VirtioConsole(self._write), access_platform=self.access_platform,
                                           name="virtio-console")
            self.uart.set_eof()
        if self.input is None:
            self._sink.set_eof()

    @property
    def _sink(self) -> Ns16550 | VirtioConsoleDevice:
        return self.hvc if self.hvc is not None else self.uart

    def _write(self, data: bytes) -> None:
        self.output.write(data)
        self.output.flush()

    def input_fd(self) -> int | None:
        """The file descriptor console input arrives on, while more can arrive."""
        if self.input is None or self._sink._eof:
            return None
        try:
            return self.input.fileno()
        except (OSError, ValueError, AttributeError):
            return None

    def poll_input(self) -> None:
        """Move whatever stdin has ready into the console without blocking the guest."""
        sink = self._sink
        if self.hvc is not None:
            self.hvc.deliver()
        if self.input is None or sink._eof:
            return
        try:
            fd = self.input.fileno()
        except (OSError, ValueError, AttributeError):
            data = self.input.read()
            sink.feed(data or b"")
            sink.set_eof()
            return
        ready, _, _ = select.select([fd], [], [], 0)
        if ready:
            data = os.read(fd, 65536)
            if data:
                sink.feed(data)
            else:
                sink.set_eof()
        if self.hvc is not None:
            self.hvc.deliver()
