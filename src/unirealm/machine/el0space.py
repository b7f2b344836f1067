"""The EL0 address space of the Python kernel (machine/pykernel.py GuestCpu.el0_space): application code on
Unicorn under the kernel's own VA -> IPA pages, guest RAM mapped into the CPU by pointer
after its stage-2 translation and GPT check (see El0Space).
"""

from __future__ import annotations

import ctypes
import functools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE

from . import uc_regfile
from .interrupt import HOST_IRQ
from .vcpu import CPU_MODELS, EXCP_SWI, GPR_IDS
from .vcpu_stops import stop_at_block_boundaries

if TYPE_CHECKING:
    from .pykernel import GuestCpu

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
        self._readonly: set[int] = set()  # mapped ipa pages stage 2 lets EL0 read but not write
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
                    self._readonly.discard(page)
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
        if not writable:
            self._readonly.update(range(lo, hi, GRANULE_SIZE))
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
        need = _NEEDS.get(access, 0)
        if entry is not None and entry[1] & need and (entry[0] in self._phys or self._map_phys(entry[0])):
            if entry[0] in self._readonly:
                # Stage 2 maps the page read-only: a store faults (Unicorn would drop it
                # silently on a read-only region), and so does every later one.
                entry = (entry[0], entry[1] & ~UC_PROT_WRITE)
            if entry[1] & need:
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
        self._readonly.clear()
        self._code.clear()
        if self in self._cpu._spaces:
            self._cpu._spaces.remove(self)


__all__ = ["EL0_VA_TOP", "PHYS_BLOCK", "El0Space"]
