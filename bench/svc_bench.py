"""The EL0 engine's SVC round trip alone: a loop of `svc #0` on an El0Space whose handler
completes every call inside the CPU's hook (as the kernel's fast path does for getpid),
against the same loop with a `nop` in place of the SVC, in the same run. The difference per
iteration is what one trivial syscall costs the engine (Unicorn's exception, the hook, the
register reads and the x0 write), without the kernel's dispatch.

    python bench/svc_bench.py [ITERATIONS]
"""

from __future__ import annotations

import struct
import sys
import time

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.el0space import El0Space
from unirealm.machine.memory import GranuleProtectionFault, PhysicalMemory

RAM_IPA, CODE_VA = 0x8000_0000, 0x40_0000
R, X = 1, 4
MOVZ_X8_172, SVC_0, NOP = 0xD2801588, 0xD4000001, 0xD503201F  # mov x8, #172 (getpid); svc #0; nop
SUBS_X9, BNE_BACK_12 = 0xF1000529, 0x54FFFFA1  # subs x9, x9, #1; b.ne .-12
MOVZ_X8_93 = 0xD2800BA8  # mov x8, #93 (exit): the end of the loop, always an SVC


class FlatCpu:
    """Stage 2 of one flat non-secure RAM: what El0Space asks of its CPU."""

    def __init__(self) -> None:
        self.memory = PhysicalMemory(size=1 << 20)
        self._spaces: list[El0Space] = []

    def probe(self, ipa: int) -> tuple[int, bool] | None:
        pa = self.memory.base + (ipa & ~(GRANULE_SIZE - 1)) - RAM_IPA
        try:
            return self.memory.host_pointer(World.NON_SECURE, pa, GRANULE_SIZE), True
        except GranuleProtectionFault:  # past the end of RAM
            return None

    peek = probe

    def host_pointer(self, ipa: int, write: bool) -> tuple[int, bool] | None:
        return self.probe(ipa)

    # no interrupt inputs
    def timer_due(self) -> bool:
        return False

    def irq_signalled(self) -> bool:
        return False

    def write(self, ipa: int, data: bytes) -> None:
        self.memory.accessor(World.NON_SECURE).write(self.memory.base + ipa - RAM_IPA, data)


def loop_seconds(body: int, iterations: int, repeat: int = 5) -> float:
    """CPU seconds per iteration of `mov x8, #172; BODY; subs; b.ne`, best of `repeat`."""
    cpu = FlatCpu()
    space = El0Space(cpu, "max")  # type: ignore[arg-type]
    cpu.write(RAM_IPA, struct.pack("<6I", MOVZ_X8_172, body, SUBS_X9, BNE_BACK_12, MOVZ_X8_93, SVC_0))
    space.map(CODE_VA, RAM_IPA, GRANULE_SIZE, R | X)

    def on_svc(nr: int, *_: int) -> bool:
        if nr == 93:
            return False  # the end: run() stops
        space.set_x0(4242)
        return True

    space.on_svc = on_svc
    best = float("inf")
    for _ in range(repeat):
        space.set_gpr(9, iterations)
        start = time.process_time()
        reason, _, _ = space.run(CODE_VA)
        best = min(best, time.process_time() - start)
        assert reason == "svc" and space.gpr(8) == 93
    space.close()
    return best / iterations


def run(iterations: int = 200_000) -> list[tuple[str, float, float, str]]:
    svc = loop_seconds(SVC_0, iterations)
    nop = loop_seconds(NOP, iterations)
    return [("EL0 engine: one SVC completed in the hook (loop iteration) vs the same loop with a nop",
             svc * 1e6, nop * 1e6, "µs")]


if __name__ == "__main__":
    for name, value, base, unit in run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000):
        print(f"{name}: {value:.3f} {unit} vs {base:.3f} {unit} ({value / base:.1f}x; "
              f"the SVC path {value - base:.3f} {unit})", flush=True)
