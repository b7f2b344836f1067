"""PSCI for a plain VM's CPUs (host/smccc.py VmPsci), as DEN0022 1.1 and KVM answer it: power
states per CPU named by MPIDR affinity, CPU_ON/CPU_OFF/AFFINITY_INFO/CPU_SUSPEND and their
return codes (SUCCESS 0, INVALID_PARAMETERS -2, ALREADY_ON -4, ON_PENDING -5; AFFINITY_INFO
ON 0, OFF 1, ON_PENDING 2)."""

from __future__ import annotations

from unirealm.arch.smccc import PsciAffinityState, PsciFid, PsciReturn, unsigned64
from unirealm.host.memmap import vcpu_mpidr
from unirealm.host.smccc import SmcccServices, VmPsci

ON, OFF, ON_PENDING = PsciAffinityState.ON, PsciAffinityState.OFF, PsciAffinityState.ON_PENDING


def psci(n: int = 4) -> tuple[VmPsci, list[tuple[int, int, int]]]:
    p = VmPsci(SmcccServices(), n, [vcpu_mpidr(i) for i in range(n)])
    started: list[tuple[int, int, int]] = []
    p.on_cpu_on = lambda target, entry, ctx: started.append((target, entry, ctx))
    return p, started


def call(p: VmPsci, *regs: int, caller: int = 0) -> int | None:
    return p.call([*regs, *([0] * (8 - len(regs)))], caller)


def test_cpu_on_states_and_codes() -> None:
    p, started = psci()
    assert call(p, PsciFid.AFFINITY_INFO_64, 2, 0) == OFF
    assert call(p, PsciFid.CPU_ON_64, 2, 0x8008_1000, 0xC0FFEE) == PsciReturn.SUCCESS
    assert started == [(2, 0x8008_1000, 0xC0FFEE)]
    assert call(p, PsciFid.AFFINITY_INFO_64, 2, 0) == ON_PENDING
    assert call(p, PsciFid.CPU_ON_64, 2, 0x8008_1000, 0) == unsigned64(PsciReturn.ON_PENDING)
    p.started(2)
    assert call(p, PsciFid.AFFINITY_INFO_64, 2, 0) == ON
    assert call(p, PsciFid.CPU_ON_64, 2, 0x8008_1000, 0) == unsigned64(PsciReturn.ALREADY_ON)
    assert call(p, PsciFid.CPU_ON_64, 0, 0x8008_1000, 0) == unsigned64(PsciReturn.ALREADY_ON)
    assert len(started) == 1


def test_bad_mpidrs_are_invalid_parameters() -> None:
    p, started = psci()
    for mpidr in (4, 0x100, 1 << 32, 0x8000_0001, 1 << 40):
        assert call(p, PsciFid.CPU_ON_64, mpidr, 0, 0) == unsigned64(PsciReturn.INVALID_PARAMETERS)
        assert call(p, PsciFid.AFFINITY_INFO_64, mpidr, 0) == unsigned64(PsciReturn.INVALID_PARAMETERS)
    assert call(p, PsciFid.AFFINITY_INFO_64, 0, 1) == unsigned64(PsciReturn.INVALID_PARAMETERS)  # level 1
    assert started == []


def test_smc32_forms_take_32_bit_arguments() -> None:
    p, started = psci()
    assert call(p, PsciFid.CPU_ON, (1 << 32) | 3, (7 << 32) | 0x8000_0000, (9 << 32) | 5) == PsciReturn.SUCCESS
    assert started == [(3, 0x8000_0000, 5)]
    assert call(p, PsciFid.AFFINITY_INFO, (1 << 32) | 3, 1 << 32) == ON_PENDING


def test_cpu_off_and_suspend() -> None:
    p, _ = psci()
    call(p, PsciFid.CPU_ON_64, 1, 0, 0)
    p.started(1)
    assert call(p, PsciFid.CPU_OFF, caller=1) is None
    assert call(p, PsciFid.AFFINITY_INFO_64, 1, 0) == OFF
    assert call(p, PsciFid.CPU_ON_64, 1, 0, 0) == PsciReturn.SUCCESS  # it can be started again
    assert call(p, PsciFid.CPU_SUSPEND_64, 0, 0, 0) == PsciReturn.SUCCESS
    for fid in (PsciFid.CPU_OFF, PsciFid.CPU_SUSPEND, PsciFid.CPU_SUSPEND_64, PsciFid.CPU_ON_64):
        assert call(p, PsciFid.FEATURES, fid) == PsciReturn.SUCCESS
    assert call(p, PsciFid.FEATURES, PsciFid.MIGRATE) == unsigned64(PsciReturn.NOT_SUPPORTED)
