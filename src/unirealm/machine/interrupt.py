"""The host's physical interrupt: what a signal to the VMM (Ctrl-C, SIGTERM) becomes.

On hardware, a signal for the VMM thread is an IPI that takes its PE out of the guest: the
REC exits with reason IRQ and KVM_RUN returns to the VMM. Here the vCPU is Unicorn, whose
`emu_start` runs no Python while the guest runs straight-line code, so a Python signal
handler alone would never run. `HOST_IRQ.raise_()` may be called from any thread (the VMM's
watchdog, woken by the signal's wakeup fd): it marks the interrupt pending and calls
`emu_stop` on every Unicorn inside `emu_start`, and keeps doing so (`kick`) until the host
takes it. An engine that stops with the interrupt pending returns an `IrqTrap`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class HostInterrupt:
    def __init__(self) -> None:
        self.pending = False
        # The host's own EL2 timer (CNTHP_EL2) as a time.monotonic() deadline: when it passes
        # while a guest runs, the PE takes a physical interrupt for the host (a REC exits with
        # reason IRQ). The VMM arms it to end a vCPU's time slice.
        self.deadline: float | None = None
        self._running: set[Any] = set()  # Uc objects inside emu_start
        self._lock = threading.RLock()  # a signal handler may run while the main thread holds it

    def running(self, uc: Any) -> _Running:
        """Around one `emu_start` of `uc`, so that an interrupt can stop it."""
        return _Running(self, uc)

    def raise_(self) -> None:
        self.pending = True
        self.kick()

    def kick(self) -> None:
        """Stop every running CPU (again: one may have entered emu_start after the last kick)."""
        with self._lock:
            running = list(self._running)
        for uc in running:
            with contextlib.suppress(Exception):
                uc.emu_stop()

    def clear(self) -> None:
        self.pending = False


class _Running:
    """HostInterrupt.running's context: `uc` is in the set of running CPUs while inside (a
    plain class: it is entered at every trap of every vCPU)."""

    __slots__ = ("irq", "uc")

    def __init__(self, irq: HostInterrupt, uc: Any) -> None:
        self.irq, self.uc = irq, uc

    def __enter__(self) -> None:
        with self.irq._lock:
            self.irq._running.add(self.uc)

    def __exit__(self, *exc: object) -> None:
        with self.irq._lock:
            self.irq._running.discard(self.uc)


HOST_IRQ = HostInterrupt()
