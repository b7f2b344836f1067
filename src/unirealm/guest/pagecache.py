"""The page cache: file contents in pages of the realm's own RAM (from the kernel's page
allocator), never in the kernel's heap, so what files hold is bounded by -m as on Linux's
tmpfs: a file is a sparse map of page index -> IPA (holes read as zeroes and take no
memory), the file pages of all files together may take at most half of RAM (tmpfs's
default size: ENOSPC beyond it), and no RAM left is ENOMEM.

Pages are reference counted: a file holds one reference on each of its pages and every
MAP_SHARED mapping of a page one more, so a page a process still maps outlives its file
(truncated or unlinked) and only goes back to the allocator once the last user drops it.
"""

from __future__ import annotations

import errno
import weakref
from typing import Protocol

from ..arch.memory import GRANULE_SIZE
from .errors import FsError
from .mm import OutOfMemory, PageAllocator

PAGE = GRANULE_SIZE
MAX_FILE_SIZE = (1 << 63) - 1  # MAX_LFS_FILESIZE


class Ram(Protocol):
    def read(self, ipa: int, size: int) -> bytes: ...
    def write(self, ipa: int, data: bytes | bytearray | memoryview) -> None: ...
    def zero(self, ipa: int, size: int) -> None: ...


class PageStore:
    """Reference-counted pages from a PageAllocator, read and written through `ram`."""

    def __init__(self, pages: PageAllocator, ram: Ram, limit: int | None = None) -> None:
        self.pages = pages
        self.ram = ram
        self.limit = pages.total // 2 if limit is None else limit
        self.refs: dict[int, int] = {}

    @property
    def used(self) -> int:
        return len(self.refs) * PAGE

    def alloc(self) -> int:
        """A zeroed page with one reference."""
        if self.used + PAGE > self.limit:
            raise FsError(errno.ENOSPC)
        try:
            ipa = self.pages.alloc(1)
        except OutOfMemory:
            raise FsError(errno.ENOMEM) from None
        self.ram.zero(ipa, PAGE)
        self.refs[ipa] = 1
        return ipa

    def ref(self, ipa: int) -> int:
        self.refs[ipa] += 1
        return ipa

    def unref(self, ipa: int) -> None:
        n = self.refs[ipa] - 1
        if n:
            self.refs[ipa] = n
        else:
            del self.refs[ipa]
            self.pages.release(ipa)


class HeapRam:
    """RAM for a store outside a booted kernel (tools and unit tests): pages in a dict."""

    def __init__(self, base: int = 1 << 32, size: int = 256 << 20) -> None:
        self.base, self.size = base, size
        self.mem: dict[int, bytearray] = {}

    def _page(self, ipa: int) -> bytearray:
        return self.mem.setdefault(ipa & ~(PAGE - 1), bytearray(PAGE))

    def read(self, ipa: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            a = ipa + len(out)
            take = min(size - len(out), PAGE - (a & (PAGE - 1)))
            out += self._page(a)[a & (PAGE - 1) : (a & (PAGE - 1)) + take]
        return bytes(out)

    def write(self, ipa: int, data: bytes | bytearray | memoryview) -> None:
        done = 0
        while done < len(data):
            a = ipa + done
            take = min(len(data) - done, PAGE - (a & (PAGE - 1)))
            self._page(a)[a & (PAGE - 1) : (a & (PAGE - 1)) + take] = data[done : done + take]
            done += take

    def zero(self, ipa: int, size: int) -> None:
        self.write(ipa, bytes(size))


def heap_store() -> PageStore:
    ram = HeapRam()
    pages = PageAllocator()
    pages.add(ram.base, ram.base + ram.size)
    return PageStore(pages, ram)


class Store:
    """The store new file pages come from: the kernel's, once build_vfs has set it."""

    current: PageStore | None = None

    @classmethod
    def get(cls) -> PageStore:
        if cls.current is None:
            cls.current = heap_store()
        return cls.current


def _release(store: PageStore, pages: dict[int, int]) -> None:
    for ipa in pages.values():
        store.unref(ipa)
    pages.clear()


class FilePages:
    """One file's contents: a size and a sparse map of page index -> IPA."""

    def __init__(self, data: bytes | bytearray | memoryview = b"", store: PageStore | None = None) -> None:
        self.store = store if store is not None else Store.get()
        self.pages: dict[int, int] = {}
        self.size = 0
        # a file's pages go back to the allocator when nothing refers to the file any more
        self._finalizer = weakref.finalize(self, _release, self.store, self.pages)
        if data:
            self.write(0, data)

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        out = bytearray()
        pos = offset
        while pos < end:
            idx, off = divmod(pos, PAGE)
            take = min(end - pos, PAGE - off)
            ipa = self.pages.get(idx)
            out += self.store.ram.read(ipa + off, take) if ipa is not None else bytes(take)
            pos += take
        return bytes(out)

    def page(self, idx: int) -> int:
        """The IPA of page `idx`, allocated (zeroed) if it is a hole."""
        ipa = self.pages.get(idx)
        if ipa is None:
            ipa = self.pages[idx] = self.store.alloc()
        return ipa

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        if offset + len(data) > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        view = memoryview(data)
        done = 0
        while done < len(view):
            idx, off = divmod(offset + done, PAGE)
            take = min(len(view) - done, PAGE - off)
            try:
                ipa = self.page(idx)
            except FsError:
                if done:
                    break  # a short write, as Linux's when the space runs out part way
                raise
            self.store.ram.write(ipa + off, view[done : done + take])
            done += take
        self.size = max(self.size, offset + done)
        return done

    def truncate(self, length: int) -> None:
        if length > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG)
        if length < self.size:
            self.drop_from(length)
        elif length > self.size:
            self._zero_tail(self.size)  # what a mapping left past the old end is not file data
        self.size = length

    def drop_from(self, length: int) -> None:
        """Forget the contents from `length` on (the pages after it go, the rest of its own
        page reads as zeroes)."""
        first_gone = -(-length // PAGE)
        for idx in [i for i in self.pages if i >= first_gone]:
            self.store.unref(self.pages.pop(idx))
        self._zero_tail(length)

    def _zero_tail(self, end: int) -> None:
        ipa = self.pages.get(end // PAGE)
        if end % PAGE and ipa is not None:
            self.store.ram.zero(ipa + end % PAGE, PAGE - end % PAGE)

    def punch(self, offset: int, length: int) -> None:
        """FALLOC_FL_PUNCH_HOLE: zeroes that take no pages where whole pages go."""
        end = min(offset + length, self.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, PAGE)
            take = min(end - pos, PAGE - off)
            ipa = self.pages.get(idx)
            if ipa is not None:
                if take == PAGE:
                    self.store.unref(self.pages.pop(idx))
                else:
                    self.store.ram.zero(ipa + off, take)
            pos += take

    def data_extents(self) -> list[tuple[int, int]]:
        """(start, end) of the byte ranges that have pages, in order (SEEK_DATA/SEEK_HOLE)."""
        out: list[tuple[int, int]] = []
        for idx in sorted(self.pages):
            lo, hi = idx * PAGE, min((idx + 1) * PAGE, self.size)
            if lo >= self.size:
                break
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out
