"""The RMM's objects: the Realm Descriptor (RD) and the Realm Execution Context (REC).

They live in granules the host delegated (their granule state is RD / REC / REC_AUX, and
the GPT puts those granules in the realm PAS); their contents are the RMM's private state,
kept here as Python objects keyed by the granule's PA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.memory import par_size
from unirealm.arch.rmi import RealmState, RmiRipas
from unirealm.arch.rsi import MEASUREMENT_SLOTS
from unirealm.arch.sysreg import SysReg
from unirealm.machine.vcpu import Trap

from .rtt import Stage2
from .vgic import RecInterruptLines, VirtualCpuInterface


class ExecutionEngine(Protocol):
    """What the RMM needs of the thing that executes a REC (see machine.vcpu.VCpu)."""

    def run(self) -> Trap: ...
    def get_gpr(self, n: int) -> int: ...
    def set_gpr(self, n: int, value: int) -> None: ...
    def get_gprs(self, count: int = 31) -> list[int]: ...
    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None: ...
    def skip_instruction(self) -> None: ...
    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None: ...
    def inject_sea(self, far: int, is_fetch: bool = False) -> None: ...
    def inject_undef(self) -> None: ...
    def read_sysreg(self, reg: SysReg) -> int: ...
    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None: ...
    def invalidate(self, ipa: int, size: int) -> None: ...
    def close(self) -> None: ...

    @property
    def pc(self) -> int: ...

    @pc.setter
    def pc(self, value: int) -> None: ...


class PendingKind(Enum):
    """What a REC exit left for the next REC_ENTER to complete (digest §2.2 REC_ENTER)."""

    NONE = "none"
    MMIO = "mmio"  # an emulatable data abort; the host may emulate it
    RIPAS_CHANGE = "ripas_change"  # RSI_IPA_STATE_SET in flight
    HOST_CALL = "host_call"  # RSI_HOST_CALL in flight
    PSCI = "psci"  # a PSCI call the host saw; results come from enter.gprs / PSCI_COMPLETE
    TOKEN_IRQ = "token_irq"  # ATTESTATION_TOKEN_CONTINUE interrupted: the realm sees INCOMPLETE


@dataclass
class RipasRequest:
    base: int
    top: int
    ripas: RmiRipas
    change_destroyed: bool
    addr: int  # how far RTT_SET_RIPAS has got


@dataclass
class PsciRequest:
    """A PSCI call that needs RMI_PSCI_COMPLETE (CPU_ON, AFFINITY_INFO)."""

    fid: int
    target_mpidr: int
    entry: int = 0
    context_id: int = 0


@dataclass
class Rec:
    pa: int
    rd: int
    index: int
    mpidr: int
    runnable: bool
    aux: list[int]
    engine: ExecutionEngine
    running: bool = False
    pending: PendingKind = PendingKind.NONE
    mmio: AccessSyndrome | None = None
    mmio_is_write: bool = False
    mmio_va: int = 0  # the VA of the pending emulatable access (FAR if the host injects an SEA)
    ripas_request: RipasRequest | None = None
    host_call_ipa: int = 0
    psci_request: PsciRequest | None = None
    attestation: Any = None  # rmm.attestation.TokenState while a token is in progress
    injected_in_a_row: int = 0
    # ESR and HPFAR of the last REC exit if it was a SYNC exit, else 0: what REC_ENTER's
    # EMULATED_MMIO and INJECT_SEA flags are checked against.
    last_exit_esr: int = 0
    last_exit_hpfar: int = 0
    gic: VirtualCpuInterface = field(default_factory=VirtualCpuInterface)
    lines: RecInterruptLines = field(init=False)  # the PE's interrupt inputs while this REC runs

    def __post_init__(self) -> None:
        self.lines = RecInterruptLines(self.gic)


@dataclass
class Realm:
    rd: int
    params: dict[str, Any]
    stage2: Stage2
    state: RealmState = RealmState.NEW
    measurements: list[bytes] = field(default_factory=lambda: [bytes(64)] * MEASUREMENT_SLOTS)
    recs: dict[int, int] = field(default_factory=dict)  # REC index -> REC PA
    rec_count: int = 0  # REC_CREATE calls so far: the index the next REC must use
    attestation_key: Any = None  # rmm.attestation.RealmAttestationKey, made on first use

    # The parameters are fixed at REALM_CREATE: what the RMI path reads per call is kept.
    @cached_property
    def ipa_width(self) -> int:
        return int(self.params["s2sz"])

    @cached_property
    def hash_algo(self) -> int:
        return int(self.params["hash_algo"])

    @property
    def rpv(self) -> bytes:
        return bytes(self.params["rpv"])

    @property
    def vmid(self) -> int:
        return int(self.params["vmid"])

    @cached_property
    def par_size(self) -> int:
        return par_size(self.ipa_width)

    @cached_property
    def ipa_size(self) -> int:
        return 1 << self.ipa_width

    def addr_in_par(self, ipa: int) -> bool:
        return 0 <= ipa < self.par_size

    def range_in_par(self, base: int, top: int) -> bool:
        return 0 <= base < top <= self.par_size

    @property
    def rim(self) -> bytes:
        return self.measurements[0]

    @rim.setter
    def rim(self, value: bytes) -> None:
        self.measurements[0] = value


def mpidr_to_rec_index(mpidr: int) -> int:
    """REC index = Aff0[3:0] | Aff1 << 4 | Aff2 << 12 | Aff3 << 20 (digest §2.2)."""
    aff0 = mpidr & 0xFF
    aff1 = (mpidr >> 8) & 0xFF
    aff2 = (mpidr >> 16) & 0xFF
    aff3 = (mpidr >> 24) & 0xFF  # RmiRecMpidr keeps Aff3 at [31:24]
    if aff0 > 0xF or mpidr >> 32:
        return -1
    return aff0 | (aff1 << 4) | (aff2 << 12) | (aff3 << 20)


def rec_mpidr_to_mpidr(rec_mpidr: int) -> int:
    """The MPIDR_EL1 value of a REC's RmiRecMpidr: Aff3 moves from [31:24] to [39:32]."""
    return (rec_mpidr & 0xFF_FFFF) | (((rec_mpidr >> 24) & 0xFF) << 32)


def rec_index_to_mpidr(index: int) -> int:
    return (index & 0xF) | (((index >> 4) & 0xFF) << 8) | (((index >> 12) & 0xFF) << 16) | (((index >> 20) & 0xFF) << 24)
