"""The EL3 monitor: routes SMCs by the caller's world and owns the GPT.

- From the non-secure host (NS-EL2): RMI function IDs go to the RMM; SMCCC_VERSION and
  SMCCC_ARCH_FEATURES are answered here; anything else is NOT_SUPPORTED.
- From a realm (R-EL1; the RMM traps the realm's SMC and hands it over): RSI and PSCI go to
  the RMM's realm-call handler; the SMCCC arch calls are answered here.
- From the RMM (R-EL2): the RMM-EL3 interface — granule transitions between the
  non-secure and realm PAS (GTSI) and the attestation services of the platform root of trust.

Every call carries registers in and registers out (x0..x17 in, x0..x17 out with the
SMCCC rule that undefined results keep their input values). `trace`, when set, receives one
line per RMI/RSI call with its decoded arguments and result.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

from unirealm.arch import rmi, rsi
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SHIFT, Pas, World
from unirealm.arch.smccc import (
    MASK64,
    NUM_ARG_REGS,
    SMCCC_ARCH_FEATURES,
    SMCCC_NOT_SUPPORTED,
    SMCCC_VERSION,
    SMCCC_VERSION_1_2,
    RmmEl3Fid,
    RmmEl3Status,
    fid_number,
    is_psci,
    strip_sve_hint,
)

from .memory import PhysicalMemory
from .platform import PlatformRoT


class Caller(IntEnum):
    NS_EL2 = 0  # the host hypervisor
    R_EL2 = 1  # the RMM
    R_EL1 = 2  # a realm (its SMC trapped by the RMM)


class RealmWorldFirmware(Protocol):
    """What the monitor needs of the RMM."""

    def handle_rmi(self, regs: list[int]) -> list[int]: ...

    def handle_realm_call(self, regs: list[int]) -> list[int] | object: ...


_NS_EL2, _R_EL2 = Caller.NS_EL2, Caller.R_EL2
_GTSI_DELEGATE, _GTSI_UNDELEGATE = int(RmmEl3Fid.GTSI_DELEGATE), int(RmmEl3Fid.GTSI_UNDELEGATE)
_MASK64_AND = MASK64.__and__
_PAS_NS, _PAS_REALM, _ROOT, _EL3_OK = Pas.NON_SECURE, Pas.REALM, World.ROOT, RmmEl3Status.OK
_ZERO_REGS = [0] * NUM_ARG_REGS
_SMCCC_ARCH = frozenset((SMCCC_VERSION, SMCCC_ARCH_FEATURES))
_SMC64_STANDARD_SECURE = 0xC400_0000  # fast call, SMC64, OEN 4 (standard secure service)
_RMI_FIRST, _RMI_LAST = rmi.RMI_FNUM_FIRST, rmi.RMI_FNUM_LAST
# is_rmi(fid) for a 32-bit FID as one membership test of a range (a C-level comparison)
_RMI_FIDS = range(_SMC64_STANDARD_SECURE | _RMI_FIRST, (_SMC64_STANDARD_SECURE | _RMI_LAST) + 1)


def is_rmi(fid: int) -> bool:
    return (fid & 0xFFFF_0000) == _SMC64_STANDARD_SECURE and rmi.RMI_FNUM_FIRST <= fid_number(fid) <= rmi.RMI_FNUM_LAST


def is_rsi(fid: int) -> bool:
    return (fid & 0xFFFF_0000) == _SMC64_STANDARD_SECURE and rsi.RSI_FNUM_FIRST <= fid_number(fid) <= rsi.RSI_FNUM_LAST


def _fmt(names: tuple[str, ...], values: list[int]) -> str:
    return " ".join(f"{n}={v:#x}" for n, v in zip(names, values, strict=False))


def describe_rmi(regs: list[int], out: list[int]) -> str:
    fid = regs[0]
    try:
        cmd = rmi.RmiFid(fid)
    except ValueError:
        return f"RMI {fid:#x} -> {out[0]:#x}"
    status = out[0]
    try:
        status_text = rmi.status_of(status).name
    except ValueError:
        status_text = f"{status:#x}"
    if rmi.index_of(status):
        status_text += f"({rmi.index_of(status)})"
    args = _fmt(rmi.RMI_ARGS.get(cmd, ()), regs[1:])
    results = _fmt(rmi.RMI_RESULTS.get(cmd, ()), out[1:]) if status & 0xFF == 0 else ""
    return f"RMI_{cmd.name}({args}) -> {status_text} {results}".rstrip()


def describe_rsi(regs: list[int], out: list[int] | object) -> str:
    fid = regs[0]
    try:
        cmd = rsi.RsiFid(fid)
    except ValueError:
        return f"SMC {fid:#x}"
    args = _fmt(rsi.RSI_ARGS.get(cmd, ()), regs[1:])
    if not isinstance(out, list):
        return f"RSI_{cmd.name}({args}) -> REC exit"
    try:
        status_text = rsi.RsiStatus(out[0]).name
    except ValueError:
        status_text = f"{out[0]:#x}"
    results = _fmt(rsi.RSI_RESULTS.get(cmd, ()), out[1:]) if out[0] == 0 else ""
    return f"RSI_{cmd.name}({args}) -> {status_text} {results}".rstrip()


def _registers(regs: list[int] | tuple[int, ...]) -> list[int]:
    """x0..x17 of an SMC as 64-bit values: the first NUM_ARG_REGS, the missing ones zero."""
    for reg in regs:  # registers are 64-bit: a value outside takes the masking path
        if reg < 0 or reg > MASK64:
            args = list(map(_MASK64_AND, regs[:NUM_ARG_REGS]))
            break
    else:
        args = [*regs, *_ZERO_REGS[len(regs) :]] if len(regs) <= NUM_ARG_REGS else [*regs[:NUM_ARG_REGS]]
    if len(args) < NUM_ARG_REGS:
        args += _ZERO_REGS[len(args) :]
    return args


class Monitor:
    """EL3 firmware: SMC routing, the GPT, and the path to the root of trust."""

    def __init__(self, memory: PhysicalMemory, rot: PlatformRoT | None) -> None:
        self.memory = memory
        self.rot = rot
        self.rmm: RealmWorldFirmware | None = None
        self.trace: Callable[[str], None] | None = None

    def attach_rmm(self, rmm: RealmWorldFirmware) -> None:
        self.rmm = rmm

    # --- the SMC conduit ----------------------------------------------------------------
    def smc(self, caller: Caller, regs: list[int] | tuple[int, ...]) -> list[int] | object:
        """One SMC: x0..x17 in; registers out (or, for a realm call, a REC exit request)."""
        if caller == _NS_EL2:
            return self.host_call(*regs)
        if caller == _R_EL2:
            return self.rmm_call(*regs)
        args = _registers(regs)
        fid = args[0] = strip_sve_hint(args[0])
        if fid in _SMCCC_ARCH:
            return self._smccc_arch(args)
        if (is_rsi(fid) or is_psci(fid)) and self.rmm is not None:
            result = self.rmm.handle_realm_call(args)
            if self.trace is not None and is_rsi(fid):
                self.trace(describe_rsi(args, result))
            return result
        return self._not_supported(args)

    def rmm_call(self, *regs: int) -> list[int]:
        """One SMC from the RMM (R-EL2), the RMM-EL3 interface: `smc(R_EL2, regs)` as its own
        entry, since every GRANULE_DELEGATE and GRANULE_UNDELEGATE makes one (GTSI)."""
        args = _registers(regs)
        fid = args[0] = args[0] & 0xFFFF_FFFF
        if fid in (_GTSI_DELEGATE, _GTSI_UNDELEGATE):
            return [self._gtsi(args[1], delegate=fid == _GTSI_DELEGATE) & MASK64, *args[1:]]  # x0: a 64-bit status
        if fid in _SMCCC_ARCH:
            return self._smccc_arch(args)
        return self._not_supported(args)

    def host_call(self, *regs: int) -> list[int]:
        """One SMC from the host hypervisor (NS-EL2), x0..x17 in and out: `smc(NS_EL2, regs)`
        as its own entry, since every RMI call takes it (Machine.host_smc is this method)."""
        args = _registers(regs)
        fid = args[0] = args[0] & 0xFFFF_FFFF
        if fid in _RMI_FIDS:
            rmm = self.rmm
            if rmm is not None:
                out = rmm.handle_rmi(args)
                if self.trace is not None:
                    line = describe_rmi(args, out)
                    if fid == rmi.RmiFid.REC_ENTER and out[0] == 0:
                        line += f" exit={self._exit_reason(args[2])}"
                    self.trace(line)
                return out
            return self._not_supported(args)
        if fid in _SMCCC_ARCH:
            return self._smccc_arch(args)
        return self._not_supported(args)

    def _exit_reason(self, run_pa: int) -> str:
        """The exit reason the RMM wrote into the host's run granule, for the trace."""
        offset = rmi.RMI_REC_RUN.offset("exit_reason")
        reason = self.memory.accessor(World.NON_SECURE).read_u64(run_pa + offset)
        try:
            return rmi.RmiRecExitReason(reason).name
        except ValueError:
            return hex(reason)

    def _not_supported(self, args: list[int]) -> list[int]:
        return [SMCCC_NOT_SUPPORTED, *args[1:]]

    def _smccc_arch(self, args: list[int]) -> list[int]:
        if args[0] == SMCCC_VERSION:
            return [SMCCC_VERSION_1_2, *args[1:]]
        target = args[1] & 0xFFFF_FFFF
        supported = target in (SMCCC_VERSION, SMCCC_ARCH_FEATURES)
        return [0 if supported else SMCCC_NOT_SUPPORTED, *args[1:]]

    # --- RMM-EL3 interface --------------------------------------------------------------
    def _gtsi(self, pa: int, delegate: bool) -> int:
        """Granule transition NS <-> Realm. Refused for any other PAS."""
        memory = self.memory
        off = pa - memory.base  # memory.contains(pa, GRANULE_SIZE) inline
        if pa & GRANULE_MASK or off < 0 or off + GRANULE_MASK >= memory.size:
            return RmmEl3Status.BAD_ADDR
        want_from, want_to = (_PAS_NS, _PAS_REALM) if delegate else (_PAS_REALM, _PAS_NS)
        if memory._gpt[off >> GRANULE_SHIFT] != want_from:  # the GPT is the monitor's
            return RmmEl3Status.BAD_PAS
        memory.set_pas(_ROOT, pa, want_to)
        return _EL3_OK

    def attest_platform_token(self, challenge: bytes) -> bytes:
        """RMM_ATTEST_GET_PLAT_TOKEN: the root of trust signs a platform token."""
        if self.rot is None:
            raise RuntimeError("this platform has no root of trust")
        return self.rot.platform_token(challenge)
