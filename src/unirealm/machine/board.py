"""One RME machine: DRAM with its GPT, the EL3 monitor and (on RME platforms) the root of trust."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from unirealm.arch.memory import World

from .memory import DEFAULT_DRAM_SIZE, MemoryAccessor, PhysicalMemory
from .monitor import Monitor
from .platform import PlatformRoT


class Machine:
    """The platform a host boots on. `rme=False` models a machine without RME: no root of
    trust, no RMM, and RMI calls return NOT_SUPPORTED."""

    def __init__(self, dram_size: int = DEFAULT_DRAM_SIZE, rme: bool = True, data_dir: Path | None = None) -> None:
        self.memory = PhysicalMemory(dram_size)
        self.rot = PlatformRoT(data_dir) if rme else None
        self.monitor = Monitor(self.memory, self.rot)
        # An SMC from the host hypervisor (NS-EL2): the monitor's own entry, bound once, so an
        # RMI call is one Python frame shorter.
        self.host_smc: Callable[..., list[int]] = self.monitor.host_call

    def ns_memory(self) -> MemoryAccessor:
        """The normal world's view of memory: only non-secure granules."""
        return self.memory.accessor(World.NON_SECURE)
