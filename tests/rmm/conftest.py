"""Fixtures for driving the RMM through RMI SMCs only, the way a host does.

`env` gives a fresh RME machine with an RMM whose RECs run a scripted engine: each REC
executes a queue of SMCs (RSI / PSCI register lists) instead of guest code, so a test can
bring a REC into a state (a pending RIPAS change, a pending PSCI request, SYSTEM_OFF)
without assembling anything.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.memory import GRANULE_SIZE, World, default_start_level, num_root_rtts
from unirealm.arch.rmi import (
    REC_EXIT_OFFSET,
    RMI_REALM_PARAMS,
    RMI_REC_PARAMS,
    RMI_REC_RUN,
    GranuleState,
    RmiFid,
    RmiStatus,
    RttEntryState,
    index_of,
    status_of,
)
from unirealm.machine.board import Machine
from unirealm.machine.vcpu import SmcTrap, Trap, WfxTrap
from unirealm.rmm.core import Rmm
from unirealm.rmm.realm import Realm

DRAM_SIZE = 64 << 20
NUM_SMC_REGS = 18
PSCI_SYSTEM_OFF = 0x8400_0008
PSCI_CPU_ON_64 = 0xC400_0003
PSCI_AFFINITY_INFO_64 = 0xC400_0004
RSI_MEASUREMENT_READ = 0xC400_0192
RSI_MEASUREMENT_EXTEND = 0xC400_0193
RSI_IPA_STATE_SET = 0xC400_0197
RSI_IPA_STATE_GET = 0xC400_0198
REC_AUX_COUNT = 16  # what this RMM reports (TF-RMM: 16)

# s2sz -> (rtt_level_start, rtt_num_start): 4 KiB granule, 9 bits per level, <= 16 roots.
START_LEVELS = {32: (2, 4), 36: (1, 1), 39: (1, 1), 40: (1, 2), 44: (0, 1), 48: (0, 1)}

# Entry sizes per level (4 KiB granule).
L1 = 1 << 30
L2 = 1 << 21
L3 = 1 << 12


def status(out: Sequence[int]) -> tuple[RmiStatus, int]:
    return status_of(out[0]), index_of(out[0])


def assert_status(out: Sequence[int], expected: RmiStatus, index: int = 0) -> None:
    got = status(out)
    assert got == (expected, index), f"expected {expected.name}({index}), got {got[0].name}({got[1]})"


@dataclass
class SmcRecord:
    """One SMC a scripted REC made: its registers, and x0..x17 once the RMM answered."""

    regs: list[int]
    out: list[int] | None = None


class ScriptedEngine:
    """An ExecutionEngine that, instead of running code, makes the SMCs in `script`.

    Each run() returns an SmcTrap for the next queued call; the registers the RMM writes
    back are kept and recorded as that call's result when the REC runs again. When the RMM
    rewinds the PC (a call it wants retried) the same call is made again. With the script
    exhausted the REC calls PSCI SYSTEM_OFF, or waits in WFI if `idle_wfi` is set.
    """

    def __init__(self, realm: Realm | None = None, index: int = 0) -> None:
        self.realm = realm
        self.index = index
        self.gprs = [0] * 31
        self._pc = 0
        self.script: deque[list[int] | Trap] = deque()
        self.log: list[SmcRecord] = []
        self.idle_wfi = False
        self.resets: list[tuple[int, list[int]]] = []
        self.invalidations: list[tuple[int, int]] = []
        self.injected: list[str] = []
        self.closed = False
        self._issued: SmcRecord | None = None
        self._issued_pc = -1

    def push(self, *calls: Iterable[int] | Trap) -> None:
        for call in calls:
            self.script.append(call if isinstance(call, Trap) else list(call))

    def _smc(self, regs: list[int]) -> SmcTrap:
        regs = (list(regs) + [0] * NUM_SMC_REGS)[:NUM_SMC_REGS]
        self.gprs[:NUM_SMC_REGS] = regs
        self._issued_pc = self._pc
        self._pc += 4
        return SmcTrap(self._issued_pc, list(regs))

    # --- ExecutionEngine ----------------------------------------------------------------
    def run(self) -> Trap:
        if self._issued is not None:
            if self._pc == self._issued_pc:  # rewound: make the same call again
                return self._smc(self._issued.regs)
            self._issued.out = self.gprs[:NUM_SMC_REGS]
            self._issued = None
        if self.script:
            item = self.script.popleft()
            if isinstance(item, Trap):
                return item
        elif self.idle_wfi:
            return WfxTrap(self._pc)
        else:
            item = [PSCI_SYSTEM_OFF]
        self._issued = SmcRecord(list((item + [0] * NUM_SMC_REGS)[:NUM_SMC_REGS]))
        self.log.append(self._issued)
        return self._smc(self._issued.regs)

    def get_gpr(self, n: int) -> int:
        return self.gprs[n]

    def set_gpr(self, n: int, value: int) -> None:
        self.gprs[n] = value & 0xFFFF_FFFF_FFFF_FFFF

    def get_gprs(self, count: int = 31) -> list[int]:
        return self.gprs[:count]

    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None:
        self._pc = pc
        self.gprs = [0] * 31
        for i, v in enumerate(list(gprs)[:8]):
            self.gprs[i] = v
        self.resets.append((pc, list(gprs)))

    def skip_instruction(self) -> None:
        self._pc += 4

    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None:
        self._pc += 4

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        self.injected.append("sea")

    def inject_undef(self) -> None:
        self.injected.append("undef")

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        self.injected.append("exception")

    def invalidate(self, ipa: int, size: int) -> None:
        self.invalidations.append((ipa, size))

    def close(self) -> None:
        self.closed = True

    @property
    def pc(self) -> int:
        return self._pc

    @pc.setter
    def pc(self, value: int) -> None:
        self._pc = value


@dataclass
class RecHandle:
    rec: int
    aux: list[int]
    run: int
    index: int
    mpidr: int
    engine: ScriptedEngine


@dataclass
class RealmHandle:
    rd: int
    roots: list[int]
    values: dict[str, Any]  # the RmiRealmParams written
    recs: list[RecHandle] = field(default_factory=list)

    @property
    def s2sz(self) -> int:
        return int(self.values["s2sz"])

    @property
    def start_level(self) -> int:
        return int(self.values["rtt_level_start"])

    @property
    def par_size(self) -> int:
        return 1 << (self.s2sz - 1)


def mpidr_for(index: int) -> int:
    """RmiRecMpidr for a REC index: Aff0[3:0], Aff1, Aff2, Aff3 at [31:24] (digest §2.2)."""
    return (
        (index & 0xF)
        | (((index >> 4) & 0xFF) << 8)
        | (((index >> 12) & 0xFF) << 16)
        | (((index >> 20) & 0xFF) << 24)
    )


class Env:
    """A machine, its RMM, and a host-side bump allocator of NS granules."""

    def __init__(self, tmp_path: Path, dram_size: int = DRAM_SIZE) -> None:
        self.m = Machine(dram_size=dram_size, data_dir=tmp_path)
        self.engines: list[ScriptedEngine] = []
        self.rmm = Rmm(self.m.monitor, engine_factory=self._engine)
        self.ns = self.m.ns_memory()
        self.realm_mem = self.m.memory.accessor(World.REALM)
        self._next = self.m.memory.base
        self._vmids = itertools.count(1)

    def _engine(self, rmm: Rmm, realm: Realm, index: int) -> ScriptedEngine:
        engine = ScriptedEngine(realm, index)
        self.engines.append(engine)
        return engine

    # --- SMCs ---------------------------------------------------------------------------
    def smc(self, fid: int, *args: int) -> list[int]:
        return self.m.host_smc(fid, *args)

    def ok(self, fid: int, *args: int) -> list[int]:
        out = self.smc(fid, *args)
        assert_status(out, RmiStatus.SUCCESS)
        return out

    def state(self, pa: int) -> GranuleState | None:
        return self.rmm.granule_state(pa)

    # --- granules -----------------------------------------------------------------------
    def ns_granules(self, count: int = 1) -> int:
        base = self._next
        assert base + count * GRANULE_SIZE <= self.m.memory.top, "test DRAM exhausted"
        self._next += count * GRANULE_SIZE
        return base

    def ns_granule(self) -> int:
        return self.ns_granules(1)

    def ns_granules_aligned(self, count: int, align: int) -> int:
        """`count` contiguous NS granules starting at an `align`-aligned PA."""
        self._next = (self._next + align - 1) & ~(align - 1)
        return self.ns_granules(count)

    def delegated(self, count: int = 1) -> int:
        """`count` contiguous granules, each delegated; returns the first."""
        base = self.ns_granules(count)
        for i in range(count):
            self.ok(RmiFid.GRANULE_DELEGATE, base + i * GRANULE_SIZE)
        return base

    def ns_page(self, data: bytes) -> int:
        pa = self.ns_granule()
        self.ns.write(pa, data.ljust(GRANULE_SIZE, b"\0"))
        return pa

    # --- realms -------------------------------------------------------------------------
    def realm_values(self, s2sz: int = 40, **overrides: Any) -> dict[str, Any]:
        level = START_LEVELS[s2sz][0] if s2sz in START_LEVELS else default_start_level(s2sz)
        num = START_LEVELS[s2sz][1] if s2sz in START_LEVELS else num_root_rtts(s2sz, level)
        values: dict[str, Any] = {
            "flags": 0,
            "s2sz": s2sz,
            "sve_vl": 0,
            "num_bps": 1,
            "num_wps": 1,
            "pmu_num_ctrs": 0,
            "hash_algo": 0,
            "rpv": bytes(64),
            "vmid": next(self._vmids),
            "rtt_level_start": level,
            "rtt_num_start": num,
        }
        values.update(overrides)
        return values

    def params_page(self, values: dict[str, Any]) -> int:
        return self.ns_page(RMI_REALM_PARAMS.pack(**values))

    def prepare_realm(self, s2sz: int = 40, **overrides: Any) -> tuple[int, int, dict[str, Any]]:
        """Delegated RD and roots and an NS params page, without calling REALM_CREATE."""
        values = self.realm_values(s2sz, **overrides)
        if "rtt_base" not in overrides:
            values["rtt_base"] = self.delegated(max(1, min(int(values["rtt_num_start"]), 16)))
        rd = self.delegated()
        return rd, self.params_page(values), values

    def create_realm(self, s2sz: int = 40, **overrides: Any) -> RealmHandle:
        rd, params, values = self.prepare_realm(s2sz, **overrides)
        self.ok(RmiFid.REALM_CREATE, rd, params)
        roots = [values["rtt_base"] + i * GRANULE_SIZE for i in range(values["rtt_num_start"])]
        return RealmHandle(rd, roots, values)

    def realm(self, realm: RealmHandle) -> Realm:
        return self.rmm.realms[realm.rd]

    # --- RTTs ---------------------------------------------------------------------------
    def read_entry(self, realm: RealmHandle, ipa: int, level: int) -> tuple[int, int, int, int]:
        """(walk level, state, desc, ripas) from a successful RMI_RTT_READ_ENTRY."""
        return self.read_entry_tuple(realm.rd, ipa, level)

    def read_entry_tuple(self, rd: int, ipa: int, level: int) -> tuple[int, int, int, int]:
        out = self.ok(RmiFid.RTT_READ_ENTRY, rd, ipa, level)
        return out[1], out[2], out[3], out[4]

    def create_rtt(self, realm: RealmHandle, ipa: int, level: int) -> int:
        rtt = self.delegated()
        self.ok(RmiFid.RTT_CREATE, realm.rd, rtt, ipa & ~((1 << (12 + 9 * (4 - level))) - 1), level)
        return rtt

    def ensure_rtts(self, realm: RealmHandle, ipa: int, level: int) -> list[int]:
        """Create the missing tables on the walk to `level` for `ipa`; returns the new ones."""
        created = []
        for lvl in range(realm.start_level + 1, level + 1):
            parent_size = 1 << (12 + 9 * (4 - lvl))
            base = ipa & ~(parent_size - 1)
            if self.read_entry(realm, base, lvl - 1)[1] != RttEntryState.TABLE:
                created.append(self.create_rtt(realm, base, lvl))
        return created

    def data_create(self, realm: RealmHandle, ipa: int, content: bytes = b"", measured: bool = True) -> int:
        data = self.delegated()
        src = self.ns_page(content)
        self.ok(RmiFid.DATA_CREATE, realm.rd, data, ipa, src, 1 if measured else 0)
        return data

    def init_ripas(self, realm: RealmHandle, base: int, top: int) -> int:
        return self.ok(RmiFid.RTT_INIT_RIPAS, realm.rd, base, top)[1]

    # --- RECs ---------------------------------------------------------------------------
    def rec_values(
        self, index: int, runnable: bool = True, pc: int = 0x1000, gprs: Sequence[int] = (), **kw: Any
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "flags": 1 if runnable else 0,
            "mpidr": mpidr_for(index),
            "pc": pc,
            "gprs": list(gprs) + [0] * (8 - len(gprs)),
            "num_rec_aux": REC_AUX_COUNT,
        }
        values.update(kw)
        return values

    def rec_params_page(self, values: dict[str, Any]) -> int:
        return self.ns_page(RMI_REC_PARAMS.pack(**values))

    def prepare_rec(
        self, realm: RealmHandle, runnable: bool = True, **kw: Any
    ) -> tuple[int, int, dict[str, Any]]:
        """A delegated REC granule, delegated aux granules and an NS params page."""
        values = self.rec_values(len(realm.recs), runnable, **kw)
        if "aux" not in kw:
            values["aux"] = [self.delegated() for _ in range(REC_AUX_COUNT)]
        rec = self.delegated()
        return rec, self.rec_params_page(values), values

    def create_rec(self, realm: RealmHandle, runnable: bool = True, **kw: Any) -> RecHandle:
        rec, params, values = self.prepare_rec(realm, runnable, **kw)
        self.ok(RmiFid.REC_CREATE, realm.rd, rec, params)
        handle = RecHandle(
            rec,
            list(values["aux"][: values["num_rec_aux"]]),
            self.ns_granule(),
            len(realm.recs),
            values["mpidr"],
            self.engines[-1],
        )
        realm.recs.append(handle)
        return handle

    def enter(
        self, rec: RecHandle, flags: int = 0, gprs: Sequence[int] = ()
    ) -> tuple[list[int], dict[str, Any]]:
        """RMI_REC_ENTER with an RmiRecEnter; returns the registers and the decoded run page."""
        page = RMI_REC_RUN.pack(enter_flags=flags, enter_gprs=list(gprs) + [0] * (31 - len(gprs)))
        self.ns.write(rec.run, page[:REC_EXIT_OFFSET])
        out = self.smc(RmiFid.REC_ENTER, rec.rec, rec.run)
        return out, RMI_REC_RUN.unpack(self.ns.read(rec.run, GRANULE_SIZE))

    def active_realm_with_rec(self, s2sz: int = 40, runnable: bool = True) -> tuple[RealmHandle, RecHandle]:
        realm = self.create_realm(s2sz)
        rec = self.create_rec(realm, runnable)
        self.ok(RmiFid.REALM_ACTIVATE, realm.rd)
        return realm, rec


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)
