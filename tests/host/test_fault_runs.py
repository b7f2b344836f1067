"""A realm's faults on unpopulated protected RAM, as runs: a fault where the last window of a
run ended gets a window twice as large (up to FAULT_AROUND_MAX granules), never past its
2 MiB block or its RAM; a scattered fault fills 64 KiB only. Whatever the window, the
granules it makes are exactly the RMM's ASSIGNED ones, EMPTY granules stay unassigned and
unmapped, a granule the RMM refuses or the host cannot find goes back to the host, and the
teardown is one pass however much the realm touched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL
from unirealm.arch.rmi import RmiFid, RmiRipas, RttEntryState
from unirealm.host.kvm import FAULT_AROUND, FAULT_AROUND_MAX, FAULT_RUNS, RealmConfig, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.machine.board import Machine
from unirealm.machine.memory import Pas
from unirealm.rmm.core import Rmm

RAM = 0x8000_0000
BLOCK = 2 << 20  # a level-3 RTT's span
WINDOW = FAULT_AROUND * GRANULE_SIZE


def realm(tmp_path: Path, ram: int = 2 * BLOCK, ripas_ram: int | None = None) -> tuple[RealmVm, Rmm]:
    machine = Machine(dram_size=32 << 20, data_dir=tmp_path)
    rmm = Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    vm.ram_ranges = [(RAM, RAM + ram)]
    vm.init_ripas(RAM, RAM + (ram if ripas_ram is None else ripas_ram))
    return vm, rmm


def assigned(vm: RealmVm, base: int, top: int) -> dict[int, int]:
    """The RMM's ASSIGNED entries in [base, top): IPA -> data granule."""
    out = {}
    for ipa in range(base, top, GRANULE_SIZE):
        entry = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)
        if entry[1] == RTT_PAGE_LEVEL and entry[2] == RttEntryState.ASSIGNED:
            out[ipa] = entry[3]
    return out


def consistent(vm: RealmVm, base: int, top: int, lost: int = 0) -> None:
    """The host's bookkeeping is the RMM's stage 2, and no granule is lost to either: the
    realm PAS holds exactly the granules the host knows it gave (and `lost` it forgot)."""
    assert assigned(vm, base, top) == {ipa: pa for ipa, pa in vm.data.items() if base <= ipa < top}
    memory = vm.machine.memory
    for pa in vm.pages._free:
        assert memory.pas(pa) == Pas.NON_SECURE, hex(pa)
    realm_pas = sum(1 for pa in memory.granules() if memory.pas(pa) == Pas.REALM)
    assert realm_pas == len(vm.data) + len(vm.rtts) + len(vm.roots) + 1 + lost  # + 1: the RD


def touch_in_order(vm: RealmVm, base: int, top: int) -> list[int]:
    """Fault at every granule not yet populated, in order: the pages the faults were at."""
    faults = []
    for ipa in range(base, top, GRANULE_SIZE):
        if ipa not in vm.data:
            vm.fault_in(ipa)
            faults.append(ipa)
    return faults


def test_a_run_of_faults_grows_its_window_to_the_block(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path, ram=3 * BLOCK)
    faults = touch_in_order(vm, RAM, RAM + 3 * BLOCK)
    # 64 KiB, 128, 256, 512 KiB, 1 MiB, then the block's last 64 KiB; one window a block after
    expected = [RAM]
    for size in (1, 2, 4, 8, 16):
        expected.append(expected[-1] + size * WINDOW)
    expected += [RAM + BLOCK, RAM + 2 * BLOCK]
    assert faults == expected
    assert FAULT_AROUND_MAX * GRANULE_SIZE == BLOCK
    consistent(vm, RAM, RAM + 3 * BLOCK)


def test_a_window_never_leaves_its_block_or_the_ram(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path, ram=BLOCK + 5 * WINDOW + 3 * GRANULE_SIZE)
    touch_in_order(vm, RAM, RAM + BLOCK - WINDOW)  # a long run: its next window would be 2 MiB
    made = vm.fault_around(RAM + BLOCK - WINDOW)
    assert made == FAULT_AROUND  # only up to the block's end
    assert max(vm.data) == RAM + BLOCK - GRANULE_SIZE
    vm.fault_in(RAM + BLOCK)  # the run goes on into the next block, which ends the RAM early
    assert max(vm.data) == RAM + BLOCK + 5 * WINDOW + 2 * GRANULE_SIZE
    consistent(vm, RAM, RAM + 2 * BLOCK)


def test_scattered_faults_fill_64_kib_each(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path)
    # every other window, backwards and forwards: no fault continues a run
    for n in (20, 4, 12, 8, 30, 2):
        before = len(vm.data)
        vm.fault_in(RAM + n * WINDOW + 7 * GRANULE_SIZE)
        assert len(vm.data) - before == FAULT_AROUND
        assert all(RAM + n * WINDOW <= ipa < RAM + (n + 1) * WINDOW for ipa in list(vm.data)[before:])
    consistent(vm, RAM, RAM + 2 * BLOCK)


def test_runs_are_followed_side_by_side_and_the_oldest_is_forgotten(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path, ram=2 * BLOCK)
    starts = [RAM + i * 4 * WINDOW for i in range(FAULT_RUNS + 1)]
    for start in starts:  # FAULT_RUNS + 1 runs begun, one window each
        vm.fault_in(start)
    for start in starts[1:]:  # each continues: its second window is twice the first
        before = len(vm.data)
        vm.fault_in(start + WINDOW)
        assert len(vm.data) - before == 2 * FAULT_AROUND
    vm, _ = realm(tmp_path / "again", ram=2 * BLOCK)
    for start in starts:
        vm.fault_in(start)
    before = len(vm.data)
    vm.fault_in(starts[0] + WINDOW)  # the first run was forgotten when the last began
    assert len(vm.data) - before == FAULT_AROUND


def test_empty_granules_stay_unassigned_and_unmapped_in_a_large_window(tmp_path: Path) -> None:
    vm, rmm = realm(tmp_path, ripas_ram=50 * GRANULE_SIZE)  # RIPAS RAM over 50 granules, then EMPTY
    faults = touch_in_order(vm, RAM, RAM + 50 * GRANULE_SIZE)
    assert faults == [RAM, RAM + WINDOW, RAM + 3 * WINDOW]  # the third window is 64 granules
    assert sorted(vm.data) == list(range(RAM, RAM + 50 * GRANULE_SIZE, GRANULE_SIZE))
    realm_obj = rmm.realms[vm.rd]
    for ipa in range(RAM, RAM + 8 * WINDOW, GRANULE_SIZE):
        entry = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)
        if ipa < RAM + 50 * GRANULE_SIZE:
            assert (entry[2], entry[4]) == (RttEntryState.ASSIGNED, RmiRipas.RAM)
            assert rmm.stage2_translate(realm_obj, ipa) is not None
        else:
            assert (entry[2], entry[4]) == (RttEntryState.UNASSIGNED, RmiRipas.EMPTY)
            assert rmm.stage2_translate(realm_obj, ipa) is None  # nothing for the realm to map
    consistent(vm, RAM, RAM + 2 * BLOCK)


def test_a_granule_refused_mid_window_goes_back_to_the_host(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path)
    vm.fault_in(RAM)  # a run begins: its next window is 32 granules, [WINDOW, 3 * WINDOW)
    lost = [RAM + WINDOW + 3 * GRANULE_SIZE, RAM + 2 * WINDOW]
    for ipa in lost:  # assigned through RMI behind the host's bookkeeping: its DATA_CREATE_UNKNOWN fails
        granule = vm.delegated()
        vm.rmi.call(RmiFid.DATA_CREATE_UNKNOWN, vm.rd, granule, ipa)
    vm.fault_in(RAM + WINDOW)
    assert len(vm.data) == FAULT_AROUND + 2 * FAULT_AROUND - len(lost)
    assert not set(lost) & set(vm.data)
    stale = assigned(vm, RAM, RAM + 2 * BLOCK)
    assert set(stale) - set(vm.data) == set(lost)
    for ipa in lost:
        del stale[ipa]
    assert stale == vm.data
    consistent(vm, RAM + 3 * WINDOW, RAM + 2 * BLOCK, lost=len(lost))


def test_a_host_out_of_granules_stops_its_window_and_the_realm_goes_on(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path)
    pages = vm.pages
    vm.fault_in(RAM)
    top = pages.machine.memory.top
    spare = 5  # the host can give five more granules: the fault's own and four neighbours
    pages._next = top - spare * GRANULE_SIZE
    pages._free.clear()
    made = vm.fault_around(RAM + WINDOW)  # the run's next window: 32 granules wanted
    assert made == spare
    consistent(vm, RAM, RAM + 2 * BLOCK)
    with pytest.raises(MemoryError):  # the fault's own granule must be made: the run loop stops the realm
        vm.fault_in(RAM + 10 * WINDOW)
    consistent(vm, RAM, RAM + 2 * BLOCK)


class CountingDict(dict[int, int]):
    """A dict that counts the entries its iterations visit."""

    visited = 0

    def __iter__(self) -> Iterator[int]:
        for key in super().__iter__():
            CountingDict.visited += 1
            yield key


def test_the_teardown_is_one_pass_over_the_data(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path)
    touch_in_order(vm, RAM, RAM + BLOCK)
    n = len(vm.data)
    assert n == FAULT_AROUND_MAX
    vm.data = CountingDict(vm.data)
    CountingDict.visited = 0
    vm._destroy_data(RAM + 3 * GRANULE_SIZE, RAM + 5 * GRANULE_SIZE)  # a RIPAS change's range
    assert CountingDict.visited == 0  # looked up, not searched
    vm.destroy()
    assert CountingDict.visited <= n + 1  # the old teardown searched all of it per granule: n * n
    assert not vm.data


def count_reads(vm: RealmVm) -> list[int]:
    """The IPAs of the level-3 RTT_READ_ENTRY calls the host makes from now on (a granule's
    entry; not the RTT walk's own look at the block above)."""
    reads: list[int] = []
    vm.rmi.watch[RmiFid.RTT_READ_ENTRY] = lambda args, out: reads.extend(args[1:2] if args[2] == RTT_PAGE_LEVEL else ())
    return reads


def test_where_the_host_knows_the_ripas_it_reads_no_entry(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path, ripas_ram=BLOCK)  # RTT_INIT_RIPAS over the first block only
    assert vm.ripas_ram.spans == [(RAM, RAM + BLOCK)]
    reads = count_reads(vm)
    touch_in_order(vm, RAM, RAM + BLOCK)
    assert reads == []
    vm.fault_in(RAM + BLOCK)  # the run goes on past what RTT_INIT_RIPAS set: each neighbour is read
    assert len(reads) == FAULT_AROUND_MAX - 1  # (and is EMPTY)
    assert sorted(vm.data) == [*range(RAM, RAM + BLOCK, GRANULE_SIZE), RAM + BLOCK]
    consistent(vm, RAM, RAM + 2 * BLOCK)


def test_a_destroyed_granule_and_any_ripas_change_are_read_again(tmp_path: Path) -> None:
    vm, _ = realm(tmp_path)
    vm.fault_in(RAM)
    gone = RAM + 5 * GRANULE_SIZE
    vm._destroy_data(gone, gone + GRANULE_SIZE)  # RIPAS DESTROYED now
    # an RTT_SET_RIPAS the host made (here refused: no REC asked) makes its range unknown too
    vm.rmi.try_call(RmiFid.RTT_SET_RIPAS, vm.rd, 0, RAM + 4 * WINDOW, RAM + 5 * WINDOW)
    assert vm.ripas_ram.spans == [(RAM, gone), (gone + GRANULE_SIZE, RAM + 4 * WINDOW),
                                  (RAM + 5 * WINDOW, RAM + 2 * BLOCK)]
    reads = count_reads(vm)
    vm.fault_around(RAM)  # the window of the destroyed granule: read, and left DESTROYED
    assert gone not in vm.data and len(reads) == 1
    entry = vm.rmi.call(RmiFid.RTT_READ_ENTRY, vm.rd, gone, RTT_PAGE_LEVEL)
    assert (entry[2], entry[4]) == (RttEntryState.UNASSIGNED, RmiRipas.DESTROYED)
    reads.clear()
    vm.fault_in(RAM + 4 * WINDOW)
    assert len(reads) == FAULT_AROUND - 1  # RAM still, but the host no longer knows it
    assert all(RAM + 4 * WINDOW + i * GRANULE_SIZE in vm.data for i in range(FAULT_AROUND))
    consistent(vm, RAM, RAM + 2 * BLOCK)
