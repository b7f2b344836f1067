"""A GICv3 (Arm IHI 0069) as KVM's vGIC presents it to a kvmtool guest: one distributor, one
redistributor per vCPU, and a CPU interface per vCPU reached through ICC_*_EL1 system registers.

What the guest sees (register facts in `arch/gic.py`):

- A GIC with a single Security state and affinity routing always on: GICD_CTLR.DS and .ARE
  are RAO/WI, EnableGrp0/EnableGrp1 are the distributor's two group enables.
- GICD_TYPER: ITLinesNumber for kvmtool's SPI count (its allocated lines rounded up to 32),
  IDbits 10, no LPIs, no 1-of-N routing (No1N), no Aff3 (A3V 0), no range selector.
- IIDR of KVM (implementer Arm, product 'K', revision 3), PIDR2 of a GICv3; the other ID
  registers, GICD_STATUSR, TYPER2 and everything with no GICv3-with-ARE meaning
  (ITARGETSR, SGIR, the SPI message registers, IGRPMODR and NSACR with DS=1) RAZ/WI.
- Per-INTID registers of INTIDs 0-31 live in each redistributor's SGI_base frame; in the
  distributor they are RAZ/WI, as are INTIDs beyond the implemented SPIs.
- Reset as KVM's: every interrupt in Group 1, priority 0, SGIs enabled and edge-triggered,
  PPIs level-sensitive (neither configurable: ICFGR0/1 are read-only), SPIs disabled,
  level-sensitive, routed to affinity 0.0.0.0. Redistributors awake (GICR_WAKER 0).
- Access widths as §12.1 allows: 32-bit registers 32-bit only; IPRIORITYR also byte by
  byte; IROUTER and GICR_TYPER 64-bit or 32-bit halves. Any other width, a misaligned
  access or an unknown offset reads as zero and ignores writes.
- Priority has 5 implemented bits (writes to bits [2:0] are ignored).

Pending state: an edge-triggered interrupt is pending from a rising edge (or ISPENDR) until it
is acknowledged (or ICPENDR); a level-sensitive one while its line is high, or from ISPENDR
until it is acknowledged or cleared by ICPENDR. An interrupt that is active is not signalled
again until it is deactivated.

Devices drive SPI lines with `set_spi_level` / `pulse_spi`; the timers drive their PPIs with
`set_ppi_level`; the CPU interfaces (`cpu(n)`) generate SGIs.

Why one module: it is IHI 0069's distributor and redistributor register map, one state that
both sets of registers read and write (the CPU interfaces are devices/gicv3_cpuif.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unirealm.arch.gic import (
    GICD_BITMAP_SPAN,
    GICD_CTLR_ARE,
    GICD_CTLR_DS,
    GICD_ICFGR_SPAN,
    GICD_IPRIORITYR_SPAN,
    GICD_IROUTER_AFF_MASK,
    GICD_IROUTER_SPAN,
    GICD_SIZE,
    GICR_CTLR_CES,
    GICR_CTLR_IR,
    GICR_IPRIORITYR_SPAN,
    GICR_SGI_BASE,
    GICR_SIZE,
    ICFGR_EDGE,
    IIDR_IMPLEMENTER_ARM,
    IIDR_PRODUCT_ID_KVM,
    INTID_SPURIOUS,
    INTIDS_PER_ITLINE,
    KVM_VGIC_IMP_REV,
    MAX_SPI,
    NR_PRIVATE_IRQS,
    NR_SGIS,
    PIDR2_ARCHREV_GICV3,
    PPI_BASE,
    PRIORITY_MASK,
    SPI_BASE,
    Gicd,
    GICD_CTLR_EnableGrp0,
    GICD_CTLR_EnableGrp1,
    GICD_IIDR_Implementer_SHIFT,
    GICD_IIDR_ProductID_SHIFT,
    GICD_IIDR_Revision_SHIFT,
    GICD_TYPER_IDbits_SHIFT,
    GICD_TYPER_No1N,
    GICR_TYPER_Affinity_Value_SHIFT,
    GICR_TYPER_Last,
    GICR_TYPER_Processor_Number_MASK,
    GICR_TYPER_Processor_Number_SHIFT,
    GICR_WAKER_ChildrenAsleep,
    GICR_WAKER_ProcessorSleep,
    GicrRd,
    is_spi,
)
from unirealm.host.devices.gicv3_cpuif import CpuInterface
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.memmap import ARM_GIC_DIST_BASE, gic_redists_base, gic_redists_size, vcpu_mpidr

GICD_TYPER_IDBITS = 10  # INTIDs up to 1023: SPIs only, no LPIs

# (event, vcpu, intid): "raise" (a line goes high), "sgi", "ack", "eoi", "deactivate"; for
# `--trace irq`. The vCPU is -1 for an SPI routed to no vCPU.
IrqTrace = Callable[[str, int, int], None]


class GicError(ValueError):
    """A bad GIC configuration or host-side request; the message is one line."""


def nr_spis_for_lines(lines: int) -> int:
    """kvmtool's gic__init_gic: the allocated device lines rounded up to a multiple of 32."""
    return -(-max(lines, 0) // INTIDS_PER_ITLINE) * INTIDS_PER_ITLINE


@dataclass(eq=False)
class Irq:
    """One interrupt's state. `cpu` is the redistributor a private interrupt belongs to, or the
    vCPU an SPI's IROUTER selects (None: no vCPU has that affinity)."""

    intid: int
    cpu: int | None
    edge: bool = False
    enabled: bool = False
    latch: bool = False  # edge seen / ISPENDR written; cleared by acknowledge or ICPENDR
    line: bool = False  # input level
    active: bool = False
    priority: int = 0
    group: int = 1
    route: int = 0  # IROUTER Aff2.Aff1.Aff0 (SPIs)

    @property
    def pending(self) -> bool:
        return self.latch or (self.line and not self.edge)


def _extract(value: int, offset: int, size: int) -> int:
    """The `size` bytes at byte `offset` of a little-endian register value."""
    return (value >> (8 * offset)) & ((1 << (8 * size)) - 1)


class GicV3:
    """The GIC's state, the two MMIO devices and the CPU interfaces of `nr_cpus` vCPUs."""

    def __init__(
        self,
        nr_cpus: int,
        nr_spis: int = 32,
        *,
        mpidrs: list[int] | None = None,
        on_kick: Callable[[int], None] | None = None,
        trace: IrqTrace | None = None,
    ) -> None:
        if nr_cpus < 1:
            raise GicError("a GIC needs at least one CPU")
        if nr_spis < 0 or nr_spis % INTIDS_PER_ITLINE or SPI_BASE + nr_spis > MAX_SPI + 1:
            raise GicError(f"{nr_spis} SPIs: a multiple of 32, at most {MAX_SPI + 1 - SPI_BASE}")
        self.nr_cpus = nr_cpus
        self.nr_irqs = SPI_BASE + nr_spis
        self.mpidrs = list(mpidrs) if mpidrs is not None else [vcpu_mpidr(i) for i in range(nr_cpus)]
        if len(self.mpidrs) != nr_cpus:
            raise GicError(f"{len(self.mpidrs)} MPIDRs for {nr_cpus} CPUs")
        self._cpu_by_affinity = {m & GICD_IROUTER_AFF_MASK: i for i, m in enumerate(self.mpidrs)}
        self.on_kick = on_kick
        self.trace = trace
        self.ctlr = 0  # EnableGrp0 | EnableGrp1
        self.sleeping = [False] * nr_cpus  # GICR_WAKER.ProcessorSleep
        self.private = [
            [Irq(i, cpu, edge=i < NR_SGIS, enabled=i < NR_SGIS) for i in range(NR_PRIVATE_IRQS)]
            for cpu in range(nr_cpus)
        ]
        self.spis = [Irq(i, self.cpu_for_affinity(0)) for i in range(SPI_BASE, self.nr_irqs)]
        self._pending: set[Irq] = set()
        self._active: set[Irq] = set()  # every active interrupt, kept by set_active and activate
        self._sources: list[list[Callable[[], None]]] = [[] for _ in range(nr_cpus)]
        self.cpus = [CpuInterface(self, i) for i in range(nr_cpus)]
        self.distributor = GicDistributor(self)
        self.redistributors = GicRedistributors(self)

    # --- placement -------------------------------------------------------------------------
    def attach(
        self, bus: MmioBus, dist_base: int = ARM_GIC_DIST_BASE, redist_base: int | None = None
    ) -> None:
        """Claim kvmtool's windows: the distributor, and the redistributors just below it."""
        if redist_base is None:
            redist_base = gic_redists_base(self.nr_cpus)
        bus.register(dist_base, GICD_SIZE, self.distributor, "gicv3-dist")
        bus.register(redist_base, gic_redists_size(self.nr_cpus), self.redistributors, "gicv3-redist")

    # --- lookup ----------------------------------------------------------------------------
    def cpu(self, n: int) -> CpuInterface:
        return self.cpus[n]

    def cpu_for_affinity(self, affinity: int) -> int | None:
        return self._cpu_by_affinity.get(affinity & GICD_IROUTER_AFF_MASK)

    def irq(self, cpu: int, intid: int) -> Irq | None:
        """The state of `intid` as vCPU `cpu` sees it; None for INTIDs not implemented."""
        if 0 <= intid < NR_PRIVATE_IRQS:
            return self.private[cpu][intid] if 0 <= cpu < self.nr_cpus else None
        if SPI_BASE <= intid < self.nr_irqs:
            return self.spis[intid - SPI_BASE]
        return None

    def spi(self, intid: int) -> Irq | None:
        return self.spis[intid - SPI_BASE] if SPI_BASE <= intid < self.nr_irqs else None

    # --- state changes: each keeps the pending set right and kicks a vCPU whose choice may change
    def _update(self, irq: Irq, was_pending: bool) -> None:
        if irq.pending:
            self._pending.add(irq)
        else:
            self._pending.discard(irq)
        if irq.pending != was_pending:
            self.kick(irq.cpu)

    def kick(self, cpu: int | None) -> None:
        """Tell the VMM that what vCPU `cpu` has pending may have changed (`on_kick`)."""
        if self.on_kick is not None and cpu is not None:
            self.on_kick(cpu)

    def trace_event(self, event: str, cpu: int | None, intid: int) -> None:
        if self.trace is not None:
            self.trace(event, -1 if cpu is None else cpu, intid)

    def set_latch(self, irq: Irq, value: bool) -> None:
        if irq.latch != value:
            was = irq.pending
            irq.latch = value
            self._update(irq, was)

    def set_line(self, irq: Irq, level: bool) -> None:
        if irq.line == level:
            return
        was = irq.pending
        irq.line = level
        if level:
            self.trace_event("raise", irq.cpu, irq.intid)
            if irq.edge:
                irq.latch = True
        self._update(irq, was)

    def set_edge(self, irq: Irq, edge: bool) -> None:
        was = irq.pending
        irq.edge = edge
        self._update(irq, was)

    def set_enabled(self, irq: Irq, value: bool) -> None:
        if irq.enabled != value:
            irq.enabled = value
            self._kick_if_pending(irq)

    def set_active(self, irq: Irq, value: bool) -> None:
        if irq.active != value:
            irq.active = value
            if value:
                self._active.add(irq)
            else:
                self._active.discard(irq)
            self._kick_if_pending(irq)

    def activate(self, irq: Irq) -> None:
        """The acknowledge's half of an activation (CpuInterface): active, without a kick
        (clearing its latch next decides that)."""
        irq.active = True
        self._active.add(irq)

    def set_priority(self, irq: Irq, priority: int) -> None:
        if irq.priority != priority & PRIORITY_MASK:
            irq.priority = priority & PRIORITY_MASK
            self._kick_if_pending(irq)

    def set_group(self, irq: Irq, group: int) -> None:
        if irq.group != group:
            irq.group = group
            self._kick_if_pending(irq)

    def set_route(self, irq: Irq, affinity: int) -> None:
        old = irq.cpu
        irq.route = affinity & GICD_IROUTER_AFF_MASK
        irq.cpu = self.cpu_for_affinity(irq.route)
        if irq.cpu != old and irq.pending:
            self.kick(old)
            self.kick(irq.cpu)

    def _kick_if_pending(self, irq: Irq) -> None:
        if irq.pending:
            self.kick(irq.cpu)

    # --- inputs from devices and timers -----------------------------------------------------
    def set_spi_level(self, intid: int, level: bool) -> None:
        """An SPI input line (kvmtool's kvm__irq_line); INTIDs that are not implemented SPIs
        are ignored, as KVM_IRQ_LINE refuses them."""
        irq = self.spi(intid)
        if irq is not None:
            self.set_line(irq, bool(level))

    def pulse_spi(self, intid: int) -> None:
        """Raise and lower an SPI line (kvmtool's kvm__irq_trigger, used by virtio)."""
        self.set_spi_level(intid, True)
        self.set_spi_level(intid, False)

    def set_ppi_level(self, cpu: int, intid: int, level: bool) -> None:
        if 0 <= cpu < self.nr_cpus and PPI_BASE <= intid < SPI_BASE:  # is_ppi, inline: timers call it at every exit
            self.set_line(self.private[cpu][intid], bool(level))

    def add_source(self, cpu: int, sync: Callable[[], None]) -> None:
        """A level source (a timer) whose `sync()` brings its PPI lines up to date; it runs
        before every decision about what vCPU `cpu` has pending."""
        self._sources[cpu].append(sync)

    def sync(self, cpu: int) -> None:
        for source in self._sources[cpu]:
            source()

    def send_sgi(self, cpu: int, intid: int, allow_group1: bool) -> None:
        """Make SGI `intid` pending on `cpu`. A Group 0 request (ICC_SGI0R, ICC_ASGI1R with one
        Security state) makes only Group 0 SGIs pending; a Group 1 one (ICC_SGI1R) either."""
        if not (0 <= cpu < self.nr_cpus and 0 <= intid < NR_SGIS):
            return
        irq = self.private[cpu][intid]
        if irq.group == 0 or allow_group1:
            self.trace_event("sgi", cpu, intid)
            self.set_latch(irq, True)

    # --- selection ---------------------------------------------------------------------------
    def group_enabled(self, group: int) -> bool:
        return bool(self.ctlr & (GICD_CTLR_EnableGrp1 if group else GICD_CTLR_EnableGrp0))

    def hppi(self, cpu: int) -> Irq | None:
        """The highest priority pending interrupt vCPU `cpu` may be signalled: pending, not
        active, enabled, its group enabled in GICD_CTLR and at the CPU interface, and the
        redistributor awake. Ties go to the lowest INTID."""
        if not 0 <= cpu < self.nr_cpus or self.sleeping[cpu]:
            return None
        self.sync(cpu)
        cpuif = self.cpus[cpu]
        best: Irq | None = None
        for irq in self._pending:
            if irq.cpu != cpu or irq.active or not irq.enabled:
                continue
            if not self.group_enabled(irq.group) or not cpuif.group_enabled(irq.group):
                continue
            if best is None or (irq.priority, irq.intid) < (best.priority, best.intid):
                best = irq
        return best

    def pending_irqs(self) -> set[Irq]:
        """Every interrupt that is pending now, on any CPU (read-only)."""
        return self._pending

    def active_irqs(self) -> set[Irq]:
        """Every interrupt that is active now, on any CPU (read-only)."""
        return self._active

    def highest_pending(self, cpu: int) -> int:
        """The INTID the CPU interface of `cpu` would signal now (after PMR and the running
        priority), or 1023."""
        irq = self.cpus[cpu].signalled() if 0 <= cpu < self.nr_cpus else None
        return INTID_SPURIOUS if irq is None else irq.intid

    def irq_pending(self, cpu: int) -> bool:
        """Whether vCPU `cpu` must take an IRQ (a Group 1 interrupt) once PSTATE.I allows."""
        return 0 <= cpu < self.nr_cpus and self.cpus[cpu].irq_pending()

    def fiq_pending(self, cpu: int) -> bool:
        """Whether vCPU `cpu` has a Group 0 interrupt to take as an FIQ (one Security state)."""
        return 0 <= cpu < self.nr_cpus and self.cpus[cpu].fiq_pending()

    # --- distributor registers ----------------------------------------------------------------
    @property
    def typer(self) -> int:
        return (
            (self.nr_irqs // INTIDS_PER_ITLINE - 1)
            | ((GICD_TYPER_IDBITS - 1) << GICD_TYPER_IDbits_SHIFT)
            | GICD_TYPER_No1N
        )

    def gicd_ctlr(self) -> int:
        return self.ctlr | GICD_CTLR_ARE | GICD_CTLR_DS

    def write_gicd_ctlr(self, value: int) -> None:
        value &= GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1
        if value != self.ctlr:
            self.ctlr = value
            for cpu in range(self.nr_cpus):
                self.kick(cpu)


GICD_IIDR_VALUE = (
    (IIDR_PRODUCT_ID_KVM << GICD_IIDR_ProductID_SHIFT)
    | (KVM_VGIC_IMP_REV << GICD_IIDR_Revision_SHIFT)
    | (IIDR_IMPLEMENTER_ARM << GICD_IIDR_Implementer_SHIFT)
)
GICR_IIDR_VALUE = (IIDR_PRODUCT_ID_KVM << GICD_IIDR_ProductID_SHIFT) | IIDR_IMPLEMENTER_ARM

_BITMAP_REGS = (
    Gicd.IGROUPR,
    Gicd.ISENABLER,
    Gicd.ICENABLER,
    Gicd.ISPENDR,
    Gicd.ICPENDR,
    Gicd.ISACTIVER,
    Gicd.ICACTIVER,
)

Lookup = Callable[[int], Irq | None]


class _IrqRegisters:
    """The per-INTID registers, at the same offsets in the distributor (SPIs) and in a
    redistributor's SGI_base frame (INTIDs 0-31: GicrSgi equals Gicd there): IGROUPR, IS/ICENABLER, IS/ICPENDR,
    IS/ICACTIVER, IPRIORITYR, ICFGR. `lookup` gives the INTIDs the frame holds."""

    def __init__(self, gic: GicV3, lookup: Lookup, priority_span: int, icfgr_span: int) -> None:
        self.gic = gic
        self.lookup = lookup
        self.priority_span = priority_span
        self.icfgr_span = icfgr_span

    def _bitmap_reg(self, offset: int) -> tuple[Gicd, int] | None:
        for reg in _BITMAP_REGS:
            if reg <= offset < reg + GICD_BITMAP_SPAN:
                return reg, (offset - reg) * 8
        return None

    def read(self, offset: int, size: int) -> int | None:
        """The register value, or None when `offset` is not a per-INTID register."""
        if Gicd.IPRIORITYR <= offset < Gicd.IPRIORITYR + self.priority_span:
            if size not in (1, 4):
                return 0
            first = offset - Gicd.IPRIORITYR
            value = 0
            for i in range(size):
                irq = self.lookup(first + i)
                if irq is not None:
                    value |= irq.priority << (8 * i)
            return value
        if Gicd.ICFGR <= offset < Gicd.ICFGR + self.icfgr_span:
            if size != 4:
                return 0
            first = (offset - Gicd.ICFGR) * 4
            value = 0
            for i in range(16):
                irq = self.lookup(first + i)
                if irq is not None and irq.edge:
                    value |= ICFGR_EDGE << (2 * i)
            return value
        found = self._bitmap_reg(offset)
        if found is None:
            return None
        if size != 4:
            return 0
        reg, first = found
        value = 0
        for i in range(32):
            irq = self.lookup(first + i)
            if irq is not None and _bitmap_bit(reg, irq):
                value |= 1 << i
        return value

    def write(self, offset: int, size: int, value: int) -> bool:
        """Apply a write; False when `offset` is not a per-INTID register."""
        gic = self.gic
        if Gicd.IPRIORITYR <= offset < Gicd.IPRIORITYR + self.priority_span:
            if size in (1, 4):
                first = offset - Gicd.IPRIORITYR
                for i in range(size):
                    irq = self.lookup(first + i)
                    if irq is not None:
                        gic.set_priority(irq, value >> (8 * i))
            return True
        if Gicd.ICFGR <= offset < Gicd.ICFGR + self.icfgr_span:
            if size == 4:
                first = (offset - Gicd.ICFGR) * 4
                for i in range(16):
                    irq = self.lookup(first + i)
                    if irq is not None and is_spi(irq.intid):  # SGI and PPI configuration is fixed
                        gic.set_edge(irq, bool((value >> (2 * i)) & ICFGR_EDGE))
            return True
        found = self._bitmap_reg(offset)
        if found is None:
            return False
        if size != 4:
            return True
        reg, first = found
        for i in range(32):
            bit = (value >> i) & 1
            irq = self.lookup(first + i)
            if irq is None:
                continue
            if reg == Gicd.IGROUPR:
                gic.set_group(irq, bit)
            elif not bit:
                continue
            elif reg in (Gicd.ISENABLER, Gicd.ICENABLER):
                gic.set_enabled(irq, reg == Gicd.ISENABLER)
            elif reg in (Gicd.ISPENDR, Gicd.ICPENDR):
                gic.set_latch(irq, reg == Gicd.ISPENDR)
            else:
                gic.set_active(irq, reg == Gicd.ISACTIVER)
        return True


def _bitmap_bit(reg: Gicd, irq: Irq) -> bool:
    if reg == Gicd.IGROUPR:
        return bool(irq.group)
    if reg in (Gicd.ISENABLER, Gicd.ICENABLER):
        return irq.enabled
    if reg in (Gicd.ISPENDR, Gicd.ICPENDR):
        return irq.pending
    return irq.active


def _aligned(offset: int, size: int) -> bool:
    return size in (1, 2, 4, 8) and offset % size == 0


class GicDistributor:
    """The distributor's 64 KiB frame on the MMIO bus."""

    def __init__(self, gic: GicV3) -> None:
        self.gic = gic
        self.regs = _IrqRegisters(gic, gic.spi, GICD_IPRIORITYR_SPAN, GICD_ICFGR_SPAN)

    def mmio_read(self, offset: int, size: int) -> int:
        if not _aligned(offset, size):
            return 0
        if Gicd.IROUTER <= offset < Gicd.IROUTER + GICD_IROUTER_SPAN:
            irq = self.gic.spi((offset - Gicd.IROUTER) // 8)
            return 0 if irq is None or size < 4 else _extract(irq.route, offset & 7, size)
        value = self.regs.read(offset, size)
        if value is not None:
            return value
        if size != 4:
            return 0
        if offset == Gicd.CTLR:
            return self.gic.gicd_ctlr()
        if offset == Gicd.TYPER:
            return self.gic.typer
        if offset == Gicd.IIDR:
            return GICD_IIDR_VALUE
        if offset == Gicd.PIDR2:
            return PIDR2_ARCHREV_GICV3
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if not _aligned(offset, size):
            return
        if Gicd.IROUTER <= offset < Gicd.IROUTER + GICD_IROUTER_SPAN:
            irq = self.gic.spi((offset - Gicd.IROUTER) // 8)
            # Only Aff2.Aff1.Aff0 are kept: the upper word (Aff3, A3V = 0) and the routing mode
            # (No1N = 1) are RES0.
            if irq is not None and size >= 4 and offset & 7 == 0:
                self.gic.set_route(irq, value)
            return
        if self.regs.write(offset, size, value):
            return
        if size == 4 and offset == Gicd.CTLR:
            self.gic.write_gicd_ctlr(value)


class GicRedistributors:
    """Every vCPU's redistributor, one RD_base + SGI_base frame pair each, on one MMIO window
    (kvmtool's single redistributor region)."""

    def __init__(self, gic: GicV3) -> None:
        self.gic = gic
        self.regs = [
            _IrqRegisters(gic, _private_lookup(gic, cpu), GICR_IPRIORITYR_SPAN, 8)
            for cpu in range(gic.nr_cpus)
        ]

    def typer(self, cpu: int) -> int:
        value = (self.gic.mpidrs[cpu] & GICD_IROUTER_AFF_MASK) << GICR_TYPER_Affinity_Value_SHIFT
        value |= (cpu & GICR_TYPER_Processor_Number_MASK) << GICR_TYPER_Processor_Number_SHIFT
        if cpu == self.gic.nr_cpus - 1:
            value |= GICR_TYPER_Last
        return value

    def _locate(self, offset: int, size: int) -> tuple[int, int] | None:
        cpu, frame_offset = divmod(offset, GICR_SIZE)
        if not _aligned(offset, size) or not 0 <= cpu < self.gic.nr_cpus:
            return None
        return cpu, frame_offset

    def mmio_read(self, offset: int, size: int) -> int:
        where = self._locate(offset, size)
        if where is None:
            return 0
        cpu, off = where
        if off >= GICR_SGI_BASE:
            self.gic.sync(cpu)  # a timer PPI's pending bit shows its line as of now
            value = self.regs[cpu].read(off - GICR_SGI_BASE, size)
            return value or 0
        if GicrRd.TYPER <= off < GicrRd.TYPER + 8:
            return 0 if size < 4 else _extract(self.typer(cpu), off - GicrRd.TYPER, size)
        if size != 4:
            return 0
        if off == GicrRd.CTLR:
            return GICR_CTLR_IR | GICR_CTLR_CES
        if off == GicrRd.IIDR:
            return GICR_IIDR_VALUE
        if off == GicrRd.WAKER:
            return GICR_WAKER_ProcessorSleep | GICR_WAKER_ChildrenAsleep if self.gic.sleeping[cpu] else 0
        if off == GicrRd.PIDR2:
            return PIDR2_ARCHREV_GICV3
        return 0  # STATUSR, SYNCR (never busy), PROPBASER/PENDBASER/INV* (no LPIs), other IDs

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        where = self._locate(offset, size)
        if where is None:
            return
        cpu, off = where
        if off >= GICR_SGI_BASE:
            self.regs[cpu].write(off - GICR_SGI_BASE, size, value)
        elif size == 4 and off == GicrRd.WAKER:
            # ProcessorSleep is the only writable bit; ChildrenAsleep follows it at once.
            asleep = bool(value & GICR_WAKER_ProcessorSleep)
            if asleep != self.gic.sleeping[cpu]:
                self.gic.sleeping[cpu] = asleep
                self.gic.kick(cpu)


def _private_lookup(gic: GicV3, cpu: int) -> Lookup:
    def lookup(intid: int) -> Irq | None:
        return gic.private[cpu][intid] if 0 <= intid < NR_PRIVATE_IRQS else None

    return lookup


__all__ = [
    "GICD_IIDR_VALUE",
    "GICR_IIDR_VALUE",
    "GicDistributor",
    "GicError",
    "GicRedistributors",
    "GicV3",
    "Irq",
    "IrqTrace",
    "nr_spis_for_lines",
]
