"""SIGINT and SIGTERM during `unirealm run`: the watch that stops the guest promptly."""

from __future__ import annotations

import os
import select
import signal
import threading
from typing import Any

from unirealm.machine.interrupt import HOST_IRQ


class VmmStopped(Exception):
    """SIGINT or SIGTERM reached the VMM: the guest is stopped at its next exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalWatch:
    """SIGINT and SIGTERM stop the VMM whatever the guest does. The Python handler only
    notes the signal; since a guest in a tight loop never leaves Unicorn's emu_start, where
    no Python handler runs, the signal's wakeup fd also wakes a watchdog thread that raises
    the host's interrupt (machine.interrupt): the vCPU stops with an IRQ exit and the run
    loop ends the run. Installed only from the main thread (signals go there)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._old_wakeup = -1
        self._done = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
        HOST_IRQ.raise_()

    def _watch(self, fd: int) -> None:
        while not self._done:
            ready, _, _ = select.select([fd], [], [], 0.05 if HOST_IRQ.pending else None)
            if ready:
                try:
                    data = os.read(fd, 64)
                except BlockingIOError:
                    continue
                if any(b in self.SIGNALS for b in data):
                    HOST_IRQ.raise_()
            elif HOST_IRQ.pending:
                HOST_IRQ.kick()  # a CPU that entered emu_start after the last kick

    def __enter__(self) -> SignalWatch:
        HOST_IRQ.clear()
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = (r, w)
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, args=(r,), name="unirealm-signals", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        if self.signum is not None:
            raise VmmStopped(self.signum)

    def __exit__(self, *exc: object) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._done = True
            os.write(self._pipe[1], b"\0")
            if self._thread is not None:
                self._thread.join(1)
            for fd in self._pipe:
                os.close(fd)
        HOST_IRQ.clear()
