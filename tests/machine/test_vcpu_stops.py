"""A run of the vCPU (machine/vcpu.py) that stops for a reason outside the guest stops
between two instructions, as a PE takes an interrupt: an instruction has executed wholly or
not at all, whatever the access it was making when the stop came.

The stop that matters most arrives while a load maps its page at stage 2 on first touch (a
Python hook inside the access): `ldr x9, [x9]` replaces its own base register, so a vCPU
that resumed it after it had loaded would load again from the value it loaded. Here the
stop is the host's kick (what `HOST_IRQ` and another vCPU's SGI do) made from inside the
stage-2 lookup, and the run's own time limit (`until`, the emulation timeout) in a loop of
short time slices over a chain of pages."""

from __future__ import annotations

import time
from pathlib import Path

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import IrqTrap, Mapping, SmcTrap, Trap, VCpu

from .asm_snippet import assemble

CODE = 0x4000_0000
CHAIN = 0x4010_0000  # CHAIN_PAGES pages, each holding the address of the next at offset 8
CHAIN_PAGES = 48
MARKER = 0x00C0_FFEE_0000_0001  # what the last page holds instead of an address

# x9 = CHAIN + 8, x10 = CHAIN_PAGES: follow the chain with a load that replaces its own base.
CHASE = """
1:  ldr x9, [x9]
    subs x10, x10, #1
    b.ne 1b
    mov x0, x9
    mov x1, x10
    smc #0
"""


class Chain:
    """A vCPU whose stage 2 maps the code page and the chain's pages (each on first touch)."""

    def __init__(self, code: bytes) -> None:
        self.memory = PhysicalMemory(4 << 20)
        ns = self.memory.accessor(World.NON_SECURE)
        base = self.memory.base
        ns.write(base, code)
        self.pages = {CODE: base}
        for i in range(CHAIN_PAGES):
            page, pa = CHAIN + i * GRANULE_SIZE, base + (i + 1) * GRANULE_SIZE
            self.pages[page] = pa
            following = MARKER if i == CHAIN_PAGES - 1 else page + GRANULE_SIZE + 8
            ns.write(pa + 8, following.to_bytes(8, "little"))
        self.on_translate = lambda ipa: None
        self.cpu = VCpu(self.memory, self.translate)
        self.cpu.reset(CODE, [0] * 9 + [CHAIN + 8, CHAIN_PAGES])

    def translate(self, ipa: int, is_write: bool, is_fetch: bool) -> Mapping | None:
        self.on_translate(ipa)
        pa = self.pages.get(ipa)
        return None if pa is None else Mapping(pa, World.NON_SECURE)

    def finish(self, trap: Trap) -> None:
        assert isinstance(trap, SmcTrap), trap
        # Every page was visited once, in order: nothing ran twice.
        assert (trap.regs[0], trap.regs[1]) == (MARKER, 0)
        self.cpu.close()


def test_a_kick_during_the_first_touch_of_a_load_stops_before_the_load(tmp_path: Path) -> None:
    guest = Chain(assemble(CHASE, CODE, tmp_path, "chase"))
    cpu = guest.cpu
    guest.on_translate = lambda ipa: cpu.kick() if ipa == CHAIN else None
    trap = cpu.run()
    # Stopped at the load, which has not been made: x9 still holds its address.
    assert isinstance(trap, IrqTrap) and trap.pc == CODE
    assert (cpu.get_gpr(9), cpu.get_gpr(10)) == (CHAIN + 8, CHAIN_PAGES)
    guest.on_translate = lambda ipa: None
    guest.finish(cpu.run())


def test_a_kick_at_every_first_touch_stops_each_load_before_it_runs(tmp_path: Path) -> None:
    guest = Chain(assemble(CHASE, CODE, tmp_path, "chase"))
    cpu = guest.cpu
    chain_pages = set(range(CHAIN, CHAIN + CHAIN_PAGES * GRANULE_SIZE, GRANULE_SIZE))
    guest.on_translate = lambda ipa: cpu.kick() if ipa in chain_pages else None
    kicks = 0
    while isinstance(trap := cpu.run(), IrqTrap):
        kicks += 1
        # Each stop is at the load, with x9 the address of the page being touched.
        assert trap.pc == CODE and cpu.get_gpr(9) == CHAIN + 8 + (CHAIN_PAGES - cpu.get_gpr(10)) * GRANULE_SIZE
    assert kicks == CHAIN_PAGES
    guest.finish(trap)


def test_time_slices_ending_during_first_touches_never_run_a_load_twice(tmp_path: Path) -> None:
    """The emulation timeout (another thread's emu_stop) ends slices of a few tens of
    microseconds, about what a first touch's stage-2 mapping takes, so many slices end
    while a load maps its page; the chain comes out whole each time."""
    code = assemble(CHASE, CODE, tmp_path, "chase")
    stopped = 0
    for round_ in range(12):
        guest = Chain(code)
        slice_s = 10e-6 * (1 + round_ % 6)
        while isinstance(trap := guest.cpu.run(until=time.monotonic() + slice_s), IrqTrap):
            stopped += 1
            assert stopped < 100_000, "the chain never completes"
        guest.finish(trap)
    assert stopped > 0  # the slices did end runs
