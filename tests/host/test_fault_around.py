"""A protected fault fills its aligned 64 KiB window (kvm.FAULT_AROUND granules): the
granules there that are still UNASSIGNED with RIPAS RAM get DATA_CREATE_UNKNOWN, nothing
else changes, and the faulting granule's failure still stops the realm."""

from __future__ import annotations

import pytest

from unirealm.arch.esr import Ec
from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL
from unirealm.arch.rmi import RmiFid, RmiRipas, RttEntryState
from unirealm.host.kvm import FAULT_AROUND, RealmConfig, RealmVm, RecExitInfo
from unirealm.host.rmi_client import HostPages, RmiCallError
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm

RAM_BASE, RAM_SIZE = 0x8000_0000, 2 << 20
WINDOW = FAULT_AROUND * GRANULE_SIZE


def realm() -> RealmVm:
    machine = Machine(dram_size=16 << 20)
    Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    vm.ram_ranges = [(RAM_BASE, RAM_BASE + RAM_SIZE)]
    vm.init_ripas(RAM_BASE, RAM_BASE + WINDOW + 8 * GRANULE_SIZE)  # the rest of the window stays EMPTY
    vm.populate(RAM_BASE + WINDOW + 3 * GRANULE_SIZE, b"image")  # one granule the host populated
    return vm


def fault(ipa: int) -> RecExitInfo:
    esr = (Ec.DABT_LOWER << 26) | (1 << 25) | 0x07  # a translation fault at level 3
    return RecExitInfo(reason=0, esr=esr, far=ipa & 0xFFF, hpfar=(ipa >> 12) << 4, gprs=[0] * 31,
                       ripas_base=0, ripas_top=0, ripas_value=0, imm=0)


def entry(vm: RealmVm, ipa: int) -> tuple[int, int, int]:
    out = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)
    return out[2], out[3], out[4]


def test_a_fault_fills_its_window_and_nothing_more() -> None:
    vm = realm()
    window = RAM_BASE + WINDOW
    populated = window + 3 * GRANULE_SIZE
    image_pa = vm.data[populated]
    vm.handle_sync(fault(window + 5 * GRANULE_SIZE + 0x10))
    for i in range(FAULT_AROUND):
        ipa = window + i * GRANULE_SIZE
        state, desc, ripas = entry(vm, ipa)
        if i < 8:  # RIPAS RAM: assigned (the populated one keeps its granule)
            assert (state, ripas) == (RttEntryState.ASSIGNED, RmiRipas.RAM), i
            assert desc == vm.data[ipa]
        else:  # RIPAS EMPTY: left for the realm to ask for
            assert (state, ripas) == (RttEntryState.UNASSIGNED, RmiRipas.EMPTY), i
            assert ipa not in vm.data
    assert vm.data[populated] == image_pa
    # the windows either side are untouched
    assert entry(vm, window - GRANULE_SIZE)[0] == RttEntryState.UNASSIGNED
    assert entry(vm, RAM_BASE)[0] == RttEntryState.UNASSIGNED
    # a fault in the next window fills only what it may: its RIPAS RAM granules below the EMPTY ones
    made = vm.fault_around(RAM_BASE)
    assert made == FAULT_AROUND
    assert all(entry(vm, RAM_BASE + i * GRANULE_SIZE)[0] == RttEntryState.ASSIGNED for i in range(FAULT_AROUND))


def test_the_faulting_granule_must_succeed() -> None:
    """Only the neighbours are best effort: a granule the host lost track of is skipped
    there, and is an error where the realm faulted."""
    vm = realm()
    populated = RAM_BASE + WINDOW + 3 * GRANULE_SIZE
    del vm.data[populated]  # assigned, but this host no longer knows it
    assert vm.fault_around(RAM_BASE + WINDOW) == 7  # the 8 RIPAS RAM granules but that one
    assert populated not in vm.data
    ipa = RAM_BASE + WINDOW + 10 * GRANULE_SIZE  # RIPAS EMPTY: its own fault is served all the same
    vm.handle_sync(fault(ipa))
    assert entry(vm, ipa)[0] == RttEntryState.ASSIGNED
    with pytest.raises(RmiCallError, match="DATA_CREATE_UNKNOWN failed: ERROR_RTT"):
        vm.handle_sync(fault(populated))
