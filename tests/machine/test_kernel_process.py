"""The kernel process's engine: what it lets the child map, what the child may import, and
revocation checked against the child's real mappings."""

from __future__ import annotations

import ast
import errno
import importlib.util
import mmap
import sys
from pathlib import Path

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine import kernel_child
from unirealm.machine.kernel_channel import MAP_FIXED, WINDOW
from unirealm.machine.kernel_process import KernelProcess
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.vcpu import Mapping

SRC = Path(__file__).resolve().parents[2] / "src" / "unirealm"

RAM_IPA = 0x8000_0000


def engine(memory: PhysicalMemory, ram_pa: int, pages: int = 16) -> KernelProcess:
    def translate(ipa: int, write: bool, fetch: bool) -> Mapping | None:
        if RAM_IPA <= ipa < RAM_IPA + pages * GRANULE_SIZE:
            return Mapping(ram_pa + ipa - RAM_IPA, World.NON_SECURE)
        return None

    return KernelProcess(memory, translate, RAM_IPA, [], "max", pages * GRANULE_SIZE)


def test_mmap_is_let_through_only_for_granted_offsets_at_their_ipa() -> None:
    memory = PhysicalMemory(size=1 << 20)
    ram = memory.base + 0x1_0000
    kp = engine(memory, ram, pages=4)
    fd, ro = kp._child_memfd, kp._child_memfd_ro = 7, 8  # the child's numbers, as its HELLO reports them
    offset = memory.offset(ram)
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_SHARED | MAP_FIXED
    at = WINDOW + RAM_IPA
    # nothing granted yet
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, flags, fd, offset) == errno.EACCES
    grant = kp._grant(RAM_IPA, True)
    assert grant is not None and grant[0] == 17  # GRANT, the four RAM pages at once
    assert kp._judge_mmap(at, 4 * GRANULE_SIZE, rw, flags, fd, offset) == 0
    assert kp._judge_mmap(at, 5 * GRANULE_SIZE, rw, flags, fd, offset) == errno.EACCES  # past RAM
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, flags, fd, 0) == errno.EACCES  # another PA
    assert kp._judge_mmap(at + GRANULE_SIZE, GRANULE_SIZE, rw, flags, fd, offset) == errno.EACCES  # another IPA
    assert kp._judge_mmap(0x7000_0000, GRANULE_SIZE, rw, flags, fd, offset) == errno.EPERM  # outside the window
    assert kp._judge_mmap(at, GRANULE_SIZE, rw | mmap.PROT_EXEC, flags, fd, offset) == errno.EPERM
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, mmap.MAP_SHARED, fd, offset) == errno.EPERM  # not MAP_FIXED
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, flags, 99, offset) == errno.EPERM  # not the memory file
    for bad in ((at, GRANULE_SIZE + 1, offset), (at, 0, offset), (at + 8, GRANULE_SIZE, offset),
                (at, GRANULE_SIZE, offset + 8)):  # mmap(2): unaligned address or offset, no length: EINVAL
        assert kp._judge_mmap(bad[0], bad[1], rw, flags, fd, bad[2]) == errno.EINVAL, bad
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, flags, ro, offset) == errno.EPERM  # the read-only twin, writable
    assert kp._judge_mmap(at, GRANULE_SIZE, mmap.PROT_READ, flags, ro, offset) == 0
    # a revoked grant is refused afterwards
    kp._ungrant(RAM_IPA)
    assert kp._judge_mmap(at, GRANULE_SIZE, rw, flags, fd, offset) == errno.EACCES
    kp.close()


def test_a_granule_the_gpt_refuses_is_denied_not_granted() -> None:
    memory = PhysicalMemory(size=1 << 20)
    ram = memory.base + 0x1_0000
    kp = engine(memory, ram, pages=4)
    memory.set_pas(World.ROOT, ram, Pas.REALM)  # the NS mapping now faults
    answer = kp._grant(RAM_IPA, False)
    assert answer is not None and answer[0] == 18  # DENY
    assert kp._grant(RAM_IPA + 0x10_0000, False) is None  # unmapped: the access traps
    kp.close()


def _modules_imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if importlib.util.find_spec(node.module) is not None and _is_module(sub):
                    names.add(sub)
    return names


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def test_the_kernel_process_preloads_everything_the_image_imports() -> None:
    imported: set[str] = set()
    for package in ("guest", "arch"):
        for path in (SRC / package).rglob("*.py"):
            imported |= _modules_imported(path)
    loaded_anyway = {"__future__", *sys.builtin_module_names}
    missing = sorted(m for m in imported if m not in kernel_child.PRELOAD and m not in loaded_anyway)
    assert not missing, f"add to kernel_child.PRELOAD (a kernel process cannot open files): {missing}"
