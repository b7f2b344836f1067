"""Realm translation tables: walks and entry updates over RTT granules in realm memory.

The root is `rtt_num_start` concatenated 4 KiB tables at `rtt_base`, starting at
`rtt_level_start`; each deeper table is one delegated granule in the RTT state. Entries are
64-bit descriptors (see s2tte) read and written through the RMM's realm-world accessor, so
the RTT layout the host builds is the real structure that later walks, measurements and the
vCPU's stage-2 lookups follow.
"""

from __future__ import annotations

from typing import NamedTuple

from unirealm.arch.memory import (
    GRANULE_SHIFT,
    GRANULE_SIZE,
    RTT_PAGE_LEVEL,
    S2TTES_PER_RTT,
    level_shift,
    level_size,
)
from unirealm.machine.memory import MemoryAccessor

from . import s2tte
from .s2tte import Entry

_LEVEL_SHIFTS = tuple(level_shift(level) for level in range(4))  # level_index's shifts, precomputed
_RTT_INDEX_BITS = S2TTES_PER_RTT.bit_length() - 1
_RTT_INDEX_MASK = S2TTES_PER_RTT - 1
_L2_SHIFT, _L3_SHIFT = _LEVEL_SHIFTS[RTT_PAGE_LEVEL - 1], _LEVEL_SHIFTS[RTT_PAGE_LEVEL]  # a level-3 RTT's block; a page
# The walk's constants as module globals (cheaper to reach than module attributes).
_DESC_TYPE_MASK = s2tte.DESC_TYPE_MASK
_DESC_TABLE_OR_PAGE = s2tte.DESC_TABLE_OR_PAGE
_OA_MASK = s2tte.OA_MASK
_decode = s2tte.decode
_new_tuple = tuple.__new__
_MASK64 = (1 << 64) - 1


class WalkEpoch:
    """The lifetime of a Stage2's memo of its last walk: one RMI call. The RMM starts a new
    epoch at every RMI call, so a walk is reused only inside the call that made it (the
    REC_ENTER that asks stage 2 about an MMIO access twice: the vCPU's translation, then the
    exit's syndrome), never across calls between which anything else could touch an RTT.
    One instance, WALK_EPOCH, counts: an instance attribute, since rebinding a class
    attribute at every call would invalidate the interpreter's caches for the class."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current = 0

    def advance(self) -> None:
        self.current += 1


WALK_EPOCH = WalkEpoch()


class Walk(NamedTuple):
    """Where a walk for an IPA stopped (a tuple: every RMI command that names an IPA makes one)."""

    level: int  # the level of `entry`
    rtt: int  # PA of the RTT granule holding the entry
    index: int  # type: ignore[assignment]  # the entry's index in that RTT (shadows tuple.index)
    entry: Entry
    raw: int

    @property
    def entry_pa(self) -> int:
        return self.rtt + 8 * self.index


class Stage2:
    """One realm's stage-2 tables."""

    def __init__(self, mem: MemoryAccessor, rtt_base: int, start_level: int, num_root: int, ipa_width: int) -> None:
        self.mem = mem
        self.rtt_base = rtt_base
        self.start_level = start_level
        self.num_root = num_root
        self.ipa_width = ipa_width
        self._root_shift = _LEVEL_SHIFTS[start_level]
        self._root_mask = S2TTES_PER_RTT * num_root - 1
        # (epoch, IPA >> 12, target level, walk): the last walk, forgotten at any RTT write
        self._memo: tuple[int, int, int, Walk] | None = None
        # The level-3 RTT the last full walk reached, and its 2 MiB block (IPA >> 21): the
        # table entries above it stay as they were until the RMM writes an RTT granule other
        # than that one (only the RMM writes table entries, and only through this class), so
        # the next walk into the block reads its one leaf entry. None: none known.
        self._leaf_block: int | None = None
        self._leaf_rtt = 0
        # Its entries and the leaf write go to memory's 64-bit words directly, the GPT
        # checked inline as MemoryAccessor.read_u64/write_u64 check it.
        self._words, self._gpt, self._allowed, self._mem_base = mem.words()

    # --- raw entries --------------------------------------------------------------------
    def read_raw(self, rtt: int, index: int) -> int:
        return self.mem.read_u64(rtt + 8 * index)

    def _forget(self, rtt: int) -> None:
        """Before a write into RTT granule `rtt`: the walk memo goes; the known level-3 RTT
        stays only if the write is into that very table (a leaf: no table entry changes)."""
        self._memo = None
        if rtt != self._leaf_rtt:
            self._leaf_block = None

    def write(self, rtt: int, index: int, entry: Entry, level: int) -> None:
        self._forget(rtt)
        self.mem.write_u64(rtt + 8 * index, s2tte.encode(entry, level))

    def write_raw(self, rtt: int, index: int, desc: int) -> None:
        """An entry already encoded (s2tte.encode_assigned) into an RTT a walk reached."""
        self._memo = None  # _forget(rtt) inline: DATA_CREATE writes its leaf this way
        if rtt != self._leaf_rtt:
            self._leaf_block = None
        off = rtt + 8 * index - self._mem_base  # below the top: a walk read this entry
        if off < 0 or off & 7 or self._gpt[off >> GRANULE_SHIFT] not in self._allowed:
            self.mem.write_u64(rtt + 8 * index, desc)  # raises the fault
        self._words[off >> 3] = desc & _MASK64

    def read_span(self, rtt: int, index: int) -> bytes:
        """The raw entries from `index` to the end of the RTT, in one read."""
        return bytes(self.mem.read(rtt + 8 * index, 8 * (S2TTES_PER_RTT - index)))

    def write_span(self, rtt: int, index: int, data: bytes) -> None:
        """Raw entries from `index` on, in one write."""
        self._forget(rtt)
        if data:
            self.mem.write(rtt + 8 * index, data)

    def entries(self, rtt: int, level: int) -> list[Entry]:
        data = self.mem.read(rtt, GRANULE_SIZE)
        return [
            s2tte.decode(int.from_bytes(data[i * 8 : i * 8 + 8], "little"), level) for i in range(S2TTES_PER_RTT)
        ]

    def fill(self, rtt: int, level: int, entries: list[Entry]) -> None:
        self._forget(rtt)
        self.mem.write(rtt, b"".join(s2tte.encode(e, level).to_bytes(8, "little") for e in entries))

    # --- walking ------------------------------------------------------------------------
    def root_slot(self, ipa: int) -> tuple[int, int]:
        """(RTT granule, index) of `ipa` in the concatenated root tables."""
        idx = (ipa >> self._root_shift) & self._root_mask
        return self.rtt_base + (idx // S2TTES_PER_RTT) * GRANULE_SIZE, idx % S2TTES_PER_RTT

    def walk(self, ipa: int, target_level: int = 3) -> Walk:
        """Walk towards `target_level`, stopping early at any entry that is not a table."""
        memo = self._memo
        if memo is not None and memo[1] == ipa >> 12 and memo[2] == target_level and memo[0] == WALK_EPOCH.current:
            return memo[3]
        if target_level == RTT_PAGE_LEVEL and ipa >> _L2_SHIFT == self._leaf_block:
            rtt, index = self._leaf_rtt, (ipa >> _L3_SHIFT) & _RTT_INDEX_MASK  # the tables above: as last walked
            off = rtt + 8 * index - self._mem_base  # in range: the walk that found this RTT read it
            raw = self._words[off >> 3] if self._gpt[off >> GRANULE_SHIFT] in self._allowed else self.read_raw(rtt, index)
            walk = _new_tuple(Walk, (RTT_PAGE_LEVEL, rtt, index, _decode(raw, RTT_PAGE_LEVEL), raw))
        else:
            walk = self._walk(ipa, target_level)
            if walk.level == RTT_PAGE_LEVEL:
                self._leaf_block, self._leaf_rtt = ipa >> _L2_SHIFT, walk.rtt
        self._memo = (WALK_EPOCH.current, ipa >> 12, target_level, walk)
        return walk

    def _walk(self, ipa: int, target_level: int) -> Walk:
        idx = (ipa >> self._root_shift) & self._root_mask
        rtt = self.rtt_base + (idx >> _RTT_INDEX_BITS) * GRANULE_SIZE
        index = idx & _RTT_INDEX_MASK
        level = self.start_level
        read_u64 = self.mem.read_u64
        while True:
            raw = read_u64(rtt + 8 * index)
            # A table descriptor is followed without decoding it (s2tte.decode's first case).
            if level < target_level and raw & _DESC_TYPE_MASK == _DESC_TABLE_OR_PAGE:
                rtt = raw & _OA_MASK
                level += 1
                index = (ipa >> _LEVEL_SHIFTS[level]) & _RTT_INDEX_MASK
                continue
            # tuple.__new__ directly: a NamedTuple's generated __new__ is one more Python frame.
            return _new_tuple(Walk, (level, rtt, index, _decode(raw, level), raw))

    def root_rtts(self) -> list[int]:
        return [self.rtt_base + i * GRANULE_SIZE for i in range(self.num_root)]

    def has_live_entries(self, rtt: int, level: int) -> bool:
        return any(e.is_live for e in self.entries(rtt, level))

    @staticmethod
    def table_end(ipa: int, level: int) -> int:
        """First IPA after the 512-entry table at `level` that contains `ipa`."""
        span = level_size(level) * S2TTES_PER_RTT
        return (ipa // span + 1) * span

    def next_live(self, ipa: int, level: int, limit: int) -> int:
        """The first IPA after `ipa` whose entry at `level` (in the same table) is live, else the
        end of that table — the "top" the RMM reports so the host can skip empty space."""
        walk = self.walk(ipa, level)
        size = level_size(walk.level)
        addr = (ipa // size + 1) * size
        end = min(self.table_end(ipa, walk.level), limit)
        for i in range(walk.index + 1, S2TTES_PER_RTT):
            if addr >= end:
                break
            if s2tte.decode(self.read_raw(walk.rtt, i), walk.level).is_live:
                return addr
            addr += size
        return end
