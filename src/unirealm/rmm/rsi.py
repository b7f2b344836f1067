"""RSI command handlers, one per command of DEN0137 1.0-rel0 (digest §1.4).

A handler gets the RMM, the calling REC and the SMC's registers (x0 = FID). It returns the
result registers from x0 up (registers it does not list keep their values), or a RecExit
when the call needs the host (IPA_STATE_SET, HOST_CALL, and stage-2 faults on the buffers
the realm names, which retry once the host has mapped them).
"""

from __future__ import annotations

from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE, is_granule_aligned, level_size
from unirealm.arch.rmi import RmiRecExitReason, RmiRipas
from unirealm.arch.rsi import (
    MAX_MEASUREMENT_SIZE,
    MEASUREMENT_SLOTS,
    RSI_ABI_VERSION,
    RSI_HOST_CALL,
    RSI_HOST_CALL_ALIGN,
    RSI_REALM_CONFIG,
    RsiRipas,
    RsiStatus,
    bytes_to_regs,
    regs_to_bytes,
)

from . import attestation, measurement
from .realm import PendingKind, Realm, Rec, RipasRequest
from .run import RecExit, stage2_abort_exit
from .state import RmmState

Result = list[int] | RecExit


def realm_buffer(rmm: RmmState, realm: Realm, rec: Rec, ipa: int) -> int | RecExit | None:
    """PA of a realm buffer at a protected IPA; a retrying stage-2 abort exit when its RIPAS
    is RAM but the host has not mapped it; None when the RSI call must fail with ERROR_INPUT
    (outside the PAR, or RIPAS EMPTY / DESTROYED)."""
    if not realm.addr_in_par(ipa):
        return None
    mapping = rmm.stage2_translate(realm, ipa & ~GRANULE_MASK)
    if mapping is not None:
        return mapping.pa + (ipa & GRANULE_MASK)
    ripas, _, level = rmm.ripas_at(realm, ipa)
    if ripas != RmiRipas.RAM:
        return None
    rec.engine.pc = rec.engine.pc - 4  # re-execute the SMC after the host has mapped the page
    return stage2_abort_exit(ipa, level)


def _error(status: RsiStatus) -> list[int]:
    return [status]


def rsi_version(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    status = RsiStatus.SUCCESS if regs[1] == RSI_ABI_VERSION else RsiStatus.ERROR_INPUT
    return [status, RSI_ABI_VERSION, RSI_ABI_VERSION]


def rsi_features(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    return [RsiStatus.SUCCESS, 0]  # RSI 1.0 defines no feature bits


def measurement_read(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    index = regs[1]
    if index >= MEASUREMENT_SLOTS:
        return _error(RsiStatus.ERROR_INPUT)
    realm = rmm.realms[rec.rd]
    return [RsiStatus.SUCCESS, *bytes_to_regs(realm.measurements[index])]


def measurement_extend(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    index, size = regs[1], regs[2]
    if index == 0 or index >= MEASUREMENT_SLOTS or size > MAX_MEASUREMENT_SIZE:
        return _error(RsiStatus.ERROR_INPUT)
    realm = rmm.realms[rec.rd]
    value = regs_to_bytes(regs[3:11])[:size]
    realm.measurements[index] = measurement.rem_extend(realm.measurements[index], realm.hash_algo, value)
    return [RsiStatus.SUCCESS]


def token_init(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    realm = rmm.realms[rec.rd]
    try:
        rec.attestation = attestation.TokenState.start(rmm, realm, regs_to_bytes(regs[1:9]))
    except attestation.AttestationError:
        rec.attestation = None
        return _error(RsiStatus.ERROR_UNKNOWN)
    return [RsiStatus.SUCCESS, rec.attestation.upper_bound]


def token_continue(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    ipa, offset, size = regs[1], regs[2], regs[3]
    realm = rmm.realms[rec.rd]
    if not is_granule_aligned(ipa) or offset >= GRANULE_SIZE or size > GRANULE_SIZE - offset:
        return _error(RsiStatus.ERROR_INPUT)
    state = rec.attestation
    if state is None:
        return _error(RsiStatus.ERROR_STATE)
    pa = realm_buffer(rmm, realm, rec, ipa)
    if pa is None:
        return _error(RsiStatus.ERROR_INPUT)
    if isinstance(pa, RecExit):
        return pa
    if not state.signed:
        if rmm.pending_irq:
            # An interrupt arrived while signing: exit; the realm sees INCOMPLETE and calls again.
            rmm.pending_irq = False
            rec.pending = PendingKind.TOKEN_IRQ
            return RecExit(RmiRecExitReason.IRQ)
        try:
            state.step()
        except attestation.AttestationError:
            rec.attestation = None
            return _error(RsiStatus.ERROR_UNKNOWN)
        return [RsiStatus.INCOMPLETE, 0]
    chunk = state.take(size)
    if chunk:
        rmm.mem.write(pa + offset, chunk)
    if state.remaining:
        return [RsiStatus.INCOMPLETE, len(chunk)]
    rec.attestation = None
    return [RsiStatus.SUCCESS, len(chunk)]


def realm_config(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    ipa = regs[1]
    realm = rmm.realms[rec.rd]
    if not is_granule_aligned(ipa):
        return _error(RsiStatus.ERROR_INPUT)
    pa = realm_buffer(rmm, realm, rec, ipa)
    if pa is None:
        return _error(RsiStatus.ERROR_INPUT)
    if isinstance(pa, RecExit):
        return pa
    # Only ipa_width, hash_algo and the RPV are written; other bytes are left alone.
    for name, value in (("ipa_width", realm.ipa_width), ("hash_algo", realm.hash_algo), ("rpv", realm.rpv)):
        f = RSI_REALM_CONFIG[name]
        rmm.mem.write(pa + f.offset, RSI_REALM_CONFIG.pack(**{name: value})[f.offset : f.offset + f.size])
    return [RsiStatus.SUCCESS]


def ipa_state_set(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    base, top, ripas, flags = regs[1], regs[2], regs[3], regs[4]
    realm = rmm.realms[rec.rd]
    if ripas > RsiRipas.RAM:
        return _error(RsiStatus.ERROR_INPUT)
    if not (is_granule_aligned(base) and is_granule_aligned(top)) or not realm.range_in_par(base, top):
        return _error(RsiStatus.ERROR_INPUT)
    rec.ripas_request = RipasRequest(base, top, RmiRipas(ripas), bool(flags & 1), base)
    rec.pending = PendingKind.RIPAS_CHANGE
    return RecExit(RmiRecExitReason.RIPAS_CHANGE, ripas_base=base, ripas_top=top, ripas_value=ripas)


def ipa_state_get(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    base, end = regs[1], regs[2]
    realm = rmm.realms[rec.rd]
    if not (is_granule_aligned(base) and is_granule_aligned(end)) or not realm.range_in_par(base, end):
        return _error(RsiStatus.ERROR_INPUT)
    ripas, _, level = rmm.ripas_at(realm, base)
    addr = (base // level_size(level) + 1) * level_size(level)
    while addr < end:
        next_ripas, _, level = rmm.ripas_at(realm, addr)
        if next_ripas != ripas:
            break
        addr = (addr // level_size(level) + 1) * level_size(level)
    return [RsiStatus.SUCCESS, min(addr, end), ripas]


def host_call(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    ipa = regs[1]
    realm = rmm.realms[rec.rd]
    if ipa % RSI_HOST_CALL_ALIGN:
        return _error(RsiStatus.ERROR_INPUT)
    pa = realm_buffer(rmm, realm, rec, ipa)
    if pa is None:
        return _error(RsiStatus.ERROR_INPUT)
    if isinstance(pa, RecExit):
        return pa
    call = RSI_HOST_CALL.unpack(rmm.mem.read(pa, RSI_HOST_CALL.size))
    rec.host_call_ipa = ipa
    rec.pending = PendingKind.HOST_CALL
    return RecExit(RmiRecExitReason.HOST_CALL, imm=call["imm"], gprs=list(call["gprs"]))
