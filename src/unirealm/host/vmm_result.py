"""What a VMM run ends with, shared by the VMM and its two run loops (realm_run, vm_run)."""

from __future__ import annotations

from dataclasses import dataclass

NET_POLL_INTERVAL = 0.0005  # seconds between network polls at MMIO exits


class VmmError(Exception):
    """A launch problem reported as one line (bad kernel file, memory too small, ...)."""


@dataclass
class RunResult:
    status: int
    exits: int = 0
