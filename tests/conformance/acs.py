"""Support for the conformance suite: tests named after the RMM ACS 1.0 tests (one per ACS
test), each building its realm the way the ACS does, through RMI only.

- Host-side command tests build an s2sz 40 realm starting at level 0 with one root table.
- Tests with realm code build the ACS's default realm: s2sz 32, level 1, one root table.
Realm code is real AArch64 (encoded here) run by the RMM's own vCPU, or a script of SMCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rmm.conftest import REC_AUX_COUNT, Env, RealmHandle, RecHandle, assert_status, status
from unirealm.arch.memory import Pas, World
from unirealm.arch.rmi import RMI_REC_PARAMS, RmiFid, RmiStatus
from unirealm.rmm.state import default_engine

__all__ = ["REC_AUX_COUNT", "AcsEnv", "CodeRealm", "RealmHandle", "RecHandle", "assert_status", "status"]

# The ACS's realms (val_host_realm_params and the command tests' realm_init).
HOST_REALM = {"s2sz": 40, "rtt_level_start": 0, "rtt_num_start": 1}
DEFAULT_REALM = {"s2sz": 32, "rtt_level_start": 1, "rtt_num_start": 1}
CODE_IPA = 0x10_0000
DATA_IPA = 0x20_0000

# --- A64 encodings for the few instructions realm code needs -------------------------
SMC0 = 0xD400_0003
HVC0 = 0xD400_0002
WFI = 0xD503_207F
WFE = 0xD503_205F
B_SELF = 0x1400_0000


def ldr_x(rt: int, rn: int) -> int:
    """LDR Xt, [Xn]"""
    return 0xF940_0000 | (rn << 5) | rt


def str_x(rt: int, rn: int) -> int:
    """STR Xt, [Xn]"""
    return 0xF900_0000 | (rn << 5) | rt


def ldr_w(rt: int, rn: int) -> int:
    """LDR Wt, [Xn]"""
    return 0xB940_0000 | (rn << 5) | rt


def ldp_x(rt: int, rt2: int, rn: int) -> int:
    """LDP Xt, Xt2, [Xn]: no instruction syndrome (ISV = 0)"""
    return 0xA940_0000 | (rt2 << 10) | (rn << 5) | rt


def br(rn: int) -> int:
    """BR Xn"""
    return 0xD61F_0000 | (rn << 5)


def mov64(rd: int, value: int) -> list[int]:
    """MOVZ/MOVK: Xd = value"""
    words = [0xD280_0000 | ((value & 0xFFFF) << 5) | rd]
    for hw in range(1, 4):
        words.append(0xF280_0000 | (hw << 21) | (((value >> (16 * hw)) & 0xFFFF) << 5) | rd)
    return words


def mrs(rt: int, crn: int, crm: int, op2: int = 0) -> int:
    """MRS Xt, S3_0_<crn>_<crm>_<op2>"""
    return 0xD538_0000 | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def msr(crn: int, crm: int, rt: int, op2: int = 0) -> int:
    """MSR S3_0_<crn>_<crm>_<op2>, Xt"""
    return 0xD518_0000 | (crn << 12) | (crm << 8) | (op2 << 5) | rt


ESR_EL1 = (5, 2)
FAR_EL1 = (6, 0)
VBAR_EL1 = (12, 0)
PSCI_SYSTEM_OFF = 0x8400_0008
VECTORS = CODE_IPA + 0x800  # VBAR_EL1: 2 KiB aligned, in the code page
CURRENT_EL_SPX_SYNC = 0x200


def with_vectors(body: Sequence[int]) -> list[int]:
    """Realm code: set VBAR_EL1, run `body`; a synchronous exception taken to the realm ends
    in PSCI SYSTEM_OFF with x1 = ESR_EL1 and x2 = FAR_EL1, which the host sees in the PSCI
    exit's gprs[1] and gprs[2]."""
    words = [*mov64(9, VECTORS), msr(*VBAR_EL1, 9), *body, B_SELF]
    handler = [mrs(1, *ESR_EL1), mrs(2, *FAR_EL1), *mov64(0, PSCI_SYSTEM_OFF), SMC0, B_SELF]
    offset = (VECTORS - CODE_IPA + CURRENT_EL_SPX_SYNC) // 4
    assert len(words) <= offset
    return words + [B_SELF] * (offset - len(words)) + handler


def code_bytes(words: Sequence[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


@dataclass
class CodeRealm:
    realm: RealmHandle
    rec: RecHandle


class AcsEnv(Env):
    """Env with the ACS's realm shapes, Secure-PAS granules, and realms that run code."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)

    def host_realm(self, **overrides: int) -> RealmHandle:
        return self.create_realm(**{**HOST_REALM, **overrides})  # type: ignore[arg-type]

    def default_realm(self, **overrides: int) -> RealmHandle:
        return self.create_realm(**{**DEFAULT_REALM, **overrides})  # type: ignore[arg-type]

    def secure_granule(self) -> int:
        """A granule the root world gave the Secure PAS, as firmware carves out Secure memory."""
        pa = self.ns_granule()
        self.m.memory.set_pas(World.ROOT, pa, Pas.SECURE)
        return pa

    def realm_granule(self) -> int:
        """A granule in the Realm PAS that is not delegated to the RMM's state (a DATA granule)."""
        return self.delegated()

    def code_realm(self, words: Sequence[int], *, data_pages: Sequence[int] = (DATA_IPA,), activate: bool = True,
                   gprs: Sequence[int] = (), realm_params: dict[str, int] | None = None) -> CodeRealm:
        """The ACS's default realm with `words` at CODE_IPA (measured DATA) and one REC at it,
        running on the RMM's vCPU; `data_pages` are further protected RAM pages."""
        realm = self.create_realm(**{**DEFAULT_REALM, **(realm_params or {})})  # type: ignore[arg-type]
        for ipa in (CODE_IPA, *data_pages):
            self.ensure_rtts(realm, ipa, 3)
        self.data_create(realm, CODE_IPA, code_bytes(words))
        for ipa in data_pages:
            self.data_create(realm, ipa)
        self.rmm.engine_factory = default_engine
        aux = [self.delegated() for _ in range(REC_AUX_COUNT)]
        values = self.rec_values(0, True, pc=CODE_IPA, gprs=gprs, aux=aux)
        rec = self.delegated()
        self.ok(RmiFid.REC_CREATE, realm.rd, rec, self.ns_page(RMI_REC_PARAMS.pack(**values)))
        handle = RecHandle(rec, aux, self.ns_granule(), 0, values["mpidr"], None)  # type: ignore[arg-type]
        realm.recs.append(handle)
        if activate:
            self.ok(RmiFid.REALM_ACTIVATE, realm.rd)
        return CodeRealm(realm, handle)

    def map_unprotected(self, realm: RealmHandle, ipa: int, s2ap: int = 0b11) -> int:
        """Map an NS page at unprotected `ipa` with the given S2AP (bit 0 read, bit 1 write)."""
        self.ensure_rtts(realm, ipa, 3)
        pa = self.ns_granule()
        self.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, pa | (s2ap << 6) | (0b0101 << 2))
        return pa

    def fails(self, expected: RmiStatus, fid: int, *args: int, index: int = 0) -> list[int]:
        out = self.smc(fid, *args)
        assert_status(out, expected, index)
        return out

