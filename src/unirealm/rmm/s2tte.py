"""Stage-2 translation table entries as the RMM stores them in RTT granules.

Valid entries use the Armv8 VMSA stage-2 descriptor format (Arm ARM D8.3): bits[1:0] =
0b11 for a table (levels 0..2) or a page (level 3), 0b01 for a block (levels 1..2), the
output address in [47:12], MemAttr[5:2], S2AP[7:6], AF[10]. The RMM marks non-secure
output with bit 55 (TF-RMM's NS attribute for the unprotected half).

Invalid entries carry the RMM's own state, as TF-RMM does (digest §2.3): HIPAS in [4:2],
RIPAS in [6:5], and for ASSIGNED entries the output address in [47:12].
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from typing import NamedTuple

from unirealm.arch.memory import RTT_PAGE_LEVEL, level_size
from unirealm.arch.rmi import RmiHipas, RmiRipas, RttEntryState

DESC_VALID = 0b01
DESC_TABLE_OR_PAGE = 0b11
DESC_TYPE_MASK = 0b11
OA_MASK = ((1 << 48) - 1) & ~0xFFF
MEMATTR_SHIFT = 2
MEMATTR_MASK = 0xF << MEMATTR_SHIFT
S2AP_SHIFT = 6
S2AP_MASK = 0x3 << S2AP_SHIFT
AF = 1 << 10
NS = 1 << 55
XN = 1 << 54
HIPAS_SHIFT = 2
HIPAS_MASK = 0x7 << HIPAS_SHIFT
RIPAS_SHIFT = 5
RIPAS_MASK = 0x3 << RIPAS_SHIFT

# The host may only choose these bits of an unprotected mapping (digest §2.2).
HOST_NS_DESC_MASK = OA_MASK | MEMATTR_MASK | S2AP_MASK
MEMATTR_NORMAL_WB = 0b1111
MEMATTR_DEVICE_NGNRE = 0b0001
# MemAttr 0b0100 has no stage-2 meaning in the FEAT_S2FWB encoding the RMM uses; TF-RMM
# refuses it in host-provided descriptors.
MEMATTR_RESERVED = 0b0100


class Kind(Enum):
    UNASSIGNED = "unassigned"  # protected, no granule; RIPAS in the entry
    ASSIGNED = "assigned"  # protected, granule assigned; RAM entries are valid descriptors
    UNASSIGNED_NS = "unassigned_ns"
    ASSIGNED_NS = "assigned_ns"
    TABLE = "table"


class Entry(NamedTuple):
    """A decoded stage-2 entry (a tuple: cheap to make, as the RMM makes many)."""

    kind: Kind
    ripas: RmiRipas = RmiRipas.EMPTY
    pa: int = 0  # output address (granule/block base or next-level RTT)
    attrs: int = 0  # host-chosen MemAttr/S2AP bits of an NS mapping

    @property
    def is_live(self) -> bool:
        """Live entries keep an RTT from being destroyed (digest §2.2 RTT_DESTROY)."""
        return self.kind in (Kind.ASSIGNED, Kind.ASSIGNED_NS, Kind.TABLE)

    def state(self) -> RttEntryState:
        if self.kind == Kind.TABLE:
            return RttEntryState.TABLE
        if self.kind in (Kind.ASSIGNED, Kind.ASSIGNED_NS):
            return RttEntryState.ASSIGNED
        return RttEntryState.UNASSIGNED


def unassigned(ripas: RmiRipas) -> Entry:
    return Entry(Kind.UNASSIGNED, ripas)


def assigned(ripas: RmiRipas, pa: int) -> Entry:
    return Entry(Kind.ASSIGNED, ripas, pa)


UNASSIGNED_NS = Entry(Kind.UNASSIGNED_NS)


# The members as module globals: an Enum member reached through its class costs an attribute
# lookup on the enum type, and encode/decode run on every RTT write and walk.
_TABLE, _ASSIGNED, _ASSIGNED_NS, _UNASSIGNED_NS = Kind.TABLE, Kind.ASSIGNED, Kind.ASSIGNED_NS, Kind.UNASSIGNED_NS
_RAM = RmiRipas.RAM
_RAM_ATTRS = (MEMATTR_NORMAL_WB << MEMATTR_SHIFT) | S2AP_MASK | AF  # a protected RAM mapping
_NS_ATTRS = AF | NS | XN
_HIPAS_ASSIGNED = RmiHipas.ASSIGNED << HIPAS_SHIFT
_HIPAS_UNASSIGNED = RmiHipas.UNASSIGNED << HIPAS_SHIFT
_HIPAS_UNASSIGNED_NS = RmiHipas.UNASSIGNED_NS << HIPAS_SHIFT


def encode_assigned(ripas: RmiRipas, pa: int, level: int) -> int:
    """encode(assigned(ripas, pa), level) without the Entry (DATA_CREATE's write)."""
    if ripas == _RAM:
        return (pa & OA_MASK) | _RAM_ATTRS | (DESC_TABLE_OR_PAGE if level == RTT_PAGE_LEVEL else DESC_VALID)
    return (pa & OA_MASK) | _HIPAS_ASSIGNED | (ripas << RIPAS_SHIFT)


def encode(entry: Entry, level: int) -> int:
    kind = entry.kind
    if kind is _TABLE:
        return (entry.pa & OA_MASK) | DESC_TABLE_OR_PAGE
    if kind is _ASSIGNED_NS:
        typ = DESC_TABLE_OR_PAGE if level == RTT_PAGE_LEVEL else DESC_VALID
        return (entry.pa & OA_MASK) | entry.attrs | _NS_ATTRS | typ
    if kind is _ASSIGNED:
        return encode_assigned(entry.ripas, entry.pa, level)
    if kind is _UNASSIGNED_NS:
        return _HIPAS_UNASSIGNED_NS
    return _HIPAS_UNASSIGNED | (entry.ripas << RIPAS_SHIFT)


@lru_cache(maxsize=1 << 14)
def decode(desc: int, level: int) -> Entry:
    """The Entry a descriptor encodes (a pure function of its bits: memoised, since walks
    decode the same unassigned and table descriptors over and over)."""
    return _decode(desc, level)


def _decode(desc: int, level: int) -> Entry:
    typ = desc & DESC_TYPE_MASK
    if typ == DESC_TABLE_OR_PAGE and level < RTT_PAGE_LEVEL:
        return Entry(Kind.TABLE, pa=desc & OA_MASK)
    if typ in (DESC_VALID, DESC_TABLE_OR_PAGE):
        if desc & NS:
            return Entry(Kind.ASSIGNED_NS, RmiRipas.EMPTY, desc & OA_MASK, desc & (MEMATTR_MASK | S2AP_MASK))
        return Entry(Kind.ASSIGNED, RmiRipas.RAM, desc & OA_MASK)
    hipas = (desc & HIPAS_MASK) >> HIPAS_SHIFT
    if hipas == RmiHipas.UNASSIGNED_NS:
        return UNASSIGNED_NS
    ripas = RmiRipas((desc & RIPAS_MASK) >> RIPAS_SHIFT)
    if hipas == RmiHipas.ASSIGNED:
        return Entry(Kind.ASSIGNED, ripas, desc & OA_MASK)
    return Entry(Kind.UNASSIGNED, ripas)


def host_ns_desc_is_valid(desc: int, level: int) -> bool:
    """A host-provided unprotected mapping: only OA, MemAttr and S2AP, OA aligned to the level."""
    if desc & ~HOST_NS_DESC_MASK:
        return False
    if (desc >> MEMATTR_SHIFT) & 0xF == MEMATTR_RESERVED:
        return False
    return desc & OA_MASK & (level_size(level) - 1) == 0


def readable_desc(entry: Entry) -> int:
    """X3 of RMI_RTT_READ_ENTRY: the PA for assigned entries and tables, the host's
    descriptor for unprotected mappings, zero otherwise (digest §2.3 table)."""
    if entry.kind == Kind.TABLE:
        return entry.pa
    if entry.kind == Kind.ASSIGNED_NS:
        return entry.pa | entry.attrs
    if entry.kind == Kind.ASSIGNED and entry.ripas != RmiRipas.DESTROYED:
        return entry.pa
    return 0
