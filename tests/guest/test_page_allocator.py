"""The guest's page allocator (guest/mm.py) against a model: a set of free granules.
Allocations are contiguous, granule-aligned, inside RAM, outside what was reserved, never
handed out twice; releases give them back (and merge); OutOfMemory only when no run of
free granules is long enough."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unirealm.guest.mm import OutOfMemory, PageAllocator

G = 4096
BASE = 0x8000_0000


def longest_run(free: set[int]) -> int:
    best = run = 0
    for g in sorted(free):
        run = run + 1 if g - G in free else 1
        best = max(best, run)
    return best


@settings(max_examples=200, deadline=None)
@given(
    banks=st.lists(st.tuples(st.integers(0, 64), st.integers(1, 64)), min_size=1, max_size=3),
    reserved=st.lists(st.tuples(st.integers(0, 200 * G), st.integers(1, 8 * G)), max_size=3),
    ops=st.lists(st.one_of(st.tuples(st.just("alloc"), st.integers(1, 8)), st.tuples(st.just("free"), st.integers(0, 50))),
                 max_size=40),
)
def test_allocator_matches_a_set_of_free_granules(banks: list[tuple[int, int]], reserved: list[tuple[int, int]],
                                                  ops: list[tuple[str, int]]) -> None:
    pages = PageAllocator()
    free: set[int] = set()
    at = BASE
    for gap, size in banks:  # disjoint banks, ascending, with a gap before each
        at += gap * G
        pages.add(at + 1, at + size * G + 1)  # unaligned bounds shrink to whole granules inside
        free |= {at + G * i for i in range(1, size)}
        at += size * G + G
    for off, size in reserved:
        lo, hi = BASE + off, BASE + off + size
        pages.reserve(lo, hi)
        free -= {g for g in list(free) if g < -(-hi // G) * G and g + G > lo // G * G}
    assert pages.free_bytes == pages.total == len(free) * G
    held: list[tuple[int, int]] = []
    for op, n in ops:
        if op == "alloc":
            if longest_run(free) < n:
                with pytest.raises(OutOfMemory):
                    pages.alloc(n)
                continue
            ipa = pages.alloc(n)
            run = {ipa + G * i for i in range(n)}
            assert ipa % G == 0 and run <= free, "allocated what was not free"
            free -= run
            held.append((ipa, n))
        elif held:
            ipa, count = held.pop(n % len(held))
            pages.release(ipa, count)
            free |= {ipa + G * i for i in range(count)}
        assert pages.free_bytes == len(free) * G
    assert all(b[1] < c[0] for b, c in zip(pages.free, pages.free[1:], strict=False))  # sorted, merged, disjoint
