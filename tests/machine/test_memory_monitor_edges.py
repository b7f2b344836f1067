"""Corners of the GPT-checked memory (machine/memory.py) and the EL3 monitor
(machine/monitor.py): faults that name the PA and the PAS, empty and last-byte accesses,
an unaligned multi-granule access checked granule by granule, raw host pointers only after
the check, the backing file closed with its memory; FID ranges, zeroed argument registers,
and the trace lines of RMI and RSI calls (statuses with their index, results, REC exits)."""

from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.machine.board import Machine
from unirealm.machine.memory import GranuleProtectionFault, PhysicalMemory
from unirealm.machine.monitor import Caller, is_rmi, is_rsi
from unirealm.rmm.core import Rmm

BASE = 0x8_8000_0000


def realm_granule(mem: PhysicalMemory, index: int) -> int:
    pa = BASE + index * GRANULE_SIZE
    mem.set_pas(World.ROOT, pa, Pas.REALM)
    return pa


def test_faults_name_the_pa_and_what_is_there() -> None:
    mem = PhysicalMemory(1 << 20, BASE)
    pa = realm_granule(mem, 3)
    ns = mem.accessor(World.NON_SECURE)
    with pytest.raises(GranuleProtectionFault, match=f"NON_SECURE access to PA {pa:#x} in the REALM PAS") as exc:
        ns.read(pa + 8, 4)  # the fault names the granule
    assert exc.value.pa == pa and exc.value.pas == Pas.REALM and exc.value.world == World.NON_SECURE
    top = mem.top
    for addr, size in ((top - 4, 8), (top + 1, 0), (BASE - 1, 0), (BASE - 1, 2)):
        with pytest.raises(GranuleProtectionFault, match="outside physical memory") as exc:
            mem.check(World.NON_SECURE, addr, size)
        assert exc.value.pa == addr and exc.value.pas is None
    with pytest.raises(GranuleProtectionFault) as exc:
        mem.offset(top)
    assert exc.value.world == World.ROOT and exc.value.pa == top
    assert mem.offset(BASE + 0x1234) == 0x1234


def test_empty_accesses_inside_memory_and_the_last_bytes() -> None:
    mem = PhysicalMemory(1 << 20, BASE)
    assert mem.contains(BASE, 0) and mem.contains(mem.top - 1, 1) and not mem.contains(mem.top, 1)
    assert mem.contains(mem.top, 0) and not mem.contains(BASE - 1, 0)
    mem.check(World.NON_SECURE, BASE + 5, 0)
    ns = mem.accessor(World.NON_SECURE)
    assert ns.read(BASE, 0) == b""
    ns.write_u64(mem.top - 8, 0x1122_3344_5566_7788)  # the machine's last eight bytes
    assert ns.read_u64(mem.top - 8) == 0x1122_3344_5566_7788
    nxt = realm_granule(mem, 5)
    ns.write_u64(nxt - 8, 7)  # right before a realm granule
    assert ns.read_u64(nxt - 8) == 7
    with pytest.raises(GranuleProtectionFault):
        ns.write_u64(nxt - 4, 7)  # straddling into it


def test_an_unaligned_16_mib_access_checks_every_granule() -> None:
    mem = PhysicalMemory(32 << 20, BASE)
    realm_granule(mem, 5)
    with pytest.raises(GranuleProtectionFault) as exc:
        mem.check(World.NON_SECURE, BASE + 1, 16 << 20)
    assert exc.value.pa == BASE + 5 * GRANULE_SIZE
    mem.check(World.NON_SECURE, BASE + 6 * GRANULE_SIZE + 1, 16 << 20)  # past it: fine


def test_host_pointers_only_after_the_check() -> None:
    mem = PhysicalMemory(1 << 20, BASE)
    ns = mem.accessor(World.NON_SECURE)
    ns.write(BASE + 0x2000, b"pointer")
    ptr = mem.host_pointer(World.NON_SECURE, BASE + 0x2000, 7)
    assert ctypes.string_at(ptr, 7) == b"pointer"
    pa = realm_granule(mem, 9)
    with pytest.raises(GranuleProtectionFault):
        mem.host_pointer(World.NON_SECURE, pa, GRANULE_SIZE)
    assert mem.host_pointer(World.REALM, pa, GRANULE_SIZE) == ptr - 0x2000 + 9 * GRANULE_SIZE


def test_bad_geometry_and_the_backing_file_lifetime() -> None:
    for size, base in ((0, BASE), (GRANULE_SIZE + 1, BASE), (GRANULE_SIZE, BASE + 1)):
        with pytest.raises(ValueError, match="granule aligned"):
            PhysicalMemory(size, base)
    mem = PhysicalMemory(1 << 20, BASE)
    fd = mem.fd
    os.fstat(fd)
    del mem
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with its memory


# --- the monitor ------------------------------------------------------------------------------
def test_fid_ranges() -> None:
    from unirealm.arch import rmi, rsi

    assert is_rmi(0xC400_0000 | rmi.RMI_FNUM_FIRST) and is_rmi(0xC400_0000 | rmi.RMI_FNUM_LAST)
    assert not is_rmi(0xC400_0000 | rmi.RMI_FNUM_LAST + 1)
    assert is_rsi(0xC400_0000 | rsi.RSI_FNUM_LAST) and not is_rsi(0xC400_0000 | rsi.RSI_FNUM_LAST + 1)
    assert not is_rmi(0xC400_0003)  # PSCI CPU_ON (SMC64): the same owner range, not RMI
    assert not is_rmi(0x8400_0150) and not is_rmi(0xC500_0150) and not is_rmi(0xC400_0190)
    assert is_rsi(0xC400_0190)
    assert not is_rsi(0xC400_0150) and not is_rsi(0xC400_0003) and not is_rsi(0xC400_0001 | 0x190 | 1 << 16)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(dram_size=8 << 20, data_dir=tmp_path)
    Rmm(m.monitor)
    return m


def test_missing_argument_registers_are_zero(machine: Machine) -> None:
    out = machine.monitor.smc(Caller.NS_EL2, [0xC400_0150])  # RMI_VERSION with no argument registers
    assert isinstance(out, list) and out[5:] == [0] * 13
    out = machine.monitor.smc(Caller.NS_EL2, [0xC400_0003])  # not RMI: NOT_SUPPORTED, the rest zero
    assert isinstance(out, list) and out[0] == (1 << 64) - 1 and out[1:] == [0] * 17


def test_rmi_trace_lines(machine: Machine) -> None:
    lines: list[str] = []
    machine.monitor.trace = lines.append
    pa = BASE + 0x10_0000
    machine.host_smc(0xC400_0151, pa)  # GRANULE_DELEGATE
    machine.host_smc(0xC400_0151, pa)  # again: ERROR_INPUT
    machine.host_smc(0xC400_0158, pa, 0, 0)  # REALM_CREATE of a delegated granule, params at 0: an error
    assert lines[0] == f"RMI_GRANULE_DELEGATE(pa={pa:#x}) -> SUCCESS"
    assert lines[1] == f"RMI_GRANULE_DELEGATE(pa={pa:#x}) -> ERROR_INPUT"
    assert lines[2].startswith("RMI_REALM_CREATE(") and " -> ERROR_INPUT" in lines[2]
    machine.host_smc(0xC400_0150, 0x10000)  # RMI_VERSION: its results are shown
    assert lines[3].startswith("RMI_VERSION(") and "-> SUCCESS " in lines[3]


def test_rsi_trace_lines_and_the_rtt_index(tmp_path: Path) -> None:
    from tests.rmm.rsi_support import RAM_BASE, build_realm, run_calls

    from unirealm.arch.rmi import RmiFid
    from unirealm.arch.rsi import RsiFid

    realm = build_realm(tmp_path)
    run_calls(realm, [[RsiFid.VERSION, 0x10000], [RsiFid.MEASUREMENT_READ, 9], [0xC400_019F]])
    rsi_lines = [x for x in realm.trace if x.startswith(("RSI_", "SMC"))]
    assert rsi_lines[0].startswith("RSI_VERSION(req=0x10000) -> SUCCESS lower=0x10000")
    assert rsi_lines[1] == "RSI_MEASUREMENT_READ(index=0x9) -> ERROR_INPUT"
    assert rsi_lines[2] == "SMC 0xc400019f"
    realm.trace.clear()
    realm.rmi(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, realm.vm.delegated(), RAM_BASE + (64 << 20))
    assert realm.trace[-1].endswith("-> ERROR_RTT(2)") or "-> ERROR_RTT(" in realm.trace[-1]
