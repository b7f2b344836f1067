"""The host's KVM layer for realms: it builds and runs a realm only through RMI calls.

The host owns non-secure DRAM (a page allocator over its own memory) and never touches a
granule once it has delegated it: the GPT would fault. It keeps the bookkeeping KVM keeps —
which granules it delegated for what — so it can handle REC exits (map faulted pages,
complete RIPAS changes, map shared pages) and tear the realm down again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from unirealm.arch.esr import Ec, decode_esr_access, esr_ec, ipa_from_hpfar_far
from unirealm.arch.memory import (
    GRANULE_MASK,
    GRANULE_SHIFT,
    GRANULE_SIZE,
    RTT_PAGE_LEVEL,
    default_start_level,
    level_shift,
    level_size,
    num_root_rtts,
)
from unirealm.arch.rmi import (
    REC_EXIT_OFFSET,
    RMI_REALM_PARAMS,
    RMI_REC_ENTER_SPAN,
    RMI_REC_EXIT_SPAN,
    RMI_REC_PARAMS,
    RmiDataFlags,
    RmiFid,
    RmiRecEnterFlags,
    RmiRecExitReason,
    RmiRecFlags,
    RmiRipas,
    RmiStatus,
    RttEntryState,
    index_of,
    status_of,
)
from unirealm.arch.smccc import PsciFid
from unirealm.machine.board import Machine
from unirealm.machine.memory import GranuleProtectionFault

from .rmi_client import HostPages, Ranges, RmiCallError, RmiClient

NS_NORMAL_RW_DESC = (0b1111 << 2) | (0b11 << 6)  # MemAttr normal write-back, S2AP read/write
# Granules a stage-2 fault on unpopulated protected RAM creates at first: the faulting granule
# and the unpopulated RIPAS RAM granules of its aligned 64 KiB, as KVM maps a whole host page
# (64 KiB on a 64K-page host) at a realm's fault.
FAULT_AROUND = 16
# A fault where the last window of a run of windows ended continues the run, and its window
# is twice the last one, up to the end of the level-3 RTT's 2 MiB block (as readahead grows;
# as KVM maps a fault on a 2 MiB transparent huge page): memory touched in order costs one REC
# exit per 2 MiB, a scattered touch still fills 64 KiB only.
FAULT_AROUND_MAX = 512
FAULT_RUNS = 8  # runs of windows followed at once (the app's heap, its stack, a copy's target...)
_EXIT_REASONS = {int(r): r for r in RmiRecExitReason}
# RmiRecEnter.flags the exit handlers return, as plain ints (or-ed at every REC_ENTER).
INJECT_SEA = int(RmiRecEnterFlags.INJECT_SEA)
EMULATED_MMIO = int(RmiRecEnterFlags.EMULATED_MMIO)


_SUCCESS = int(RmiStatus.SUCCESS)
_UNASSIGNED, _RIPAS_RAM = int(RttEntryState.UNASSIGNED), int(RmiRipas.RAM)
L2_SHIFT = level_shift(RTT_PAGE_LEVEL - 1)  # a level-3 RTT covers one level-2 block


@dataclass
class RecExitInfo:
    """A decoded RmiRecExit."""

    reason: RmiRecExitReason
    esr: int
    far: int
    hpfar: int
    gprs: list[int]
    ripas_base: int
    ripas_top: int
    ripas_value: int
    imm: int
    # The REC's virtual CPU interface and EL1 timers, reported at every exit.
    gicv3_hcr: int = 0
    gicv3_lrs: list[int] = field(default_factory=list)
    gicv3_misr: int = 0
    gicv3_vmcr: int = 0
    cntv_ctl: int = 0
    cntv_cval: int = 0
    cntp_ctl: int = 0
    cntp_cval: int = 0

    @property
    def ipa(self) -> int:
        return ipa_from_hpfar_far(self.hpfar, self.far)


@dataclass
class RealmConfig:
    ipa_bits: int
    hash_algo: int = 0
    rpv: bytes = b""
    num_bps: int = 2
    num_wps: int = 2
    vmid: int = 1
    flags: int = 0  # RmiRealmFlags: LPA2, SVE, PMU
    sve_vl: int = 0  # quadwords - 1
    pmu_num_ctrs: int = 0


@dataclass(frozen=True)
class DataStep:
    """Populate `content` at `ipa` (DATA_CREATE per granule, measured or not)."""

    ipa: int
    content: bytes
    measured: bool = True


@dataclass(frozen=True)
class RipasStep:
    """RTT_INIT_RIPAS over [base, top)."""

    base: int
    top: int


@dataclass(frozen=True)
class RecStep:
    pc: int
    gprs: tuple[int, ...]
    runnable: bool


LaunchStep = DataStep | RipasStep | RecStep


@dataclass
class RealmRec:
    pa: int
    aux: list[int]
    run: int
    index: int


@dataclass
class RealmVm:
    """A realm as the host sees it: handles, bookkeeping, and the REC exit handlers."""

    machine: Machine
    pages: HostPages
    config: RealmConfig
    rmi: RmiClient = field(init=False)
    rd: int = 0
    start_level: int = 0
    recs: list[RealmRec] = field(default_factory=list)
    data: dict[int, int] = field(default_factory=dict)  # protected IPA -> data granule PA
    rtts: dict[tuple[int, int], int] = field(default_factory=dict)  # (ipa, level) -> RTT PA
    roots: list[int] = field(default_factory=list)
    shared: dict[int, int] = field(default_factory=dict)  # unprotected IPA page -> NS PA
    on_host_call: Callable[[int, list[int]], list[int]] | None = None
    on_mmio: Callable[[int, bool, int, int], int | None] | None = None
    ram_ranges: list[tuple[int, int]] = field(default_factory=list)
    # fault_around's runs of windows: where each ended -> its last window's size (granules)
    _fault_runs: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    # Map the unprotected alias of RAM the realm converts to EMPTY right away, in one
    # batch per RIPAS change, so that its first touch of each shared page is no REC exit.
    map_shared_ahead: bool = True

    def __post_init__(self) -> None:
        self.rmi = RmiClient(self.machine)
        # Where the host knows the RIPAS is RAM: what RTT_INIT_RIPAS set and what a RIPAS
        # change to RAM completed, less every range any RTT_SET_RIPAS named and every granule
        # DATA_DESTROY or RTT_DESTROY left DESTROYED. Fault-around asks no RTT_READ_ENTRY there.
        self.ripas_ram = Ranges()
        watch = self.rmi.watch
        watch[RmiFid.RTT_INIT_RIPAS] = self._watch_init_ripas
        watch[RmiFid.RTT_SET_RIPAS] = self._watch_set_ripas
        watch[RmiFid.DATA_DESTROY] = self._watch_data_destroy
        watch[RmiFid.RTT_DESTROY] = self._watch_rtt_destroy

    def _watch_init_ripas(self, args: tuple[int, ...], out: list[int]) -> None:
        if args[0] == self.rd and out[0] == _SUCCESS:
            self.ripas_ram.add(args[1], out[1])

    def _watch_set_ripas(self, args: tuple[int, ...], out: list[int]) -> None:
        if args[0] == self.rd:  # whatever it asked for and whatever came of it
            self.ripas_ram.remove(args[2], args[3])

    def _watch_data_destroy(self, args: tuple[int, ...], out: list[int]) -> None:
        if args[0] == self.rd and out[0] == _SUCCESS:
            self.ripas_ram.remove(args[1], args[1] + GRANULE_SIZE)

    def _watch_rtt_destroy(self, args: tuple[int, ...], out: list[int]) -> None:
        if args[0] == self.rd and out[0] == _SUCCESS:
            span = level_size(args[2] - 1)
            base = args[1] & ~(span - 1)
            self.ripas_ram.remove(base, base + span)

    # --- creation -----------------------------------------------------------------------
    @property
    def unprotected_bit(self) -> int:
        return 1 << (self.config.ipa_bits - 1)

    def delegated(self) -> int:
        pa = self.pages.alloc()
        self.rmi.call(RmiFid.GRANULE_DELEGATE, pa)
        return pa

    def create(self) -> None:
        cfg = self.config
        self.start_level = default_start_level(cfg.ipa_bits)
        n_roots = num_root_rtts(cfg.ipa_bits, self.start_level)
        rtt_base = self.pages.alloc_contiguous(n_roots)
        self.roots = [rtt_base + i * GRANULE_SIZE for i in range(n_roots)]
        for r in self.roots:
            self.rmi.call(RmiFid.GRANULE_DELEGATE, r)
        self.rd = self.delegated()
        params = self.pages.alloc()
        self.pages.mem.write(
            params,
            RMI_REALM_PARAMS.pack(
                flags=cfg.flags,
                s2sz=cfg.ipa_bits,
                sve_vl=cfg.sve_vl,
                pmu_num_ctrs=cfg.pmu_num_ctrs,
                num_bps=cfg.num_bps - 1,
                num_wps=cfg.num_wps - 1,
                hash_algo=cfg.hash_algo,
                rpv=cfg.rpv.ljust(64, b"\0"),
                vmid=cfg.vmid,
                rtt_base=rtt_base,
                rtt_level_start=self.start_level,
                rtt_num_start=n_roots,
            ),
        )
        try:
            self.rmi.call(RmiFid.REALM_CREATE, self.rd, params)
        finally:
            self.pages.free(params)

    def ensure_rtt(self, ipa: int, level: int) -> None:
        """Create the missing RTTs on the walk to `level` for `ipa`."""
        for lvl in range(self.start_level + 1, level + 1):
            base = ipa & ~(level_size(lvl - 1) - 1)
            if (base, lvl) in self.rtts:  # one this host created: it is still there
                continue
            entry = self.rmi.call(RmiFid.RTT_READ_ENTRY, self.rd, base, lvl - 1)
            if entry[2] == RttEntryState.TABLE:
                continue
            rtt = self.delegated()
            self.rmi.call(RmiFid.RTT_CREATE, self.rd, rtt, base, lvl)
            self.rtts[(base, lvl)] = rtt

    def populate(self, ipa: int, content: bytes | memoryview, measured: bool = True) -> None:
        """DATA_CREATE each granule of `content` at `ipa` (zero-padded), as KVM's populate."""
        src = self.pages.alloc()
        flags = int(RmiDataFlags.MEASURED if measured else RmiDataFlags.UNMEASURED)
        data_create, delegate, rd = RmiFid.DATA_CREATE, RmiFid.GRANULE_DELEGATE, self.rd
        call, write, alloc = self.rmi.call, self.pages.mem.write, self.pages.alloc
        view = memoryview(content)
        block = -1  # the level-3 RTT's 2 MiB block last made sure of
        try:
            for off in range(0, len(content), GRANULE_SIZE):
                page = view[off : off + GRANULE_SIZE]
                write(src, page if len(page) == GRANULE_SIZE else bytes(page).ljust(GRANULE_SIZE, b"\0"))
                here = ipa + off
                if here >> L2_SHIFT != block:
                    self.ensure_rtt(here, RTT_PAGE_LEVEL)
                    block = here >> L2_SHIFT
                data = alloc()
                call(delegate, data)
                call(data_create, rd, data, here, src, flags)
                self.data[here] = data
        finally:
            self.pages.free(src)

    def init_ripas(self, base: int, top: int) -> None:
        """RTT_INIT_RIPAS over [base, top), splitting blocks only where alignment needs it."""
        addr = base
        while addr < top:
            out = self.rmi.try_call(RmiFid.RTT_INIT_RIPAS, self.rd, addr, top)
            status = status_of(out[0])
            if status == RmiStatus.SUCCESS:
                addr = out[1]
                continue
            if status == RmiStatus.ERROR_RTT and index_of(out[0]) < RTT_PAGE_LEVEL:
                self.ensure_rtt(addr, index_of(out[0]) + 1)
                continue
            raise RmiCallError(RmiFid.RTT_INIT_RIPAS, status, index_of(out[0]))

    def create_rec(self, pc: int, gprs: list[int], runnable: bool) -> RealmRec:
        index = len(self.recs)
        aux_count = self.rmi.call(RmiFid.REC_AUX_COUNT, self.rd)[1]
        aux = [self.delegated() for _ in range(aux_count)]
        rec = self.delegated()
        params = self.pages.alloc()
        mpidr = (index & 0xF) | ((index >> 4) << 8)
        self.pages.mem.write(
            params,
            RMI_REC_PARAMS.pack(
                flags=RmiRecFlags.RUNNABLE if runnable else 0,
                mpidr=mpidr,
                pc=pc,
                gprs=gprs,
                num_rec_aux=aux_count,
                aux=aux,
            ),
        )
        try:
            self.rmi.call(RmiFid.REC_CREATE, self.rd, rec, params)
        finally:
            self.pages.free(params)
        r = RealmRec(rec, aux, self.pages.alloc(), index)
        self.recs.append(r)
        return r

    def execute(self, plan: list[LaunchStep]) -> list[RealmRec]:
        """Carry out a launch plan in order; the same plan predicts the RIM offline."""
        recs = []
        for step in plan:
            if isinstance(step, DataStep):
                self.populate(step.ipa, step.content, step.measured)
            elif isinstance(step, RipasStep):
                self.init_ripas(step.base, step.top)
            else:
                recs.append(self.create_rec(step.pc, list(step.gprs), step.runnable))
        return recs

    def activate(self) -> None:
        self.rmi.call(RmiFid.REALM_ACTIVATE, self.rd)

    # --- running ------------------------------------------------------------------------
    def enter(
        self,
        rec: RealmRec,
        flags: int = 0,
        gprs: list[int] | None = None,
        gicv3_hcr: int = 0,
        gicv3_lrs: list[int] | None = None,
    ) -> RecExitInfo:
        mem = self.pages.mem
        self.write_entry(rec, flags, gprs, gicv3_hcr, gicv3_lrs)
        self.rmi.call(RmiFid.REC_ENTER, rec.pa, rec.run)
        run = RMI_REC_EXIT_SPAN.unpack(mem.read(rec.run + REC_EXIT_OFFSET, RMI_REC_EXIT_SPAN.size))
        reason = _EXIT_REASONS.get(run["exit_reason"])
        return RecExitInfo(
            RmiRecExitReason(run["exit_reason"]) if reason is None else reason,
            run["exit_esr"],
            run["exit_far"],
            run["exit_hpfar"],
            run["exit_gprs"],
            run["exit_ripas_base"],
            run["exit_ripas_top"],
            run["exit_ripas_value"],
            run["exit_imm"],
            run["exit_gicv3_hcr"],
            run["exit_gicv3_lrs"],
            run["exit_gicv3_misr"],
            run["exit_gicv3_vmcr"],
            run["exit_cntv_ctl"],
            run["exit_cntv_cval"],
            run["exit_cntp_ctl"],
            run["exit_cntp_cval"],
        )

    def write_entry(self, rec: RealmRec, flags: int, gprs: list[int] | None, gicv3_hcr: int,
                    gicv3_lrs: list[int] | None) -> None:
        """RmiRecEnter in REC `rec`'s run page."""
        self.pages.mem.write(rec.run, RMI_REC_ENTER_SPAN.pack(
            enter_flags=flags, enter_gprs=gprs or (), enter_gicv3_hcr=gicv3_hcr, enter_gicv3_lrs=gicv3_lrs or ()
        ))

    def in_ram(self, ipa: int) -> bool:
        return any(lo <= ipa < hi for lo, hi in self.ram_ranges)

    def run(self, rec: RealmRec, max_exits: int = 1_000_000) -> RecExitInfo:
        """Run a REC, handling exits, until PSCI SYSTEM_OFF/RESET (returned) or an exit
        the handlers leave to the caller."""
        flags, gprs = 0, None
        for _ in range(max_exits):
            ex = self.enter(rec, flags, gprs)
            flags, gprs = 0, None
            if ex.reason == RmiRecExitReason.SYNC:
                flags, gprs = self.handle_sync(ex)
            elif ex.reason == RmiRecExitReason.RIPAS_CHANGE:
                flags = self.handle_ripas_change(rec, ex)
            elif ex.reason == RmiRecExitReason.HOST_CALL:
                gprs = self.on_host_call(ex.imm, list(ex.gprs)) if self.on_host_call else list(ex.gprs)
            elif ex.reason == RmiRecExitReason.PSCI:
                fid = ex.gprs[0] & ~(1 << 30)
                if fid in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
                    return ex
                if fid in (PsciFid.CPU_ON, PsciFid.AFFINITY_INFO):
                    return ex
        raise RuntimeError("realm did not stop")

    def handle_sync(self, ex: RecExitInfo) -> tuple[int, list[int] | None]:
        ec = esr_ec(ex.esr)
        if ec == Ec.WFX:
            return 0, None
        if ec not in (Ec.DABT_LOWER, Ec.IABT_LOWER):
            return INJECT_SEA, None
        ipa = ex.ipa
        page = ipa & ~(GRANULE_SIZE - 1)
        if not ipa & self.unprotected_bit:
            self.fault_in(page)
            return 0, None
        canonical = page & ~self.unprotected_bit
        if self.in_ram(canonical):
            self.map_shared(page)
            return 0, None
        access = decode_esr_access(ex.esr)
        if access is None or self.on_mmio is None:
            return INJECT_SEA, None
        value = self.on_mmio(canonical | (ipa & (GRANULE_SIZE - 1)), access.is_write, access.size, ex.gprs[0])
        if value is None:
            return INJECT_SEA, None
        return EMULATED_MMIO, [value]

    def fault_in(self, page: int) -> None:
        """A protected page with RIPAS RAM that was never populated: DATA_CREATE_UNKNOWN it
        (this one must succeed, or the realm stops), then its neighbours (`fault_around`)."""
        self.ensure_rtt(page, RTT_PAGE_LEVEL)
        data = self.delegated()
        self.rmi.call(RmiFid.DATA_CREATE_UNKNOWN, self.rd, data, page)
        self.data[page] = data
        self.fault_around(page)

    def fault_around(self, page: int) -> int:
        """DATA_CREATE_UNKNOWN over the rest of the window around a protected fault (Linux's
        fault-around; KVM maps a realm fault by the size of the host's mapping): the granules
        still UNASSIGNED with RIPAS RAM, so the realm's next touches there are no exits.
        The window starts at the fault's aligned 64 KiB (FAULT_AROUND granules); where a run
        of windows ended it is twice the run's last (FAULT_AROUND_MAX at most), and it never
        leaves the fault's 2 MiB block or its RAM range. Returns how many granules it made."""
        first = page & ~(FAULT_AROUND * GRANULE_SIZE - 1)
        runs = self._fault_runs
        last = runs.pop(first, 0)
        size = min(2 * last, FAULT_AROUND_MAX) if last else FAULT_AROUND
        ram = next(((lo, hi) for lo, hi in self.ram_ranges if lo <= page < hi), None)
        if ram is None:
            return 0
        top = min(first + size * GRANULE_SIZE, (page | ((1 << L2_SHIFT) - 1)) + 1, ram[1])
        first = max(first, ram[0])
        runs[top] = size
        if len(runs) > FAULT_RUNS:
            del runs[next(iter(runs))]  # the run followed longest ago
        made = 0
        data, rd, alloc, free = self.data, self.rd, self.pages.alloc, self.pages.free
        call, try_call = self.rmi.call, self.rmi.try_call
        read_entry, create = RmiFid.RTT_READ_ENTRY, RmiFid.DATA_CREATE_UNKNOWN
        delegate, undelegate = RmiFid.GRANULE_DELEGATE, RmiFid.GRANULE_UNDELEGATE
        known_ram = self.ripas_ram.covers(first, top)  # else each granule's RIPAS is read first
        for nxt in range(first, top, GRANULE_SIZE):
            if nxt in data:
                continue
            if not known_ram:
                entry = try_call(read_entry, rd, nxt, RTT_PAGE_LEVEL)
                if entry[0] != _SUCCESS or entry[1] != RTT_PAGE_LEVEL or entry[2] != _UNASSIGNED \
                        or entry[4] != _RIPAS_RAM:
                    continue
            try:
                granule = alloc()
            except MemoryError:  # the host is out of granules: the rest of the window waits for its faults
                break
            call(delegate, granule)
            if try_call(create, rd, granule, nxt)[0] != _SUCCESS:
                call(undelegate, granule)
                free(granule)
                continue
            data[nxt] = granule
            made += 1
        return made

    def map_shared(self, page: int) -> int:
        self.ensure_rtt(page, RTT_PAGE_LEVEL)
        pa = self.pages.alloc()
        self.rmi.call(RmiFid.RTT_MAP_UNPROTECTED, self.rd, page, RTT_PAGE_LEVEL, pa | NS_NORMAL_RW_DESC)
        self.shared[page] = pa
        return pa

    def handle_ripas_change(self, rec: RealmRec, ex: RecExitInfo) -> int:
        addr, top = ex.ripas_base, ex.ripas_top
        while addr < top:
            out = self.rmi.try_call(RmiFid.RTT_SET_RIPAS, self.rd, rec.pa, addr, top)
            status = status_of(out[0])
            if status == RmiStatus.SUCCESS:
                new = out[1]
                if ex.ripas_value == RmiRipas.RAM:
                    self.ripas_ram.add(addr, new)
                if ex.ripas_value == RmiRipas.EMPTY:
                    self._destroy_data(addr, new)
                    if self.map_shared_ahead:
                        self._map_shared_range(addr, new)
                addr = new
            elif status == RmiStatus.ERROR_RTT and index_of(out[0]) < RTT_PAGE_LEVEL:
                self.ensure_rtt(addr, index_of(out[0]) + 1)
            else:
                raise RmiCallError(RmiFid.RTT_SET_RIPAS, status, index_of(out[0]))
        return 0

    def _map_shared_range(self, base: int, top: int) -> None:
        """RTT_MAP_UNPROTECTED over the alias of the RAM in [base, top) not mapped yet."""
        for page in range(base & ~(GRANULE_SIZE - 1), top, GRANULE_SIZE):
            alias = page | self.unprotected_bit
            if self.in_ram(page) and alias not in self.shared:
                self.map_shared(alias)

    def _destroy_data(self, base: int, top: int) -> None:
        """Data going EMPTY is destroyed and its granules return to the host (as kvmtool).
        The granules are found by looking up the range's IPAs or by one pass over what the
        host created, whichever is fewer: the cost is never the product of the two."""
        data = self.data
        if (top - base) >> GRANULE_SHIFT <= len(data):
            ipas = [i for i in range(base & ~GRANULE_MASK, top, GRANULE_SIZE) if i in data]
        else:
            ipas = [i for i in data if base <= i < top]
        self._destroy_granules(ipas)

    def _destroy_granules(self, ipas: Iterable[int]) -> None:
        """DATA_DESTROY each of these protected IPAs, then undelegate and free its granule."""
        call, free, data, rd = self.rmi.call, self.pages.free, self.data, self.rd
        destroy, undelegate = RmiFid.DATA_DESTROY, RmiFid.GRANULE_UNDELEGATE
        for ipa in ipas:
            pa = call(destroy, rd, ipa)[1]
            call(undelegate, pa)
            free(pa)
            del data[ipa]

    def read_shared(self, ipa: int, size: int) -> bytes:
        """Read realm-shared memory through the host's own NS pages."""
        out = bytearray()
        addr = ipa | self.unprotected_bit
        while len(out) < size:
            page = addr & ~(GRANULE_SIZE - 1)
            pa = self.shared.get(page)
            if pa is None:
                raise GranuleProtectionFault(addr, self.pages.mem.world, None)
            take = min(size - len(out), page + GRANULE_SIZE - addr)
            out += self.pages.mem.read(pa + (addr - page), take)
            addr += take
        return bytes(out)

    # --- teardown -----------------------------------------------------------------------
    def destroy(self) -> None:
        """Tear the realm down through RMI and give every granule back to the host."""
        for rec in self.recs:
            self.rmi.call(RmiFid.REC_DESTROY, rec.pa)
            for g in (rec.pa, *rec.aux):
                self.rmi.call(RmiFid.GRANULE_UNDELEGATE, g)
                self.pages.free(g)
            self.pages.free(rec.run)
        self.recs.clear()
        self.ripas_ram = Ranges()  # nothing is faulted in any more
        self._destroy_granules(list(self.data))
        for page, pa in list(self.shared.items()):
            self.rmi.call(RmiFid.RTT_UNMAP_UNPROTECTED, self.rd, page, RTT_PAGE_LEVEL)
            self.pages.free(pa)
            del self.shared[page]
        for (ipa, level), rtt in sorted(self.rtts.items(), key=lambda kv: -kv[0][1]):
            self.rmi.call(RmiFid.RTT_DESTROY, self.rd, ipa, level)
            self.rmi.call(RmiFid.GRANULE_UNDELEGATE, rtt)
            self.pages.free(rtt)
        self.rtts.clear()
        self.rmi.call(RmiFid.REALM_DESTROY, self.rd)
        for g in (self.rd, *self.roots):
            self.rmi.call(RmiFid.GRANULE_UNDELEGATE, g)
            self.pages.free(g)

