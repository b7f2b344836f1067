"""A run of the vCPU (machine/vcpu.py) that stops for a reason outside the guest stops
between two instructions, as a PE takes an interrupt: an instruction has executed wholly or
not at all, whatever the access it was making when the stop came.

The stop that matters most arrives while a load maps its page at stage 2 on first touch (a
Python hook inside the access): `ldr x9, [x9]` replaces its own base register, so a vCPU
that resumed it after it had loaded would load again from the value it loaded. Here the
stop is the host's kick (what `HOST_IRQ` and another vCPU's SGI do) made from inside the
stage-2 lookup, and the run's own time limit (`until`, the emulation timeout) in a loop of
short time slices over a chain of pages, first touched or mapped already (then a stop
comes while the loop runs translated code only).

A store that stage 2 refuses (an MMIO write) must also end the run at once, before the
instructions after it in its block: the store's block here goes on with a store to RAM, a
register update and a system register write, none of which may have happened when the
host sees the MMIO exit."""

from __future__ import annotations

import time
from pathlib import Path

from unicorn import arm64_const as a64

from unirealm.arch import sysreg
from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import DataAbortTrap, HvcTrap, IrqTrap, Mapping, SmcTrap, Trap, VCpu

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


def at_a_boundary(cpu: VCpu, loads: int = CHAIN_PAGES) -> None:
    """The loop's invariant between instructions: at its head x9 is the address of the
    page the next load reads (of `loads`, x10 are left); after it, x10 is 0."""
    pc, x9, left = cpu.pc, cpu.get_gpr(9), cpu.get_gpr(10)
    if pc == CODE:
        assert x9 == CHAIN + 8 + ((loads - left) % CHAIN_PAGES) * GRANULE_SIZE
    else:
        assert left == 0 and pc > CODE


def test_a_kick_during_the_first_touch_of_a_load_stops_between_instructions(tmp_path: Path) -> None:
    guest = Chain(assemble(CHASE, CODE, tmp_path, "chase"))
    cpu = guest.cpu
    guest.on_translate = lambda ipa: cpu.kick() if ipa == CHAIN else None
    trap = cpu.run()
    # The load was made once and the stop came at the next block: the loop's head, with
    # x9 the second page's address, not the first page's load made again from it.
    assert isinstance(trap, IrqTrap) and trap.pc == CODE
    assert (cpu.get_gpr(9), cpu.get_gpr(10)) == (CHAIN + GRANULE_SIZE + 8, CHAIN_PAGES - 1)
    guest.on_translate = lambda ipa: None
    guest.finish(cpu.run())


def test_a_kick_at_every_first_touch_stops_between_instructions(tmp_path: Path) -> None:
    guest = Chain(assemble(CHASE, CODE, tmp_path, "chase"))
    cpu = guest.cpu
    chain_pages = set(range(CHAIN, CHAIN + CHAIN_PAGES * GRANULE_SIZE, GRANULE_SIZE))
    guest.on_translate = lambda ipa: cpu.kick() if ipa in chain_pages else None
    kicks = 0
    while isinstance(trap := cpu.run(), IrqTrap):
        kicks += 1
        at_a_boundary(cpu)
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


def test_chasing_mapped_pages_under_time_slices_never_runs_a_load_twice(tmp_path: Path) -> None:
    code = assemble(CHASE, CODE, tmp_path, "chase")
    guest = Chain(code)
    last = CHAIN + (CHAIN_PAGES - 1) * GRANULE_SIZE
    guest.memory.accessor(World.NON_SECURE).write(guest.pages[last] + 8, (CHAIN + 8).to_bytes(8, "little"))
    rounds = 100_000  # times round the now circular chain
    guest.cpu.set_gpr(10, rounds * CHAIN_PAGES)
    stopped = 0
    while isinstance(trap := guest.cpu.run(until=time.monotonic() + 1e-3), IrqTrap):
        stopped += 1
        at_a_boundary(guest.cpu, rounds * CHAIN_PAGES)
    assert isinstance(trap, SmcTrap) and (trap.regs[0], trap.regs[1]) == (CHAIN + 8, 0)
    assert stopped > 0
    guest.cpu.close()


MMIO_PAGE = 0x5000_0000
STORE_THEN_MORE = """
    str x1, [x2]            // MMIO: stage 2 maps nothing there
    str x3, [x4]            // RAM, same block
    add x5, x5, #1
    msr tpidr_el0, x5
    b 1f
1:  hvc #0
"""


def test_a_refused_store_ends_the_run_before_the_rest_of_its_block(tmp_path: Path) -> None:
    guest = Chain(assemble(STORE_THEN_MORE, CODE, tmp_path, "store"))
    cpu = guest.cpu
    sctlr, tcr = cpu.read_sysreg(sysreg.SCTLR_EL1), cpu.read_sysreg(sysreg.TCR_EL1)
    cpu.set_gprs([0, 0xAB, MMIO_PAGE + 0x10, 0x1234, CHAIN + 0x40, 7])
    trap = cpu.run()
    assert isinstance(trap, DataAbortTrap) and trap.pc == CODE
    assert (trap.ipa, trap.is_write, trap.value) == (MMIO_PAGE + 0x10, True, 0xAB)
    ram = guest.memory.accessor(World.NON_SECURE)
    assert ram.read(guest.pages[CHAIN] + 0x40, 8) == bytes(8)  # the next store was not made
    assert cpu.get_gpr(5) == 7 and cpu.uc.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 0
    assert (cpu.read_sysreg(sysreg.SCTLR_EL1), cpu.read_sysreg(sysreg.TCR_EL1)) == (sctlr, tcr)
    cpu.skip_instruction()  # the host emulated the MMIO store
    trap = cpu.run()
    assert isinstance(trap, HvcTrap)
    assert int.from_bytes(ram.read(guest.pages[CHAIN] + 0x40, 8), "little") == 0x1234
    assert cpu.get_gpr(5) == 8 and cpu.uc.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 8
    cpu.close()
