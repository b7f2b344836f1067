"""The vCPU's mode for unirealm kernel images: it runs the Python unikernel in the image.

When a vCPU is about to execute a unirealm image (magic at PC + 0x40, see arch/image.py),
it reads the image's payload out of guest memory through its stage-2 translation — for a
realm, out of the realm's own (measured) granules — and runs the kernel found there.

The kernel sees only `GuestCpu`: SMC/HVC with registers, loads and stores at IPAs, WFI, and
EL0 execution of application code on Unicorn with the kernel's own VA->IPA tables. Every
event that needs the hypervisor suspends the kernel (a greenlet switch) and comes out of
`run()` as the same Trap a machine-code vCPU produces, with the same PC rules: a stage-2
fault on RAM retries the access, an emulated MMIO load completes into the register named
in its syndrome, a rewound SMC is issued again.

It stays one module past 600 lines because the EL0 address space (El0Space), GuestCpu and the
kernel engine share one suspend/resume protocol whose trap rules mirror machine/vcpu.py's.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import itertools
import marshal
import secrets
import struct
import sys
import time
import types
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import greenlet
from unicorn import (
    UC_ARCH_ARM64,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_ERR_EXCEPTION,
    UC_HOOK_INTR,
    UC_HOOK_TLB_FILL,
    UC_MEM_FETCH,
    UC_MEM_READ,
    UC_MEM_WRITE,
    UC_MODE_ARM,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_VIRTUAL,
    UcError,
)
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib as _uclib  # the library under the binding: the SVC fast path

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.image import (
    PAYLOAD_BYTECODE_SUFFIX,
    PYC_FLAGS_CHECKED_HASH,
    PYC_HEADER,
    UNIKERNEL_HEADER,
    UNIKERNEL_HEADER_OFFSET,
    UNIKERNEL_MAGIC,
    UNIKERNEL_VERSION,
    compile_member,
)
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE, World
from unirealm.arch.timer import CNT_CTL_ENABLE, CNT_CTL_IMASK, CntSysreg

from . import uc_regfile
from .interrupt import HOST_IRQ
from .irq import PENDING_IRQ, InterruptLines
from .memory import GranuleProtectionFault, MemoryAccessor, PhysicalMemory
from .regfile import RegisterFile
from .vcpu import (
    CPU_MODELS,
    EXCP_SWI,
    GPR_IDS,
    DataAbortTrap,
    HvcTrap,
    IrqTrap,
    Mapping,
    SmcTrap,
    Translate,
    Trap,
    WfxTrap,
)
from .vcpu_stops import stop_at_block_boundaries

_boot_ids = itertools.count(1)
CNTV_ENABLE_IMASK = CNT_CTL_ENABLE | CNT_CTL_IMASK
# The system counter as Unicorn's generic timer model implements it: 62.5 MHz, 16 ns a tick.
SYSTEM_COUNTER_HZ = 62_500_000
SYSTEM_COUNTER_PERIOD_NS = 1_000_000_000 // SYSTEM_COUNTER_HZ


class GuestFault(Exception):
    """An exception the hardware delivers to the running kernel (SEA, UNDEF)."""

    def __init__(self, kind: str, address: int = 0) -> None:
        super().__init__(f"{kind} at {address:#x}")
        self.kind = kind
        self.address = address


class ImageError(Exception):
    pass


class KernelExit(Exception):
    """Raised into the kernel greenlet when its vCPU is torn down."""


class _PayloadImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the modules of one booted image, under a package name unique to the boot."""

    def __init__(self, root: str, archive: zipfile.ZipFile) -> None:
        self.root = root
        self.archive = archive
        self.names = set(archive.namelist())

    def _path(self, fullname: str) -> tuple[str, bool] | None:
        if fullname == self.root:
            return "", True
        if not fullname.startswith(self.root + "."):
            return None
        rel = fullname[len(self.root) + 1 :].replace(".", "/")
        if f"{rel}/__init__.py" in self.names:
            return f"{rel}/__init__.py", True
        if f"{rel}.py" in self.names:
            return f"{rel}.py", False
        if any(n.startswith(rel + "/") for n in self.names):
            return "", True  # a namespace-like directory without __init__
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        found = self._path(fullname)
        if found is None:
            return None
        _, is_pkg = found
        spec = importlib.util.spec_from_loader(fullname, self, is_package=is_pkg)
        if spec is not None and is_pkg:
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        found = self._path(module.__name__)
        assert found is not None
        member, _ = found
        if not member:
            return
        source = self._read(member)
        code = self._bytecode(member, source) or compile_member(member, source)
        exec(code, module.__dict__)

    def _bytecode(self, member: str, source: bytes) -> types.CodeType | None:
        """The image's own bytecode of `member` (arch/image.py), if it is this interpreter's
        and of this source: a boot then compiles nothing."""
        name = member + PAYLOAD_BYTECODE_SUFFIX
        if name not in self.names:
            return None
        data = self._read(name)
        want = PYC_HEADER.pack(magic=importlib.util.MAGIC_NUMBER, flags=PYC_FLAGS_CHECKED_HASH,
                               source_hash=importlib.util.source_hash(source))
        if data[: PYC_HEADER.size] != want:
            return None
        try:
            code = marshal.loads(memoryview(data)[PYC_HEADER.size :])
        except (EOFError, ValueError, TypeError):
            return None
        return code if isinstance(code, types.CodeType) else None

    def read_file(self, member: str) -> bytes:
        return self._read(member)

    def _read(self, member: str) -> bytes:
        """A member's bytes; a member the archive cannot give back whole (its CRC-32 wrong,
        its data cut short or in a method zipfile lacks) is the image's fault: ImageError."""
        try:
            return self.archive.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ImageError(f"kernel payload member {member!r} is corrupt: {exc}") from None


_INTR_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_UNPACK_SVC_REGS = struct.Struct("<8Q").unpack


def _bound_call(function: Any, *args: Any) -> Callable[[], int]:
    """`function` (a library function) with its arguments bound once, already converted:
    the SVC fast path's calls skip the binding's per-call argument conversion. The call
    keeps the GIL (it is a register copy inside a hook that holds it anyway)."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    assert address is not None
    raw: Any = ctypes.PYFUNCTYPE(ctypes.c_int)(address)
    raw.argtypes = None  # the bound arguments are ctypes objects: passed as they are
    return functools.partial(raw, *args)



class _TlbEntry(ctypes.Structure):
    _fields_ = (("paddr", ctypes.c_uint64), ("perms", ctypes.c_uint32))


_TLB_FILL_CB = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                ctypes.POINTER(_TlbEntry), ctypes.c_void_p)
# x0..x5 (the syscall's arguments), x8 (its number), then PC
_SVC_REG_IDS = [*(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(6)), a64.UC_ARM64_REG_X8, a64.UC_ARM64_REG_PC]
# the same words out of the CPU's register file in place (uc_regfile: xregs[0..31], then pc)
_UNPACK_SVC_IN_PLACE = struct.Struct("<6Q16xQ184xQ").unpack_from
# the permission a TLB fill needs, by access type
_NEEDS = {UC_MEM_READ: UC_PROT_READ, UC_MEM_WRITE: UC_PROT_WRITE, UC_MEM_FETCH: UC_PROT_EXEC}
# Physical fault-around: a page of guest RAM is mapped into the CPU together with its
# present neighbours in the same block of this many granules, as one region.
PHYS_BLOCK = 512
EL0_VA_TOP = 1 << 48  # EL0 addresses are below this (TTBR0, 48-bit VAs)
RUN_UNTIL = 0xFFFF_FFFF_FFFF_FFFF  # emu_start's end address: never reached


def _pages_in(index: dict[int, Any] | set[int], ipa: int, size: int) -> list[int]:
    """The pages of [ipa, ipa+size) that `index` holds: by walking the range when it is the
    smaller, else by scanning the index."""
    start = ipa & ~GRANULE_MASK
    if (ipa + size - start) // GRANULE_SIZE <= len(index):
        return [p for p in range(start, ipa + size, GRANULE_SIZE) if p in index]
    return [p for p in index if ipa <= p < ipa + size]


def _unindex(index: dict[int, set[int]], key: int, value: int) -> None:
    """Take `value` out of a reverse index's set for `key` (and the key once it is empty)."""
    values = index[key]
    values.discard(value)
    if not values:
        del index[key]


class El0Space:
    """An EL0 address space on Unicorn: the kernel's VA -> IPA pages, mapped by pointer.

    The CPU's physical address space is the kernel's IPA space: a page of guest RAM is
    mapped there by pointer (`mem_map_ptr`) only after its stage-2 translation and GPT
    check, together with the already-present neighbours in its PHYS_BLOCK whose host
    memory is contiguous with it (each checked the same way), as one region that replaces
    the adjacent regions of the block it continues (so a process has few regions). The MMU is a
    software-filled TLB (Unicorn's virtual TLB mode): a miss asks `pages` for the IPA and
    the permissions, so a page without PROT_EXEC is not executable and its stores take
    Unicorn's fast path. A miss on a page the kernel has not backed calls `on_fault`
    (demand paging inside the fill); a miss it cannot satisfy stops `run()` with a fault.
    Changing or removing a page flushes the TLB; a stage-2 or PAS change under a mapped
    IPA unmaps it (TLBI). Translated code looks for a stop request only at block starts
    (machine/vcpu_stops.py): no helper call, with every register spilled and reloaded,
    after each load and store, and a stop (the host's interrupt) never lands inside a
    load that has already written its register.

    SVC fast path: when the kernel sets `on_svc`, every SVC calls it inside the CPU's
    interrupt hook with (nr, x0..x5), read in place from the CPU's register file
    (machine/uc_regfile.py; in one batch through the library where a build does not show
    it); if it returns True the syscall is complete (x0 written with `set_x0`, in place
    too) and EL0 continues without leaving `run()`. False stops `run()` with ("svc", pc, 0) as without a handler.
    """

    # The translation buffer of each CPU (None: Unicorn's default, 1 GiB of address space);
    # a kernel process sets it so that its address-space limit holds several EL0 spaces.
    tcg_buffer_size: int | None = None

    def __init__(self, cpu: GuestCpu, cpu_model: str) -> None:
        self._cpu = cpu
        self.uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
        self.uc.ctl_set_page_size(GRANULE_SIZE)
        if self.tcg_buffer_size is not None:
            self.uc.ctl_set_tcg_buffer_size(self.tcg_buffer_size)
        self.uc.ctl_set_cpu_model(CPU_MODELS[cpu_model])
        stop_at_block_boundaries(self.uc)
        self.pages: dict[int, tuple[int, int]] = {}  # va page -> (ipa page, prot)
        self._phys: set[int] = set()  # ipa pages mapped into the CPU's physical space
        # the CPU's regions (each inside one PHYS_BLOCK): start -> (end, host address of start, perms)
        self._regions: dict[int, tuple[int, int, int]] = {}
        self._region_ends: dict[int, int] = {}  # end -> start
        self._code: set[int] = set()  # ipa pages the TLB has let EL0 execute (translated code may exist)
        self._stop: tuple[str, int, int] | None = None
        self._miss: int = 0  # the VA of the last TLB fill that failed
        self._running = False  # demand paging happens only in fills during run()
        self._counting = False  # whether the last run counted instructions (Unicorn's count hook exists)
        self._identity = False  # fills made by Unicorn's own cache maintenance by physical address
        self._error = ""
        # The kernel's page-fault handler: called with an unmapped page; True if it mapped it.
        self.on_fault: Callable[[int], bool] | None = None
        # The kernel's syscall handler for the fast path: (nr, x0..x5) -> handled.
        self.on_svc: Callable[[int, int, int, int, int, int, int], bool] | None = None
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        if _uclib is not None:
            self._uch = self.uc._uch
            self._ids = (ctypes.c_int * 8)(*_SVC_REG_IDS)
            self._svc_regs = bytearray(64)  # x0..x5, x8, PC as the library writes them
            base = ctypes.addressof((ctypes.c_uint64 * 8).from_buffer(self._svc_regs))
            self._ptrs = (ctypes.c_void_p * 8)(*(base + 8 * i for i in range(8)))
            self._read_svc_regs = _bound_call(_uclib.uc_reg_read_batch, self._uch, ctypes.c_void_p(
                ctypes.addressof(self._ids)), ctypes.c_void_p(ctypes.addressof(self._ptrs)), ctypes.c_int(8))
            self._x0 = ctypes.c_uint64()
            self._write_x0 = _bound_call(_uclib.uc_reg_write, self._uch, ctypes.c_int(a64.UC_ARM64_REG_X0),
                                         ctypes.c_void_p(ctypes.addressof(self._x0)))
            self._svc_args: Callable[[], tuple[int, ...]] = self._svc_args_by_call
            # the callbacks are referenced for as long as the hooks exist
            self._intr_cb = _INTR_CB(self._raw_intr)
            self._tlb_cb = _TLB_FILL_CB(self._raw_tlb_fill)
            for kind, cb in ((UC_HOOK_INTR, self._intr_cb), (UC_HOOK_TLB_FILL, self._tlb_cb)):
                handle = ctypes.c_size_t()
                _uclib.uc_hook_add(self._uch, ctypes.byref(handle), kind, ctypes.cast(cb, ctypes.c_void_p), None, 1, 0)
        else:
            self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
            self.uc.hook_add(UC_HOOK_TLB_FILL, self._on_tlb_fill)
        # EL0 may read CTR_EL0, use DC ZVA and WFI/WFE as on Linux (SCTLR_EL1 UCT, DZE, nTWI, nTWE, UCI).
        sctlr = self.uc.cpr_read(3, 0, 1, 0, 0)
        self.uc.cpr_write(3, 0, 1, 0, 0, sctlr | (1 << 15) | (1 << 14) | (1 << 16) | (1 << 18) | (1 << 26))
        # EL0 may read the virtual counter (CNTKCTL_EL1.EL0VCTEN), as the vDSO does on Linux.
        self.uc.cpr_write(3, 0, 14, 1, 0, self.uc.cpr_read(3, 0, 14, 1, 0) | (1 << 1))
        # The SVC fast path reads and writes the registers in place where this build shows
        # where they are (machine/uc_regfile.py; the engine exists from the writes above).
        self._xregs = uc_regfile.locate(self.uc) if _uclib is not None else None
        if self._xregs is not None:
            self._svc_args = functools.partial(_UNPACK_SVC_IN_PLACE, memoryview(self._xregs))
        cpu._spaces.append(self)

    # the kernel's page table
    def map(self, va: int, ipa: int, size: int, prot: int) -> None:
        changed = False
        for off in range(0, size, GRANULE_SIZE):
            changed |= self.pages.get(va + off) is not None
            self.pages[va + off] = (ipa + off, prot)
        if changed:
            self._flush_tlb()

    def unmap(self, va: int, size: int) -> None:
        changed = False
        for off in range(0, size, GRANULE_SIZE):
            changed |= self.pages.pop(va + off, None) is not None
        if changed:
            self._flush_tlb()

    def protect(self, va: int, size: int, prot: int) -> None:
        changed = False
        for off in range(0, size, GRANULE_SIZE):
            entry = self.pages.get(va + off)
            if entry is not None:
                self.pages[va + off] = (entry[0], prot)
                changed = True
        if changed:
            self._flush_tlb()

    def flush_code(self, va: int, size: int) -> None:
        """Drop translated code of these pages (new code was written where code may have run)."""
        for off in range(0, size, GRANULE_SIZE):
            entry = self.pages.get(va + off)
            if entry is not None and entry[0] in self._code and entry[1] & UC_PROT_EXEC:
                self.uc.ctl_remove_cache(va + off, va + off + GRANULE_SIZE)

    def drop_ipa(self, ipa: int, size: int) -> None:
        """TLBI: stage 2 changed under these IPAs."""
        gone = sorted(_pages_in(self._phys, ipa, size))
        if not gone:
            return
        runs: list[list[int]] = []  # [first, end) of each run of contiguous mapped pages
        for page in gone:
            if runs and runs[-1][1] == page:
                runs[-1][1] = page + GRANULE_SIZE
            else:
                runs.append([page, page + GRANULE_SIZE])
        # Unicorn drops the region's translated code looking its address up through the
        # TLB: fills answer with the identity meanwhile, and the TLB is flushed after.
        self._identity = True
        try:
            for first, end in runs:
                self._cut_regions(first, end)
                self.uc.mem_unmap(first, end - first)
                for page in range(first, end, GRANULE_SIZE):
                    self._phys.discard(page)
                    self._code.discard(page)
        finally:
            self._identity = False
            self._flush_tlb()

    def _flush_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # the CPU's physical regions
    def _add_region(self, start: int, end: int, ptr: int, perms: int) -> None:
        self._regions[start] = (end, ptr, perms)
        self._region_ends[end] = start

    def _del_region(self, start: int) -> tuple[int, int, int]:
        region = self._regions.pop(start)
        del self._region_ends[region[0]]
        return region

    def _region_of(self, page: int) -> int | None:
        """The start of the region holding mapped page `page` (regions never cross a PHYS_BLOCK)."""
        block = page & ~(PHYS_BLOCK * GRANULE_SIZE - 1)
        for start in range(page, block - GRANULE_SIZE, -GRANULE_SIZE):
            region = self._regions.get(start)
            if region is not None:
                return start if page < region[0] else None
        return None

    def _cut_regions(self, first: int, end: int) -> None:
        """Take [first, end) (all mapped) out of the region table, as Unicorn splits its regions."""
        start = self._region_of(first)
        while start is not None and start < end:
            r_end, ptr, perms = self._del_region(start)
            if start < first:
                self._add_region(start, first, ptr, perms)
            if end < r_end:
                self._add_region(end, r_end, ptr + (end - start), perms)
            start = r_end if r_end in self._regions else None

    def _has_code(self, start: int, end: int) -> bool:
        return any(page in self._code for page in range(start, end, GRANULE_SIZE))

    def _map_phys(self, ipa: int) -> bool:
        """Map guest RAM page `ipa` (faulting it in through stage 2) with its neighbours in
        the same PHYS_BLOCK that stage 2 already maps on host-contiguous memory (each checked
        the same way), as one region merged with the adjacent regions it continues. Regions
        where EL0 has executed are not remapped (their translated code would go)."""
        got = self._cpu.host_pointer(ipa, True)
        if got is None:
            return False
        ptr, writable = got
        block = ipa & ~(PHYS_BLOCK * GRANULE_SIZE - 1)
        block_end = block + PHYS_BLOCK * GRANULE_SIZE
        lo, hi = ipa, ipa + GRANULE_SIZE
        while lo > block and lo - GRANULE_SIZE not in self._phys and \
                self._cpu.peek(lo - GRANULE_SIZE) == (ptr - (ipa - lo) - GRANULE_SIZE, writable):
            lo -= GRANULE_SIZE
        while hi < block_end and hi not in self._phys and \
                self._cpu.peek(hi) == (ptr + (hi - ipa), writable):
            hi += GRANULE_SIZE
        perms = UC_PROT_ALL if writable else UC_PROT_READ | UC_PROT_EXEC
        start, end, base = lo, hi, ptr - (ipa - lo)
        merged = []
        left = self._region_ends.get(start)
        if left is not None and left >= block:
            _, l_ptr, l_perms = self._regions[left]
            if l_perms == perms and l_ptr + (start - left) == base and not self._has_code(left, start):
                merged.append(left)
                start, base = left, l_ptr
        right = self._regions.get(end)
        if right is not None and end < block_end:
            r_end, r_ptr, r_perms = right
            if r_perms == perms and r_ptr == base + (end - start) and not self._has_code(end, r_end):
                merged.append(end)
                end = r_end
        if merged:
            self._identity = True  # as in drop_ipa: Unicorn's own look-ups while it unmaps
            try:
                for first in merged:
                    self.uc.mem_unmap(first, self._del_region(first)[0] - first)
            finally:
                self._identity = False
        self.uc.mem_map_ptr(start, end - start, perms, base)
        self._add_region(start, end, base, perms)
        self._phys.update(range(lo, hi, GRANULE_SIZE))
        if merged:
            self._flush_tlb()  # entries made through the regions just replaced
        return True

    def _fill(self, va: int, access: int) -> tuple[int, int] | None:
        """A TLB miss: (IPA, permissions) of the page at `va`, or None (a fault)."""
        if self._identity or va >= EL0_VA_TOP:
            # Unicorn's own look-ups: cache maintenance by physical address, and the page
            # before emu_start's end address (RUN_UNTIL), fetched when it counts instructions.
            # Nothing is mapped at these physical addresses: an access there still faults.
            return va, UC_PROT_READ | UC_PROT_EXEC
        entry = self.pages.get(va)
        if entry is None and self._running and self.on_fault is not None and self.on_fault(va):
            # Demand paging inside the fill: the access then completes as if mapped all along.
            entry = self.pages.get(va)
        if entry is not None and entry[1] & _NEEDS.get(access, 0) and (entry[0] in self._phys or
                                                                      self._map_phys(entry[0])):
            if entry[1] & UC_PROT_EXEC:
                self._code.add(entry[0])
            return entry
        self._miss = va
        return None

    # registers
    def reg(self, name: str) -> int:
        return self.uc.reg_read(getattr(a64, f"UC_ARM64_REG_{name.upper()}"))

    def set_reg(self, name: str, value: int) -> None:
        self.uc.reg_write(getattr(a64, f"UC_ARM64_REG_{name.upper()}"), value)

    def gpr(self, n: int) -> int:
        return self.uc.reg_read(GPR_IDS[n])

    def set_x0(self, value: int) -> None:
        """x0 (a syscall's result), written straight through the library when it can be."""
        if self._xregs is not None:
            self._xregs[0] = value & 0xFFFF_FFFF_FFFF_FFFF
            return
        if _uclib is None:
            self.uc.reg_write(a64.UC_ARM64_REG_X0, value & 0xFFFF_FFFF_FFFF_FFFF)
            return
        self._x0.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self._write_x0()

    def set_gpr(self, n: int, value: int) -> None:
        self.uc.reg_write(GPR_IDS[n], value & 0xFFFF_FFFF_FFFF_FFFF)

    # thread contexts: all of EL0's registers, TPIDR_EL0 included
    def save_context(self, ctx: Any = None) -> Any:
        """The CPU's register state, into `ctx` if given (cheaper than a new one)."""
        if ctx is None:
            return self.uc.context_save()
        self.uc.context_update(ctx)
        return ctx

    def restore_context(self, ctx: Any) -> None:
        self.uc.context_restore(ctx)

    # running
    def run(self, pc: int, count: int = 0) -> tuple[str, int, int]:
        """Run EL0 code from `pc` until it needs the kernel. Returns (reason, pc, detail):
        ("svc", pc after the svc, imm), ("fault", pc, address), ("undef", pc, 0),
        ("count", pc, 0), ("irq", pc, 0): the PE's IRQ input is signalled (EL0 runs with
        PSTATE.I clear: it is taken before the instruction at pc).

        The input is sampled at entry and when a run of `count` instructions ends: when the
        kernel's virtual timer has fired by then, the PE takes the host's view first (an
        IrqTrap: a REC exits so that its host raises the timer's PPI) and the answer shows
        the input. EL0 is never stopped from another thread for a deadline; only the host's
        own interrupt (HOST_IRQ: a signal for the VMM) does, and that stop lands between two
        instructions (block-boundary stops, see the class's text)."""
        self._stop = None
        cpu = self._cpu
        if HOST_IRQ.pending or cpu.timer_due():
            cpu.host_interrupt(pc)  # the host's interrupt: its REC exits before EL0 runs on
        if cpu.irq_signalled():
            self.uc.reg_write(a64.UC_ARM64_REG_PC, pc)  # the PC the exception would return to
            return ("irq", pc, 0)
        if count and not self._counting:
            # Unicorn counts instructions with a code hook that only code translated while
            # the hook exists calls: code translated for an uncounted run would never end
            # the slice. (Unicorn itself drops everything when a run stops counting.)
            self.uc.ctl_flush_tb()
        self._counting = bool(count)
        self._running = True
        try:
            with HOST_IRQ.running(self.uc):
                self.uc.emu_start(pc, RUN_UNTIL, count=count)
        except UcError as exc:
            if self.uc._hook_exception is not None:
                raise self.uc._hook_exception from None
            if self._stop is None:
                # a failed TLB fill (UC_ERR_EXCEPTION) faults at _miss; PC is the faulting instruction
                address = self._miss if exc.errno == UC_ERR_EXCEPTION else 0
                self._stop = ("fault", self.uc.reg_read(a64.UC_ARM64_REG_PC), address)
                self._error = str(exc)
        finally:
            self._running = False
        if self._stop is None:
            pc = self.uc.reg_read(a64.UC_ARM64_REG_PC)
            if HOST_IRQ.pending or cpu.timer_due():
                cpu.host_interrupt(pc)
            if cpu.irq_signalled():
                return ("irq", pc, 0)
            return ("count", pc, 0)
        return self._stop

    def _raw_tlb_fill(self, _uch: int, va: int, access: int, entry: Any, _ud: int) -> bool:
        try:
            hit = self._fill(va, access)
        except BaseException as exc:  # raised again by run()
            if self.uc._hook_exception is None:
                self.uc._hook_exception = exc  # type: ignore[assignment]  # declared Exception; re-raised alike
            return False
        if hit is None:
            return False
        entry[0].paddr, entry[0].perms = hit
        return True

    def _on_tlb_fill(self, uc: Uc, va: int, access: int, entry: Any, _ud: object) -> bool:
        hit = self._fill(va, access)
        if hit is None:
            return False
        entry.paddr, entry.perms = hit
        return True

    def _raw_intr(self, _uch: int, intno: int, _ud: int) -> None:
        try:
            a0, a1, a2, a3, a4, a5, nr, pc = self._svc_args()
            if intno == EXCP_SWI:
                handler = self.on_svc
                if handler is not None and handler(nr, a0, a1, a2, a3, a4, a5):
                    return
                self._stop = ("svc", pc, 0)
            else:
                self._stop = ("undef", pc, intno)
            _uclib.uc_emu_stop(self._uch)
        except BaseException as exc:  # raised again by emu_start, as the binding's hooks do
            if self.uc._hook_exception is None:
                self.uc._hook_exception = exc  # type: ignore[assignment]  # declared Exception; re-raised alike
            _uclib.uc_emu_stop(self._uch)

    def _svc_args_by_call(self) -> tuple[int, ...]:
        """x0..x5, x8, PC through the library (a build that does not show them in place)."""
        self._read_svc_regs()
        return _UNPACK_SVC_REGS(self._svc_regs)

    def _on_intr(self, uc: Uc, intno: int, _ud: object) -> None:
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if intno == EXCP_SWI:
            self._stop = ("svc", pc, 0)
        else:
            self._stop = ("undef", pc, intno)
        uc.emu_stop()

    def close(self) -> None:
        self._identity = True
        for begin, _end, _perms in list(self.uc.mem_regions()):
            self.uc.mem_unmap(begin, _end + 1 - begin)
        self._identity = False
        self._regions.clear()
        self._region_ends.clear()
        self._phys.clear()
        self._code.clear()
        if self in self._cpu._spaces:
            self._cpu._spaces.remove(self)


class GuestCpu:
    """What the Python kernel has of its processing element."""

    def __init__(self, engine: KernelCore) -> None:
        self._engine = engine
        self._spaces: list[El0Space] = []
        self.cpu_model = engine.cpu_model

    # --- calls --------------------------------------------------------------------------
    def smc(self, *regs: int) -> list[int]:
        """SMC #0 with x0..x17; returns x0..x17 as the caller sees them afterwards."""
        return self._engine.call(SmcTrap, list(regs))

    def hvc(self, *regs: int) -> list[int]:
        return self._engine.call(HvcTrap, list(regs))

    def wfi(self) -> None:
        self._engine.trap_and_wait(WfxTrap(self._engine.pc, False))

    # --- the GIC CPU interface and the generic timers (system registers) ----------------
    def read_sysreg(self, key: int) -> int:
        """MRS of an ICC_*_EL1 or CNT*_EL0 register (`key`: arch.sysreg.sysreg_key), served
        by the vCPU's interrupt lines (the host's GIC CPU interface and timers in a VM, the
        RMM's virtual CPU interface and the REC's timers in a realm). An access they do not
        serve is UNDEFINED (GuestFault)."""
        value = self._engine.sysreg(key, None)
        if value is None:
            raise GuestFault("undefined instruction", self._engine.pc)
        return value

    def write_sysreg(self, key: int, value: int) -> None:
        """MSR of an ICC_*_EL1 or CNT*_EL0 register (see read_sysreg)."""
        value &= 0xFFFF_FFFF_FFFF_FFFF
        if self._engine.sysreg(key, value) is None:
            raise GuestFault("undefined instruction", self._engine.pc)
        self._engine.note_sysreg(key, value)

    def timer_due(self) -> bool:
        """Whether the kernel's virtual timer has fired but the IRQ input does not show it yet."""
        deadline = self._engine.timer_deadline()
        return deadline is not None and deadline <= time.monotonic() and not self._engine.lines() & PENDING_IRQ

    def host_interrupt(self, pc: int) -> None:
        """EL0 stopped at `pc` for the host (its signal, or a timer it must see): an IrqTrap."""
        self._engine.trap_and_wait(IrqTrap(pc))

    def irq_signalled(self) -> bool:
        """Whether the PE's IRQ input is signalled, before any mask (the kernel's PSTATE.I is
        its own): as the last trap's answer showed it. It changes only at a trap (a WFI,
        an MRS/MSR above, the host's interrupt that stops EL0)."""
        return bool(self._engine.lines() & PENDING_IRQ)

    # --- memory -------------------------------------------------------------------------
    def read(self, ipa: int, size: int) -> bytes:
        if size > 0 and (ipa & GRANULE_MASK) + size <= GRANULE_SIZE:  # inside one page: no assembling
            acc, pa = self._engine.resolve(ipa, False)
            data = acc.read(pa, size)
            return data if type(data) is bytes else bytes(data)
        out = bytearray()
        while len(out) < size:
            addr = ipa + len(out)
            take = min(size - len(out), GRANULE_SIZE - (addr & GRANULE_MASK))
            acc, pa = self._engine.resolve(addr, False)
            out += acc.read(pa, take)
        return bytes(out)

    def write(self, ipa: int, data: bytes | bytearray | memoryview) -> None:
        if type(data) is bytes and len(data) > 0 and (ipa & GRANULE_MASK) + len(data) <= GRANULE_SIZE:
            acc, pa = self._engine.resolve(ipa, True)
            acc.write(pa, data)
            return
        done = 0
        view = memoryview(data)
        while done < len(view):
            addr = ipa + done
            take = min(len(view) - done, GRANULE_SIZE - (addr & GRANULE_MASK))
            acc, pa = self._engine.resolve(addr, True)
            acc.write(pa, view[done : done + take])
            done += take

    def zero(self, ipa: int, size: int) -> None:
        self.write(ipa, bytes(size))

    def read_u64(self, ipa: int) -> int:
        return int.from_bytes(self.read(ipa, 8), "little")

    def write_u64(self, ipa: int, value: int) -> None:
        self.write(ipa, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))

    def mmio_read(self, ipa: int, size: int) -> int:
        """One device load of `size` bytes (LDR Wt/Xt: emulatable, ISV = 1)."""
        return self._engine.mmio(ipa, size, None)

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        """One device store of `size` bytes (STR Wt/Xt): the register's low `size` bytes."""
        self._engine.mmio(ipa, size, value & ((1 << (8 * size)) - 1))

    def host_pointer(self, ipa: int, write: bool) -> tuple[int, bool] | None:
        """(host address, writable) of a guest page for EL0 mapping, faulting it in
        through stage 2; None if the access faults."""
        try:
            self._engine.resolve(ipa & ~GRANULE_MASK, write)
        except GuestFault:
            return None
        return self.probe(ipa)

    def probe(self, ipa: int) -> tuple[int, bool] | None:
        """(host address, writable) of a guest page that stage 2 maps now and the GPT lets
        this world reach; None otherwise. Never faults."""
        return self._engine.probe(ipa & ~GRANULE_MASK)

    def peek(self, ipa: int) -> tuple[int, bool] | None:
        """As `probe`, for a page this CPU's memory already reaches: None where finding out
        would cost a question to the hypervisor."""
        return self._engine.peek(ipa & ~GRANULE_MASK)

    # --- EL0 ----------------------------------------------------------------------------
    def el0_space(self) -> El0Space:
        return El0Space(self, self.cpu_model)

    # --- architectural features ---------------------------------------------------------
    def rndr(self) -> int:
        """RNDR (FEAT_RNG): 64 random bits from the processor's own entropy source."""
        return secrets.randbits(64)

    def cntvct(self) -> int:
        """CNTVCT_EL0, the generic timer's virtual count, at CNTFRQ_EL0 ticks per second: the
        same counter EL0 code reads with `mrs` on Unicorn (the host's monotonic clock)."""
        return time.monotonic_ns() // SYSTEM_COUNTER_PERIOD_NS

    cntfrq = SYSTEM_COUNTER_HZ

    # --- identity -----------------------------------------------------------------------
    @property
    def boot_registers(self) -> list[int]:
        return list(self._engine.boot_regs)

    @property
    def boot_pc(self) -> int:
        return self._engine.image_base

    def read_image_file(self, member: str) -> bytes:
        """A file of the booted image's payload (e.g. the app), as loaded in guest memory."""
        return self._engine.importer.read_file(member)

    def image_files(self) -> list[str]:
        return sorted(self._engine.importer.names)


class KernelCore:
    """What the Python kernel's engine is in either process: the register file and PC, the
    SMC/HVC calling sequence and booting the image. Subclasses say how a trap reaches the
    hypervisor (`trap_and_wait`) and how memory is reached (`resolve`, `probe`, `mmio`)."""

    importer: _PayloadImporter

    def __init__(self, pc: int, gprs: list[int] | tuple[int, ...], cpu_model: str) -> None:
        self.cpu_model = cpu_model
        self.pc = pc
        self.image_base = pc
        self.regs = [0] * 31
        for i, v in enumerate(gprs):
            self.regs[i] = v
        self.boot_regs = list(self.regs[:4])
        self.cpu = GuestCpu(self)
        self.finished: BaseException | None = None
        # The PE's IRQ/FIQ inputs (machine.irq PENDING_*) as the last trap's answer showed them.
        self.signalled = 0
        self.cntv_ctl = 0
        self.cntv_cval = 0

    def trap_and_wait(self, trap: Trap) -> None:
        raise NotImplementedError

    def sysreg(self, key: int, value: int | None) -> int | None:
        """MRS (`value` None) or MSR of the system register `key` (arch.sysreg.sysreg_key)
        that the PE's interrupt lines serve: the value read (0 for an MSR), None if UNDEFINED."""
        raise NotImplementedError

    def lines(self) -> int:
        """What the PE's interrupt inputs signal (PENDING_IRQ | PENDING_FIQ), as last seen."""
        return self.signalled

    def timer_deadline(self) -> float | None:
        """The time.monotonic() at which the PE's virtual timer, as this kernel programmed it
        (CNTV_CTL_EL0 / CNTV_CVAL_EL0, CNTVOFF 0), asserts its interrupt; None: it does not."""
        if self.cntv_ctl & CNTV_ENABLE_IMASK != CNT_CTL_ENABLE:
            return None
        return self.cntv_cval * SYSTEM_COUNTER_PERIOD_NS / 1e9

    def note_sysreg(self, key: int, value: int) -> None:
        """An MSR the lines completed: the PE keeps its own timer registers' values."""
        if key == CntSysreg.CNTV_CTL_EL0:
            self.cntv_ctl = value
        elif key == CntSysreg.CNTV_CVAL_EL0:
            self.cntv_cval = value
        elif key == CntSysreg.CNTV_TVAL_EL0:
            tval = value & 0xFFFF_FFFF
            self.cntv_cval = self.cpu.cntvct() + (tval - (1 << 32) if tval & (1 << 31) else tval)

    def resolve(self, ipa: int, write: bool) -> tuple[Any, int]:
        raise NotImplementedError

    def probe(self, page: int) -> tuple[int, bool] | None:
        raise NotImplementedError

    def peek(self, page: int) -> tuple[int, bool] | None:
        return self.probe(page)

    def mmio(self, ipa: int, size: int, value: int | None) -> int:
        raise NotImplementedError

    def call(self, kind: type[SmcTrap] | type[HvcTrap], regs: list[int]) -> list[int]:
        regs = [r & 0xFFFF_FFFF_FFFF_FFFF for r in regs[:18]] + [0] * (18 - len(regs))
        site = self.pc
        while True:
            self.regs[:18] = regs
            self.pc = site + 4
            self.trap_and_wait(kind(self.pc, list(regs)))
            if self.pc == site:  # the hypervisor rewound the call: issue it again
                continue
            self.pc = site
            return self.regs[:18]

    # --- booting ------------------------------------------------------------------------
    def _load_payload(self) -> tuple[_PayloadImporter, str]:
        header_ipa = self.image_base + UNIKERNEL_HEADER_OFFSET
        header = UNIKERNEL_HEADER.unpack(self.cpu.read(header_ipa, UNIKERNEL_HEADER.size))
        if header["magic"] != UNIKERNEL_MAGIC:
            raise ImageError("no unirealm kernel at the boot address")
        if header["version"] != UNIKERNEL_VERSION:
            raise ImageError(f"unirealm image version {header['version']} is not supported")
        payload = self.cpu.read(self.image_base + header["payload_offset"], header["payload_size"])
        if hashlib.sha256(payload).digest() != header["payload_sha256"]:
            raise ImageError("kernel payload does not match its header's hash")
        try:
            archive = zipfile.ZipFile(io.BytesIO(payload))
        except zipfile.BadZipFile:
            raise ImageError("kernel payload is not a zip archive") from None
        entry = header["entry"].rstrip(b"\0").decode("ascii", "replace")
        module_name, colon, func = entry.partition(":")
        if not (module_name and colon and func):
            raise ImageError(f"kernel entry {entry!r} is not module:function")
        root = f"_unirealm_image_{next(_boot_ids)}"
        return _PayloadImporter(root, archive), entry

    def boot_image(self) -> None:
        """Load the kernel out of guest memory and run it until it returns (or raises)."""
        self.importer, entry = self._load_payload()
        sys.meta_path.insert(0, self.importer)
        try:
            module_name, _, func = entry.partition(":")
            name = f"{self.importer.root}.{module_name}"
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:  # the entry's own module, or a package on its path
                if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                    raise
                raise ImageError(f"kernel entry module {module_name!r} is not in the payload") from None
            boot: Callable[[GuestCpu], object] | None = getattr(module, func, None)
            if not callable(boot):
                raise ImageError(f"kernel entry {entry!r}: the module has no such function")
            boot(self.cpu)
        finally:
            sys.meta_path.remove(self.importer)
            for name in [n for n in sys.modules if n.startswith(self.importer.root)]:
                del sys.modules[name]


class PyKernelEngine(KernelCore, RegisterFile):
    """An ExecutionEngine (see rmm.realm) that runs the unirealm kernel of the image at PC in
    this process (the kernel is a greenlet of the VMM's interpreter: no isolation; the
    kernel process of kernel_process.py is the isolated form)."""

    def __init__(self, memory: PhysicalMemory, translate: Translate, pc: int, gprs: list[int], cpu_model: str) -> None:
        super().__init__(pc, gprs, cpu_model)
        self.memory = memory
        self.translate = translate
        self._tlb: dict[int, tuple[MemoryAccessor, int, bool]] = {}  # page -> (accessor, pa, writable)
        self._tlb_by_pa: dict[int, set[int]] = {}  # pa -> the IPA pages the TLB maps to it
        self._accessors = {w: memory.accessor(w) for w in (World.REALM, World.NON_SECURE)}
        self._host: greenlet.greenlet | None = None
        self._kernel = greenlet.greenlet(self._main)
        self._pending_fault: GuestFault | None = None
        # The PE's interrupt inputs, as the owner wires them (machine.irq; None: none).
        self.interrupts: InterruptLines | None = None
        memory.on_pas_change(self._on_pas_change)

    # --- the ExecutionEngine protocol -----------------------------------------------------
    def run(self) -> Trap:
        self._host = greenlet.getcurrent()
        if self._kernel.dead:
            return WfxTrap(self.pc, False)
        trap = self._kernel.switch()
        assert isinstance(trap, Trap)
        return trap

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        self._pending_fault = GuestFault("synchronous external abort", far)

    def inject_undef(self) -> None:
        self._pending_fault = GuestFault("undefined instruction", self.pc)

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        self._pending_fault = GuestFault(f"exception (ESR {esr_value:#x})", far)

    def invalidate(self, ipa: int, size: int) -> None:
        for page in _pages_in(self._tlb, ipa, size):
            self._tlb_drop(page)
        for space in self.cpu._spaces:
            space.drop_ipa(ipa, size)

    def _tlb_drop(self, page: int) -> None:
        hit = self._tlb.pop(page, None)
        if hit is not None:
            _unindex(self._tlb_by_pa, hit[1], page)

    def close(self) -> None:
        self.memory.remove_pas_listener(self._on_pas_change)
        for space in list(self.cpu._spaces):
            space.close()
        if not self._kernel.dead and self._kernel:
            with contextlib.suppress(KernelExit):
                self._kernel.throw(KernelExit())

    def _on_pas_change(self, pa: int) -> None:
        for page in list(self._tlb_by_pa.get(pa, ())):
            self._tlb_drop(page)
            for space in self.cpu._spaces:
                space.drop_ipa(page, GRANULE_SIZE)

    # --- trapping -------------------------------------------------------------------------
    def trap_and_wait(self, trap: Trap) -> None:
        assert self._host is not None
        self._host.switch(trap)
        if self._pending_fault is not None:
            fault, self._pending_fault = self._pending_fault, None
            raise fault

    def sysreg(self, key: int, value: int | None) -> int | None:
        lines = self.interrupts
        if lines is None:
            return None
        if value is None:
            result = lines.read_sysreg(key)
        else:
            result = 0 if lines.write_sysreg(key, value) else None
        deadline = lines.next_deadline()
        if deadline is not None and deadline <= time.monotonic():
            self.trap_and_wait(IrqTrap(self.pc))  # the owner must look now (as the kernel process)
        return result

    def lines(self) -> int:
        lines = self.interrupts
        if lines is None:
            return 0
        lines.next_deadline()  # first: a deadline passing now shows in pending()
        return lines.pending()

    def _stage2(self, page: int, write: bool) -> tuple[MemoryAccessor, int, bool] | None:
        """(accessor, PA, writable) of a page stage 2 maps for this access now, GPT-checked
        (GranuleProtectionFault otherwise); None on a stage-2 fault."""
        hit = self._tlb.get(page)
        if hit is not None and (hit[2] or not write):
            return hit
        mapping = self.translate(page, write, False)
        if mapping is None or not (mapping.writable if write else mapping.readable):
            return None
        acc = self._accessors[mapping.world]
        acc.memory.check(acc.world, mapping.pa, GRANULE_SIZE)
        hit = (acc, mapping.pa, mapping.writable)
        self._tlb_drop(page)
        if mapping.readable:  # a write-only page is never cached: reads must fault
            self._tlb[page] = hit
            self._tlb_by_pa.setdefault(mapping.pa, set()).add(page)
        return hit

    def resolve(self, ipa: int, write: bool) -> tuple[MemoryAccessor, int]:
        """(accessor, PA) for a normal-memory access; stage-2 faults go to the hypervisor and
        the access retries once it returns, as a faulting load or store would."""
        page = ipa & ~GRANULE_MASK
        while True:
            try:
                hit = self._stage2(page, write)
            except GranuleProtectionFault:
                raise GuestFault("granule protection fault", ipa) from None
            if hit is not None:
                return hit[0], hit[1] + (ipa & GRANULE_MASK)
            site = self.pc
            syndrome = AccessSyndrome(write, 8, 0, sixty_four=True)
            self.trap_and_wait(DataAbortTrap(site, ipa, write, 8, syndrome, 0))
            self.pc = site

    def probe(self, page: int) -> tuple[int, bool] | None:
        """(host address, writable) of a page stage 2 maps now and the GPT allows; never traps."""
        try:
            hit = self._stage2(page, False)
        except GranuleProtectionFault:
            return None
        if hit is None:
            return None
        acc, pa, writable = hit
        return acc.memory.host_pointer(acc.world, pa, GRANULE_SIZE), writable

    def mmio(self, ipa: int, size: int, value: int | None) -> int:
        write = value is not None
        mapping = self.translate(ipa & ~GRANULE_MASK, write, False)
        if mapping is not None and (mapping.writable if write else mapping.readable):  # memory, not emulated
            acc = self._accessors[mapping.world]
            pa = mapping.pa + (ipa & GRANULE_MASK)
            if write:
                acc.write(pa, (value or 0).to_bytes(size, "little"))
                return 0
            return int.from_bytes(acc.read(pa, size), "little")
        site = self.pc
        syndrome = AccessSyndrome(write, size, 0, sixty_four=size == 8)
        self.trap_and_wait(DataAbortTrap(site, ipa, write, size, syndrome, value or 0))
        if self.pc == site:  # not emulated: the host mapped something; try again
            return self.mmio(ipa, size, value)
        self.pc = site
        return 0 if write else self.regs[0] & ((1 << (8 * size)) - 1)

    def _main(self) -> Trap:
        try:
            self.boot_image()
        except KernelExit:
            pass
        except BaseException as exc:  # the guest crashed: the CPU stops, as a halted core would
            self.finished = exc
        # A kernel that returns has stopped its CPU: report WFI forever.
        return WfxTrap(self.pc, False)


def image_at(memory_read: Callable[[int, int], bytes | None], pc: int) -> bool:
    """Whether the bytes at `pc` start a unirealm kernel image."""
    data = memory_read(pc + UNIKERNEL_HEADER_OFFSET, len(UNIKERNEL_MAGIC))
    return data == UNIKERNEL_MAGIC


__all__ = ["El0Space", "GuestCpu", "GuestFault", "ImageError", "KernelCore", "Mapping", "PyKernelEngine", "image_at"]
