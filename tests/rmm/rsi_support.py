"""A scripted execution engine for driving the RMM's RSI and PSCI handlers from tests.

Each REC gets a `ScriptedEngine` instead of a Unicorn vCPU. A test attaches a *program*:
a generator function taking the engine, which yields the register list of each SMC the
realm makes (x0 = FID, then x1..) and receives the realm's register file (x0..x30) after
the RMM has written its results back. The engine models the PC as one 4-byte SMC per call
starting at the REC's entry point, so an RMM that rewinds the PC to retry a call (after a
stage-2 abort exit) makes the engine issue the same call again with the same registers.

When the program returns, the engine behaves like a WFI loop (the RMM reports an IRQ exit).
The realm is built through RMI only, by `unirealm.host.kvm.RealmVm`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from unirealm.arch.esr import WFI_INSN, AccessSyndrome
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRecExitReason
from unirealm.host.kvm import RealmConfig, RealmRec, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.machine.board import Machine
from unirealm.machine.vcpu import SmcTrap, Trap, WfxTrap
from unirealm.rmm.core import Rmm, RmmConfig

MASK64 = (1 << 64) - 1
Program = Callable[["ScriptedEngine"], Generator[list[int], list[int], None]]

# The realm's IPA layout used by every scripted realm (s2sz 33: PAR = [0, 4 GiB)).
IPA_BITS = 33
PAR_SIZE = 1 << (IPA_BITS - 1)
RAM_BASE = 0x8000_0000
POPULATED = 8  # granules populated (ASSIGNED, RIPAS RAM) at RAM_BASE
RAM_TOP = RAM_BASE + 0x10_0000  # RIPAS RAM (unassigned beyond the populated granules) up to here
EMPTY_IPA = RAM_TOP + 0x10_0000  # RIPAS EMPTY: never initialised
UNMAPPED_RAM_IPA = RAM_BASE + 0x8_0000  # RIPAS RAM but no data granule yet


class ScriptedEngine:
    """Implements the RMM's ExecutionEngine protocol (unirealm.rmm.realm) without a CPU."""

    def __init__(self) -> None:
        self.x = [0] * 31
        self._pc = 0
        self.entry = 0
        self._program: Program | None = None
        self._gen: Generator[list[int], list[int], None] | None = None
        self.issued: list[list[int]] = []  # every SMC issued, retries included
        self._calls: list[list[int]] = []  # the program's calls, by position
        self.done = False
        self.resets: list[tuple[int, list[int]]] = []
        self.invalidations: list[tuple[int, int]] = []
        self.closed = False

    @property
    def program(self) -> Program | None:
        return self._program

    @program.setter
    def program(self, program: Program | None) -> None:
        """Attach a program; it starts at the current PC (a new one replaces an ended one)."""
        if program is self._program:
            return
        self._program = program
        self._gen = None
        self._calls = []
        self.entry = self._pc
        self.done = False

    # --- ExecutionEngine ---------------------------------------------------------------
    @property
    def pc(self) -> int:
        return self._pc

    @pc.setter
    def pc(self, value: int) -> None:
        self._pc = value & MASK64

    def get_gpr(self, n: int) -> int:
        return 0 if n == 31 else self.x[n]

    def set_gpr(self, n: int, value: int) -> None:
        if n != 31:
            self.x[n] = value & MASK64

    def get_gprs(self, count: int = 31) -> list[int]:
        return list(self.x[:count])

    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None:
        self.x = [0] * 31
        for i, v in enumerate(gprs):
            self.x[i] = v & MASK64
        self._pc = pc
        self.entry = pc
        self.resets.append((pc, list(gprs)))

    def skip_instruction(self) -> None:
        self._pc += 4

    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None:
        raise AssertionError("a scripted realm makes no MMIO accesses")

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        raise AssertionError(f"unexpected SEA injection at {far:#x}")

    def inject_undef(self) -> None:
        raise AssertionError("unexpected UNDEFINED injection")

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        raise AssertionError(f"unexpected exception {esr_value:#x}")

    def invalidate(self, ipa: int, size: int) -> None:
        self.invalidations.append((ipa, size))

    def close(self) -> None:
        self.closed = True

    def run(self) -> Trap:
        position = (self._pc - self.entry) // 4
        if position < len(self._calls):
            # The RMM rewound the PC: the same SMC executes again with the current registers.
            regs = self.x[:18]
        else:
            assert position == len(self._calls), "the PC moved to an unexpected place"
            regs = self._next_call()
            if regs is None:
                self.done = True
                return WfxTrap(self._pc)  # the program ended: the realm idles in WFI
            self._calls.append(regs)
            regs = [*regs, *[0] * (18 - len(regs))]
            for i, value in enumerate(regs):
                self.x[i] = value & MASK64
        self.issued.append(list(self.x[:18]))
        self._pc = self.entry + 4 * (position + 1)
        return SmcTrap(self._pc, list(self.x[:18]))

    def _next_call(self) -> list[int] | None:
        if self.done:
            return None
        try:
            if self._gen is None:
                if self._program is None:
                    return None
                self._gen = self._program(self)
                return next(self._gen)
            return self._gen.send(list(self.x))
        except StopIteration:
            return None


@dataclass
class ScriptedRealm:
    """A realm built through RMI whose RECs run scripted programs."""

    machine: Machine
    rmm: Rmm
    vm: RealmVm
    engines: list[ScriptedEngine] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    @property
    def rd(self) -> int:
        return self.vm.rd

    @property
    def realm(self):  # type: ignore[no-untyped-def]
        return self.rmm.realms[self.vm.rd]

    def data_pa(self, ipa: int) -> int:
        return self.vm.data[ipa & ~(GRANULE_SIZE - 1)] + (ipa & (GRANULE_SIZE - 1))

    def write_ipa(self, ipa: int, data: bytes) -> None:
        """A store by the realm to its own protected memory."""
        self.rmm.mem.write(self.data_pa(ipa), data)

    def read_ipa(self, ipa: int, size: int) -> bytes:
        return self.rmm.mem.read(self.data_pa(ipa), size)

    def rec(self, index: int = 0) -> RealmRec:
        return self.vm.recs[index]

    def rmi(self, fid: RmiFid, *args: int) -> list[int]:
        return self.machine.host_smc(fid, *args)


def build_realm(
    data_dir: Path,
    hash_algo: int = 0,
    rpv: bytes = b"",
    recs: tuple[bool, ...] = (True,),
    config: RmmConfig | None = None,
) -> ScriptedRealm:
    """A realm with POPULATED data granules at RAM_BASE, RIPAS RAM up to RAM_TOP, EMPTY
    beyond, and one REC per entry of `recs` (True = runnable), activated; `config` is the
    RMM's build configuration (token format, realm profile)."""
    machine = Machine(dram_size=32 << 20, data_dir=data_dir)
    engines: list[ScriptedEngine] = []

    def factory(rmm: Rmm, realm: object, index: int) -> ScriptedEngine:
        engine = ScriptedEngine()
        engines.append(engine)
        return engine

    rmm = Rmm(machine.monitor, config, engine_factory=factory)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=IPA_BITS, hash_algo=hash_algo, rpv=rpv))
    vm.create()
    vm.populate(RAM_BASE, bytes(POPULATED * GRANULE_SIZE), measured=True)
    vm.init_ripas(RAM_BASE + POPULATED * GRANULE_SIZE, RAM_TOP)
    for runnable in recs:
        vm.create_rec(pc=RAM_BASE, gprs=[0] * 8, runnable=runnable)
    vm.activate()
    realm = ScriptedRealm(machine, rmm, vm, engines)
    machine.monitor.trace = realm.trace.append
    return realm


def run_program(realm: ScriptedRealm, program: Program, rec: int = 0, flags: int = 0, gprs: list[int] | None = None):  # type: ignore[no-untyped-def]
    """Attach `program` to REC `rec` and make one REC_ENTER; returns the decoded exit."""
    realm.engines[rec].program = program
    return realm.vm.enter(realm.rec(rec), flags, gprs)


def run_calls(realm: ScriptedRealm, calls: list[list[int]], rec: int = 0) -> list[list[int]]:
    """Make each call in turn in one REC_ENTER that must end only when the program does;
    return the register file the realm saw after each call."""
    seen: list[list[int]] = []

    def program(cpu: ScriptedEngine) -> Generator[list[int], list[int], None]:
        for call in calls:
            seen.append((yield call))

    ex = run_program(realm, program, rec)
    assert ex.reason == RmiRecExitReason.IRQ, f"unexpected exit {ex.reason!r}"
    assert len(seen) == len(calls)
    return seen


def le_regs(data: bytes) -> list[int]:
    """Up to 64 bytes as eight little-endian 64-bit registers (byte 0 = bits [7:0] of the first)."""
    data = data.ljust(64, b"\0")
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, 64, 8)]


def regs_le(regs: list[int]) -> bytes:
    return b"".join(r.to_bytes(8, "little") for r in regs)


__all__ = [
    "EMPTY_IPA",
    "IPA_BITS",
    "PAR_SIZE",
    "POPULATED",
    "RAM_BASE",
    "RAM_TOP",
    "UNMAPPED_RAM_IPA",
    "WFI_INSN",
    "ScriptedEngine",
    "ScriptedRealm",
    "build_realm",
    "le_regs",
    "regs_le",
    "run_calls",
    "run_program",
]
