"""The RMM: command dispatch over one declarative table per ABI (RMI, RSI, PSCI).

The RMM runs in the realm world (R-EL2). The host reaches it only through RMI SMCs routed
by the EL3 monitor; a realm reaches it only through the SMCs its RECs make (RSI and PSCI).
Each table row names a command's FID, how many argument registers it reads, how many result
registers it writes, and its handler. The layers run one way: this dispatch imports the
handlers (rmi, rsi, psci, run), which import the objects below them (state, realm, rtt).

- RMI results come from a zeroed result set: X1..X4 are the command's results, or zero
  (also on failure, except the outputs a failure defines, such as DATA_DESTROY's top).
- Realm calls keep the SMCCC rule: registers a command does not define keep their values.
No Python exception crosses the SMC boundary: a handler reports failure with RmiError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from unirealm.arch.rmi import RMI_ARGS, RMI_RESULTS, RmiFid, RmiStatus, pack_status
from unirealm.arch.rsi import RSI_ARGS, RSI_RESULTS, RsiFid
from unirealm.arch.smccc import MASK64, NUM_ARG_REGS, SMCCC_NOT_SUPPORTED, PsciFid
from unirealm.machine.monitor import Monitor

from . import psci, rmi, rsi, run
from .realm import Rec
from .rtt import WALK_EPOCH
from .state import REC_AUX_COUNT, EngineFactory, RmiError, RmmConfig, RmmState, default_engine

__all__ = ["REC_AUX_COUNT", "EngineFactory", "RmiError", "Rmm", "RmmConfig", "default_engine"]

# RMI results live in X1..X4 (TF-RMM's smc_result): at most four per command.
RMI_RESULT_REGS = 4
RMI_SUCCESS = pack_status(RmiStatus.SUCCESS)


@dataclass(frozen=True)
class RmiCommand:
    fid: RmiFid
    handler: Callable[..., tuple[int, ...]]

    @cached_property
    def nargs(self) -> int:
        return len(RMI_ARGS[self.fid])

    @cached_property
    def nresults(self) -> int:
        return len(RMI_RESULTS.get(self.fid, ()))


@dataclass(frozen=True)
class RealmCommand:
    """An RSI or PSCI command: its handler gets (rmm, rec, x0..x<nargs>) and returns x0.. or a RecExit."""

    fid: int
    nargs: int
    nresults: int  # x0 included
    handler: Callable[[RmmState, Rec, list[int]], list[int] | run.RecExit]


def _rsi(fid: RsiFid, handler: Callable[[RmmState, Rec, list[int]], list[int] | run.RecExit]) -> RealmCommand:
    return RealmCommand(fid, len(RSI_ARGS[fid]), 1 + len(RSI_RESULTS.get(fid, ())), handler)


RMI_TABLE: tuple[RmiCommand, ...] = (
    RmiCommand(RmiFid.VERSION, rmi.rmi_version),
    RmiCommand(RmiFid.FEATURES, rmi.rmi_features),
    RmiCommand(RmiFid.GRANULE_DELEGATE, rmi.granule_delegate),
    RmiCommand(RmiFid.GRANULE_UNDELEGATE, rmi.granule_undelegate),
    RmiCommand(RmiFid.REALM_CREATE, rmi.realm_create),
    RmiCommand(RmiFid.REALM_DESTROY, rmi.realm_destroy),
    RmiCommand(RmiFid.REALM_ACTIVATE, rmi.realm_activate),
    RmiCommand(RmiFid.REC_CREATE, rmi.rec_create),
    RmiCommand(RmiFid.REC_DESTROY, rmi.rec_destroy),
    RmiCommand(RmiFid.REC_ENTER, run.enter),
    RmiCommand(RmiFid.DATA_CREATE, rmi.data_create),
    RmiCommand(RmiFid.DATA_CREATE_UNKNOWN, rmi.data_create_unknown),
    RmiCommand(RmiFid.DATA_DESTROY, rmi.data_destroy),
    RmiCommand(RmiFid.RTT_CREATE, rmi.rtt_create),
    RmiCommand(RmiFid.RTT_DESTROY, rmi.rtt_destroy),
    RmiCommand(RmiFid.RTT_FOLD, rmi.rtt_fold),
    RmiCommand(RmiFid.RTT_MAP_UNPROTECTED, rmi.rtt_map_unprotected),
    RmiCommand(RmiFid.RTT_UNMAP_UNPROTECTED, rmi.rtt_unmap_unprotected),
    RmiCommand(RmiFid.RTT_READ_ENTRY, rmi.rtt_read_entry),
    RmiCommand(RmiFid.PSCI_COMPLETE, rmi.psci_complete),
    RmiCommand(RmiFid.REC_AUX_COUNT, rmi.rec_aux_count),
    RmiCommand(RmiFid.RTT_INIT_RIPAS, rmi.rtt_init_ripas),
    RmiCommand(RmiFid.RTT_SET_RIPAS, rmi.rtt_set_ripas),
)

RSI_TABLE: tuple[RealmCommand, ...] = (
    _rsi(RsiFid.VERSION, rsi.rsi_version),
    _rsi(RsiFid.FEATURES, rsi.rsi_features),
    _rsi(RsiFid.MEASUREMENT_READ, rsi.measurement_read),
    _rsi(RsiFid.MEASUREMENT_EXTEND, rsi.measurement_extend),
    _rsi(RsiFid.ATTESTATION_TOKEN_INIT, rsi.token_init),
    _rsi(RsiFid.ATTESTATION_TOKEN_CONTINUE, rsi.token_continue),
    _rsi(RsiFid.REALM_CONFIG, rsi.realm_config),
    _rsi(RsiFid.IPA_STATE_SET, rsi.ipa_state_set),
    _rsi(RsiFid.IPA_STATE_GET, rsi.ipa_state_get),
    _rsi(RsiFid.HOST_CALL, rsi.host_call),
)

# PSCI 1.1 as a realm sees it (DEN0022; digest §1.4): the SMC32 and SMC64 forms share a handler.
PSCI_TABLE: tuple[RealmCommand, ...] = (
    RealmCommand(PsciFid.VERSION, 0, 1, psci.psci_version),
    RealmCommand(PsciFid.FEATURES, 1, 1, psci.psci_features),
    RealmCommand(PsciFid.CPU_SUSPEND, 3, 1, psci.cpu_suspend),
    RealmCommand(PsciFid.CPU_SUSPEND_64, 3, 1, psci.cpu_suspend),
    RealmCommand(PsciFid.CPU_OFF, 3, 1, psci.cpu_off),
    RealmCommand(PsciFid.CPU_ON, 3, 1, psci.cpu_on),
    RealmCommand(PsciFid.CPU_ON_64, 3, 1, psci.cpu_on),
    RealmCommand(PsciFid.AFFINITY_INFO, 2, 1, psci.affinity_info),
    RealmCommand(PsciFid.AFFINITY_INFO_64, 2, 1, psci.affinity_info),
    RealmCommand(PsciFid.SYSTEM_OFF, 3, 1, psci.system_off),
    RealmCommand(PsciFid.SYSTEM_RESET, 3, 1, psci.system_reset),
)

RMI_COMMANDS: dict[int, RmiCommand] = {c.fid: c for c in RMI_TABLE}
# The table as the dispatch reads it per call: FID -> (handler, argument count, result count).
_RMI_DISPATCH: dict[int, tuple[Callable[..., tuple[int, ...]], int, int]] = {
    int(c.fid): (c.handler, c.nargs, c.nresults) for c in RMI_TABLE
}
_ZERO_RESULTS = [0] * RMI_RESULT_REGS
REALM_COMMANDS: dict[int, RealmCommand] = {c.fid: c for c in (*RSI_TABLE, *PSCI_TABLE)}


class Rmm(RmmState):
    """The Realm Management Monitor: its state plus the SMC entry points the monitor calls."""

    def __init__(
        self, monitor: Monitor, config: RmmConfig | None = None, engine_factory: EngineFactory | None = None
    ) -> None:
        super().__init__(monitor, config, engine_factory)
        monitor.attach_rmm(self)  # the monitor routes RMI and realm calls here from now on

    def handle_rmi(self, regs: list[int]) -> list[int]:
        """One RMI call: x0 = status | index << 8, X1..X4 from a zeroed result set, and the
        registers above X4 keep their values. An unassigned FID returns NOT_SUPPORTED in x0 only."""
        WALK_EPOCH.current += 1  # no stage-2 walk outlives the call that made it (WalkEpoch.advance)
        row = _RMI_DISPATCH.get(regs[0])
        if row is None:  # an unassigned number in the RMI range: SMCCC's unknown function
            return [SMCCC_NOT_SUPPORTED, *regs[1:]]
        handler, nargs, nresults = row
        try:
            # The five arguments of DATA_CREATE and the one of GRANULE_DELEGATE (a launch makes
            # both per granule) are passed without slicing and unpacking.
            if nargs == 5:
                values = handler(self, regs[1], regs[2], regs[3], regs[4], regs[5])
            elif nargs == 1:
                values = handler(self, regs[1])
            else:
                values = handler(self, *regs[1 : 1 + nargs])
            status = RMI_SUCCESS
        except RmiError as err:
            values = err.outputs
            status = pack_status(err.status, err.index)
        if not values:  # most commands return nothing: X1..X4 are zero, the rest as they came
            out = regs[:]
            out[0] = status
            out[1 : 1 + RMI_RESULT_REGS] = _ZERO_RESULTS
            return out
        assert len(values) <= nresults, f"{regs[0]:#x} gave {len(values)} results"
        results = [v & MASK64 for v in values]
        results += _ZERO_RESULTS[len(results) :]
        return [status, *results, *regs[1 + RMI_RESULT_REGS :]]

    def handle_realm_call(self, regs: list[int]) -> list[int] | object:
        """An SMC made by the REC now running: RSI or PSCI. Returns the registers the realm
        sees, or a RecExit request that ends REC_ENTER."""
        rec = self.current_rec
        command = REALM_COMMANDS.get(regs[0])
        if rec is None or command is None:
            return [SMCCC_NOT_SUPPORTED, *regs[1:]]
        result = command.handler(self, rec, list(regs[: 1 + command.nargs]))
        if isinstance(result, list):
            assert len(result) <= command.nresults, f"{regs[0]:#x} gave {len(result)} results"
            # Registers the command does not define keep their input values (SMCCC; digest §1.1).
            out = list(regs[:NUM_ARG_REGS])
            for i, value in enumerate(result):
                out[i] = value & MASK64
            return out
        return result
