"""GICv3 facts, Arm IHI 0069 (GIC architecture specification, GICv3 and GICv4).

- §2.2 INTID ranges: SGIs 0-15, PPIs 16-31, SPIs 32-1019, special INTIDs 1020-1023.
- §12.8/§12.9 distributor register map and descriptions (GICD_*, one 64 KiB frame),
  §12.10/§12.11 redistributor's (GICR_*, an RD_base frame then an SGI_base frame, 64 KiB each).
- §12.2 CPU interface system registers (ICC_*_EL1) with their MRS/MSR encodings and fields.
- §12.1 access widths: byte access only where the spec says byte-accessible (the
  priority registers), 64-bit registers also as two 32-bit halves, everything else 32-bit.

The values a GICv3 guest of KVM reads (IIDR product and implementer, PIDR2, priority bits)
are here as well, named for what they are.
"""

from __future__ import annotations

from enum import IntEnum

from .sysreg import sysreg_key

# --- §2.2 INTIDs -------------------------------------------------------------------------

SGI_BASE = 0
PPI_BASE = 16
SPI_BASE = 32
NR_SGIS = 16
NR_PRIVATE_IRQS = 32  # SGIs + PPIs, banked per redistributor
MAX_SPI = 1019
INTID_SPURIOUS = 1023  # no pending interrupt (or none of the right group and priority)
SPECIAL_INTIDS = range(1020, 1024)
INTIDS_PER_ITLINE = 32  # GICD_TYPER.ITLinesNumber counts blocks of 32 INTIDs


def is_sgi(intid: int) -> bool:
    return SGI_BASE <= intid < PPI_BASE


def is_ppi(intid: int) -> bool:
    return PPI_BASE <= intid < SPI_BASE


def is_spi(intid: int) -> bool:
    return SPI_BASE <= intid <= MAX_SPI


# --- register frames ---------------------------------------------------------------------

GICD_SIZE = 0x1_0000
GICR_FRAME_SIZE = 0x1_0000
GICR_SGI_BASE = GICR_FRAME_SIZE  # SGI_base follows RD_base
GICR_SIZE = 2 * GICR_FRAME_SIZE  # one redistributor: RD_base + SGI_base (no VLPI frames)


class Gicd(IntEnum):
    """§12.8 distributor register map (offsets from the distributor base)."""

    CTLR = 0x0000
    TYPER = 0x0004
    IIDR = 0x0008
    TYPER2 = 0x000C
    STATUSR = 0x0010
    SETSPI_NSR = 0x0040
    CLRSPI_NSR = 0x0048
    SETSPI_SR = 0x0050
    CLRSPI_SR = 0x0058
    IGROUPR = 0x0080  # IGROUPR<n>, n = 0..31, one bit per INTID
    ISENABLER = 0x0100
    ICENABLER = 0x0180
    ISPENDR = 0x0200
    ICPENDR = 0x0280
    ISACTIVER = 0x0300
    ICACTIVER = 0x0380
    IPRIORITYR = 0x0400  # IPRIORITYR<n>, n = 0..254, one byte per INTID
    ITARGETSR = 0x0800
    ICFGR = 0x0C00  # ICFGR<n>, n = 0..63, two bits per INTID
    IGRPMODR = 0x0D00
    NSACR = 0x0E00
    SGIR = 0x0F00
    CPENDSGIR = 0x0F10
    SPENDSGIR = 0x0F20
    IROUTER = 0x6000  # IROUTER<n>, n = 32..1019, 64 bits per SPI, at 0x6000 + 8n
    PIDR2 = 0xFFE8


# The 1-bit-per-INTID distributor registers span 0x80 bytes (1024 INTIDs); IPRIORITYR 0x400,
# ICFGR 0x100, IROUTER 8 KiB.
GICD_BITMAP_SPAN = 0x80
GICD_IPRIORITYR_SPAN = 0x400
GICD_ICFGR_SPAN = 0x100
GICD_IROUTER_SPAN = 8 * 1024

# §12.9 GICD_CTLR, the view of a GIC with a single Security state (DS == 1).
GICD_CTLR_EnableGrp0 = 1 << 0
GICD_CTLR_EnableGrp1 = 1 << 1
GICD_CTLR_ARE = 1 << 4  # affinity routing; RAO/WI in a single-Security-state GIC that has no legacy mode
GICD_CTLR_DS = 1 << 6  # Disable Security: RAO/WI, there is only one Security state
GICD_CTLR_E1NWF = 1 << 7
GICD_CTLR_nASSGIreq = 1 << 8  # GICv4.1 only
GICD_CTLR_RWP = 1 << 31

# §12.9 GICD_TYPER
GICD_TYPER_ITLinesNumber_MASK = 0x1F
GICD_TYPER_CPUNumber_SHIFT = 5
GICD_TYPER_SecurityExtn = 1 << 10
GICD_TYPER_MBIS = 1 << 16
GICD_TYPER_LPIS = 1 << 17
GICD_TYPER_IDbits_SHIFT = 19
GICD_TYPER_A3V = 1 << 24
GICD_TYPER_No1N = 1 << 25
GICD_TYPER_RSS = 1 << 26

# §12.9 GICD_IIDR / §12.11 GICR_IIDR
GICD_IIDR_Implementer_SHIFT = 0
GICD_IIDR_Revision_SHIFT = 12
GICD_IIDR_Variant_SHIFT = 16
GICD_IIDR_ProductID_SHIFT = 24
IIDR_IMPLEMENTER_ARM = 0x43B  # JEP106 code of Arm
IIDR_PRODUCT_ID_KVM = 0x4B  # 'K': the ProductID KVM's vGIC reports
KVM_VGIC_IMP_REV = 3  # KVM's vGIC implementation revision (groups guest-configurable)

# §12.9 GICD_IROUTER<n>
GICD_IROUTER_Interrupt_Routing_Mode = 1 << 31  # 1: any participating PE (1 of N)
GICD_IROUTER_AFF_MASK = 0x00FF_FFFF  # Aff2.Aff1.Aff0 in bits [23:0]; Aff3 in [39:32]

# GICD_PIDR2/GICR_PIDR2 (§12.9, §12.11): ArchRev [7:4] = 3 (GICv3), JEDEC bit 3, DES_1 [2:0]
PIDR2_ARCHREV_GICV3 = 0x3B

# ICFGR Int_config, two bits per INTID: bit 2n+1 is 1 for edge-triggered, bit 2n RES0.
ICFGR_EDGE = 0b10

# Priority: KVM's vGIC implements 5 bits (32 levels), the least a GIC with one Security
# state may; the unimplemented low bits are RAZ/WI.
PRIORITY_BITS = 5
PRIORITY_MASK = (0xFF << (8 - PRIORITY_BITS)) & 0xFF
IDLE_PRIORITY = 0xFF


class GicrRd(IntEnum):
    """§12.10 redistributor register map, RD_base frame."""

    CTLR = 0x0000
    IIDR = 0x0004
    TYPER = 0x0008  # 64-bit
    STATUSR = 0x0010
    WAKER = 0x0014
    PROPBASER = 0x0070
    PENDBASER = 0x0078
    INVLPIR = 0x00A0
    INVALLR = 0x00B0
    SYNCR = 0x00C0
    PIDR2 = 0xFFE8


class GicrSgi(IntEnum):
    """§12.10 redistributor register map, SGI_base frame (offsets within that frame)."""

    IGROUPR0 = 0x0080
    ISENABLER0 = 0x0100
    ICENABLER0 = 0x0180
    ISPENDR0 = 0x0200
    ICPENDR0 = 0x0280
    ISACTIVER0 = 0x0300
    ICACTIVER0 = 0x0380
    IPRIORITYR0 = 0x0400  # IPRIORITYR0..7, one byte per INTID 0..31
    ICFGR0 = 0x0C00  # SGIs
    ICFGR1 = 0x0C04  # PPIs
    IGRPMODR0 = 0x0D00
    NSACR = 0x0E00


GICR_IPRIORITYR_SPAN = 0x20  # eight 32-bit registers

# §12.11 GICR_CTLR
GICR_CTLR_EnableLPIs = 1 << 0
GICR_CTLR_CES = 1 << 1  # EnableLPIs may be cleared once set
GICR_CTLR_IR = 1 << 2  # GICR_INVLPIR/INVALLR/SYNCR are implemented
GICR_CTLR_RWP = 1 << 3

# §12.11 GICR_TYPER
GICR_TYPER_PLPIS = 1 << 0
GICR_TYPER_Last = 1 << 4
GICR_TYPER_Processor_Number_SHIFT = 8
GICR_TYPER_Processor_Number_MASK = 0xFFFF
GICR_TYPER_Affinity_Value_SHIFT = 32

# §12.11 GICR_WAKER
GICR_WAKER_ProcessorSleep = 1 << 1
GICR_WAKER_ChildrenAsleep = 1 << 2


# --- §12.2 CPU interface system registers ------------------------------------------------


class IccSysreg(IntEnum):
    """ICC_*_EL1 encodings (S3_0_C4_C6_0 is ICC_PMR_EL1, the rest S3_0_C12_*)."""

    PMR = sysreg_key(3, 0, 4, 6, 0)
    IAR0 = sysreg_key(3, 0, 12, 8, 0)
    EOIR0 = sysreg_key(3, 0, 12, 8, 1)
    HPPIR0 = sysreg_key(3, 0, 12, 8, 2)
    BPR0 = sysreg_key(3, 0, 12, 8, 3)
    AP0R0 = sysreg_key(3, 0, 12, 8, 4)
    AP0R1 = sysreg_key(3, 0, 12, 8, 5)
    AP0R2 = sysreg_key(3, 0, 12, 8, 6)
    AP0R3 = sysreg_key(3, 0, 12, 8, 7)
    AP1R0 = sysreg_key(3, 0, 12, 9, 0)
    AP1R1 = sysreg_key(3, 0, 12, 9, 1)
    AP1R2 = sysreg_key(3, 0, 12, 9, 2)
    AP1R3 = sysreg_key(3, 0, 12, 9, 3)
    DIR = sysreg_key(3, 0, 12, 11, 1)
    RPR = sysreg_key(3, 0, 12, 11, 3)
    SGI1R = sysreg_key(3, 0, 12, 11, 5)
    ASGI1R = sysreg_key(3, 0, 12, 11, 6)
    SGI0R = sysreg_key(3, 0, 12, 11, 7)
    IAR1 = sysreg_key(3, 0, 12, 12, 0)
    EOIR1 = sysreg_key(3, 0, 12, 12, 1)
    HPPIR1 = sysreg_key(3, 0, 12, 12, 2)
    BPR1 = sysreg_key(3, 0, 12, 12, 3)
    CTLR = sysreg_key(3, 0, 12, 12, 4)
    SRE = sysreg_key(3, 0, 12, 12, 5)
    IGRPEN0 = sysreg_key(3, 0, 12, 12, 6)
    IGRPEN1 = sysreg_key(3, 0, 12, 12, 7)


ICC_READ_ONLY = frozenset({IccSysreg.IAR0, IccSysreg.IAR1, IccSysreg.HPPIR0, IccSysreg.HPPIR1, IccSysreg.RPR})
ICC_WRITE_ONLY = frozenset(
    {IccSysreg.EOIR0, IccSysreg.EOIR1, IccSysreg.DIR, IccSysreg.SGI1R, IccSysreg.ASGI1R, IccSysreg.SGI0R}
)

# ICC_IAR/EOIR/HPPIR/DIR: INTID in [23:0] (24 bits when IDbits says so; 16 here).
ICC_INTID_MASK = 0xFF_FFFF

# §12.2 ICC_CTLR_EL1
ICC_CTLR_CBPR = 1 << 0  # BPR0 governs Group 1 too
ICC_CTLR_EOImode = 1 << 1  # 1: EOIR drops priority only, DIR deactivates
ICC_CTLR_PMHE = 1 << 6
ICC_CTLR_PRIbits_SHIFT = 8  # priority bits - 1
ICC_CTLR_IDbits_SHIFT = 11  # 0: 16-bit INTIDs
ICC_CTLR_SEIS = 1 << 14
ICC_CTLR_A3V = 1 << 15
ICC_CTLR_RSS = 1 << 18
ICC_CTLR_ExtRange = 1 << 19

# §12.2 ICC_SRE_EL1: SRE, DFB, DIB are RAO/WI where the system register interface is
# the only one (a GICv3 guest of KVM with no GICv2 compatibility).
ICC_SRE_SRE = 1 << 0
ICC_SRE_DFB = 1 << 1
ICC_SRE_DIB = 1 << 2

ICC_IGRPEN_Enable = 1 << 0
ICC_BPR_MASK = 0x7
ICC_PMR_MASK = 0xFF
# The minimum binary points with PRIORITY_BITS of priority: BPR0 7 - PRIORITY_BITS, BPR1 one more.
ICC_BPR0_MIN = 7 - PRIORITY_BITS
ICC_BPR1_MIN = ICC_BPR0_MIN + 1

# §12.2 ICC_SGI1R_EL1 / ICC_SGI0R_EL1 / ICC_ASGI1R_EL1
ICC_SGIR_TargetList_MASK = 0xFFFF
ICC_SGIR_Aff1_SHIFT = 16
ICC_SGIR_INTID_SHIFT = 24
ICC_SGIR_INTID_MASK = 0xF
ICC_SGIR_Aff2_SHIFT = 32
ICC_SGIR_IRM = 1 << 40  # 1: every PE but the sender
ICC_SGIR_RS_SHIFT = 44
ICC_SGIR_RS_MASK = 0xF
ICC_SGIR_Aff3_SHIFT = 48

# --- §12.4/§12.5 virtualization: the ICH_*_EL2 state of a virtual CPU interface ----------------
# (the hypervisor's view of one vCPU's interface; a realm's REC carries it through RmiRecRun)

# ICH_HCR_EL2
ICH_HCR_En = 1 << 0
ICH_HCR_UIE = 1 << 1  # maintenance when zero or one LR holds a valid interrupt
ICH_HCR_LRENPIE = 1 << 2  # maintenance while EOIcount is not zero
ICH_HCR_NPIE = 1 << 3  # maintenance while no LR holds a pending interrupt
ICH_HCR_VGrp0EIE = 1 << 4
ICH_HCR_VGrp0DIE = 1 << 5
ICH_HCR_VGrp1EIE = 1 << 6
ICH_HCR_VGrp1DIE = 1 << 7
ICH_HCR_vSGIEOICount = 1 << 8
ICH_HCR_TC = 1 << 10
ICH_HCR_TALL0 = 1 << 11
ICH_HCR_TALL1 = 1 << 12
ICH_HCR_TSEI = 1 << 13
ICH_HCR_TDIR = 1 << 14  # ICV_DIR_EL1 writes trap to EL2
ICH_HCR_DVIM = 1 << 15
ICH_HCR_EOIcount_SHIFT = 27
ICH_HCR_EOIcount_MASK = 0x1F << ICH_HCR_EOIcount_SHIFT

# ICH_LR<n>_EL2
ICH_LR_vINTID_MASK = 0xFFFF_FFFF
ICH_LR_pINTID_SHIFT = 32
ICH_LR_pINTID_MASK = 0x1FFF << ICH_LR_pINTID_SHIFT
ICH_LR_EOI = 1 << 41  # with HW == 0: maintenance interrupt when the interrupt is deactivated
ICH_LR_Priority_SHIFT = 48
ICH_LR_Priority_MASK = 0xFF << ICH_LR_Priority_SHIFT
ICH_LR_Group = 1 << 60
ICH_LR_HW = 1 << 61
ICH_LR_State_SHIFT = 62
ICH_LR_State_MASK = 0b11 << ICH_LR_State_SHIFT
LR_STATE_INVALID = 0b00
LR_STATE_PENDING = 0b01
LR_STATE_ACTIVE = 0b10
LR_STATE_PENDING_ACTIVE = 0b11

# ICH_VMCR_EL2: the virtual machine's ICV_* control state
ICH_VMCR_VENG0 = 1 << 0
ICH_VMCR_VENG1 = 1 << 1
ICH_VMCR_VAckCtl = 1 << 2
ICH_VMCR_VFIQEn = 1 << 3
ICH_VMCR_VCBPR = 1 << 4
ICH_VMCR_VEOIM = 1 << 9
ICH_VMCR_VBPR1_SHIFT = 18
ICH_VMCR_VBPR0_SHIFT = 21
ICH_VMCR_VPMR_SHIFT = 24

# ICH_MISR_EL2: maintenance interrupt status
ICH_MISR_EOI = 1 << 0
ICH_MISR_U = 1 << 1
ICH_MISR_LRENP = 1 << 2
ICH_MISR_NP = 1 << 3
ICH_MISR_VGrp0E = 1 << 4
ICH_MISR_VGrp0D = 1 << 5
ICH_MISR_VGrp1E = 1 << 6
ICH_MISR_VGrp1D = 1 << 7

# INTID ranges a list register may name (§2.2): SGIs/PPIs/SPIs, and LPIs from 8192.
MIN_LPI = 8192
PPI_MAINTENANCE = 25  # the virtual CPU interface's maintenance interrupt (SBSA)


def lr_state(lr: int) -> int:
    return (lr >> ICH_LR_State_SHIFT) & 0b11


def lr_with_state(lr: int, state: int) -> int:
    return (lr & ~ICH_LR_State_MASK) | ((state & 0b11) << ICH_LR_State_SHIFT)


def lr_intid(lr: int) -> int:
    return lr & ICH_LR_vINTID_MASK


def lr_priority(lr: int) -> int:
    return (lr >> ICH_LR_Priority_SHIFT) & 0xFF


def lr_group(lr: int) -> int:
    return int(bool(lr & ICH_LR_Group))


def make_lr(intid: int, state: int, priority: int, group: int = 1, eoi: bool = False) -> int:
    """A software (HW == 0) list register value."""
    return (
        (intid & ICH_LR_vINTID_MASK)
        | (ICH_LR_EOI if eoi else 0)
        | ((priority & 0xFF) << ICH_LR_Priority_SHIFT)
        | (ICH_LR_Group if group else 0)
        | ((state & 0b11) << ICH_LR_State_SHIFT)
    )
