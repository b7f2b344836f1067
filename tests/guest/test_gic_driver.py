"""The guest's GICv3 driver and interrupt entry (guest/gic.py, guest/irq.py) against the VMM's
GICv3 model and generic timer: the MMIO goes over the VMM's bus, the ICC_*/CNT* registers to
the vCPU's CPU interface and timer, the IRQ input is what they signal."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from unirealm.arch.gic import (
    GICR_SIZE,
    SPI_BASE,
    Gicd,
    GICD_CTLR_EnableGrp1,
    IccSysreg,
)
from unirealm.arch.timer import PPI_VIRT_TIMER, CntSysreg
from unirealm.guest.gic import DEFAULT_PRIORITY, Gic, GicError
from unirealm.guest.irq import Interrupts, VirtualTimer
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.devices.gicv3 import GicV3
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.memmap import ARM_GIC_DIST_BASE, gic_redists_base, gic_redists_size, vcpu_mpidr
from unirealm.host.vcpus import GicLines
from unirealm.host.vmm import Vmm
from unirealm.machine.irq import PENDING_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_HZ, SYSTEM_COUNTER_PERIOD_NS
from unirealm.machine.timer import GenericTimer

NR_CPUS = 2
SPI = 40


class BusCpu:
    """The part of the guest's Cpu the driver uses, on the VMM's real GIC and timer of vCPU 0."""

    cntfrq = SYSTEM_COUNTER_HZ

    def __init__(self, gic: GicV3, bus: MmioBus, timer: GenericTimer) -> None:
        self.bus = bus
        self.lines = GicLines(gic, timer, 0)
        self.mmio = 0
        self.wfis = 0

    def mmio_read(self, ipa: int, size: int) -> int:
        self.mmio += 1
        access = self.bus.read(ipa, size)
        assert access.handled, hex(ipa)
        return access.value

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        self.mmio += 1
        assert self.bus.write(ipa, size, value).handled, hex(ipa)

    def read_sysreg(self, key: int) -> int:
        value = self.lines.read_sysreg(key)
        if value is None:
            raise RuntimeError("undefined instruction")
        return value

    def write_sysreg(self, key: int, value: int) -> None:
        if not self.lines.write_sysreg(key, value):
            raise RuntimeError("undefined instruction")

    def irq_signalled(self) -> bool:
        self.lines.next_deadline()
        return bool(self.lines.pending() & PENDING_IRQ)

    def wfi(self) -> None:  # the VMM's WFI: wait for the timer's deadline or a pending interrupt
        self.wfis += 1
        end = time.monotonic() + 2
        while not self.lines.pending() and time.monotonic() < end:
            deadline = self.lines.next_deadline()
            if deadline is not None:
                time.sleep(max(0.0, min(0.01, deadline - time.monotonic())))
            else:
                time.sleep(0.001)

    def cntvct(self) -> int:
        return time.monotonic_ns() // SYSTEM_COUNTER_PERIOD_NS


Machine = tuple[GicV3, BusCpu, list[tuple[str, int, int]]]


@pytest.fixture
def machine() -> Machine:
    events: list[tuple[str, int, int]] = []
    gic = GicV3(NR_CPUS, 64, trace=lambda *e: events.append(e))
    bus = MmioBus()
    gic.attach(bus)
    return gic, BusCpu(gic, bus, GenericTimer(gic, 0)), events


def driver(cpu: BusCpu, nr_cpus: int = NR_CPUS) -> Gic:
    gic = Gic(cpu, ARM_GIC_DIST_BASE, gic_redists_base(nr_cpus), gic_redists_size(nr_cpus))  # type: ignore[arg-type]
    gic.init()
    return gic


def test_bring_up_programs_distributor_redistributor_and_cpu_interface(machine: Machine) -> None:
    model, cpu, _ = machine
    model.sleeping[0] = True  # a redistributor asleep until the driver wakes it
    gic = driver(cpu)
    assert gic.nr_irqs == 96  # ITLinesNumber 2: INTIDs 0..95
    assert gic.rd == gic_redists_base(NR_CPUS)  # vCPU 0's frame, found by affinity
    assert model.ctlr == GICD_CTLR_EnableGrp1
    assert not model.sleeping[0] and model.sleeping[1] is False
    for intid in (32, SPI, 95):
        irq = model.irq(0, intid)
        assert irq is not None
        assert (irq.group, irq.enabled, irq.edge) == (1, False, False)
    ppi = model.irq(0, PPI_VIRT_TIMER)
    assert ppi is not None and (ppi.group, ppi.priority, ppi.enabled) == (1, DEFAULT_PRIORITY, False)
    icc = model.cpu(0)
    assert icc.read_sysreg(IccSysreg.PMR) == 0xF0
    assert icc.read_sysreg(IccSysreg.IGRPEN1) == 1
    assert not (icc.read_sysreg(IccSysreg.CTLR) or 0) & 2  # EOImode 0


def test_an_edge_spi_is_acknowledged_dispatched_and_ended(machine: Machine) -> None:
    model, cpu, events = machine
    irqs = Interrupts(cpu, driver(cpu))  # type: ignore[arg-type]
    seen: list[int] = []
    irqs.register(SPI, lambda: seen.append(SPI), edge=True)
    assert model.irq(0, SPI).edge and model.irq(0, SPI).enabled  # type: ignore[union-attr]
    assert irqs.take() == 0  # nothing signalled
    model.pulse_spi(SPI)
    model.pulse_spi(SPI)  # a second edge before the first is taken: one interrupt
    assert cpu.irq_signalled()
    assert irqs.take() == 1 and seen == [SPI]
    assert not cpu.irq_signalled()
    assert [(e[0], e[2]) for e in events if e[0] in ("ack", "eoi")] == [("ack", SPI), ("eoi", SPI)]
    assert irqs.counts == {SPI: 1}


def test_a_masked_kernel_takes_nothing_until_unmasked(machine: Machine) -> None:
    model, cpu, _ = machine
    irqs = Interrupts(cpu, driver(cpu))  # type: ignore[arg-type]
    seen: list[int] = []
    irqs.register(SPI, lambda: seen.append(1), edge=True)
    model.pulse_spi(SPI)
    with irqs.mask():
        assert irqs.take() == 0 and seen == []
    assert cpu.irq_signalled()
    assert irqs.take() == 1 and seen == [1]


def test_a_disabled_spi_is_not_signalled(machine: Machine) -> None:
    model, cpu, _ = machine
    gic = driver(cpu)
    irqs = Interrupts(cpu, gic)  # type: ignore[arg-type]
    irqs.register(SPI, lambda: None, edge=True)
    gic.disable(SPI)
    model.pulse_spi(SPI)
    assert not cpu.irq_signalled() and irqs.take() == 0
    with pytest.raises(GicError, match="not implemented"):
        gic.enable(200, edge=True)


def test_the_virtual_timer_ends_a_wait_and_quiets_its_level_ppi(machine: Machine) -> None:
    _, cpu, events = machine
    irqs = Interrupts(cpu, driver(cpu))  # type: ignore[arg-type]
    timer = VirtualTimer(cpu, irqs)  # type: ignore[arg-type]
    start = time.monotonic_ns()
    irqs.wait(start + 20_000_000)
    assert timer.fired == 1 and time.monotonic_ns() - start >= 20_000_000
    assert cpu.read_sysreg(CntSysreg.CNTV_CTL_EL0) == 0  # disabled by its handler before the EOI
    assert not cpu.irq_signalled()
    assert ("ack", 0, PPI_VIRT_TIMER) in events and ("eoi", 0, PPI_VIRT_TIMER) in events
    # re-arming for the same deadline writes nothing; a later one moves CVAL only
    timer.arm(start + 10**9)
    cval = cpu.read_sysreg(CntSysreg.CNTV_CVAL_EL0)
    timer.arm(start + 10**9)
    timer.arm(start + 2 * 10**9)
    assert cpu.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == cval + SYSTEM_COUNTER_HZ
    timer.arm(None)
    assert cpu.read_sysreg(CntSysreg.CNTV_CTL_EL0) == 0


def test_a_window_that_is_not_a_gicv3_is_refused(machine: Machine) -> None:
    _, cpu, _ = machine
    with pytest.raises(GicError, match="no redistributor for affinity"):
        Gic(cpu, ARM_GIC_DIST_BASE, gic_redists_base(NR_CPUS), GICR_SIZE, affinity=5)  # type: ignore[arg-type]
    cpu.mmio_read = lambda ipa, size: 0  # type: ignore[method-assign]  # RAZ: nothing answers as a GICv3
    with pytest.raises(GicError, match="no GICv3 redistributor"):
        Gic(cpu, ARM_GIC_DIST_BASE, gic_redists_base(NR_CPUS), gic_redists_size(NR_CPUS))  # type: ignore[arg-type]


class Recording(BusCpu):
    """BusCpu that keeps the distributor offsets of the MMIO stores, in order."""

    def __init__(self, gic: GicV3, bus: MmioBus, timer: GenericTimer) -> None:
        super().__init__(gic, bus, timer)
        self.stores: list[tuple[int, int]] = []

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        self.stores.append((ipa - ARM_GIC_DIST_BASE, value))
        super().mmio_write(ipa, size, value)


def routed_before_enabled(gic: GicV3, intid: int, edge: bool, nr_cpus: int = NR_CPUS) -> tuple[Recording, Interrupts]:
    """Bring the driver up on `gic` whose SPIs all reset routed to vCPU 1 at priority 0, then
    enable `intid`: the stores the driver made."""
    for n in range(SPI_BASE, gic.nr_irqs):
        irq = gic.spi(n)
        assert irq is not None
        gic.set_route(irq, vcpu_mpidr(1))
        irq.priority = 0
    bus = MmioBus()
    gic.attach(bus)
    cpu = Recording(gic, bus, GenericTimer(gic, 0))
    irqs = Interrupts(cpu, driver(cpu, nr_cpus))  # type: ignore[arg-type]
    irqs.register(intid, lambda: None, edge=edge)
    route = cpu.stores.index((Gicd.IROUTER + 8 * intid, vcpu_mpidr(0) & 0xFF_FFFF))
    prio = cpu.stores.index((Gicd.IPRIORITYR + intid, DEFAULT_PRIORITY))
    enable = cpu.stores.index((Gicd.ISENABLER + 4 * (intid // 32), 1 << (intid % 32)))
    assert route < enable and prio < enable  # configured, then enabled
    irq = gic.irq(0, intid)
    assert irq is not None and irq.enabled and irq.edge == edge
    assert (irq.route, irq.priority) == (vcpu_mpidr(0) & 0xFF_FFFF, DEFAULT_PRIORITY)
    return cpu, irqs


def test_only_an_enabled_spi_is_routed_and_prioritised(machine: Machine) -> None:
    model, _, _ = machine
    cpu, irqs = routed_before_enabled(model, SPI, edge=False)
    for other in (32, SPI + 1, 95):  # SPIs no driver enabled keep their reset route and priority
        irq = model.irq(0, other)
        assert irq is not None and (irq.route, irq.priority, irq.enabled) == (vcpu_mpidr(1) & 0xFF_FFFF, 0, False)
    routes = [off for off, _ in cpu.stores if Gicd.IROUTER <= off < Gicd.IROUTER + 8 * 1020]
    assert routes == [Gicd.IROUTER + 8 * SPI]
    # disabled and enabled again: the enable bit only, the SPI keeps its configuration
    irqs.gic.disable(SPI)
    before = len(cpu.stores)
    irqs.gic.enable(SPI, edge=False)
    assert cpu.stores[before:] == [(Gicd.ISENABLER + 4 * (SPI // 32), 1 << (SPI % 32))]
    assert model.irq(0, SPI).enabled  # type: ignore[union-attr]


def test_the_spi_of_the_vmms_nic_is_routed_before_it_is_enabled(tmp_path: Path) -> None:
    """The VMM's own GIC and the INTID its device tree gives the virtio-net NIC: the NIC
    driver's edge-triggered SPI is routed to the boot CPU and prioritised before enabled."""
    kernel = tmp_path / "kernel"
    kernel.write_bytes(bytes(4096))
    cfg = RunConfig.from_args(run_parser().parse_args(["-k", str(kernel), "-n", "mode=user"]))
    vmm = Vmm(cfg, io.BytesIO(), None)
    (nic,) = [node for node, dev in zip(vmm.virtio_nodes, vmm.virtio, strict=True) if dev.name == "virtio-net:0"]
    routed_before_enabled(vmm.gic, nic.irq, edge=True, nr_cpus=cfg.nrcpus)
