"""The host attacks a running realm with everything the VMM holds: its accessor of DRAM (a
full scan), its devices' DMA views, RMI calls that would free, remap or re-measure granules
in use, and REC_ENTER with crafted run pages. Every attempt ends in a granule protection
fault, a DmaError or an RMI error, and the realm then runs on to the same output; data the
host destroys under a running realm comes back to it scrubbed, and the realm stops cleanly."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL, Pas, World
from unirealm.arch.rmi import RmiFid, RmiStatus, status_of
from unirealm.host.cmdline import parse_run_args
from unirealm.host.devices.virtio_mmio import DmaError, SharedView
from unirealm.host.kvm import NS_NORMAL_RW_DESC
from unirealm.host.vmm import Vmm, VmmError
from unirealm.machine.memory import GranuleProtectionFault

ATTACK_AT = 40  # the MMIO exit at which the host attacks (the kernel is up, its app starting)


class AttackingVmm(Vmm):
    """The honest VMM, but at one MMIO exit `attack(self)` runs with the realm in hand."""

    def __init__(self, argv: list[str], attack: Any, at_output: int | None = None) -> None:
        self.out, self.log_out = io.BytesIO(), io.BytesIO()
        super().__init__(parse_run_args(argv), self.out, None, log_output=self.log_out)
        self.attack, self.mmio_exits, self.at_output = attack, 0, at_output
        self.report: Any = None

    def realm_vm(self, machine):  # type: ignore[no-untyped-def]
        self.vm = super().realm_vm(machine)
        self.machine = machine
        return self.vm

    def mmio(self, ipa: int, is_write: bool, size: int, value: int) -> int | None:
        self.mmio_exits += 1
        if self.report is None and (self.mmio_exits >= ATTACK_AT if self.at_output is None else len(self.out.getvalue()) >= self.at_output):
            self.report = self.attack(self)
        return super().mmio(ipa, is_write, size, value)


def status(vmm: AttackingVmm, fid: RmiFid, *args: int) -> RmiStatus:
    return status_of(vmm.vm.rmi.try_call(fid, *args)[0])


def read_everything(vmm: AttackingVmm) -> dict[str, int]:
    """Every host-side way to a realm granule, on every granule of DRAM."""
    memory = vmm.machine.memory
    ns = vmm.machine.ns_memory()
    counts = {"realm granules": 0, "refused": 0, "dma refused": 0}
    for pa in memory.granules():
        if memory.pas(pa) == Pas.NON_SECURE:
            continue
        counts["realm granules"] += 1
        for call, args in ((ns.read, (pa, GRANULE_SIZE)), (ns.write, (pa, b"x")),
                           (ns.read_u64, (pa + GRANULE_SIZE - 8,)), (ns.is_zero, (pa, GRANULE_SIZE)),
                           (vmm.vm.pages.mem.read, (pa, 1)),
                           (memory.host_pointer, (World.NON_SECURE, pa, GRANULE_SIZE))):
            with pytest.raises(GranuleProtectionFault):
                call(*args)  # type: ignore[operator]
            counts["refused"] += 1
    # The devices' DMA views reach only what the host mapped unprotected.
    for device in vmm.virtio:
        assert isinstance(device.memory, SharedView)
        for ipa in list(vmm.vm.data)[:64]:
            for addr in (ipa, ipa | vmm.vm.unprotected_bit):
                with pytest.raises(DmaError):
                    device.memory.read(addr, 8)
                with pytest.raises(DmaError):
                    device.memory.write(addr, b"x")
                counts["dma refused"] += 2
    return counts


def rmi_attacks(vmm: AttackingVmm) -> dict[str, RmiStatus]:
    vm = vmm.vm
    data_ipa, data_pa = next(iter(vm.data.items()))
    rec = vm.recs[0]
    rtt_pa = next(iter(vm.rtts.values()))
    spare = vm.pages.alloc()
    got = {
        "undelegate DATA": status(vmm, RmiFid.GRANULE_UNDELEGATE, data_pa),
        "undelegate RTT": status(vmm, RmiFid.GRANULE_UNDELEGATE, rtt_pa),
        "undelegate RD": status(vmm, RmiFid.GRANULE_UNDELEGATE, vm.rd),
        "undelegate REC": status(vmm, RmiFid.GRANULE_UNDELEGATE, rec.pa),
        "undelegate REC aux": status(vmm, RmiFid.GRANULE_UNDELEGATE, rec.aux[0]) if rec.aux else RmiStatus.ERROR_INPUT,
        "RTT_MAP_UNPROTECTED over a protected IPA": status(
            vmm, RmiFid.RTT_MAP_UNPROTECTED, vm.rd, data_ipa, RTT_PAGE_LEVEL, spare | NS_NORMAL_RW_DESC),
        "DATA_CREATE over a mapped IPA": status(vmm, RmiFid.DATA_CREATE, vm.rd, data_pa, data_ipa, spare, 0),
        "RTT_INIT_RIPAS after activate": status(vmm, RmiFid.RTT_INIT_RIPAS, vm.rd, data_ipa, data_ipa + GRANULE_SIZE),
        "REC_ENTER with a realm granule as run page": status(vmm, RmiFid.REC_ENTER, rec.pa, data_pa),
        "REC_ENTER with the RD as run page": status(vmm, RmiFid.REC_ENTER, rec.pa, vm.rd),
        "REC_ENTER of a DATA granule as REC": status(vmm, RmiFid.REC_ENTER, data_pa, rec.run),
        "REC_ENTER with an unaligned run page": status(vmm, RmiFid.REC_ENTER, rec.pa, rec.run + 8),
        "DATA_DESTROY of a protected IPA not mapped": status(vmm, RmiFid.DATA_DESTROY, vm.rd, 1 << 20),
    }
    vm.pages.free(spare)
    return got


@pytest.fixture
def argv(hello_image: Path, tmp_path: Path) -> list[str]:
    return ["--realm", "-k", str(hello_image), "--9p", str(tmp_path), "--params=loglevel=7 -- a b"]


def honest_output(argv: list[str]) -> bytes:
    vmm = AttackingVmm(argv, lambda v: None)
    assert vmm.run().status == 0
    return vmm.out.getvalue()


def test_reads_and_writes_through_every_host_object_fault(argv: list[str]) -> None:
    want = honest_output(argv)
    vmm = AttackingVmm(argv, read_everything)
    assert vmm.run().status == 0
    assert vmm.report["realm granules"] > 100
    assert vmm.report["refused"] == 6 * vmm.report["realm granules"]
    assert vmm.report["dma refused"] == 4 * 64
    assert vmm.out.getvalue() == want  # and the realm ran on untouched


def test_rmi_calls_on_granules_in_use_fail(argv: list[str]) -> None:
    want = honest_output(argv)
    vmm = AttackingVmm(argv, rmi_attacks)
    assert vmm.run().status == 0
    failed = {name: s for name, s in vmm.report.items() if s == RmiStatus.SUCCESS}
    assert not failed, failed
    assert vmm.out.getvalue() == want


def test_data_destroyed_under_a_running_realm_returns_scrubbed(argv: list[str]) -> None:
    """DATA_DESTROY is the host's right; what it gets back is zeros, and the realm, whose
    memory is gone (RIPAS DESTROYED: aborts), stops instead of running on garbage."""
    def destroy_all(vmm: AttackingVmm) -> list[int]:
        vm, reclaimed = vmm.vm, []
        for ipa in list(vm.data):
            out = vm.rmi.try_call(RmiFid.DATA_DESTROY, vm.rd, ipa)
            assert status_of(out[0]) == RmiStatus.SUCCESS
            assert status_of(vm.rmi.try_call(RmiFid.GRANULE_UNDELEGATE, out[1])[0]) == RmiStatus.SUCCESS
            del vm.data[ipa]
            reclaimed.append(out[1])
        ns = vmm.machine.ns_memory()
        assert all(ns.is_zero(pa, GRANULE_SIZE) for pa in reclaimed)
        return reclaimed

    vmm = AttackingVmm(argv, destroy_all, at_output=10)  # while the app is printing
    with pytest.raises(VmmError, match="the realm cannot go on: RMI_DATA_CREATE_UNKNOWN failed: ERROR_RTT"):
        vmm.run()  # the realm touches a destroyed page: the host cannot give it back
    assert len(vmm.report) > 100
    assert b"exited with status" not in vmm.log_out.getvalue()  # it did not run on over zeroed memory
