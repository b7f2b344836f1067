"""The RMM's state below its command handlers: granules, realms, RECs, and the realm's view of stage 2.

The RMM runs in the realm world (R-EL2). The host reaches it only through RMI SMCs routed
by the EL3 monitor; a realm reaches it only through the SMCs its RECs make (RSI and PSCI).
Every handler validates its arguments and returns the spec's status (with the RMI index);
no Python exception crosses the SMC boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unirealm.arch.memory import GRANULE_MASK, GRANULE_SHIFT, GRANULE_SIZE, Pas, World
from unirealm.arch.rmi import GranuleState, RmiRipas, RmiStatus, feat_reg0_pack
from unirealm.arch.smccc import RmmEl3Fid, RmmEl3Status
from unirealm.arch.token import PROFILE_REALM_1_0, TAG_CCA_TOKEN_COLLECTION
from unirealm.machine.cpu import Cpu
from unirealm.machine.monitor import Monitor
from unirealm.machine.vcpu import El2Context, Mapping

from . import s2tte, vgic
from .realm import ExecutionEngine, Realm, Rec

REC_AUX_COUNT = 16
MAX_RECS_ORDER = 10
SUPPORTED_S2SZ = 48
NUM_BPS = 6
NUM_WPS = 4
GICV3_NUM_LRS = vgic.NUM_LRS  # the list registers of a REC's virtual CPU interface
_UNDELEGATED, _RD, _PAS_NS = GranuleState.UNDELEGATED, GranuleState.RD, Pas.NON_SECURE
_EL3_OK = int(RmmEl3Status.OK)
_GTSI_DELEGATE, _GTSI_UNDELEGATE = int(RmmEl3Fid.GTSI_DELEGATE), int(RmmEl3Fid.GTSI_UNDELEGATE)


@dataclass
class RmmConfig:
    """Build-time choices of this RMM (TF-RMM makes the same ones at compile time)."""

    token_format: int = TAG_CCA_TOKEN_COLLECTION  # 399, or 907 for the CMW collection
    realm_profile: str = PROFILE_REALM_1_0  # or PROFILE_REALM_2_0, the claims RMM 2.0 writes
    cpu_model: str = "max"


class RmiError(Exception):
    """Raised inside a handler to return a status; caught at the dispatch boundary."""

    def __init__(self, status: RmiStatus, index: int = 0, outputs: tuple[int, ...] = ()) -> None:
        super().__init__(status.name)
        self.status = status
        self.index = index
        self.outputs = outputs


EngineFactory = Callable[["RmmState", Realm, int], ExecutionEngine]


def default_engine(rmm: RmmState, realm: Realm, index: int) -> ExecutionEngine:
    # The EL3/EL2 context TF-RMM gives a REC: realm world, ID registers and SVE trapped.
    context = El2Context(World.REALM, trap_id_registers=True, trap_sve=True)
    return Cpu(rmm.monitor.memory, lambda ipa, w, f: rmm.stage2_translate(realm, ipa), rmm.config.cpu_model, context)


class RmmState:
    """What the RMM knows: granule states, realms and RECs, and its build-time features.

    The command handlers (rmi, rsi, psci, run) work on it; core.Rmm adds the SMC dispatch."""

    feat_reg0 = feat_reg0_pack(
        S2SZ=SUPPORTED_S2SZ,
        NUM_BPS=NUM_BPS - 1,
        NUM_WPS=NUM_WPS - 1,
        HASH_SHA_256=1,
        HASH_SHA_512=1,
        GICV3_NUM_LRS=GICV3_NUM_LRS - 1,
        MAX_RECS_ORDER=MAX_RECS_ORDER,
    )

    def __init__(
        self, monitor: Monitor, config: RmmConfig | None = None, engine_factory: EngineFactory | None = None
    ) -> None:
        self.monitor = monitor
        self.config = config or RmmConfig()
        self.engine_factory = engine_factory or default_engine
        memory = monitor.memory
        self.mem = memory.accessor(World.REALM)
        self._granules = bytearray(memory.size >> GRANULE_SHIFT)
        self._mem_base, self._mem_size, self._gpt = memory.base, memory.size, memory._gpt
        self.realms: dict[int, Realm] = {}
        self.recs: dict[int, Rec] = {}
        self.current_rec: Rec | None = None
        self.pending_irq = False  # a physical interrupt for the host is pending

    # --- granules -----------------------------------------------------------------------
    def _granule_index(self, pa: int) -> int | None:
        off = pa - self._mem_base
        if pa & GRANULE_MASK or off < 0 or off >= self._mem_size:
            return None
        return off >> GRANULE_SHIFT

    def granule_state(self, pa: int) -> GranuleState | None:
        """State of a valid granule address, None for an address that names no granule."""
        i = self._granule_index(pa)
        return None if i is None else GranuleState(self._granules[i])

    def set_granule_state(self, pa: int, state: GranuleState) -> None:
        off = pa - self._mem_base
        assert not pa & GRANULE_MASK and 0 <= off < self._mem_size
        self._granules[off >> GRANULE_SHIFT] = state

    def require_granule(self, pa: int, state: GranuleState) -> None:
        off = pa - self._mem_base  # _granule_index inline: every RMI command checks its granules
        if pa & GRANULE_MASK or off < 0 or off >= self._mem_size or self._granules[off >> GRANULE_SHIFT] != state:
            raise RmiError(RmiStatus.ERROR_INPUT)

    def is_ns_granule(self, pa: int) -> bool:
        """A granule the host owns: valid address, UNDELEGATED, and in the non-secure PAS."""
        off = pa - self._mem_base
        if pa & GRANULE_MASK or off < 0 or off >= self._mem_size:
            return False
        i = off >> GRANULE_SHIFT
        return self._granules[i] == _UNDELEGATED and self._gpt[i] == _PAS_NS

    def gtsi(self, pa: int, delegate: bool) -> bool:
        return bool(self.monitor.rmm_call(_GTSI_DELEGATE if delegate else _GTSI_UNDELEGATE, pa)[0] == _EL3_OK)

    def scrub(self, pa: int) -> None:
        """Zero a granule: the DELEGATED state always holds zeros (digest §2.3)."""
        self.mem.zero(pa, GRANULE_SIZE)

    def realm_of(self, rd: int) -> Realm:
        off = rd - self._mem_base  # require_granule(rd, RD) inline: every realm command starts here
        if rd & GRANULE_MASK or off < 0 or off >= self._mem_size or self._granules[off >> GRANULE_SHIFT] != _RD:
            raise RmiError(RmiStatus.ERROR_INPUT)
        return self.realms[rd]

    def rec_of(self, rec: int) -> Rec:
        i = self._granule_index(rec)
        if i is None or self._granules[i] != GranuleState.REC:
            raise RmiError(RmiStatus.ERROR_INPUT)
        return self.recs[rec]

    # --- stage 2 as the realm sees it ---------------------------------------------------
    def stage2_translate(self, realm: Realm, ipa: int) -> Mapping | None:
        if not 0 <= ipa < realm.ipa_size:
            return None
        walk = realm.stage2.walk(ipa)
        entry = walk.entry
        offset = ipa & ((1 << (12 + 9 * (3 - walk.level))) - 1) & ~GRANULE_MASK
        if entry.kind == s2tte.Kind.ASSIGNED and entry.ripas == RmiRipas.RAM and realm.addr_in_par(ipa):
            return Mapping(entry.pa + offset, World.REALM)
        if entry.kind == s2tte.Kind.ASSIGNED_NS and not realm.addr_in_par(ipa):
            # S2AP[0] allows reads, S2AP[1] writes; unprotected memory is never executable.
            readable = bool(entry.attrs & (1 << s2tte.S2AP_SHIFT))
            writable = bool(entry.attrs & (1 << (s2tte.S2AP_SHIFT + 1)))
            return Mapping(entry.pa + offset, World.NON_SECURE, readable=readable, writable=writable, executable=False)
        return None

    def ripas_at(self, realm: Realm, ipa: int) -> tuple[RmiRipas, s2tte.Entry, int]:
        """RIPAS of a protected IPA, the entry that holds it, and that entry's level."""
        walk = realm.stage2.walk(ipa)
        return walk.entry.ripas, walk.entry, walk.level

    def invalidate(self, realm: Realm, ipa: int, size: int) -> None:
        """TLBI for every REC of the realm."""
        for rec_pa in realm.recs.values():
            self.recs[rec_pa].engine.invalidate(ipa, size)
