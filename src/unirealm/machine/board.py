"""One RME machine: DRAM with its GPT, the EL3 monitor and (on RME platforms) the root of trust."""

from __future__ import annotations

from pathlib import Path

from unirealm.arch.memory import World

from .memory import DEFAULT_DRAM_SIZE, MemoryAccessor, PhysicalMemory
from .monitor import Caller, Monitor
from .platform import PlatformRoT

_NS_EL2 = Caller.NS_EL2


class Machine:
    """The platform a host boots on. `rme=False` models a machine without RME: no root of
    trust, no RMM, and RMI calls return NOT_SUPPORTED."""

    def __init__(self, dram_size: int = DEFAULT_DRAM_SIZE, rme: bool = True, data_dir: Path | None = None) -> None:
        self.memory = PhysicalMemory(dram_size)
        self.rme = rme
        self.rot = PlatformRoT(data_dir) if rme else None
        self.monitor = Monitor(self.memory, self.rot)

    def ns_memory(self) -> MemoryAccessor:
        """The normal world's view of memory: only non-secure granules."""
        return self.memory.accessor(World.NON_SECURE)

    def host_smc(self, *regs: int) -> list[int]:
        """An SMC from the host hypervisor (NS-EL2)."""
        out = self.monitor.smc(_NS_EL2, regs)
        assert type(out) is list
        return out
