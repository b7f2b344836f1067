"""RMI command handlers, one per command of DEN0137 1.0-rel0 (digest §2.2).

Each handler takes the RMM's state and the command's argument registers, returns the
output registers after X0 (a tuple), and raises RmiError(status, index, outputs) on failure;
core.RMI_TABLE says which handler serves which FID.
The order of checks follows TF-RMM's runtime/rmi/*.c so that when several conditions fail
the host sees the same status the reference implementation gives.
"""

from __future__ import annotations

from typing import Any

from unirealm.arch.memory import (
    GRANULE_MASK,
    GRANULE_SHIFT,
    GRANULE_SIZE,
    MAX_ROOT_RTTS,
    MIN_IPA_BITS,
    RTT_MIN_BLOCK_LEVEL,
    RTT_PAGE_LEVEL,
    S2TTES_PER_RTT,
    Pas,
    is_granule_aligned,
    level_size,
    num_root_rtts,
    start_level_is_consistent,
)
from unirealm.arch.rmi import (
    RMI_ABI_VERSION,
    RMI_REALM_PARAMS,
    RMI_REC_PARAMS,
    GranuleState,
    RealmState,
    RmiDataFlags,
    RmiHashAlgorithm,
    RmiRealmFlags,
    RmiRecFlags,
    RmiRipas,
    RmiStatus,
    feat_reg0_get,
)
from unirealm.arch.smccc import PsciAffinityState, PsciFid, PsciReturn, unsigned64

from . import measurement, s2tte
from .realm import PendingKind, Realm, Rec, mpidr_to_rec_index
from .rtt import Stage2
from .state import REC_AUX_COUNT, RmiError, RmmState


def fail(status: RmiStatus, index: int = 0, *outputs: int) -> RmiError:
    return RmiError(status, index, outputs)


# --- version and features -------------------------------------------------------------
def rmi_version(rmm: RmmState, req: int) -> tuple[int, ...]:
    if req != RMI_ABI_VERSION:
        raise fail(RmiStatus.ERROR_INPUT, 0, RMI_ABI_VERSION, RMI_ABI_VERSION)
    return (RMI_ABI_VERSION, RMI_ABI_VERSION)


def rmi_features(rmm: RmmState, index: int) -> tuple[int, ...]:
    return (rmm.feat_reg0 if index == 0 else 0,)


_UNDELEGATED, _DELEGATED, _DATA = GranuleState.UNDELEGATED, GranuleState.DELEGATED, GranuleState.DATA
_NEW = RealmState.NEW


# --- granules ---------------------------------------------------------------------------
def granule_delegate(rmm: RmmState, pa: int) -> tuple[int, ...]:
    off = pa - rmm._mem_base  # require_granule(pa, UNDELEGATED) inline, keeping the index
    if pa & GRANULE_MASK or off < 0 or off >= rmm._mem_size or rmm._granules[off >> GRANULE_SHIFT] != _UNDELEGATED:
        raise RmiError(RmiStatus.ERROR_INPUT)
    if not rmm.gtsi(pa, delegate=True):
        raise fail(RmiStatus.ERROR_INPUT)
    rmm._granules[off >> GRANULE_SHIFT] = _DELEGATED  # set_granule_state(pa, DELEGATED)
    rmm.mem.zero(pa, GRANULE_SIZE)  # scrub(pa): one write of a zero granule
    return ()


def granule_undelegate(rmm: RmmState, pa: int) -> tuple[int, ...]:
    if rmm.granule_state(pa) != GranuleState.DELEGATED:
        raise fail(RmiStatus.ERROR_INPUT)
    rmm.scrub(pa)  # nothing realm-owned may reach the host
    if not rmm.gtsi(pa, delegate=False):
        raise fail(RmiStatus.ERROR_INPUT)
    rmm.set_granule_state(pa, GranuleState.UNDELEGATED)
    return ()


# --- realms -----------------------------------------------------------------------------
def _validate_realm_params(rmm: RmmState, p: dict[str, Any]) -> None:
    feat = rmm.feat_reg0
    flags = p["flags"]
    if flags & ~int(RmiRealmFlags.LPA2 | RmiRealmFlags.SVE | RmiRealmFlags.PMU):
        raise fail(RmiStatus.ERROR_INPUT)
    # LPA2, SVE and a PMU only as FeatReg0 offers them (this RMM offers none of them).
    if flags & RmiRealmFlags.LPA2 and not feat_reg0_get(feat, "LPA2"):
        raise fail(RmiStatus.ERROR_INPUT)
    if flags & RmiRealmFlags.SVE and (not feat_reg0_get(feat, "SVE_EN") or p["sve_vl"] > feat_reg0_get(feat, "SVE_VL")):
        raise fail(RmiStatus.ERROR_INPUT)
    if flags & RmiRealmFlags.PMU and (not feat_reg0_get(feat, "PMU_EN")
                                      or p["pmu_num_ctrs"] > feat_reg0_get(feat, "PMU_NUM_CTRS")):
        raise fail(RmiStatus.ERROR_INPUT)
    if not MIN_IPA_BITS <= p["s2sz"] <= (feat & 0xFF):
        raise fail(RmiStatus.ERROR_INPUT)
    if not 1 <= p["num_bps"] <= (feat >> 14) & 0x3F:
        raise fail(RmiStatus.ERROR_INPUT)
    if not 1 <= p["num_wps"] <= (feat >> 20) & 0x3F:
        raise fail(RmiStatus.ERROR_INPUT)
    if p["hash_algo"] not in (RmiHashAlgorithm.SHA_256, RmiHashAlgorithm.SHA_512):
        raise fail(RmiStatus.ERROR_INPUT)
    sl = p["rtt_level_start"]
    if not start_level_is_consistent(p["s2sz"], sl):
        raise fail(RmiStatus.ERROR_INPUT)
    if p["rtt_num_start"] != num_root_rtts(p["s2sz"], sl) or p["rtt_num_start"] > MAX_ROOT_RTTS:
        raise fail(RmiStatus.ERROR_INPUT)
    if any(r.vmid == p["vmid"] for r in rmm.realms.values()):
        raise fail(RmiStatus.ERROR_INPUT)


def realm_create(rmm: RmmState, rd: int, params_pa: int) -> tuple[int, ...]:
    if not rmm.is_ns_granule(params_pa):
        raise fail(RmiStatus.ERROR_INPUT)
    p = RMI_REALM_PARAMS.unpack(rmm.mem.read(params_pa, GRANULE_SIZE))
    _validate_realm_params(rmm, p)
    rmm.require_granule(rd, GranuleState.DELEGATED)
    rtt_base = p["rtt_base"]
    roots = [rtt_base + i * GRANULE_SIZE for i in range(p["rtt_num_start"])]
    if not is_granule_aligned(rtt_base) or rd in roots:
        raise fail(RmiStatus.ERROR_INPUT)
    for r in roots:
        rmm.require_granule(r, GranuleState.DELEGATED)

    stage2 = Stage2(rmm.mem, rtt_base, p["rtt_level_start"], p["rtt_num_start"], p["s2sz"])
    realm = Realm(rd, p, stage2)
    # Root entries: UNASSIGNED/EMPTY inside the PAR, UNASSIGNED_NS outside it.
    size = level_size(p["rtt_level_start"])
    for n, root in enumerate(roots):
        base = n * S2TTES_PER_RTT * size
        entries = [
            s2tte.unassigned(RmiRipas.EMPTY) if base + i * size < realm.par_size else s2tte.UNASSIGNED_NS
            for i in range(S2TTES_PER_RTT)
        ]
        stage2.fill(root, p["rtt_level_start"], entries)
        rmm.set_granule_state(root, GranuleState.RTT)
    rmm.set_granule_state(rd, GranuleState.RD)
    realm.rim = measurement.realm_create_rim(p)
    rmm.realms[rd] = realm
    return ()


def realm_activate(rmm: RmmState, rd: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    if realm.state != RealmState.NEW:
        raise fail(RmiStatus.ERROR_REALM)
    realm.state = RealmState.ACTIVE
    return ()


def realm_destroy(rmm: RmmState, rd: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    if realm.recs:
        raise fail(RmiStatus.ERROR_REALM)
    stage2 = realm.stage2
    if any(stage2.has_live_entries(root, stage2.start_level) for root in stage2.root_rtts()):
        raise fail(RmiStatus.ERROR_REALM)
    for root in stage2.root_rtts():
        rmm.scrub(root)
        rmm.set_granule_state(root, GranuleState.DELEGATED)
    rmm.scrub(rd)
    rmm.set_granule_state(rd, GranuleState.DELEGATED)
    del rmm.realms[rd]
    return ()


# --- RECs -------------------------------------------------------------------------------
def rec_create(rmm: RmmState, rd: int, rec: int, params_pa: int) -> tuple[int, ...]:
    if not rmm.is_ns_granule(params_pa):
        raise fail(RmiStatus.ERROR_INPUT)
    p = RMI_REC_PARAMS.unpack(rmm.mem.read(params_pa, GRANULE_SIZE))
    rmm.require_granule(rec, GranuleState.DELEGATED)
    realm = rmm.realm_of(rd)
    if realm.state != RealmState.NEW:
        raise fail(RmiStatus.ERROR_REALM)
    if mpidr_to_rec_index(p["mpidr"]) != realm.rec_count:
        raise fail(RmiStatus.ERROR_INPUT)
    if p["num_rec_aux"] != REC_AUX_COUNT:
        raise fail(RmiStatus.ERROR_INPUT)
    aux = p["aux"][: p["num_rec_aux"]]
    if len(set(aux)) != len(aux) or rec in aux or rd in aux:
        raise fail(RmiStatus.ERROR_INPUT)
    for a in aux:
        rmm.require_granule(a, GranuleState.DELEGATED)

    runnable = bool(p["flags"] & RmiRecFlags.RUNNABLE)
    engine = rmm.engine_factory(rmm, realm, realm.rec_count)
    engine.reset(p["pc"], p["gprs"])
    obj = Rec(rec, rd, realm.rec_count, p["mpidr"], runnable, aux, engine)
    rmm.set_granule_state(rec, GranuleState.REC)
    for a in aux:
        rmm.set_granule_state(a, GranuleState.REC_AUX)
    rmm.recs[rec] = obj
    realm.recs[obj.index] = rec
    realm.rec_count += 1
    if runnable:
        realm.rim = measurement.extend_rec(realm.rim, realm.hash_algo, p["flags"], p["pc"], p["gprs"])
    return ()


def rec_destroy(rmm: RmmState, rec: int) -> tuple[int, ...]:
    obj = rmm.rec_of(rec)
    if obj.running:
        raise fail(RmiStatus.ERROR_REC)
    obj.engine.close()
    realm = rmm.realms[obj.rd]
    del realm.recs[obj.index]
    del rmm.recs[rec]
    for g in (rec, *obj.aux):
        rmm.scrub(g)
        rmm.set_granule_state(g, GranuleState.DELEGATED)
    return ()


def rec_aux_count(rmm: RmmState, rd: int) -> tuple[int, ...]:
    rmm.realm_of(rd)
    return (REC_AUX_COUNT,)


def psci_complete(rmm: RmmState, calling: int, target: int, status: int) -> tuple[int, ...]:
    """Complete the caller's CPU_ON or AFFINITY_INFO on the target REC (TF-RMM
    psci_complete_request): CPU_ON takes SUCCESS or DENIED and answers ALREADY_ON for a
    target that runs or is runnable (a DENIED for such a target completes the call but fails
    ERROR_INPUT); AFFINITY_INFO takes SUCCESS only. The caller gets the result in x0 and
    x1..x3 = 0."""
    caller = rmm.rec_of(calling)
    callee = rmm.rec_of(target)
    request = caller.psci_request
    if request is None or caller.rd != callee.rd or callee.mpidr != request.target_mpidr:
        raise fail(RmiStatus.ERROR_INPUT)
    psci_status = status & 0xFFFF_FFFF_FFFF_FFFF
    denied = psci_status == unsigned64(PsciReturn.DENIED)
    on = callee.running or callee.runnable
    outcome = RmiStatus.SUCCESS
    result: int
    if request.fid & ~(1 << 30) == PsciFid.CPU_ON:
        if psci_status != PsciReturn.SUCCESS and not denied:
            raise fail(RmiStatus.ERROR_INPUT)
        if on:
            result = PsciReturn.ALREADY_ON
            if denied:
                outcome = RmiStatus.ERROR_INPUT
        elif denied:
            result = PsciReturn.DENIED
        else:
            callee.engine.reset(request.entry, [request.context_id])
            callee.runnable = True
            result = PsciReturn.SUCCESS
    else:  # AFFINITY_INFO
        if psci_status != PsciReturn.SUCCESS:
            raise fail(RmiStatus.ERROR_INPUT)
        result = PsciAffinityState.ON if on else PsciAffinityState.OFF
    caller.engine.set_gpr(0, unsigned64(result))
    for i in (1, 2, 3):
        caller.engine.set_gpr(i, 0)
    caller.psci_request = None
    if outcome != RmiStatus.SUCCESS:
        raise fail(outcome)
    return ()


# --- data granules ---------------------------------------------------------------------
_UNASSIGNED, _RAM, _MEASURED = s2tte.Kind.UNASSIGNED, RmiRipas.RAM, RmiDataFlags.MEASURED
_DATA_FLAGS = frozenset((RmiDataFlags.UNMEASURED, RmiDataFlags.MEASURED))
_RD, _PAS_NS, _ERROR_INPUT = int(GranuleState.RD), int(Pas.NON_SECURE), RmiStatus.ERROR_INPUT
_RAM_PAGE = s2tte.encode_assigned(_RAM, 0, RTT_PAGE_LEVEL)  # | the DATA granule's PA: the new entry
_extend_data, _encode_assigned = measurement.extend_data, s2tte.encode_assigned


def data_create(rmm: RmmState, rd: int, data: int, ipa: int, src: int | None, flags: int) -> tuple[int, ...]:
    """DATA_CREATE, and with no `src` DATA_CREATE_UNKNOWN (one handler: one frame less per call).
    Checks in TF-RMM's order: flags, src an NS granule (RmmState.is_ns_granule), data
    DELEGATED (require_granule), rd an RD (realm_of), the realm NEW (measured only), the IPA,
    the level-3 entry UNASSIGNED. The granule checks are those methods' tests written out
    here: this is the call the host makes once per granule of every image it loads."""
    granules, mem_base, mem_size = rmm._granules, rmm._mem_base, rmm._mem_size
    if src is not None:
        if flags not in _DATA_FLAGS:
            raise RmiError(_ERROR_INPUT)
        off = src - mem_base
        if (src & GRANULE_MASK or off < 0 or off >= mem_size or granules[off >> GRANULE_SHIFT] != _UNDELEGATED
                or rmm._gpt[off >> GRANULE_SHIFT] != _PAS_NS):
            raise RmiError(_ERROR_INPUT)
    data_off = data - mem_base
    if data & GRANULE_MASK or data_off < 0 or data_off >= mem_size or granules[data_off >> GRANULE_SHIFT] != _DELEGATED:
        raise RmiError(_ERROR_INPUT)
    off = rd - mem_base
    if rd & GRANULE_MASK or off < 0 or off >= mem_size or granules[off >> GRANULE_SHIFT] != _RD:
        raise RmiError(_ERROR_INPUT)
    realm = rmm.realms[rd]
    if src is not None and realm.state != _NEW:
        raise fail(RmiStatus.ERROR_REALM)
    if ipa & GRANULE_MASK or not 0 <= ipa < realm.par_size:
        raise RmiError(_ERROR_INPUT)
    stage2 = realm.stage2
    walk = stage2.walk(ipa, RTT_PAGE_LEVEL)
    if walk.level < RTT_PAGE_LEVEL:
        raise fail(RmiStatus.ERROR_RTT, walk.level)
    entry = walk.entry
    if entry.kind is not _UNASSIGNED:
        raise fail(RmiStatus.ERROR_RTT, RTT_PAGE_LEVEL)
    if src is not None:
        content = rmm.mem.copy_view(data, src, GRANULE_SIZE)  # measured from the copy, in place
        rim = realm.measurements  # RIM in slot 0 (Realm.rim), reached without the property
        rim[0] = _extend_data(rim[0], realm.hash_algo, ipa, flags, content)
        desc = data | _RAM_PAGE  # encode_assigned(RAM, data, 3): data is a granule's PA
    else:
        desc = _encode_assigned(entry.ripas, data, RTT_PAGE_LEVEL)
    stage2.write_raw(walk.rtt, walk.index, desc)
    granules[data_off >> GRANULE_SHIFT] = _DATA  # set_granule_state(data, DATA)
    return ()


def data_create_unknown(rmm: RmmState, rd: int, data: int, ipa: int) -> tuple[int, ...]:
    return data_create(rmm, rd, data, ipa, None, RmiDataFlags.UNMEASURED)


def data_destroy(rmm: RmmState, rd: int, ipa: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    if not is_granule_aligned(ipa) or not realm.addr_in_par(ipa):
        raise fail(RmiStatus.ERROR_INPUT)
    walk = realm.stage2.walk(ipa, RTT_PAGE_LEVEL)
    top = realm.stage2.next_live(ipa, walk.level, realm.par_size)
    if walk.level < RTT_PAGE_LEVEL:
        raise fail(RmiStatus.ERROR_RTT, walk.level, 0, top)
    entry = walk.entry
    if entry.kind != s2tte.Kind.ASSIGNED:
        raise fail(RmiStatus.ERROR_RTT, RTT_PAGE_LEVEL, 0, top)
    new_ripas = RmiRipas.EMPTY if entry.ripas == RmiRipas.EMPTY else RmiRipas.DESTROYED
    realm.stage2.write(walk.rtt, walk.index, s2tte.unassigned(new_ripas), RTT_PAGE_LEVEL)
    rmm.invalidate(realm, ipa, GRANULE_SIZE)
    rmm.scrub(entry.pa)
    rmm.set_granule_state(entry.pa, GranuleState.DELEGATED)
    return (entry.pa, top)


# --- RTTs -------------------------------------------------------------------------------
def _check_rtt_level(realm: Realm, level: int, lowest: int) -> None:
    if not lowest <= level <= RTT_PAGE_LEVEL:
        raise fail(RmiStatus.ERROR_INPUT)


def _check_ipa(realm: Realm, ipa: int, level: int) -> None:
    if ipa & (level_size(level) - 1) or not 0 <= ipa < realm.ipa_size:
        raise fail(RmiStatus.ERROR_INPUT)


def _parent_walk(realm: Realm, ipa: int, level: int) -> Any:
    walk = realm.stage2.walk(ipa, level - 1)
    if walk.level < level - 1:
        raise fail(RmiStatus.ERROR_RTT, walk.level)
    return walk


def rtt_create(rmm: RmmState, rd: int, rtt: int, ipa: int, level: int) -> tuple[int, ...]:
    rmm.require_granule(rtt, GranuleState.DELEGATED)
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, realm.stage2.start_level + 1)
    _check_ipa(realm, ipa, level - 1)
    parent = _parent_walk(realm, ipa, level)
    entry = parent.entry
    if entry.kind == s2tte.Kind.TABLE:
        raise fail(RmiStatus.ERROR_RTT, level - 1)
    # The new table inherits the parent's state: a block becomes 512 smaller entries.
    child_size = level_size(level)
    if entry.kind == s2tte.Kind.UNASSIGNED:
        children = [s2tte.unassigned(entry.ripas)] * S2TTES_PER_RTT
    elif entry.kind == s2tte.Kind.UNASSIGNED_NS:
        children = [s2tte.UNASSIGNED_NS] * S2TTES_PER_RTT
    elif entry.kind == s2tte.Kind.ASSIGNED:
        children = [s2tte.assigned(entry.ripas, entry.pa + i * child_size) for i in range(S2TTES_PER_RTT)]
    else:
        children = [
            s2tte.Entry(s2tte.Kind.ASSIGNED_NS, RmiRipas.EMPTY, entry.pa + i * child_size, entry.attrs)
            for i in range(S2TTES_PER_RTT)
        ]
    realm.stage2.fill(rtt, level, children)
    realm.stage2.write(parent.rtt, parent.index, s2tte.Entry(s2tte.Kind.TABLE, pa=rtt), level - 1)
    rmm.set_granule_state(rtt, GranuleState.RTT)
    return ()


def rtt_destroy(rmm: RmmState, rd: int, ipa: int, level: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, realm.stage2.start_level + 1)
    _check_ipa(realm, ipa, level - 1)
    walk = realm.stage2.walk(ipa, level - 1)
    top = realm.stage2.next_live(ipa, walk.level, realm.ipa_size)
    if walk.level < level - 1:
        raise fail(RmiStatus.ERROR_RTT, walk.level, 0, top)
    if walk.entry.kind != s2tte.Kind.TABLE:
        raise fail(RmiStatus.ERROR_RTT, level - 1, 0, top)
    child = walk.entry.pa
    if realm.stage2.has_live_entries(child, level):
        raise fail(RmiStatus.ERROR_RTT, level, 0, top)
    replacement = s2tte.unassigned(RmiRipas.DESTROYED) if realm.addr_in_par(ipa) else s2tte.UNASSIGNED_NS
    realm.stage2.write(walk.rtt, walk.index, replacement, level - 1)
    rmm.invalidate(realm, ipa, level_size(level - 1))
    rmm.scrub(child)
    rmm.set_granule_state(child, GranuleState.DELEGATED)
    return (child, top)


def _fold_entries(entries: list[s2tte.Entry], level: int) -> s2tte.Entry | None:
    """The single parent entry equivalent to a homogeneous table, or None."""
    first = entries[0]
    if first.kind in (s2tte.Kind.UNASSIGNED, s2tte.Kind.UNASSIGNED_NS):
        return first if all(e == first for e in entries) else None
    if first.kind in (s2tte.Kind.ASSIGNED, s2tte.Kind.ASSIGNED_NS):
        if level - 1 < RTT_MIN_BLOCK_LEVEL:
            return None
        size = level_size(level)
        if first.pa & (level_size(level - 1) - 1):
            return None
        for i, e in enumerate(entries):
            if e.kind != first.kind or e.ripas != first.ripas or e.attrs != first.attrs or e.pa != first.pa + i * size:
                return None
        return first
    return None


def rtt_fold(rmm: RmmState, rd: int, ipa: int, level: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, realm.stage2.start_level + 1)
    _check_ipa(realm, ipa, level - 1)
    parent = _parent_walk(realm, ipa, level)
    if parent.entry.kind != s2tte.Kind.TABLE:
        raise fail(RmiStatus.ERROR_RTT, level - 1)
    child = parent.entry.pa
    folded = _fold_entries(realm.stage2.entries(child, level), level)
    if folded is None:
        raise fail(RmiStatus.ERROR_RTT, level)
    realm.stage2.write(parent.rtt, parent.index, folded, level - 1)
    rmm.invalidate(realm, ipa, level_size(level - 1))
    rmm.scrub(child)
    rmm.set_granule_state(child, GranuleState.DELEGATED)
    return (child,)


def rtt_map_unprotected(rmm: RmmState, rd: int, ipa: int, level: int, desc: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, max(RTT_MIN_BLOCK_LEVEL, realm.stage2.start_level))
    _check_ipa(realm, ipa, level)
    if realm.addr_in_par(ipa) or not s2tte.host_ns_desc_is_valid(desc, level):
        raise fail(RmiStatus.ERROR_INPUT)
    walk = realm.stage2.walk(ipa, level)
    if walk.level < level:
        raise fail(RmiStatus.ERROR_RTT, walk.level)
    if walk.entry.kind != s2tte.Kind.UNASSIGNED_NS:
        raise fail(RmiStatus.ERROR_RTT, level)
    entry = s2tte.Entry(
        s2tte.Kind.ASSIGNED_NS, RmiRipas.EMPTY, desc & s2tte.OA_MASK, desc & (s2tte.MEMATTR_MASK | s2tte.S2AP_MASK)
    )
    realm.stage2.write(walk.rtt, walk.index, entry, level)
    return ()


def rtt_unmap_unprotected(rmm: RmmState, rd: int, ipa: int, level: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, max(RTT_MIN_BLOCK_LEVEL, realm.stage2.start_level))
    _check_ipa(realm, ipa, level)
    if realm.addr_in_par(ipa):
        raise fail(RmiStatus.ERROR_INPUT)
    walk = realm.stage2.walk(ipa, level)
    top = realm.stage2.next_live(ipa, walk.level, realm.ipa_size)
    if walk.level < level:
        raise fail(RmiStatus.ERROR_RTT, walk.level, top)
    if walk.entry.kind != s2tte.Kind.ASSIGNED_NS:
        raise fail(RmiStatus.ERROR_RTT, level, top)
    realm.stage2.write(walk.rtt, walk.index, s2tte.UNASSIGNED_NS, level)
    rmm.invalidate(realm, ipa, level_size(level))
    return (top,)


def rtt_read_entry(rmm: RmmState, rd: int, ipa: int, level: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    _check_rtt_level(realm, level, realm.stage2.start_level)
    _check_ipa(realm, ipa, level)
    walk = realm.stage2.walk(ipa, level)
    entry = walk.entry
    ripas = entry.ripas if entry.kind in (s2tte.Kind.UNASSIGNED, s2tte.Kind.ASSIGNED) else RmiRipas.EMPTY
    return (walk.level, entry.state(), s2tte.readable_desc(entry), ripas)


# --- RIPAS ------------------------------------------------------------------------------
def rtt_init_ripas(rmm: RmmState, rd: int, base: int, top: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    if realm.state != RealmState.NEW:
        raise fail(RmiStatus.ERROR_REALM)
    if not (is_granule_aligned(base) and is_granule_aligned(top)) or top <= base:
        raise fail(RmiStatus.ERROR_INPUT)
    if not realm.addr_in_par(top - GRANULE_SIZE):
        raise fail(RmiStatus.ERROR_INPUT)
    walk = realm.stage2.walk(base, RTT_PAGE_LEVEL)
    level = walk.level
    size = level_size(level)
    if level < RTT_MIN_BLOCK_LEVEL or base & (size - 1):
        raise fail(RmiStatus.ERROR_RTT, level)
    # The rest of the RTT is read and written back in one access each, not entry by entry.
    first = walk.index
    table = bytearray(realm.stage2.read_span(walk.rtt, first))
    ram = s2tte.encode(s2tte.unassigned(RmiRipas.RAM), level)
    empty = s2tte.encode(s2tte.unassigned(RmiRipas.EMPTY), level)
    addr, index = base, first
    while index < S2TTES_PER_RTT and addr + size <= top:
        off = 8 * (index - first)
        raw = int.from_bytes(table[off : off + 8], "little")
        if raw not in (ram, empty):
            entry = s2tte.decode(raw, level)
            if entry.kind != s2tte.Kind.UNASSIGNED or entry.ripas == RmiRipas.DESTROYED:
                break
            raw = empty if entry.ripas == RmiRipas.EMPTY else ram
        if raw == empty:
            table[off : off + 8] = ram.to_bytes(8, "little")
        realm.rim = measurement.extend_ripas(realm.rim, realm.hash_algo, addr, addr + size)
        addr += size
        index += 1
    if addr == base:
        raise fail(RmiStatus.ERROR_RTT, level)
    realm.stage2.write_span(walk.rtt, first, bytes(table[: 8 * (index - first)]))
    return (addr,)


def rtt_set_ripas(rmm: RmmState, rd: int, rec: int, base: int, top: int) -> tuple[int, ...]:
    realm = rmm.realm_of(rd)
    obj = rmm.rec_of(rec)
    if obj.rd != rd or obj.running:
        raise fail(RmiStatus.ERROR_REC)
    req = obj.ripas_request
    if obj.pending != PendingKind.RIPAS_CHANGE or req is None:
        # No request in flight: TF-RMM compares base with the (empty) request and fails the input.
        raise fail(RmiStatus.ERROR_INPUT)
    if not (is_granule_aligned(base) and is_granule_aligned(top)) or top <= base:
        raise fail(RmiStatus.ERROR_INPUT)
    if base != req.addr or top > req.top:
        raise fail(RmiStatus.ERROR_INPUT)
    walk = realm.stage2.walk(base, RTT_PAGE_LEVEL)
    level = walk.level
    size = level_size(level)
    if base & (size - 1):
        raise fail(RmiStatus.ERROR_RTT, level)
    addr, index = base, walk.index
    while index < S2TTES_PER_RTT and addr + size <= top:
        entry = s2tte.decode(realm.stage2.read_raw(walk.rtt, index), level)
        if entry.kind not in (s2tte.Kind.UNASSIGNED, s2tte.Kind.ASSIGNED):
            break
        if entry.ripas == RmiRipas.DESTROYED and not req.change_destroyed:
            break
        if entry.kind == s2tte.Kind.UNASSIGNED:
            new = s2tte.unassigned(req.ripas)
        else:
            new = s2tte.assigned(req.ripas, entry.pa)
        realm.stage2.write(walk.rtt, index, new, level)
        if entry.kind == s2tte.Kind.ASSIGNED and entry.ripas == RmiRipas.RAM and req.ripas != RmiRipas.RAM:
            rmm.invalidate(realm, addr, size)
        addr += size
        index += 1
    if addr == base:
        raise fail(RmiStatus.ERROR_RTT, level)
    req.addr = addr
    return (addr,)
