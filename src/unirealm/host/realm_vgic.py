"""KVM's vGIC for a realm vCPU: the host's distributor state reaches a REC only through the
list registers of RmiRecEnter, and comes back only through RmiRecExit (the host never sees
the realm's GIC state otherwise, nor its memory).

Before each REC_ENTER `flush()` brings the vCPU's timer lines up to date and writes one list
register per interrupt of that vCPU that is active, or pending and enabled with its group
enabled in GICD_CTLR: active ones first, then pending ones by priority, at most 16 (with more
waiting it sets ICH_HCR_EL2.UIE, so the REC exits when the list registers drain, as KVM's
`vgic_flush_lr_state`). HW is 0: nothing is linked to a physical interrupt.

After each exit `sync()` first loads the REC's EL1 timer state from the exit into the vCPU's
timer model (`timers.virtual.load(cntv_ctl, cntv_cval)`, `.physical`), which raises or lowers
PPIs 27 and 30 as KVM does for realms, and then reads the list registers back: a pending one
the realm acknowledged has its edge latch cleared, and each interrupt's active state becomes
the list register's. A level interrupt whose line is still high stays pending and goes back
in the next flush; while it is active it goes back active only, with the EOI bit set.

`--trace irq` sees `inject` when an interrupt first goes into a list register pending, `ack`
when a list register the host wrote pending comes back without it, and `deactivate` when one
comes back inactive (the host cannot tell a realm's EOI from its DIR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unirealm.arch.gic import (
    ICH_HCR_UIE,
    LR_STATE_ACTIVE,
    LR_STATE_PENDING,
    MAX_SPI,
    lr_intid,
    lr_state,
    make_lr,
)
from unirealm.machine.timer import GenericTimer

from .devices.gicv3 import GicV3, Irq

NUM_LRS = 16  # what RMI_FEATURES reports (GICV3_NUM_LRS + 1)


@dataclass
class RealmVgic:
    """The host's vGIC view of realm vCPU `cpu`."""

    gic: GicV3
    timers: GenericTimer
    cpu: int
    num_lrs: int = NUM_LRS
    in_lrs: list[Irq] = field(default_factory=list)  # the interrupts the last flush wrote, in LR order
    in_states: list[int] = field(default_factory=list)  # and the states it wrote them with
    offered: set[Irq] = field(default_factory=set)  # what the last flush wrote pending (for --trace irq)

    def _candidates(self) -> list[Irq]:
        """What the list registers may hold for this vCPU, in the order they are given: the
        active interrupts first, then by priority, ties to the lowest INTID. Taken from the
        distributor's pending and active sets (every interrupt not in one of them is
        neither), not by a scan of every INTID."""
        gic, cpu = self.gic, self.cpu
        out = [irq for irq in gic.active_irqs() if irq.cpu == cpu and irq.intid <= MAX_SPI]
        out += [irq for irq in gic.pending_irqs()
                if irq.cpu == cpu and not irq.active and irq.intid <= MAX_SPI and irq.enabled
                and gic.group_enabled(irq.group)]
        if len(out) > 1:
            out.sort(key=lambda i: (not i.active, i.priority, i.intid))
        return out

    def has_pending(self) -> bool:
        """What wakes the vCPU from a trapped WFI: an interrupt it could be given."""
        self.gic.sync(self.cpu)
        return any(not irq.active for irq in self._candidates())

    def flush(self) -> tuple[int, list[int]]:
        """RmiRecEnter.gicv3_hcr and gicv3_lrs for the next REC_ENTER."""
        self.gic.sync(self.cpu)
        candidates = self._candidates()
        self.in_lrs = candidates[: self.num_lrs]
        # A level interrupt is never written pending and active: the realm may have lowered
        # its line already (a timer it disabled), and software resampling needs the
        # deactivation first; the EOI bit brings a maintenance exit when that happens, and
        # the next flush samples the line again (KVM's vgic_v3_populate_lr).
        self.in_states = [
            LR_STATE_ACTIVE if irq.active and not irq.edge else
            (LR_STATE_PENDING if irq.pending else 0) | (LR_STATE_ACTIVE if irq.active else 0)
            for irq in self.in_lrs
        ]
        lrs = [
            make_lr(irq.intid, st, irq.priority, irq.group, eoi=not irq.edge)
            for irq, st in zip(self.in_lrs, self.in_states, strict=True)
        ]
        offered = {irq for irq, st in zip(self.in_lrs, self.in_states, strict=True) if st & LR_STATE_PENDING}
        for irq in offered - self.offered:  # newly in a list register as pending: injected
            self.gic.trace_event("inject", self.cpu, irq.intid)
        self.offered = offered
        hcr = ICH_HCR_UIE if len(candidates) > self.num_lrs else 0
        return hcr, lrs

    def sync(self, lrs: list[int], cntv_ctl: int, cntv_cval: int, cntp_ctl: int, cntp_cval: int) -> None:
        """Take what a REC exit reports back into the distributor and the timers."""
        self.timers.virtual.load(cntv_ctl, cntv_cval)
        self.timers.physical.load(cntp_ctl, cntp_cval)
        gic = self.gic
        for irq, written, lr in zip(self.in_lrs, self.in_states, lrs, strict=False):
            if lr_intid(lr) != irq.intid:
                continue  # not the list register the host wrote
            state = lr_state(lr)
            acked = bool(written & LR_STATE_PENDING and not state & LR_STATE_PENDING)
            if acked:
                gic.trace_event("ack", self.cpu, irq.intid)
                gic.set_latch(irq, False)  # the edge is consumed; a level line still high stays pending
            if (acked or written & LR_STATE_ACTIVE) and not state & LR_STATE_ACTIVE:
                gic.trace_event("deactivate", self.cpu, irq.intid)
            gic.set_active(irq, bool(state & LR_STATE_ACTIVE))
        self.in_lrs, self.in_states = [], []
        self.timers.sync()
