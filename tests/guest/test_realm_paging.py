"""A realm kernel touching its RAM for the first time, on the real RMM and the host's REC loop:
in order (the host's fault-around windows grow to the 2 MiB block) and scattered (64 KiB
each), every page reads back what was written and starts zeroed, and what the realm touched
is exactly the data the host created, in as few exits as the windows promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid
from unirealm.guest.kernel import Kernel
from unirealm.host.kvm import FAULT_AROUND, RealmVm

from .realm_support import RAM_BASE, RAM_TOP, run_in_realm

PAGES = 192  # 768 KiB in order, then 16 pages scattered over the rest


def test_first_touches_in_order_and_scattered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faults: list[int] = []
    fault_in = RealmVm.fault_in

    def counted(vm: RealmVm, page: int) -> None:
        faults.append(page)
        fault_in(vm, page)

    monkeypatch.setattr(RealmVm, "fault_in", counted)

    def body(kernel: Kernel) -> dict[str, object]:
        cpu = kernel.cpu
        base = kernel.pages.alloc(PAGES)
        zeroed = True
        for i in range(PAGES):
            ipa = base + i * GRANULE_SIZE
            zeroed &= cpu.read(ipa + 8, 8) == bytes(8)
            cpu.write(ipa, i.to_bytes(4, "little") * 2)
        spread = kernel.pages.alloc((RAM_TOP - base) // GRANULE_SIZE - PAGES - 1)
        scattered = [spread + n * 5 * FAULT_AROUND * GRANULE_SIZE // 2 for n in range(16)]
        scattered = [ipa & ~(GRANULE_SIZE - 1) for ipa in scattered if ipa < RAM_TOP - GRANULE_SIZE]
        for n, ipa in enumerate(scattered):
            zeroed &= cpu.read(ipa, 8) == bytes(8)
            cpu.write(ipa, (0xA000 + n).to_bytes(8, "little"))
        back = [int.from_bytes(cpu.read(base + i * GRANULE_SIZE, 4), "little") for i in range(PAGES)]
        back_scattered = [int.from_bytes(cpu.read(ipa, 8), "little") for ipa in scattered]
        return {"base": base, "zeroed": zeroed, "back": back, "scattered": scattered, "back_scattered": back_scattered}

    run = run_in_realm(tmp_path, body)
    got = run.result
    assert got["zeroed"]
    assert got["back"] == list(range(PAGES))
    assert got["back_scattered"] == [0xA000 + n for n in range(len(got["scattered"]))]
    vm = run.vm
    touched = {got["base"] + i * GRANULE_SIZE for i in range(PAGES)} | set(got["scattered"])
    assert touched <= set(vm.data)
    # every granule the host made is the realm's RAM, assigned to it in the RMM's stage 2
    for ipa in vm.data:
        assert RAM_BASE <= ipa < RAM_TOP
        entry = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, 3)
        assert entry[3] == vm.data[ipa], hex(ipa)
    # in order: windows of 64, 128, 256, 512 KiB cover the 768 KiB; scattered: one fault each
    in_order = [page for page in faults if got["base"] <= page < got["base"] + PAGES * GRANULE_SIZE]
    assert len(in_order) <= 4, [hex(p) for p in in_order]
    assert len(faults) - len(in_order) <= len(got["scattered"]) + 2  # + the kernel's own first touches
