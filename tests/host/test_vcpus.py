"""The plain VM's vCPU scheduler (host/vcpus.py): round robin in time slices between
runnable vCPUs, a vCPU in WFI skipped until an interrupt is pending for it, and the running
vCPU stopped when it makes a waiting one's interrupt pending."""

from __future__ import annotations

import time
from pathlib import Path

from machine.asm_snippet import assemble  # tests/machine: the cross-assembler helper
from unirealm.arch.gic import GICD_CTLR_EnableGrp1, IccSysreg
from unirealm.arch.memory import World
from unirealm.arch.smccc import PsciFid
from unirealm.host.devices.gicv3 import GicV3
from unirealm.host.memmap import vcpu_mpidr
from unirealm.host.smccc import SmcccServices, VmPsci
from unirealm.host.vcpus import SLICE, VmCpus
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.timer import GenericTimer
from unirealm.machine.vcpu import IrqTrap, Mapping, WfxTrap

CODE = 0x4000_0000
SPIN = """
    .text
_start:
    add x1, x1, #1      // vCPU 0 (and any CPU_ON'd at _start) spins
    b _start
    .balign 64
waiter:
    wfi                 // a CPU started here waits for an interrupt
    b waiter
"""


def machine(tmp_path: Path, n: int = 2) -> tuple[VmCpus, VmPsci, GicV3]:
    memory = PhysicalMemory(4 << 20)
    memory.accessor(World.NON_SECURE).write(memory.base, assemble(SPIN, CODE, tmp_path, "spin"))

    def translate(ipa: int, write: bool, fetch: bool) -> Mapping | None:
        return Mapping(memory.base, World.NON_SECURE) if ipa == CODE else None

    gic = GicV3(n)
    gic.distributor.mmio_write(0, 4, GICD_CTLR_EnableGrp1)
    for cpu in range(n):
        gic.cpu(cpu).write_sysreg(IccSysreg.PMR, 0xF0)
        gic.cpu(cpu).write_sysreg(IccSysreg.IGRPEN1, 1)
    psci = VmPsci(SmcccServices(), n, [vcpu_mpidr(i) for i in range(n)])
    vcpus = VmCpus(memory, translate, gic, [GenericTimer(gic, i) for i in range(n)], psci)
    vcpus.boot(CODE, [])
    return vcpus, psci, gic


def test_two_spinning_vcpus_share_the_host_thread_in_slices(tmp_path: Path) -> None:
    vcpus, psci, _ = machine(tmp_path)
    assert psci.call([PsciFid.CPU_ON_64, 1, CODE, 0, 0, 0, 0, 0], 0) == 0
    order = []
    try:
        for _ in range(6):
            now = time.monotonic()
            vcpu = vcpus.next(now)
            assert vcpu is not None and vcpus.shared()
            assert vcpu.cpu is not None
            trap = vcpu.cpu.run(now + SLICE)
            assert isinstance(trap, IrqTrap)  # the slice ended it
            order.append(vcpu.index)
        assert order == [0, 1, 0, 1, 0, 1]
        counts = [v.cpu.get_gpr(1) for v in vcpus.vcpus if v.cpu is not None]
        assert all(c > 0 for c in counts)
    finally:
        vcpus.close()


def test_a_waiting_vcpu_is_skipped_until_an_sgi_wakes_it(tmp_path: Path) -> None:
    vcpus, psci, gic = machine(tmp_path)
    psci.call([PsciFid.CPU_ON_64, 1, CODE + 64, 0, 0, 0, 0, 0], 0)
    try:
        first = vcpus.next(time.monotonic())
        assert first is not None and first.index == 0
        now = time.monotonic()
        assert isinstance(first.cpu.run(now + SLICE), IrqTrap)  # type: ignore[union-attr]
        second = vcpus.next(time.monotonic())
        assert second is not None and second.index == 1
        for _ in range(50):  # a slice may end before the new vCPU's first instruction
            trap = second.cpu.run(time.monotonic() + SLICE)  # type: ignore[union-attr]
            if not isinstance(trap, IrqTrap):
                break
        assert isinstance(trap, WfxTrap) and vcpus.wait(1)
        for _ in range(3):  # only vCPU 0 runs now, without a slice
            vcpu = vcpus.next(time.monotonic())
            assert vcpu is not None and vcpu.index == 0 and not vcpus.shared()
        gic.cpu(0).write_sysreg(IccSysreg.SGI1R, (3 << 24) | (1 << 1))  # SGI 3 to CPU 1
        assert vcpus.vcpus[1].kicked
        nxt = [vcpus.next(time.monotonic()), vcpus.next(time.monotonic())]
        assert [v.index for v in nxt if v is not None] == [1, 0]  # woken, and its turn comes
    finally:
        vcpus.close()
