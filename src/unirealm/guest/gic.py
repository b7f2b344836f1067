"""The GICv3 driver (Arm IHI 0069; register facts in arch/gic.py), as Linux's irq-gic-v3
brings a GIC up on its boot CPU.

- Found in the device tree: the `arm,gic-v3` node's first `reg` region is the distributor,
  the second the redistributors (one RD_base + SGI_base pair per CPU). In a realm both are
  emulated by the host, reached through their unprotected alias (Kernel.map_devices), as a
  Linux realm's ioremap of them is.
- Distributor: disabled (GICD_CTLR 0, then RWP), every SPI disabled, not pending, not
  active, in Group 1 and level-sensitive (a register write covers 32 or 16 SPIs); then
  EnableGrp1 (ARE is RAO/WI with one Security state, as KVM's vGIC presents it). An SPI's
  priority (DEFAULT_PRIORITY) and route (GICD_IROUTER: this CPU's affinity) are written
  when a driver first enables it, before its GICD_ISENABLER bit, as Linux's irq_startup
  sets an interrupt's affinity: one IROUTER per SPI in use rather than per SPI implemented
  (both reset to UNKNOWN values, §12.9, so no SPI is enabled before they are written).
- Redistributor: the frame whose GICR_TYPER affinity is this CPU's (the boot CPU, affinity
  0.0.0: the Python kernel runs on vCPU 0 only) is woken (GICR_WAKER.ProcessorSleep cleared,
  then ChildrenAsleep polled clear); SGIs and PPIs Group 1, DEFAULT_PRIORITY, disabled.
- CPU interface, through the ICC_* system registers (the kernel's `cpu.read_sysreg` and
  `write_sysreg`): ICC_SRE_EL1.SRE set and read back (a GIC without the system-register
  interface is refused), PMR 0xF0 (every priority this driver uses is let through), BPR1 0,
  CTLR.EOImode 0 (an EOI also deactivates), IGRPEN1 1.
- `acknowledge()` reads ICC_IAR1_EL1, `end(intid)` writes ICC_EOIR1_EL1.

Every MMIO access is one 32-bit load or store (a byte for the priorities, as §12.1 allows),
so each is an emulatable MMIO exit. A GIC that does not answer as a GICv3 (PIDR2.ArchRev)
raises GicError with a one-line reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..arch.gic import (
    GICD_CTLR_RWP,
    GICR_SGI_BASE,
    GICR_SIZE,
    ICC_INTID_MASK,
    ICC_SRE_SRE,
    ICFGR_EDGE,
    INTIDS_PER_ITLINE,
    MAX_SPI,
    NR_PRIVATE_IRQS,
    SPI_BASE,
    Gicd,
    GICD_CTLR_EnableGrp1,
    GICD_TYPER_ITLinesNumber_MASK,
    GICR_TYPER_Affinity_Value_SHIFT,
    GICR_TYPER_Last,
    GICR_WAKER_ChildrenAsleep,
    GICR_WAKER_ProcessorSleep,
    GicrRd,
    GicrSgi,
    ICC_CTLR_EOImode,
    IccSysreg,
)

if TYPE_CHECKING:
    from .interfaces import Cpu

DEFAULT_PRIORITY = 0xA0  # Linux's GICD_INT_DEF_PRI
PMR_UNMASKED = 0xF0  # Linux's DEFAULT_PMR_VALUE
RWP_POLLS = 1000  # loads of a register-write-pending bit before giving up
PIDR2_ARCHREV_SHIFT = 4
GIC_ARCHREV = (3, 4)  # GICv3, GICv4
BOOT_AFFINITY = 0  # Aff2.Aff1.Aff0 of the CPU the kernel runs on (vCPU 0)


class GicError(Exception):
    """The interrupt controller cannot be driven (a one-line reason)."""


class Gic:
    def __init__(self, cpu: Cpu, dist: int, redist: int, redist_size: int, affinity: int = BOOT_AFFINITY) -> None:
        self.cpu = cpu
        self.dist = dist
        self.affinity = affinity
        self.rd = self._find_redistributor(redist, redist_size)
        self.sgi = self.rd + GICR_SGI_BASE
        self.nr_irqs = 0
        self.enabled: set[int] = set()
        self.started: set[int] = set()  # SPIs whose priority and route are written
        self.icfgr: dict[int, int] = {}  # GICD_ICFGR<n> as this driver last wrote it (its only writer)

    # --- MMIO -----------------------------------------------------------------------------
    def _r(self, addr: int) -> int:
        return self.cpu.mmio_read(addr, 4)

    def _w(self, addr: int, value: int) -> None:
        self.cpu.mmio_write(addr, 4, value & 0xFFFF_FFFF)

    def _find_redistributor(self, base: int, size: int) -> int:
        """The RD_base of the redistributor whose GICR_TYPER names this CPU's affinity."""
        for frame in range(base, base + size, GICR_SIZE):
            rev = (self._r(frame + GicrRd.PIDR2) >> PIDR2_ARCHREV_SHIFT) & 0xF
            if rev not in GIC_ARCHREV:
                raise GicError(f"no GICv3 redistributor at {frame:#x} (PIDR2.ArchRev {rev})")
            typer = self._r(frame + GicrRd.TYPER) | self._r(frame + GicrRd.TYPER + 4) << 32
            if typer >> GICR_TYPER_Affinity_Value_SHIFT == self.affinity:
                return frame
            if typer & GICR_TYPER_Last:
                break
        raise GicError(f"no redistributor for affinity {self.affinity:#x}")

    def _wait_rwp(self, addr: int, bit: int, what: str) -> None:
        for _ in range(RWP_POLLS):
            if not self._r(addr) & bit:
                return
        raise GicError(f"{what} stays pending")

    # --- bring-up -------------------------------------------------------------------------
    def init(self) -> None:
        rev = (self._r(self.dist + Gicd.PIDR2) >> PIDR2_ARCHREV_SHIFT) & 0xF
        if rev not in GIC_ARCHREV:
            raise GicError(f"no GICv3 distributor at {self.dist:#x} (PIDR2.ArchRev {rev})")
        lines = self._r(self.dist + Gicd.TYPER) & GICD_TYPER_ITLinesNumber_MASK
        self.nr_irqs = min(INTIDS_PER_ITLINE * (lines + 1), MAX_SPI + 1)
        self._w(self.dist + Gicd.CTLR, 0)
        self._wait_rwp(self.dist + Gicd.CTLR, GICD_CTLR_RWP, "GICD_CTLR.RWP")
        for intid in range(SPI_BASE, self.nr_irqs, 32):
            word = 4 * (intid // 32)
            self._w(self.dist + Gicd.ICENABLER + word, 0xFFFF_FFFF)
            self._w(self.dist + Gicd.ICPENDR + word, 0xFFFF_FFFF)
            self._w(self.dist + Gicd.ICACTIVER + word, 0xFFFF_FFFF)
            self._w(self.dist + Gicd.IGROUPR + word, 0xFFFF_FFFF)
        for intid in range(SPI_BASE, self.nr_irqs, 16):
            self._w(self.dist + Gicd.ICFGR + 4 * (intid // 16), 0)
            self.icfgr[intid // 16] = 0
        self._w(self.dist + Gicd.CTLR, GICD_CTLR_EnableGrp1)
        self._wait_rwp(self.dist + Gicd.CTLR, GICD_CTLR_RWP, "GICD_CTLR.RWP")
        # this CPU's redistributor
        waker = self._r(self.rd + GicrRd.WAKER)
        self._w(self.rd + GicrRd.WAKER, waker & ~GICR_WAKER_ProcessorSleep)
        self._wait_rwp(self.rd + GicrRd.WAKER, GICR_WAKER_ChildrenAsleep, "GICR_WAKER.ChildrenAsleep")
        self._w(self.sgi + GicrSgi.ICENABLER0, 0xFFFF_FFFF)
        self._w(self.sgi + GicrSgi.ICPENDR0, 0xFFFF_FFFF)
        self._w(self.sgi + GicrSgi.ICACTIVER0, 0xFFFF_FFFF)
        self._w(self.sgi + GicrSgi.IGROUPR0, 0xFFFF_FFFF)
        for intid in range(0, NR_PRIVATE_IRQS, 4):
            self._w(self.sgi + GicrSgi.IPRIORITYR0 + intid, DEFAULT_PRIORITY * 0x0101_0101)
        # the CPU interface
        cpu = self.cpu
        cpu.write_sysreg(IccSysreg.SRE, cpu.read_sysreg(IccSysreg.SRE) | ICC_SRE_SRE)
        if not cpu.read_sysreg(IccSysreg.SRE) & ICC_SRE_SRE:
            raise GicError("the CPU interface has no system-register access (ICC_SRE_EL1.SRE stays 0)")
        cpu.write_sysreg(IccSysreg.PMR, PMR_UNMASKED)
        cpu.write_sysreg(IccSysreg.BPR1, 0)
        cpu.write_sysreg(IccSysreg.CTLR, cpu.read_sysreg(IccSysreg.CTLR) & ~ICC_CTLR_EOImode)
        cpu.write_sysreg(IccSysreg.IGRPEN1, 1)

    # --- per interrupt --------------------------------------------------------------------
    def _frame(self, intid: int) -> tuple[int, int, int]:
        """(enable-register base, ICFGR base, INTID within them) for `intid`."""
        if intid < NR_PRIVATE_IRQS:
            return self.sgi + GicrSgi.ISENABLER0, self.sgi + GicrSgi.ICFGR0, intid
        if not SPI_BASE <= intid < self.nr_irqs:
            raise GicError(f"INTID {intid} is not implemented by this GIC ({self.nr_irqs} INTIDs)")
        return self.dist + Gicd.ISENABLER, self.dist + Gicd.ICFGR, intid

    def enable(self, intid: int, edge: bool) -> None:
        """Configure `intid` edge- or level-sensitive (SPIs; PPIs keep their fixed config)
        and enable it."""
        enabler, icfgr, n = self._frame(intid)
        if intid >= SPI_BASE:
            if intid not in self.started:
                self.cpu.mmio_write(self.dist + Gicd.IPRIORITYR + intid, 1, DEFAULT_PRIORITY)  # a byte, §12.1
                self.cpu.mmio_write(self.dist + Gicd.IROUTER + 8 * intid, 8, self.affinity)  # 64-bit, §12.1
                self.started.add(intid)
            shift = 2 * (n % 16)
            cfg = (self.icfgr[n // 16] & ~(0b11 << shift)) | ((ICFGR_EDGE if edge else 0) << shift)
            if cfg != self.icfgr[n // 16]:
                self._w(icfgr + 4 * (n // 16), cfg)
                self.icfgr[n // 16] = cfg
        self._w(enabler + 4 * (n // 32), 1 << (n % 32))
        self.enabled.add(intid)

    def disable(self, intid: int) -> None:
        enabler, _, n = self._frame(intid)
        clear = enabler + (Gicd.ICENABLER - Gicd.ISENABLER)
        self._w(clear + 4 * (n // 32), 1 << (n % 32))
        self.enabled.discard(intid)

    def acknowledge(self) -> int:
        """ICC_IAR1_EL1: the INTID now active (1020..1023: none)."""
        return self.cpu.read_sysreg(IccSysreg.IAR1) & ICC_INTID_MASK

    def end(self, intid: int) -> None:
        """ICC_EOIR1_EL1: priority drop and (EOImode 0) deactivation."""
        self.cpu.write_sysreg(IccSysreg.EOIR1, intid)
