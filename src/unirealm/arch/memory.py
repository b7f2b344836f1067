"""Granules, physical address spaces, worlds, and stage-2 translation geometry.

RME (Arm ARM "Realm Management Extension"): each 4 KiB physical granule belongs to one
physical address space (PAS), recorded in the granule protection table. A world may access
its own PAS and, for realm and secure, the non-secure PAS; root may access everything.
Stage 2 uses the 4 KiB translation granule: 9 bits per level, levels 0..3 (digest §2.2).
"""

from __future__ import annotations

from enum import IntEnum

GRANULE_SHIFT = 12
GRANULE_SIZE = 1 << GRANULE_SHIFT
GRANULE_MASK = GRANULE_SIZE - 1

S2TTE_SHIFT = 9
S2TTES_PER_RTT = 1 << S2TTE_SHIFT
RTT_MIN_LEVEL = 0
RTT_PAGE_LEVEL = 3
RTT_MIN_BLOCK_LEVEL = 1  # S2TT_MIN_BLOCK_LEVEL: map commands take levels 1..3
MAX_ROOT_RTTS = 16  # concatenated root tables
MAX_IPA_BITS = 48  # without LPA2
MIN_IPA_BITS = 32


class Pas(IntEnum):
    """Physical address space of a granule (granule protection table entry)."""

    NON_SECURE = 0
    SECURE = 1
    REALM = 2
    ROOT = 3


class World(IntEnum):
    """Security state of the agent making an access or an SMC."""

    NON_SECURE = 0
    SECURE = 1
    REALM = 2
    ROOT = 3


# Which PASes each world may access (Arm ARM RME, "Physical address spaces").
ACCESSIBLE_PAS: dict[World, frozenset[Pas]] = {
    World.NON_SECURE: frozenset({Pas.NON_SECURE}),
    World.SECURE: frozenset({Pas.SECURE, Pas.NON_SECURE}),
    World.REALM: frozenset({Pas.REALM, Pas.NON_SECURE}),
    World.ROOT: frozenset(Pas),
}


def is_granule_aligned(addr: int) -> bool:
    return addr & GRANULE_MASK == 0


def granule_base(addr: int) -> int:
    return addr & ~GRANULE_MASK


def level_shift(level: int) -> int:
    """Address bit at which an entry of `level` starts: 39, 30, 21, 12 for levels 0..3."""
    return GRANULE_SHIFT + S2TTE_SHIFT * (RTT_PAGE_LEVEL - level)


def level_size(level: int) -> int:
    """Bytes mapped by one entry at `level`: 512 GiB, 1 GiB, 2 MiB, 4 KiB."""
    return 1 << level_shift(level)


def level_index(ipa: int, level: int) -> int:
    return (ipa >> level_shift(level)) & (S2TTES_PER_RTT - 1)


def level_bits(level: int) -> int:
    """IPA bits one 512-entry table at `level` resolves: 48, 39, 30, 21 for levels 0..3."""
    return level_shift(level) + S2TTE_SHIFT


def num_root_rtts(ipa_bits: int, start_level: int) -> int:
    """Concatenated root tables needed for `ipa_bits` starting at `start_level`."""
    extra = ipa_bits - level_bits(start_level)
    return 1 << extra if extra > 0 else 1


def start_level_is_consistent(ipa_bits: int, start_level: int) -> bool:
    """A start level is usable for `ipa_bits` if the walk needs every level from it down
    (the space is wider than one table at the next level resolves) and at most 16
    concatenated root tables; level 0 takes no concatenation without LPA2 (TF-RMM
    s2_inconsistent_sl). Concatenation is allowed, not required: s2sz 40 may start at
    level 0 with one table or at level 1 with two."""
    if not RTT_MIN_LEVEL <= start_level <= RTT_PAGE_LEVEL:
        return False
    lowest = level_bits(start_level + 1) + 1 if start_level < RTT_PAGE_LEVEL else GRANULE_SHIFT + 1
    concatenation = 4 if start_level > RTT_MIN_LEVEL else 0  # log2(MAX_ROOT_RTTS)
    return lowest <= ipa_bits <= level_bits(start_level) + concatenation


def default_start_level(ipa_bits: int) -> int:
    """The start level Linux KVM picks: the deepest one that needs at most 16 root tables."""
    for level in range(RTT_PAGE_LEVEL, RTT_MIN_LEVEL - 1, -1):
        if ipa_bits <= level_bits(level) + 4:
            return level
    raise ValueError(f"IPA width {ipa_bits} is too large")


def unprotected_bit(ipa_width: int) -> int:
    """IPA bit (w - 1) selects the unprotected half (digest §3)."""
    return 1 << (ipa_width - 1)


def par_size(ipa_width: int) -> int:
    """Size of the protected address range [0, 2^(w-1))."""
    return 1 << (ipa_width - 1)
