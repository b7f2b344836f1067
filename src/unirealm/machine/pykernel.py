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

The EL0 address space itself is machine/el0space.py. Why one module: GuestCpu, the
payload's importer and the kernel engine share one suspend/resume protocol whose trap
rules mirror machine/vcpu.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import itertools
import marshal
import secrets
import sys
import time
import types
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import greenlet

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

from .el0space import El0Space, _pages_in
from .irq import PENDING_IRQ, InterruptLines
from .memory import GranuleProtectionFault, MemoryAccessor, PhysicalMemory
from .regfile import RegisterFile
from .vcpu import (
    DataAbortTrap,
    HvcTrap,
    IrqTrap,
    Mapping,
    SmcTrap,
    Translate,
    Trap,
    WfxTrap,
)

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


def _unindex(index: dict[int, set[int]], key: int, value: int) -> None:
    """Take `value` out of a reverse index's set for `key` (and the key once it is empty)."""
    values = index[key]
    values.discard(value)
    if not values:
        del index[key]


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


__all__ = ["GuestCpu", "GuestFault", "ImageError", "KernelCore", "Mapping", "PyKernelEngine", "image_at"]
