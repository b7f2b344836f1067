"""`unirealm run --hostile irq-storm`: the host injects interrupts as fast as its exits let it.

Every guest exit (a plain VM's trap, a realm's REC exit) is a step in a cycle of
CYCLE steps, one of which bursts and a later one withdraws:

1. burst -- a plain VM: all 16 SGIs and all 16 PPIs made pending on the exiting vCPU (its
   vGIC's ISPENDR, as a VMM can set through KVM's vGIC attributes), and in every other
   burst every device's SPI pulsed with nothing in its used ring; a realm: every list register the honest vGIC
   leaves free filled with a pending Group 1 interrupt of a random vINTID (SGIs, PPIs,
   SPIs, LPIs) and priority, the devices' SPIs among them.
2. withdraw (WITHDRAW_STEP exits later) -- the interrupts of the burst that were not
   acknowledged yet are taken back (ICPENDR; in a realm their list registers are left out
   of the next entry). A guest that took the exception and then exited before reading
   ICC_IAR1_EL1 reads 1023 (spurious).

Throughout, one SPI that no device owns (the last one implemented) has its line stuck
high: in a plain VM the distributor holds it pending, and signals it only if the guest
enabled it; in a realm it is a pending list register at every entry but the withdrawing
ones, whatever the guest did with its (host-emulated) distributor.

A realm also gets REC_ENTER attempts with list register or HCR contents that DEN0137 1.0
forbids (TF-RMM `gic_validate_state`): HW = 1, priority bits the interface does not
implement, a pINTID with HW = 0, one vINTID in two list registers, vINTIDs out of range,
HCR bits the host does not own. Each must fail with RMI_ERROR_REC and change nothing (the
honest REC_ENTER follows); any other answer stops the run with a one-line error.

The honest vGIC's interrupts are never withdrawn or displaced, so a guest that handles what
it acknowledges (and ignores what it has no source for) loses no real interrupt: it only
runs slower. Each burst is bounded, so the guest always gets back to its own work.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unirealm.arch.gic import (
    ICH_HCR_TALL0,
    ICH_HCR_TC,
    ICH_LR_HW,
    LR_STATE_ACTIVE,
    LR_STATE_PENDING,
    LR_STATE_PENDING_ACTIVE,
    MAX_SPI,
    MIN_LPI,
    NR_PRIVATE_IRQS,
    NR_SGIS,
    SPI_BASE,
    ICH_HCR_En,
    ICH_HCR_EOIcount_SHIFT,
    ICH_LR_pINTID_SHIFT,
    lr_intid,
    lr_state,
    lr_with_state,
    make_lr,
)
from unirealm.arch.rmi import RmiFid, RmiStatus, status_of

from .vmm_result import VmmError

if TYPE_CHECKING:
    from .devices.gicv3 import GicV3, Irq
    from .kvm import RealmRec, RealmVm

log = logging.getLogger("unirealm.hostile")

NUM_LRS = 16  # what RMI_FEATURES reports
CYCLE = 6  # exits per storm cycle
WITHDRAW_STEP = 4  # the step of the cycle that withdraws (0 bursts)
REFUSE_EVERY = 4  # a realm: one forbidden REC_ENTER every REFUSE_EVERY entries
LR_PRIORITIES = [p << 3 for p in range(32)]  # all implemented (5-bit) priorities, some below a guest's PMR


def _forbidden(rng: random.Random, lrs: list[int], hcr: int, kind: str) -> tuple[int, list[int]]:
    """(hcr, lrs) that break one DEN0137 1.0 rule, built on the entry's own valid state."""
    lrs = list(lrs) + [0] * (NUM_LRS - len(lrs))
    free = next((i for i, lr in enumerate(lrs) if lr_state(lr) == 0), NUM_LRS - 1)
    prio = rng.choice(LR_PRIORITIES)
    intid = rng.randrange(SPI_BASE, MAX_SPI + 1)
    if kind == "HW=1 pending":
        lrs[free] = make_lr(intid, LR_STATE_PENDING, prio) | ICH_LR_HW | (intid << ICH_LR_pINTID_SHIFT)
    elif kind == "HW=1 pending+active":
        lrs[free] = make_lr(intid, LR_STATE_PENDING_ACTIVE, prio) | ICH_LR_HW | (intid << ICH_LR_pINTID_SHIFT)
    elif kind == "priority bits not implemented":
        lrs[free] = make_lr(intid, LR_STATE_PENDING, prio | rng.randrange(1, 8))
    elif kind == "pINTID with HW=0":
        lrs[free] = make_lr(intid, LR_STATE_ACTIVE, prio) | (rng.randrange(1, 1 << 9) << ICH_LR_pINTID_SHIFT)
    elif kind == "one vINTID in two LRs":
        other = (free + 1) % NUM_LRS
        lrs[free] = make_lr(intid, LR_STATE_PENDING, prio)
        lrs[other] = make_lr(intid, LR_STATE_ACTIVE, prio)
    elif kind == "special vINTID":
        lrs[free] = make_lr(rng.choice((1020, 1021, 1022, 1023)), LR_STATE_PENDING, prio)
    elif kind == "vINTID between SPIs and LPIs":
        lrs[free] = make_lr(rng.randrange(MAX_SPI + 5, MIN_LPI), LR_STATE_PENDING, prio)
    elif kind == "vINTID past 16 bits":
        lrs[free] = make_lr(rng.randrange(1 << 16, 1 << 32), LR_STATE_PENDING, prio)
    elif kind == "HCR bits not the host's":
        hcr |= rng.choice((ICH_HCR_En, ICH_HCR_TC, ICH_HCR_TALL0, 1 << ICH_HCR_EOIcount_SHIFT))
    else:
        raise ValueError(kind)
    return hcr, lrs


FORBIDDEN = (
    "HW=1 pending",
    "HW=1 pending+active",
    "priority bits not implemented",
    "pINTID with HW=0",
    "one vINTID in two LRs",
    "special vINTID",
    "vINTID between SPIs and LPIs",
    "vINTID past 16 bits",
    "HCR bits not the host's",
)


@dataclass
class IrqStorm:
    """The storm's state: the exit count of each vCPU and what its last burst pended."""

    rng: random.Random
    device_spis: list[int]
    stuck_spi: int | None = None
    steps: Counter[int] = field(default_factory=Counter)
    pended: dict[int, list[Irq]] = field(default_factory=dict)  # plain VM: what the burst latched
    storm_lrs: dict[int, list[int]] = field(default_factory=dict)  # realm: the storm's LRs still held
    injected: int = 0
    withdrawn: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    entries: int = 0

    def _step(self, cpu: int) -> int:
        n = self.steps[cpu]
        self.steps[cpu] = n + 1
        return n % CYCLE

    # --- a plain VM ---------------------------------------------------------------------------
    def start_vm(self, gic: GicV3) -> None:
        if self.stuck_spi is not None:
            gic.set_spi_level(self.stuck_spi, True)

    def vm_exit(self, gic: GicV3, cpu: int) -> None:
        """At each trap of vCPU `cpu`, before the host handles it."""
        step = self._step(cpu)
        if step == 0:
            burst = [irq for irq in gic.private[cpu] if not irq.latch]
            for irq in burst:
                gic.set_latch(irq, True)
            self.pended[cpu] = burst
            self.injected += len(burst)
            if self.steps[cpu] % (2 * CYCLE) == 1:  # every other burst: device SPIs with nothing in their rings
                for intid in self.device_spis:
                    gic.pulse_spi(intid)
                self.injected += len(self.device_spis)
        elif step == WITHDRAW_STEP:
            # Only the private interrupts the burst latched: no device raises those (the
            # timers' PPIs are level lines, apart from the latch), so nothing real is lost.
            for irq in self.pended.pop(cpu, []):
                if irq.latch and not irq.active:
                    gic.set_latch(irq, False)
                    self.withdrawn += 1

    # --- a realm ------------------------------------------------------------------------------
    def realm_entry(self, vm: RealmVm, rec: RealmRec, flags: int, gprs: list[int] | None, hcr: int,
                    lrs: list[int]) -> tuple[int, list[int]]:
        """The (hcr, lrs) of REC `rec`'s next REC_ENTER, from the honest vGIC's. Every
        REFUSE_EVERY entries a forbidden variant is tried first, with the same flags and
        GPRs (an MMIO completion among them): the RMM must refuse it before it takes any."""
        self.entries += 1
        if self.entries % REFUSE_EVERY == 0:
            kind = FORBIDDEN[(self.entries // REFUSE_EVERY) % len(FORBIDDEN)]
            self._refused_entry(vm, rec, flags, gprs, kind, *_forbidden(self.rng, lrs, hcr, kind))
        step = self._step(rec.index)
        held = self.storm_lrs.pop(rec.index, [])
        honest = {lr_intid(lr) for lr in lrs}
        out = list(lrs)
        if step == WITHDRAW_STEP:  # withdraw the pending ones; what the realm holds active stays
            kept = [lr_with_state(lr, LR_STATE_ACTIVE) for lr in held
                    if lr_state(lr) & LR_STATE_ACTIVE and lr_intid(lr) not in honest]
            self.withdrawn += len(held) - len(kept)
            out += kept
        else:
            out += [lr for lr in held if lr_intid(lr) not in honest][: NUM_LRS - len(out)]
            used = {lr_intid(lr) for lr in out}
            if self.stuck_spi is not None and self.stuck_spi not in used and len(out) < NUM_LRS:
                out.append(make_lr(self.stuck_spi, LR_STATE_PENDING, self.rng.choice(LR_PRIORITIES[:30])))
                used.add(self.stuck_spi)
                self.injected += 1
            if step == 0:
                for intid in self._burst_intids(used, NUM_LRS - len(out)):
                    out.append(make_lr(intid, LR_STATE_PENDING, self.rng.choice(LR_PRIORITIES)))
                    used.add(intid)
                    self.injected += 1
        self.storm_lrs[rec.index] = out[len(lrs):]
        return hcr, out

    def realm_exit(self, rec: RealmRec, honest: int, lrs: list[int]) -> None:
        """What REC `rec`'s exit reported for the storm's list registers (after the first
        `honest`): the ones still pending or active are the storm's to keep or withdraw."""
        self.storm_lrs[rec.index] = [lr for lr in lrs[honest:] if lr_state(lr)]

    def _burst_intids(self, used: set[int], room: int) -> list[int]:
        rng = self.rng
        out = [i for i in self.device_spis if i not in used][:room]
        while len(out) < room:
            intid = rng.choice((
                rng.randrange(NR_SGIS),
                rng.randrange(NR_SGIS, NR_PRIVATE_IRQS),
                rng.randrange(SPI_BASE, MAX_SPI + 1),
                rng.randrange(MIN_LPI, 1 << 16),
            ))
            if intid not in used and intid not in out:
                out.append(intid)
        return out

    def _refused_entry(self, vm: RealmVm, rec: RealmRec, flags: int, gprs: list[int] | None, kind: str, hcr: int,
                       lrs: list[int]) -> None:
        vm.write_entry(rec, flags, gprs, hcr, lrs)
        status = status_of(vm.rmi.try_call(RmiFid.REC_ENTER, rec.pa, rec.run)[0])
        if status != RmiStatus.ERROR_REC:
            raise VmmError(f"hostile irq-storm: REC_ENTER with {kind} answered {status.name}, not ERROR_REC")
        self.refused[kind] += 1

    def report(self) -> None:
        log.warning("hostile irq-storm: %d interrupts injected, %d withdrawn before their acknowledge",
                    self.injected, self.withdrawn)
        if self.refused:
            log.warning("hostile irq-storm: %d REC_ENTERs with forbidden GIC state refused with ERROR_REC (%s)",
                        sum(self.refused.values()), ", ".join(f"{k}: {n}" for k, n in sorted(self.refused.items())))
