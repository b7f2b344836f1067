"""mmap(2), munmap(2), mprotect(2), mremap(2) and brk(2) on a real process's address space:
alignment and flag errors, MAP_FIXED and MAP_FIXED_NOREPLACE, VMA splits, moves that keep
the contents, the program break."""

from __future__ import annotations

import errno
import itertools

import pytest

from unirealm.guest.addrspace import AddressSpace
from unirealm.guest.process import Process
from unirealm.guest.sched import ProcessExit

from .fs_support import O_CREAT, O_RDWR, Fs
from .process_support import call

PAGE = 4096
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
RW = PROT_READ | PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 1, 2, 0x10, 0x20, 0x100000
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2


def mmap(p: Process, addr: int, size: int, prot: int = RW, flags: int = ANON, fd: int = -1, off: int = 0) -> int:
    r = call(p, "mmap", addr, size, prot, flags, fd, off)
    assert r is not None
    return r


def can_write(fs: Fs, addr: int, data: bytes = b"k") -> bool:
    """Whether the kernel may store to `addr` (read(2) from a file into it: EFAULT if not)."""
    fd = fs.open("/tmp/src", O_CREAT | O_RDWR)
    fs.pwrite(fd, data, 0)
    r = fs("pread64", fd, addr, len(data), 0)
    fs("close", fd)
    return r == len(data)


def can_read(fs: Fs, addr: int) -> bool:
    fd = fs.open("/tmp/dst", O_CREAT | O_RDWR)
    r = fs("pwrite64", fd, addr, 1, 0)
    fs("close", fd)
    return r == 1


def test_mmap_argument_errors(fs: Fs) -> None:
    p = fs.p
    assert mmap(p, 0, 0) == -errno.EINVAL
    assert mmap(p, 0, PAGE, off=100) == -errno.EINVAL
    assert mmap(p, 0, PAGE, flags=MAP_ANONYMOUS) == -errno.EINVAL  # neither shared nor private
    assert mmap(p, 0x10_0000_0100, PAGE, flags=ANON | MAP_FIXED) == -errno.EINVAL
    assert mmap(p, 0, 1 << 49) == -errno.ENOMEM
    a = mmap(p, 0, 3 * PAGE + 1)
    assert a > 0 and a % PAGE == 0
    assert any(v.start == a and v.end == a + 4 * PAGE for v in p.mm.vmas)  # rounded up to pages


def test_map_fixed_replaces_and_noreplace_refuses(fs: Fs) -> None:
    p = fs.p
    a = mmap(p, 0, 4 * PAGE)
    p.write(a + PAGE, b"old")
    assert mmap(p, a + PAGE, PAGE, flags=ANON | MAP_FIXED_NOREPLACE) == -errno.EEXIST
    assert mmap(p, a + 3 * PAGE, 2 * PAGE, flags=ANON | MAP_FIXED_NOREPLACE) == -errno.EEXIST  # overlaps
    assert mmap(p, a + PAGE, PAGE, flags=ANON | MAP_FIXED | MAP_FIXED_NOREPLACE) == -errno.EEXIST
    assert p.read(a + PAGE, 3) == b"old"
    assert mmap(p, a + PAGE, PAGE, flags=ANON | MAP_FIXED) == a + PAGE
    assert p.read(a + PAGE, 3) == bytes(3)  # a fresh zeroed page
    free = a - 16 * PAGE  # below: mmap places top-down, the space under `a` is unused
    assert not any(v.start < free + PAGE and v.end > free for v in p.mm.vmas)
    assert mmap(p, free, PAGE, flags=ANON | MAP_FIXED_NOREPLACE) == free


def test_mmap_places_top_down_without_overlap(fs: Fs) -> None:
    p = fs.p
    a = mmap(p, 0, 2 * PAGE)
    b = mmap(p, 0, 2 * PAGE)
    assert b + 2 * PAGE <= a  # below the previous one
    spans = sorted((v.start, v.end) for v in p.mm.vmas)
    assert all(e <= s for (_, e), (s, _) in itertools.pairwise(spans))


def test_munmap_splits_and_checks(fs: Fs) -> None:
    p = fs.p
    assert call(p, "munmap", 0x10_0000_0001, PAGE) == -errno.EINVAL
    a = mmap(p, 0, 3 * PAGE)
    assert call(p, "munmap", a, 0) == -errno.EINVAL
    p.write(a, b"first")
    p.write(a + 2 * PAGE, b"third")
    assert call(p, "munmap", a + PAGE, 1) == 0  # a partial page: the whole page goes
    assert can_write(fs, a) and not can_write(fs, a + PAGE) and can_write(fs, a + 2 * PAGE, b"t")
    assert p.read(a + 2 * PAGE + 1, 4) == b"hird"
    left = next(v for v in p.mm.vmas if v.start == a)
    right = next(v for v in p.mm.vmas if v.start == a + 2 * PAGE)
    assert (left.end, right.end, left.prot, right.prot) == (a + PAGE, a + 3 * PAGE, RW, RW)
    assert call(p, "munmap", a, 3 * PAGE) == 0  # a hole inside is fine
    assert not any(v.start < a + 3 * PAGE and v.end > a for v in p.mm.vmas)


def test_mprotect(fs: Fs) -> None:
    p = fs.p
    a = mmap(p, 0, 4 * PAGE)
    p.write(a, b"x" * 3 * PAGE)  # three of four backed
    assert call(p, "mprotect", a + 1, PAGE, PROT_READ) == -errno.EINVAL
    assert call(p, "mprotect", a, PAGE, 0x10) == -errno.EINVAL
    assert call(p, "mprotect", a, 0, PROT_READ) == 0
    assert call(p, "mprotect", a + PAGE, PAGE, PROT_READ) == 0
    assert can_write(fs, a) and not can_write(fs, a + PAGE) and can_read(fs, a + PAGE)
    assert can_write(fs, a + 2 * PAGE)
    assert p.mm.space.pages[a + PAGE][1] == PROT_READ and p.mm.space.pages[a][1] == RW
    names = {v.name for v in p.mm.vmas if a <= v.start < a + 3 * PAGE}
    assert names == {"anon"}
    assert call(p, "mprotect", a, PAGE, PROT_NONE) == 0
    assert not can_read(fs, a)
    assert call(p, "munmap", a + 2 * PAGE, PAGE) == 0
    b = a + 3 * PAGE
    # [a, a+2P) mapped, a hole, then b: the part before the hole changes, the result is ENOMEM
    assert call(p, "mprotect", a, 4 * PAGE, RW) == -errno.ENOMEM
    assert can_write(fs, a) and can_write(fs, a + PAGE)
    assert call(p, "mprotect", b, PAGE, PROT_READ) == 0 and not can_write(fs, b)
    assert call(p, "mprotect", a + 2 * PAGE, PAGE, RW) == -errno.ENOMEM
    assert call(p, "mprotect", (1 << 64) - PAGE, 2 * PAGE, RW) == -errno.ENOMEM  # wraps


def test_mprotect_exec_makes_code_coherent(fs: Fs, monkeypatch: pytest.MonkeyPatch) -> None:
    p = fs.p
    a = mmap(p, 0, 2 * PAGE)
    p.write(a, b"\x00" * 8)
    flushed: list[tuple[int, int]] = []
    monkeypatch.setattr(p.mm.space, "flush_code", lambda va, size: flushed.append((va, size)))
    assert call(p, "mprotect", a, PAGE, PROT_READ | PROT_EXEC) == 0
    assert (a, PAGE) in flushed
    c = mmap(p, 0, PAGE, PROT_READ | PROT_EXEC)
    flushed.clear()
    assert p.mm.demand_page(c) and flushed and flushed[0][0] == c


def test_mremap(fs: Fs) -> None:
    p = fs.p
    assert call(p, "mremap", 0x10_0000_0001, PAGE, PAGE, 0, 0) == -errno.EINVAL
    a = mmap(p, 0, 4 * PAGE)
    assert call(p, "mremap", a, PAGE, 0, 0, 0) == -errno.EINVAL
    assert call(p, "mremap", 0x10_0000_0000, PAGE, 2 * PAGE, MREMAP_MAYMOVE, 0) == -errno.EFAULT
    p.write(a, b"keep")
    assert call(p, "mremap", a, 4 * PAGE, 2 * PAGE, 0, 0) == a  # shrinks in place
    assert not can_write(fs, a + 2 * PAGE)
    assert call(p, "mremap", a, 2 * PAGE, 3 * PAGE, 0, 0) == a  # grows into the free page after it
    assert can_write(fs, a + 2 * PAGE)
    assert mmap(p, a + 3 * PAGE, PAGE, flags=ANON | MAP_FIXED) == a + 3 * PAGE
    assert call(p, "mremap", a, 3 * PAGE, 4 * PAGE, 0, 0) == -errno.ENOMEM  # blocked, may not move
    p.write(a + PAGE, b"second")
    new = call(p, "mremap", a, 3 * PAGE, 6 * PAGE, MREMAP_MAYMOVE, 0)
    assert new is not None and new > 0 and new != a
    assert p.read(new, 4) == b"keep" and p.read(new + PAGE, 6) == b"second"
    assert not can_write(fs, a) and can_write(fs, new + 5 * PAGE)
    moved = sorted((v.start, v.end) for v in p.mm.vmas if new <= v.start < new + 6 * PAGE)
    assert moved[0][0] == new and moved[-1][1] == new + 6 * PAGE
    assert p.mm.space.pages[new + PAGE][1] == RW
    target = a - 16 * PAGE
    assert call(p, "mremap", new, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target) == target
    assert p.read(target, 4) == b"keep" and not can_write(fs, new)


def test_mremap_moves_a_partly_protected_range(fs: Fs) -> None:
    p = fs.p
    a = mmap(p, 0, 2 * PAGE)
    p.write(a, b"A")
    p.write(a + PAGE, b"B")
    assert call(p, "mprotect", a + PAGE, PAGE, PROT_READ) == 0
    target = a - 32 * PAGE
    assert call(p, "mremap", a, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target) == target
    assert p.mm.space.pages[target][1] == RW and p.mm.space.pages[target + PAGE][1] == PROT_READ
    assert p.read(target + PAGE, 1) == b"B" and not can_write(fs, target + PAGE)
    vmas = sorted((v.start, v.end, v.prot) for v in p.mm.vmas if target <= v.start < target + 2 * PAGE)
    assert vmas == [(target, target + PAGE, RW), (target + PAGE, target + 2 * PAGE, PROT_READ)]


def test_brk(fs: Fs) -> None:
    p = fs.p
    start = call(p, "brk", 0)
    assert start is not None and start == p.mm.brk_start
    assert call(p, "brk", start - PAGE) == start  # below the start: refused, the break stays
    top = start + 3 * PAGE + 5
    assert call(p, "brk", top) == top
    heap = [v for v in p.mm.vmas if v.name == "heap"]
    assert len(heap) == 1 and heap[0].start == start and heap[0].end == (top + PAGE - 1) & -PAGE
    p.write(top - 8, b"heapdata")
    assert call(p, "brk", start + PAGE) == start + PAGE
    assert not can_write(fs, start + 3 * PAGE) and can_write(fs, start)
    assert call(p, "brk", start + (1 << 40)) == start + PAGE  # more than RAM: refused
    blocker = mmap(p, (start + 64 * PAGE) & -PAGE, PAGE, flags=ANON | MAP_FIXED)
    assert call(p, "brk", blocker + PAGE) == start + PAGE  # would run into a mapping
    assert call(p, "brk", blocker) == blocker


def test_fork_copies_the_break_and_the_pages(fs: Fs) -> None:
    p = fs.p
    start = call(p, "brk", 0)
    assert start is not None
    call(p, "brk", start + 2 * PAGE)
    p.write(start, b"parent")
    mm = p.mm
    child = mm.fork(p.kernel.cpu.el0_space(), lambda: "2 (child)")
    assert (child.brk_start, child.brk) == (mm.brk_start, mm.brk)
    assert child.read(start, 6) == b"parent"
    child.write(start, b"child!")
    assert p.read(start, 6) == b"parent"
    child.release()


def test_exec_clears_every_mapping(fs: Fs) -> None:
    mm: AddressSpace = fs.p.mm
    a = mmap(fs.p, 0, 2 * PAGE)
    fs.p.write(a, b"x")
    def free() -> int:
        return sum(e - s for s, e in mm.kernel.pages.free)

    before = free()
    mm.clear()
    assert mm.vmas == [] and mm.owned == {} and a not in mm.space.pages
    assert free() > before


def test_oom_kills_with_sigkill(fs: Fs) -> None:
    mm: AddressSpace = fs.p.mm
    a = mmap(fs.p, 0, PAGE)
    alloc = mm.kernel.pages.alloc

    def exhausted(n: int) -> int:
        from unirealm.guest.mm import OutOfMemory
        raise OutOfMemory()

    mm.kernel.pages.alloc = exhausted
    try:
        with pytest.raises(ProcessExit) as ended:
            mm.populate(a, RW, mm.find_vma(a))
    finally:
        mm.kernel.pages.alloc = alloc
    assert (ended.value.status, ended.value.signal) == (128 + 9, 9)  # killed by SIGKILL, as the OOM killer does


def test_shared_file_mapping_keeps_its_protection(fs: Fs) -> None:
    fd = fs.open("/tmp/shared", O_CREAT | O_RDWR)
    fs.pwrite(fd, b"S" * PAGE, 0)
    a = mmap(fs.p, 0, PAGE, PROT_READ, MAP_SHARED, fd)
    assert a > 0 and fs.p.read(a, 1) == b"S"
    assert fs.p.mm.space.pages[a][1] == PROT_READ
    assert not can_write(fs, a)
    assert next(v for v in fs.p.mm.vmas if v.start == a).shared is not None


def test_read_cstring_across_pages(fs: Fs) -> None:
    a = mmap(fs.p, 0, 2 * PAGE)
    fs.p.write(a + PAGE - 100, b"y" * 150 + b"\0tail")
    assert fs.p.mm.read_cstring(a + PAGE - 100) == b"y" * 150
    fs.p.write(a, b"z" * 70 + b"\0")
    assert fs.p.mm.read_cstring(a) == b"z" * 70


LOW = 0x2_0000_0000  # below MMAP_BASE, where nothing is placed unless asked for


def test_munmap_of_a_wide_range_frees_its_first_page(fs: Fs) -> None:
    p = fs.p
    assert mmap(p, LOW, 2 * PAGE, flags=ANON | MAP_FIXED) == LOW
    p.write(LOW, b"gone")
    assert call(p, "munmap", LOW, 1 << 30) == 0  # wider than all the pages the process has
    assert LOW not in p.mm.owned and LOW not in p.mm.space.pages
    assert mmap(p, LOW, PAGE, flags=ANON | MAP_FIXED) == LOW
    assert p.read(LOW, 4) == bytes(4)


def test_a_private_file_mapping_split_by_munmap_keeps_the_file(fs: Fs) -> None:
    fd = fs.open("/tmp/priv", O_CREAT | O_RDWR)
    content = b"".join(bytes([65 + i]) * PAGE for i in range(3))
    for i in range(3):
        fs.pwrite(fd, content[i * PAGE : (i + 1) * PAGE], i * PAGE)
    a = mmap(fs.p, 0, 3 * PAGE, PROT_READ, MAP_PRIVATE, fd)
    assert call(fs.p, "munmap", a + PAGE, PAGE) == 0
    assert fs.p.read(a + 2 * PAGE, 2) == b"CC" and fs.p.read(a, 2) == b"AA"
    assert fs("close", fd) == 0


def test_mremap_leaves_the_mapping_below_alone(fs: Fs) -> None:
    p = fs.p
    assert mmap(p, LOW, PAGE, flags=ANON | MAP_FIXED) == LOW
    assert mmap(p, LOW + PAGE, PAGE, flags=ANON | MAP_FIXED) == LOW + PAGE
    assert mmap(p, LOW + 2 * PAGE, PAGE, flags=ANON | MAP_FIXED) == LOW + 2 * PAGE  # blocks growth
    p.write(LOW, b"below")
    new = call(p, "mremap", LOW + PAGE, PAGE, 4 * PAGE, MREMAP_MAYMOVE, 0)
    assert new is not None and new > 0 and new != LOW + PAGE
    assert p.read(LOW, 5) == b"below" and can_write(fs, LOW)
    assert any(v.start == LOW and v.end == LOW + PAGE for v in p.mm.vmas)


def test_a_heap_made_again_after_munmap_is_the_heap(fs: Fs) -> None:
    p = fs.p
    start = call(p, "brk", 0)
    assert start is not None
    assert call(p, "brk", start + 2 * PAGE) == start + 2 * PAGE
    assert call(p, "munmap", start, 2 * PAGE) == 0
    assert call(p, "brk", start + 3 * PAGE) == start + 3 * PAGE
    heaps = [v for v in p.mm.vmas if v.start == start]
    assert [(v.name, v.end) for v in heaps] == [("heap", start + 3 * PAGE)]
    assert can_write(fs, start + 2 * PAGE)
