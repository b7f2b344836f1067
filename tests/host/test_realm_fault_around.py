"""A realm's stage-2 fault on unpopulated protected RAM: the host creates the faulting
granule and the granules of its aligned 64 KiB that are in RAM, unassigned and RIPAS RAM
(one REC exit for 16 first touches), never one the realm holds EMPTY or one already there."""

from __future__ import annotations

from pathlib import Path

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiFid, RmiRipas, RttEntryState
from unirealm.host.kvm import FAULT_AROUND, RealmConfig, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm

RAM = 0x8000_0000
BLOCK = FAULT_AROUND * GRANULE_SIZE


def realm(tmp_path: Path, ripas_ram: int, ram: int = 4 * BLOCK) -> RealmVm:
    """A realm whose RAM is [RAM, RAM + ram), RIPAS RAM only over its first `ripas_ram` bytes."""
    machine = Machine(dram_size=64 << 20, data_dir=tmp_path)
    Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    vm.ram_ranges = [(RAM, RAM + ram)]
    vm.init_ripas(RAM, RAM + ripas_ram)
    return vm


def granules(vm: RealmVm) -> list[int]:
    return sorted((ipa - RAM) // GRANULE_SIZE for ipa in vm.data)


def test_a_fault_populates_the_ripas_ram_granules_of_its_block_only(tmp_path: Path) -> None:
    vm = realm(tmp_path, ripas_ram=BLOCK + 10 * GRANULE_SIZE)
    vm.populate(RAM + BLOCK + 3 * GRANULE_SIZE, b"kept")  # a granule the host loaded before
    kept = vm.data[RAM + BLOCK + 3 * GRANULE_SIZE]
    vm.fault_in(RAM + BLOCK + 5 * GRANULE_SIZE)
    # granules 16..25 are RIPAS RAM (19 was there already); 26..31 are EMPTY: left alone
    assert granules(vm) == list(range(FAULT_AROUND, FAULT_AROUND + 10))
    assert vm.data[RAM + BLOCK + 3 * GRANULE_SIZE] == kept
    for n in range(FAULT_AROUND, 2 * FAULT_AROUND):
        _, _, state, _, ripas = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, RAM + n * GRANULE_SIZE, 3)[:5]
        assert (state == RttEntryState.ASSIGNED) == (n < FAULT_AROUND + 10)
        assert ripas == (RmiRipas.RAM if n < FAULT_AROUND + 10 else RmiRipas.EMPTY)
    vm.fault_in(RAM + 2 * GRANULE_SIZE)  # the block below: all of it
    assert granules(vm) == list(range(FAULT_AROUND + 10))


def test_a_fault_never_populates_past_the_end_of_ram(tmp_path: Path) -> None:
    vm = realm(tmp_path, ripas_ram=BLOCK, ram=6 * GRANULE_SIZE)
    vm.fault_in(RAM)
    assert granules(vm) == list(range(6))
