"""Random RMI (and, through scripted RECs, RSI/PSCI) sequences against the RMM's invariants.

Arguments mix handles the model knows with arbitrary 64-bit values. After every step:
- the model's state of every granule it knows equals rmm.granule_state (one state each);
- a granule that is not UNDELEGATED faults on every host (NS) access;
- a DELEGATED granule is all zero;
- realm states, RDs and RECs agree with the model;
- a realm's RIM never changes after ACTIVATE, and REMs change only by MEASUREMENT_EXTEND
  (the model recomputes them with hashlib);
- no Python exception escapes Machine.host_smc.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import (
    RMI_REALM_PARAMS,
    RMI_REC_PARAMS,
    RMI_REC_RUN,
    GranuleState,
    RealmState,
    RmiFid,
    RmiRecExitReason,
    RmiStatus,
)
from unirealm.machine.memory import GranuleProtectionFault

from .conftest import (
    L1,
    L2,
    L3,
    PSCI_AFFINITY_INFO_64,
    PSCI_CPU_ON_64,
    PSCI_SYSTEM_OFF,
    REC_AUX_COUNT,
    RSI_IPA_STATE_GET,
    RSI_IPA_STATE_SET,
    RSI_MEASUREMENT_EXTEND,
    RSI_MEASUREMENT_READ,
    START_LEVELS,
    Env,
    ScriptedEngine,
    mpidr_for,
)

MASK64 = (1 << 64) - 1
DRAM = 32 << 20
POOL_SIZE = 96
U64 = st.integers(0, MASK64)
DATA_DIR = Path(tempfile.mkdtemp(prefix="unirealm-sm-"))

G = GranuleState
SUCCESS = RmiStatus.SUCCESS


# --- the GIC state a host puts in RmiRecEnter, and TF-RMM's rules for it (gic_validate_state)
HOST_HCR_BITS = 0xFE | 1 << 14  # UIE, LRENPIE, NPIE, VGrp{0,1}{E,D}IE, TDIR
HCRS = st.one_of(
    st.just(0),
    st.builds(lambda bits: bits & HOST_HCR_BITS, U64),
    st.sampled_from([1, 1 << 8, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 15, 1 << 27]),
    U64,
)
INTIDS = st.one_of(st.sampled_from([0, 12, 27, 30, 32, 59, 1019, 8192, 0xFFFF]), st.integers(0, 1 << 17))
LRS = st.one_of(
    st.builds(
        lambda state, intid, prio, group, eoi: state << 62 | group << 60 | (prio & 0xF8) << 48 | eoi << 41 | intid,
        st.integers(1, 3), INTIDS, st.integers(0, 255), st.integers(0, 1), st.integers(0, 1),
    ),
    st.just(0),
    U64,
)


def gic_entry_valid(hcr: int, lrs: list[int]) -> bool:
    if hcr & ~HOST_HCR_BITS:
        return False
    seen = set()
    for lr in lrs:
        if lr >> 62 == 0:
            continue
        intid = lr & 0xFFFF_FFFF
        if lr >> 61 & 1 or lr >> 48 & 7 or lr >> 32 & 0x1FFF & ~(1 << 9):
            return False
        if not (intid <= 1019 or 8192 <= intid <= 0xFFFF) or intid in seen:
            return False
        seen.add(intid)
    return True


def gic_model_misr(hcr: int, lrs: list[int]) -> int:
    """ICH_MISR_EL2 at entry for a REC whose realm has enabled neither group (VMCR 0)."""
    states = [lr >> 62 for lr in lrs]
    misr = int(any(s == 0 and lr >> 41 & 1 and not lr >> 61 & 1 for s, lr in zip(states, lrs, strict=True)))
    misr |= 2 if hcr & 2 and sum(s != 0 for s in states) <= 1 else 0  # U
    misr |= 8 if hcr & 8 and 1 not in states else 0  # NP
    misr |= 0x20 if hcr & 0x20 else 0  # VGrp0D
    misr |= 0x80 if hcr & 0x80 else 0  # VGrp1D
    return misr


@dataclass
class RealmModel:
    roots: list[int]
    s2sz: int
    algo: int
    state: RealmState = RealmState.NEW
    recs: list[int] = field(default_factory=list)
    rim: bytes | None = None  # frozen at ACTIVATE
    rems: list[bytes] = field(default_factory=lambda: [bytes(64)] * 4)


@dataclass
class RecModel:
    rd: int
    aux: list[int]
    run: int
    engine: ScriptedEngine
    seen: int = 0  # engine log entries already checked
    ripas: tuple[int, int] | None = None  # the last RIPAS_CHANGE exit's (base, top)


def rem_extend(algo: int, rem: bytes, value: bytes) -> bytes:
    hlen = 32 if algo == 0 else 64
    h = (hashlib.sha256 if algo == 0 else hashlib.sha512)(rem[:hlen] + value).digest()
    return h.ljust(64, b"\0")


class RmmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.env = Env(DATA_DIR, DRAM)
        self.rmm = self.env.rmm
        self.pool = [self.env.ns_granules(1) for _ in range(POOL_SIZE)]
        self.helpers = [self.env.ns_granule() for _ in range(3)]  # realm params, REC params, data source
        self.states: dict[int, GranuleState] = dict.fromkeys(self.pool + self.helpers, G.UNDELEGATED)
        self.realms: dict[int, RealmModel] = {}
        self.recs: dict[int, RecModel] = {}
        self.vmids: dict[int, int] = {}  # rd -> vmid

    # --- helpers --------------------------------------------------------------------------
    def smc(self, fid: int, *args: int) -> tuple[list[int], RmiStatus | None, int]:
        """One RMI call; status None for SMCCC NOT_SUPPORTED."""
        out = self.env.m.host_smc(fid, *args)  # any exception here fails the test
        event(f"{RmiFid(fid).name if fid in RmiFid._value2member_map_ else hex(fid)} -> {out[0] & 0xFF:#x}")
        assert len(out) == 18
        if out[0] == MASK64:
            return out, None, 0
        assert out[0] >> 16 == 0 and out[0] & 0xFF in set(RmiStatus), hex(out[0])
        return out, RmiStatus(out[0] & 0xFF), (out[0] >> 8) & 0xFF

    def model_state(self, pa: int) -> GranuleState | None:
        if self.rmm.granule_state(pa) is None:
            return None
        return self.states.get(pa, G.UNDELEGATED)

    def set_state(self, pa: int, state: GranuleState) -> None:
        self.states[pa] = state

    def handle(self, data: st.DataObject, candidates: list[int], label: str) -> int:
        """A handle the model knows (most of the time), a pool granule, or any 64-bit value."""
        choices = [st.sampled_from(self.pool), U64, st.sampled_from(self.pool).map(lambda p: p + 8)]
        if candidates:
            choices = [st.sampled_from(candidates)] * 6 + choices
        return data.draw(st.one_of(*choices), label=label)

    def delegated_pool(self) -> list[int]:
        return [p for p in self.pool if self.states[p] == G.DELEGATED]

    def ipa(self, data: st.DataObject, label: str) -> int:
        s2sz = 40
        if self.realms:
            s2sz = next(iter(self.realms.values())).s2sz
        par = 1 << (s2sz - 1)
        interesting = [
            0,
            L3,
            2 * L3,
            L2,
            L2 + L3,
            2 * L2,
            L1,
            par - L3,
            par - L2,
            par,
            par + L2,
            par + L1,
            1 << s2sz,
        ]
        return data.draw(st.one_of(st.sampled_from(interesting), U64), label=label)

    def ns_helper(self, index: int) -> int | None:
        pa = self.helpers[index]
        return pa if self.states[pa] == G.UNDELEGATED else None

    # --- granules -------------------------------------------------------------------------
    @initialize(count=st.one_of(st.just(POOL_SIZE * 3 // 4), st.integers(0, POOL_SIZE)))
    def delegate_many(self, count: int) -> None:
        """Start most runs with plenty of delegated granules, so that realms and RECs get built."""
        for pa in self.pool[:count]:
            _, status, _ = self.smc(RmiFid.GRANULE_DELEGATE, pa)
            assert status == SUCCESS
            self.set_state(pa, G.DELEGATED)

    @initialize(
        realms=st.integers(0, 2),
        recs=st.integers(0, 2),
        algo=st.sampled_from([0, 1]),
        s2sz=st.sampled_from([40, 48, 32]),
        activate=st.booleans(),
        populate=st.booleans(),
    )
    def build_realms(
        self, realms: int, recs: int, algo: int, s2sz: int, activate: bool, populate: bool
    ) -> None:
        """Realms built by the legal sequence (outside the pool), so that every run has objects
        for the random commands to work on."""

        def fresh() -> int:
            pa = self.env.ns_granule()
            _, status, _ = self.smc(RmiFid.GRANULE_DELEGATE, pa)
            assert status == SUCCESS
            self.set_state(pa, G.DELEGATED)
            return pa

        for _ in range(realms):
            level, num = START_LEVELS[s2sz]
            roots = [fresh() for _ in range(num)]
            rd = fresh()
            vmid = 100 + len(self.vmids)
            params = self.env.params_page(
                self.env.realm_values(s2sz, hash_algo=algo, vmid=vmid, rtt_base=roots[0])
            )
            self.states[params] = G.UNDELEGATED
            _, status, _ = self.smc(RmiFid.REALM_CREATE, rd, params)
            assert status == SUCCESS
            self.set_state(rd, G.RD)
            for r in roots:
                self.set_state(r, G.RTT)
            self.realms[rd] = RealmModel(roots, s2sz, algo)
            self.vmids[rd] = vmid
            for lvl in range(level + 1, 4 if populate else level + 1):
                rtt = fresh()
                _, status, _ = self.smc(RmiFid.RTT_CREATE, rd, rtt, 0, lvl)
                assert status == SUCCESS
                self.set_state(rtt, G.RTT)
            if populate:
                _, status, _ = self.smc(RmiFid.RTT_INIT_RIPAS, rd, 0, 8 * L3)
                assert status == SUCCESS
                data = fresh()
                src = self.helpers[2]
                self.env.ns.write(src, b"realm image".ljust(GRANULE_SIZE, b"\xa5"))
                _, status, _ = self.smc(RmiFid.DATA_CREATE, rd, data, 0, src, 1)
                assert status == SUCCESS
                self.set_state(data, G.DATA)
            for i in range(recs):
                aux = [fresh() for _ in range(REC_AUX_COUNT)]
                rec = fresh()
                params = self.env.rec_params_page(self.env.rec_values(i, runnable=True, aux=aux))
                self.states[params] = G.UNDELEGATED
                _, status, _ = self.smc(RmiFid.REC_CREATE, rd, rec, params)
                assert status == SUCCESS
                self.set_state(rec, G.REC)
                for a in aux:
                    self.set_state(a, G.REC_AUX)
                run = self.env.ns_granule()
                self.states[run] = G.UNDELEGATED
                engine = self.env.engines[-1]
                engine.idle_wfi = True
                self.recs[rec] = RecModel(rd, aux, run, engine)
                self.realms[rd].recs.append(rec)
            if activate:
                _, status, _ = self.smc(RmiFid.REALM_ACTIVATE, rd)
                assert status == SUCCESS
                self.realms[rd].state = RealmState.ACTIVE
                self.realms[rd].rim = self.rmm.realms[rd].rim

    @rule(data=st.data())
    def delegate(self, data: st.DataObject) -> None:
        pa = self.handle(data, [p for p in self.pool if self.states[p] == G.UNDELEGATED], "pa")
        before = self.model_state(pa)
        _, status, _ = self.smc(RmiFid.GRANULE_DELEGATE, pa)
        assert (status == SUCCESS) == (before == G.UNDELEGATED)
        if status == SUCCESS:
            self.set_state(pa, G.DELEGATED)

    @rule(data=st.data())
    def undelegate(self, data: st.DataObject) -> None:
        pa = self.handle(data, self.delegated_pool(), "pa")
        before = self.model_state(pa)
        _, status, _ = self.smc(RmiFid.GRANULE_UNDELEGATE, pa)
        assert (status == SUCCESS) == (before == G.DELEGATED)
        if status == SUCCESS:
            self.set_state(pa, G.UNDELEGATED)

    # --- realms ---------------------------------------------------------------------------
    @rule(data=st.data())
    def realm_create(self, data: st.DataObject) -> None:
        params = self.ns_helper(0)
        if params is None:
            return
        delegated = self.delegated_pool()
        rd = self.handle(data, delegated, "rd")
        s2sz = data.draw(st.sampled_from([32, 40, 48]), label="s2sz")
        level, num = START_LEVELS[s2sz]
        runs = [
            p
            for p in delegated
            if all(self.states.get(p + i * GRANULE_SIZE) == G.DELEGATED for i in range(num))
        ]
        rtt_base = self.handle(data, runs, "rtt_base")
        values = {
            "flags": 0,
            "s2sz": s2sz,
            "num_bps": 1,
            "num_wps": 1,
            "hash_algo": data.draw(st.sampled_from([0, 1]), label="hash"),
            "vmid": data.draw(st.integers(0, 3), label="vmid"),
            "rtt_base": rtt_base,
            "rtt_level_start": level,
            "rtt_num_start": num,
        }
        valid = True
        if data.draw(st.integers(0, 4), label="corrupt") == 0:
            name = data.draw(
                st.sampled_from(
                    ["flags", "s2sz", "num_bps", "num_wps", "hash_algo", "rtt_level_start", "rtt_num_start"]
                )
            )
            values[name] = data.draw(st.integers(0, 0xFF if name not in ("flags",) else MASK64), label=name)
            valid = False
        self.env.ns.write(params, RMI_REALM_PARAMS.pack(**values))
        _, status, _ = self.smc(RmiFid.REALM_CREATE, rd, params)
        roots = [rtt_base + i * GRANULE_SIZE for i in range(num)]
        expect = (
            valid
            and self.model_state(rd) == G.DELEGATED
            and rd not in roots
            and all(self.model_state(r) == G.DELEGATED for r in roots)
            and values["vmid"] not in self.vmids.values()
        )
        if valid:
            assert (status == SUCCESS) == expect, (status, values)
        if status != SUCCESS:
            return
        s2sz = values["s2sz"]
        level, num = START_LEVELS[s2sz]
        roots = [rtt_base + i * GRANULE_SIZE for i in range(num)]
        self.set_state(rd, G.RD)
        for r in roots:
            self.set_state(r, G.RTT)
        self.realms[rd] = RealmModel(roots, s2sz, values["hash_algo"])
        self.vmids[rd] = values["vmid"]

    @rule(data=st.data())
    def realm_activate(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        realm = self.realms.get(rd)
        _, status, _ = self.smc(RmiFid.REALM_ACTIVATE, rd)
        if realm is None:
            assert status == RmiStatus.ERROR_INPUT
            return
        assert (status == SUCCESS) == (realm.state == RealmState.NEW)
        if status == SUCCESS:
            realm.state = RealmState.ACTIVE
            realm.rim = self.rmm.realms[rd].rim
        else:
            assert status == RmiStatus.ERROR_REALM

    @rule(data=st.data())
    def realm_destroy(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        realm = self.realms.get(rd)
        _, status, _ = self.smc(RmiFid.REALM_DESTROY, rd)
        if realm is None:
            assert status == RmiStatus.ERROR_INPUT
            return
        if realm.recs:
            assert status == RmiStatus.ERROR_REALM
        if status == SUCCESS:
            for g in (rd, *realm.roots):
                self.set_state(g, G.DELEGATED)
            del self.realms[rd]
            del self.vmids[rd]

    # --- RECs -----------------------------------------------------------------------------
    @rule(data=st.data())
    def rec_create(self, data: st.DataObject) -> None:
        params = self.ns_helper(1)
        if params is None:
            return
        rd = self.handle(data, list(self.realms), "rd")
        delegated = self.delegated_pool()
        rec = self.handle(data, delegated, "rec")
        if len(delegated) > REC_AUX_COUNT and data.draw(st.booleans(), label="good aux"):
            aux = data.draw(st.permutations([p for p in delegated if p != rec]), label="aux")[:REC_AUX_COUNT]
        else:
            aux = [self.handle(data, delegated, "aux") for _ in range(REC_AUX_COUNT)]
        realm = self.realms.get(rd)
        index = self.rmm.realms[rd].rec_count if realm is not None else 0
        mpidr = data.draw(st.one_of(st.just(mpidr_for(index)), st.integers(0, 0x1FF), U64), label="mpidr")
        runnable = data.draw(st.booleans(), label="runnable")
        num_aux = data.draw(st.one_of(st.just(REC_AUX_COUNT), st.integers(0, 20)), label="num_aux")
        self.env.ns.write(
            params,
            RMI_REC_PARAMS.pack(
                flags=int(runnable), mpidr=mpidr, pc=0x1000, gprs=[0] * 8, num_rec_aux=num_aux, aux=aux
            ),
        )
        engines = len(self.env.engines)
        _, status, _ = self.smc(RmiFid.REC_CREATE, rd, rec, params)
        if status != SUCCESS:
            assert len(self.env.engines) == engines or realm is not None
            return
        assert realm is not None and realm.state == RealmState.NEW
        assert mpidr == mpidr_for(index) and num_aux == REC_AUX_COUNT
        self.set_state(rec, G.REC)
        for a in aux:
            self.set_state(a, G.REC_AUX)
        run = self.env.ns_granule()
        self.states[run] = G.UNDELEGATED
        engine = self.env.engines[-1]
        engine.idle_wfi = True
        self.recs[rec] = RecModel(rd, list(aux), run, engine)
        realm.recs.append(rec)

    @rule(data=st.data())
    def rec_destroy(self, data: st.DataObject) -> None:
        rec = self.handle(data, list(self.recs), "rec")
        model = self.recs.get(rec)
        _, status, _ = self.smc(RmiFid.REC_DESTROY, rec)
        assert (status == SUCCESS) == (model is not None)
        if model is not None:
            for g in (rec, *model.aux):
                self.set_state(g, G.DELEGATED)
            self.realms[model.rd].recs.remove(rec)
            del self.recs[rec]

    @rule(data=st.data())
    def rec_enter(self, data: st.DataObject) -> None:
        rec = self.handle(data, list(self.recs), "rec")
        model = self.recs.get(rec)
        run = model.run if model is not None else self.pool[0]
        if data.draw(st.integers(0, 9), label="bad run") == 0:
            run = self.handle(data, [], "run")
        self.enter(data, rec, run)

    @precondition(lambda self: bool(self.recs))
    @rule(data=st.data())
    def run_rec(self, data: st.DataObject) -> None:
        """Enter a known REC with its own run page: the REC runs a random RSI/PSCI script."""
        rec = data.draw(st.sampled_from(sorted(self.recs)), label="rec")
        self.enter(data, rec, self.recs[rec].run)

    def enter(self, data: st.DataObject, rec: int, run: int) -> None:
        model = self.recs.get(rec)
        if model is not None:
            script = data.draw(st.lists(self.rsi_call(model), max_size=4), label="script")
            model.engine.push(*script)
            model.engine.idle_wfi = data.draw(st.integers(0, 9), label="off") != 0
        flags = data.draw(st.sampled_from([0, 0x10, 0x1, 0x2, 0xC]), label="flags")
        hcr = data.draw(HCRS, label="gicv3_hcr")
        lrs = data.draw(st.lists(LRS, max_size=16), label="gicv3_lrs")
        written = False
        if self.model_state(run) == G.UNDELEGATED and run in self.states:
            page = RMI_REC_RUN.pack(enter_flags=flags, enter_gicv3_hcr=hcr, enter_gicv3_lrs=lrs)
            self.env.ns.write(run, page[:0x800])
            written = True
        logged = len(model.engine.log) if model is not None else 0
        _, status, index = self.smc(RmiFid.REC_ENTER, rec, run)
        if model is None:
            assert status == RmiStatus.ERROR_INPUT
            return
        if written and not gic_entry_valid(hcr, lrs):
            assert status != SUCCESS  # ERROR_REC, or an earlier check's error
            event("REC_ENTER refused its GIC state")
        realm = self.realms[model.rd]
        if run == model.run:
            if realm.state == RealmState.NEW:
                assert (status, index) == (RmiStatus.ERROR_REALM, 0)
            elif realm.state == RealmState.SYSTEM_OFF:
                assert (status, index) == (RmiStatus.ERROR_REALM, 1)
        if status != SUCCESS:
            return
        exit_ = RMI_REC_RUN.unpack(self.env.ns.read(run, GRANULE_SIZE))
        reason = exit_["exit_reason"]
        if written:
            # Scripted RECs touch no GIC register: the list registers and the host's HCR bits
            # come back as they went in (EOIcount 0), and a maintenance condition that holds
            # at entry ends REC_ENTER with an IRQ exit before the REC runs.
            padded = lrs + [0] * (16 - len(lrs))
            assert list(exit_["exit_gicv3_lrs"]) == padded
            assert exit_["exit_gicv3_hcr"] == hcr
            misr = gic_model_misr(hcr, padded)
            assert exit_["exit_gicv3_misr"] == misr
            if misr:
                assert reason == RmiRecExitReason.IRQ and len(model.engine.log) == logged
                event("maintenance interrupt at entry")
        if reason == RmiRecExitReason.PSCI and exit_["exit_gprs"][0] & ~(1 << 30) in (
            PSCI_SYSTEM_OFF,
            PSCI_SYSTEM_OFF + 1,
        ):
            realm.state = RealmState.SYSTEM_OFF
        if reason == RmiRecExitReason.RIPAS_CHANGE:
            model.ripas = (exit_["exit_ripas_base"], exit_["exit_ripas_top"])
        self.account_rsi(model, realm)

    @precondition(lambda self: bool(self.realms))
    @rule(data=st.data())
    def tear_down_realm(self, data: st.DataObject) -> None:
        """The host's teardown: RECs, then every live entry found by RTT_READ_ENTRY, deepest
        first, then the realm; each step must succeed."""
        rd = data.draw(st.sampled_from(sorted(self.realms)), label="rd")
        realm = self.realms[rd]
        for rec in list(realm.recs):
            _, status, _ = self.smc(RmiFid.REC_DESTROY, rec)
            assert status == SUCCESS
            for g in (rec, *self.recs[rec].aux):
                self.set_state(g, G.DELEGATED)
            realm.recs.remove(rec)
            del self.recs[rec]
        level = self.rmm.realms[rd].stage2.start_level
        entries = 512 * len(realm.roots)
        if not self.clear(rd, 0, level, entries, 1 << realm.s2sz, 1 << (realm.s2sz - 1)):
            return  # a folded assigned block: left alone
        _, status, _ = self.smc(RmiFid.REALM_DESTROY, rd)
        assert status == SUCCESS
        for g in (rd, *realm.roots):
            self.set_state(g, G.DELEGATED)
        del self.realms[rd]
        del self.vmids[rd]

    def clear(self, rd: int, base: int, level: int, count: int, ipa_size: int, par: int) -> bool:
        size = 1 << (12 + 9 * (3 - level))
        done = True
        for i in range(count):
            ipa = base + i * size
            if ipa >= ipa_size:
                break
            out, status, _ = self.smc(RmiFid.RTT_READ_ENTRY, rd, ipa, level)
            assert status == SUCCESS
            state = out[2]
            if state == 2:  # TABLE
                if self.clear(rd, ipa, level + 1, 512, ipa_size, par):
                    out, status, _ = self.smc(RmiFid.RTT_DESTROY, rd, ipa, level + 1)
                    assert status == SUCCESS, hex(out[0])
                    self.set_state(out[1], G.DELEGATED)
                else:
                    done = False
            elif state == 1 and ipa >= par:
                _, status, _ = self.smc(RmiFid.RTT_UNMAP_UNPROTECTED, rd, ipa, level)
                assert status == SUCCESS
            elif state == 1 and level == 3:
                out, status, _ = self.smc(RmiFid.DATA_DESTROY, rd, ipa)
                assert status == SUCCESS
                self.set_state(out[1], G.DELEGATED)
            elif state == 1:
                done = False
        return done

    def rsi_call(self, model: RecModel) -> st.SearchStrategy[list[int]]:
        par = 1 << (self.realms[model.rd].s2sz - 1)
        ipas = st.one_of(st.sampled_from([0, L3, L2, 3 * L3, par - L3, par]), U64)
        extend = st.builds(
            lambda i, s, v: [RSI_MEASUREMENT_EXTEND, i, s, *v],
            st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(0, 5), U64),
            st.one_of(st.integers(0, 64), st.integers(0, 64), st.integers(0, 65), U64),
            st.lists(U64, min_size=8, max_size=8),
        )
        return st.one_of(
            extend,
            extend,
            st.builds(lambda i: [RSI_MEASUREMENT_READ, i], st.one_of(st.integers(0, 5), U64)),
            st.builds(
                lambda b, t, r, f: [RSI_IPA_STATE_SET, b, t, r, f],
                ipas,
                ipas,
                st.integers(0, 3),
                st.integers(0, 1),
            ),
            st.builds(
                lambda b, n, r, f: [RSI_IPA_STATE_SET, b, b + n, r, f],
                st.sampled_from([0, L3, 4 * L3, L2]),
                st.sampled_from([L3, 3 * L3, L2]),
                st.integers(0, 1),
                st.integers(0, 1),
            ),
            st.builds(lambda b, e: [RSI_IPA_STATE_GET, b, e], ipas, ipas),
            st.builds(
                lambda m, e: [PSCI_CPU_ON_64, m, e, 0], st.integers(0, 3), st.sampled_from([0x1000, par])
            ),
            st.builds(lambda m, lvl: [PSCI_AFFINITY_INFO_64, m, lvl], st.integers(0, 3), st.integers(0, 1)),
            st.builds(
                lambda f, a: [0xC400_0000 | f, a],
                st.integers(0x190, 0x1AF).filter(lambda f: f not in (0x194, 0x195)),
                U64,
            ),
            st.builds(
                lambda f, a: [f, a],
                st.sampled_from([0x8400_0000, 0x8400_000A, 0x8000_0000, 0xC400_0190]),
                U64,
            ),
        )

    def account_rsi(self, model: RecModel, realm: RealmModel) -> None:
        """Apply completed MEASUREMENT_EXTEND calls to the model's REMs."""
        log = model.engine.log
        while model.seen < len(log) and log[model.seen].out is not None:
            record = log[model.seen]
            model.seen += 1
            regs, out = record.regs, record.out
            assert out is not None
            if regs[0] != RSI_MEASUREMENT_EXTEND:
                continue
            index, size = regs[1], regs[2]
            ok = 1 <= index <= 4 and size <= 64
            assert out[0] == (0 if ok else 1), (index, size, out[0])
            if ok:
                value = b"".join(v.to_bytes(8, "little") for v in regs[3:11])[:size]
                realm.rems[index - 1] = rem_extend(realm.algo, realm.rems[index - 1], value)

    @rule(data=st.data())
    def psci_complete(self, data: st.DataObject) -> None:
        calling = self.handle(data, list(self.recs), "calling")
        target = self.handle(data, list(self.recs), "target")
        status_arg = data.draw(st.one_of(st.sampled_from([0, -3 & MASK64]), U64), label="status")
        self.smc(RmiFid.PSCI_COMPLETE, calling, target, status_arg)

    @rule(data=st.data())
    def rec_aux_count(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        out, status, _ = self.smc(RmiFid.REC_AUX_COUNT, rd)
        assert (status == SUCCESS) == (rd in self.realms)
        if status == SUCCESS:
            assert out[1] == REC_AUX_COUNT

    # --- stage 2 --------------------------------------------------------------------------
    def level(self, data: st.DataObject) -> int:
        return data.draw(st.one_of(st.integers(0, 4), U64), label="level")

    @rule(data=st.data())
    def rtt_create(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        rtt = self.handle(data, self.delegated_pool(), "rtt")
        before = self.model_state(rtt)
        _, status, _ = self.smc(RmiFid.RTT_CREATE, rd, rtt, self.ipa(data, "ipa"), self.level(data))
        if status == SUCCESS:
            assert before == G.DELEGATED and rd in self.realms
            self.set_state(rtt, G.RTT)

    @rule(data=st.data(), fid=st.sampled_from([RmiFid.RTT_DESTROY, RmiFid.RTT_FOLD]))
    def rtt_remove(self, data: st.DataObject, fid: RmiFid) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        out, status, _ = self.smc(fid, rd, self.ipa(data, "ipa"), self.level(data))
        if status == SUCCESS:
            assert self.model_state(out[1]) == G.RTT
            assert out[1] not in self.realms[rd].roots
            self.set_state(out[1], G.DELEGATED)

    @rule(data=st.data(), unknown=st.booleans())
    def data_create(self, data: st.DataObject, unknown: bool) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        granule = self.handle(data, self.delegated_pool(), "data")
        before = self.model_state(granule)
        ipa = self.ipa(data, "ipa")
        if unknown:
            _, status, _ = self.smc(RmiFid.DATA_CREATE_UNKNOWN, rd, granule, ipa)
        else:
            src = (
                self.helpers[2]
                if data.draw(st.booleans(), label="good src")
                else self.handle(data, [], "src")
            )
            flags = data.draw(st.one_of(st.sampled_from([0, 1]), U64), label="flags")
            if src == self.helpers[2] and self.model_state(src) == G.UNDELEGATED:
                content = data.draw(st.binary(min_size=1, max_size=64), label="content")
                self.env.ns.write(src, content.ljust(GRANULE_SIZE, b"\xa5"))
            _, status, _ = self.smc(RmiFid.DATA_CREATE, rd, granule, ipa, src, flags)
            if status == SUCCESS:
                assert flags in (0, 1) and self.realms[rd].state == RealmState.NEW
        if status == SUCCESS:
            assert before == G.DELEGATED
            self.set_state(granule, G.DATA)

    @rule(data=st.data())
    def data_destroy(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        out, status, _ = self.smc(RmiFid.DATA_DESTROY, rd, self.ipa(data, "ipa"))
        if status == SUCCESS:
            assert self.model_state(out[1]) == G.DATA
            self.set_state(out[1], G.DELEGATED)

    @rule(
        data=st.data(),
        fid=st.sampled_from(
            [RmiFid.RTT_MAP_UNPROTECTED, RmiFid.RTT_UNMAP_UNPROTECTED, RmiFid.RTT_READ_ENTRY]
        ),
    )
    def rtt_entry_command(self, data: st.DataObject, fid: RmiFid) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        desc = data.draw(
            st.one_of(st.sampled_from([self.pool[0] | 0xFC, self.pool[0] | 0x3C]), U64), label="desc"
        )
        self.smc(fid, rd, self.ipa(data, "ipa"), self.level(data), desc)

    @rule(data=st.data())
    def init_ripas(self, data: st.DataObject) -> None:
        rd = self.handle(data, list(self.realms), "rd")
        base, top = self.ipa(data, "base"), self.ipa(data, "top")
        out, status, _ = self.smc(RmiFid.RTT_INIT_RIPAS, rd, base, top)
        if status == SUCCESS:
            assert self.realms[rd].state == RealmState.NEW
            assert base < out[1] <= top

    @rule(data=st.data())
    def set_ripas(self, data: st.DataObject) -> None:
        rec = self.handle(data, list(self.recs), "rec")
        model = self.recs.get(rec)
        rd = (
            model.rd
            if model is not None and data.draw(st.booleans(), label="own rd")
            else self.handle(data, list(self.realms), "rd")
        )
        if model is not None and model.ripas is not None and data.draw(st.booleans(), label="requested"):
            req = self.rmm.recs[rec].ripas_request
            base = req.addr if req is not None else model.ripas[0]
            top = model.ripas[1]
        else:
            base, top = self.ipa(data, "base"), self.ipa(data, "top")
        out, status, _ = self.smc(RmiFid.RTT_SET_RIPAS, rd, rec, base, top)
        if status == SUCCESS:
            assert model is not None and model.rd == rd
            assert base < out[1] <= top

    @rule(data=st.data())
    def read_only_or_unassigned(self, data: st.DataObject) -> None:
        fnum = data.draw(
            st.sampled_from([0x150, 0x156, 0x160, 0x163, 0x165, 0x167, 0x16A, 0x16F]), label="fnum"
        )
        args = data.draw(st.lists(U64, min_size=4, max_size=4), label="args")
        out, _, _ = self.smc(0xC400_0000 | fnum, *args)
        if fnum in (0x156, 0x160, 0x163, 0x16A, 0x16F):
            assert out[0] == MASK64 and out[1:5] == args

    # --- invariants -----------------------------------------------------------------------
    @invariant()
    def granule_states_match(self) -> None:
        ns = self.env.ns
        realm_mem = self.env.realm_mem
        for pa, state in self.states.items():
            assert self.rmm.granule_state(pa) == state, (hex(pa), state)
            if state == G.UNDELEGATED:
                ns.read(pa, 8)
                continue
            with pytest.raises(GranuleProtectionFault):
                ns.read(pa, 8)
            with pytest.raises(GranuleProtectionFault):
                ns.write(pa + GRANULE_SIZE - 1, b"\xee")
            if state == G.DELEGATED:
                assert realm_mem.is_zero(pa, GRANULE_SIZE), hex(pa)

    @invariant()
    def realms_and_recs_match(self) -> None:
        assert set(self.rmm.realms) == set(self.realms)
        assert set(self.rmm.recs) == set(self.recs)
        for rd, model in self.realms.items():
            realm = self.rmm.realms[rd]
            assert realm.state == model.state
            if model.rim is not None:
                assert realm.rim == model.rim
            assert realm.measurements[1:] == model.rems
            assert sorted(realm.recs.values()) == sorted(model.recs)

    def teardown(self) -> None:
        for model in self.recs.values():
            model.engine.close()


RmmMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestRmmStateMachine = RmmMachine.TestCase
