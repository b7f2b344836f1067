"""Every syscall fed wild arguments (hypothesis) on a real Process, page tables and VMAs
included, over a fake CPU whose RAM is a bounded page allocator: each call returns a result
or a -errno, ends the process or blocks — never a Python exception out of the kernel."""

from __future__ import annotations

import signal
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirealm.guest import syscalls as sc
from unirealm.guest.mm import PageAllocator
from unirealm.guest.pagecache import HeapRam, PageStore, Store
from unirealm.guest.process import Process
from unirealm.guest.sched import Blocked, ProcessExit
from unirealm.machine.el0space import El0Space

RAM_BASE, RAM_PAGES = 1 << 32, 2048  # 8 MiB


class Idle(Exception):
    """The call would sleep: the fake CPU has no time to give."""


class FakeCpu(HeapRam):
    cpu_model = "a72"
    cntfrq = 1_000_000_000

    def __init__(self) -> None:
        super().__init__(RAM_BASE, RAM_PAGES * 4096)
        self._spaces: list = []
        self.t = 0

    def el0_space(self) -> El0Space:
        return El0Space(self, self.cpu_model)  # type: ignore[arg-type]

    def rndr(self) -> int:
        return 0x1234_5678_9ABC_DEF0

    def cntvct(self) -> int:
        self.t += 1000
        return self.t

    def wfi(self) -> None:
        raise Idle

    def read_image_file(self, name: str) -> bytes:
        raise KeyError(name)

    def image_files(self) -> list[str]:
        return []


def tiny_elf() -> bytes:
    """A static AArch64 executable: one R+X segment at 0x400000 holding `svc #0; b .`."""
    code = struct.pack("<II", 0xD4000001, 0x14000000)
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, 0x400078, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0x78 + len(code), 0x78 + len(code), 0x1000)
    return ehdr + phdr + code


def make_kernel() -> SimpleNamespace:
    """Just enough of a Kernel for processes over a FakeCpu (and its page cache)."""
    cpu = FakeCpu()
    pages = PageAllocator()
    pages.add(RAM_BASE, RAM_BASE + RAM_PAGES * 4096)
    Store.current = PageStore(pages, cpu)
    return SimpleNamespace(cpu=cpu, pages=pages, options={}, log=lambda *a, **k: None, console=None,
                           realtime_offset_ns=0, realtime_ns=lambda: 0, monotonic_ns=cpu.cntvct,
                           write_console=lambda data: None, argv=[])


def make_process() -> Process:
    kernel = make_kernel()
    p = Process.spawn(kernel, tiny_elf(), ["/app"], "/app", sc.Syscalls)
    p.sched.current = p.threads[0]
    p.setup_stack()
    return p


# Calls left out: those that end or replace the process, or start threads and processes.
SKIP = {"exit", "exit_group", "clone", "clone3", "execve", "kill", "tkill", "tgkill"}
NRS = sorted(nr for name, nr in sc.NR.items() if name not in SKIP)
STACK = 0x0000_FFFF_FFFF_0000 - 0x2000
EDGES = [0, 1, 2, 3, 7, 0x10, 0x100, 0x1000, 0x400000, 0x400078, STACK, STACK + 0x800, 0xFFFF_FFFF,
         (1 << 31) - 1, 1 << 31, 1 << 32, 1 << 40, 1 << 47, 1 << 48, (1 << 63) - 1, 1 << 63,
         (1 << 64) - 4096, (1 << 64) - 100, (1 << 64) - 2, (1 << 64) - 1]
ARG = st.one_of(st.sampled_from(EDGES), st.integers(0, (1 << 64) - 1), st.integers(0, 0x2000))


@pytest.fixture(scope="module")
def proc() -> Process:
    try:
        yield make_process()
    finally:
        Store.current = None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nr=st.sampled_from(NRS), args=st.lists(ARG, min_size=6, max_size=6))
def test_wild_arguments_get_an_errno(proc: Process, nr: int, args: list[int]) -> None:
    try:
        result = proc.syscalls.call(nr, args)
    except (ProcessExit, Blocked, Idle):
        return
    assert result is None or -4095 <= result < 1 << 64, (sc.NAMES[nr], args, result)


@pytest.mark.parametrize("call", ["munmap", "mprotect", "madvise", "mremap"])
def test_whole_address_space_ranges_are_cheap(proc: Process, call: str) -> None:
    """A range over all of user space costs what is mapped in it, not 2^35 page steps."""
    huge = 1 << 47
    args = {"munmap": [0x1000, huge], "mprotect": [0x1000, huge, 1], "madvise": [0x1000, huge, 4],
            "mremap": [0x400000, huge, 0x1000, 0]}[call]
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"{call} over 2^47 bytes did not return"))
    signal.alarm(20)
    try:
        result = proc.syscalls.call(sc.NR[call], [*args, 0, 0, 0][:6])
    finally:
        signal.alarm(0)
    assert result is not None and -4095 <= result < 1 << 64


def test_failed_write_back_is_no_panic(proc: Process) -> None:
    """A shared file whose server refuses the write-back: munmap and exit still succeed."""
    from unirealm.guest.errors import FsError
    from unirealm.guest.vfs import RegInode

    class Refusing(RegInode):
        def sync_pages(self) -> None:
            raise FsError(5)

    node = Refusing(b"x" * 4096)
    start = proc.mm.map_region(0, 4096, 3, "/data/f", None, 0, node)
    proc.write(start, b"y")
    assert proc.syscalls.call(sc.NR["msync"], [start, 4096, 4, 0, 0, 0]) == 0
    assert proc.syscalls.call(sc.NR["munmap"], [start, 4096, 0, 0, 0, 0]) == 0
    assert node.read_at(0, 1) == b"y"
