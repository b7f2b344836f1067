"""The page cache: file contents in pages of a bounded page allocator (the realm's RAM),
sparse, reference counted, with tmpfs's errors; and the syscalls on top of it."""

from __future__ import annotations

import errno
import gc

import pytest

from unirealm.guest import syscalls as sc
from unirealm.guest.errors import FsError
from unirealm.guest.mm import PageAllocator
from unirealm.guest.pagecache import PAGE, FilePages, HeapRam, PageStore, Store
from unirealm.guest.pipes import Pipe, PipeEnd
from unirealm.guest.vfs import O_CREAT, O_RDWR, RegInode

from .test_vfs import FakeProcess


def store(pages: int, limit: int | None = None) -> PageStore:
    ram = HeapRam()
    alloc = PageAllocator()
    alloc.add(ram.base, ram.base + pages * PAGE)
    return PageStore(alloc, ram, limit)


def test_sparse_write_takes_one_page() -> None:
    s = store(16)
    f = FilePages(store=s)
    assert f.write(4 << 30, b"x") == 1
    assert f.size == (4 << 30) + 1 and s.used == PAGE
    assert f.read(1 << 30, 4) == bytes(4) and f.read((4 << 30) - 1, 8) == b"\0x"
    assert f.data_extents() == [(4 << 30, (4 << 30) + 1)]


def test_limits_enospc_efbig_enomem() -> None:
    s = store(16, limit=4 * PAGE)
    f = FilePages(store=s)
    assert f.write(0, bytes(3 * PAGE)) == 3 * PAGE
    assert f.write(3 * PAGE - 10, bytes(2 * PAGE)) == PAGE + 10  # short: the space ran out part way
    with pytest.raises(FsError) as e:
        f.write(8 * PAGE, b"y")
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(FsError) as e:
        f.write((1 << 63) - 1, b"y")
    assert e.value.errno == errno.EFBIG
    tiny = FilePages(store=store(2, limit=64 * PAGE))  # RAM runs out before the limit
    assert tiny.write(0, bytes(3 * PAGE)) == 2 * PAGE
    with pytest.raises(FsError) as e:
        tiny.write(2 * PAGE, b"z")
    assert e.value.errno == errno.ENOMEM


def test_truncate_punch_and_release() -> None:
    s = store(16)
    f = FilePages(b"a" * (3 * PAGE), store=s)
    f.truncate(PAGE + 5)
    assert s.used == 2 * PAGE and f.read(PAGE, 10) == b"aaaaa"
    f.truncate(2 * PAGE)
    assert f.read(PAGE, PAGE) == b"aaaaa" + bytes(PAGE - 5)  # the old tail reads as zeroes
    f.punch(0, PAGE)
    assert s.used == PAGE and f.read(0, 3) == bytes(3)
    pinned = s.ref(f.pages[1])  # a shared mapping's reference outlives the file
    del f
    gc.collect()
    assert s.used == PAGE
    s.unref(pinned)
    assert s.used == 0 and s.pages.free_bytes == 16 * PAGE


def test_pwrite_at_4_gib_through_syscalls() -> None:
    Store.current = store(64)
    try:
        p = FakeProcess()
        s = sc.Syscalls(p)
        p.write(0x100, b"/tmp/big\0")
        p.write(0x200, b"x")
        fd = s.call(sc.NR["openat"], [sc.AT_FDCWD & (2**64 - 1), 0x100, O_CREAT | O_RDWR, 0o644, 0, 0])
        assert s.call(sc.NR["pwrite64"], [fd, 0x200, 1, 4 << 30, 0, 0]) == 1
        assert s.call(sc.NR["fstat"], [fd, 0x400, 0, 0, 0, 0]) == 0
        assert int.from_bytes(p.mem[0x430:0x438], "little") == (4 << 30) + 1  # st_size
        assert int.from_bytes(p.mem[0x440:0x448], "little") == 8  # st_blocks: one page
        assert Store.current.used == PAGE
        assert s.call(sc.NR["ftruncate"], [fd, 0, 0, 0, 0, 0]) == 0 and Store.current.used == 0
    finally:
        Store.current = None


def test_payload_file_copied_in_on_first_write() -> None:
    node = RegInode(loader=lambda: b"from the image")
    assert node.pages is None and node.read_at(5, 3) == b"the" and node.size() == 14
    node.write_at(0, b"FROM")
    assert node.pages is not None and node.data == b"FROM the image"


def test_pipe_contents_in_pages_given_back_as_read() -> None:
    Store.current = s = store(64)
    try:
        pipe = Pipe()
        r, w = PipeEnd(pipe, 0, False), PipeEnd(pipe, 0, True)
        data = bytes(range(256)) * 256  # 64 KiB: a full pipe
        assert w.write(data) == len(data) and s.used == len(data)
        assert r.read(5000) == data[:5000] and s.used == len(data) - PAGE
        assert r.read(1 << 20) == data[5000:] and s.used <= PAGE
        assert w.write(b"more") == 4 and r.read(10) == b"more"
    finally:
        Store.current = None
