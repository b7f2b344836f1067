"""The hypervisor's SMCCC services, as KVM provides them (arch/arm64/kvm/hypercalls.c):
for a plain VM's HVC conduit (with PSCI), and for a realm's RSI_HOST_CALL.

SMCCC_VERSION reports 1.1 and SMCCC_ARCH_FEATURES says which functions are implemented;
any other function ID is NOT_SUPPORTED unless the VMM registered a service for it
(`SmcccServices.register`), as KVM hands the calls it does not own to its VMM.
"""

from __future__ import annotations

from collections.abc import Callable

from unirealm.arch.smccc import (
    PSCI_VERSION_1_1,
    SMCCC_ARCH_FEATURES,
    SMCCC_NOT_SUPPORTED,
    SMCCC_SUCCESS,
    SMCCC_VERSION,
    SMCCC_VERSION_1_1,
    PsciAffinityState,
    PsciFid,
    PsciReturn,
    unsigned64,
)

FID_MASK = 0xFFFF_FFFF
SMC64_BIT = 1 << 30

# A VMM service: x0..x17 in, x0.. out (the registers the caller sees afterwards).
Service = Callable[[list[int]], list[int]]


class SmcccServices:
    """SMCCC calls a guest makes to its hypervisor."""

    def __init__(self) -> None:
        self._services: dict[int, Service] = {}

    def register(self, fid: int, service: Service) -> None:
        self._services[fid & FID_MASK] = service

    def implemented(self, fid: int) -> bool:
        return fid in (SMCCC_VERSION, SMCCC_ARCH_FEATURES) or fid in self._services

    def call(self, regs: list[int]) -> list[int]:
        """The result registers of the call in regs[0..] (x1.. are kept unless a service
        writes them)."""
        fid = regs[0] & FID_MASK
        if fid == SMCCC_VERSION:
            return [SMCCC_VERSION_1_1]
        if fid == SMCCC_ARCH_FEATURES:
            asked = regs[1] & FID_MASK if len(regs) > 1 else 0
            return [SMCCC_SUCCESS if self.implemented(asked) else SMCCC_NOT_SUPPORTED]
        service = self._services.get(fid)
        if service is not None:
            return service(list(regs))
        return [SMCCC_NOT_SUPPORTED]


class VmPsci:
    """PSCI 1.1 for a plain VM whose boot CPU (MPIDR 0) is the only one running: the DT
    lists `nrcpus` CPUs (MPIDR Aff0 = index, Aff1 = index / 16), SMP is not modelled."""

    FUNCTIONS = (
        PsciFid.VERSION, PsciFid.FEATURES, PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET,
        PsciFid.CPU_ON, PsciFid.CPU_ON_64, PsciFid.AFFINITY_INFO, PsciFid.AFFINITY_INFO_64,
    )

    def __init__(self, smccc: SmcccServices, nrcpus: int = 1) -> None:
        self.smccc = smccc
        self.nrcpus = nrcpus

    def _cpu_index(self, mpidr: int) -> int | None:
        if mpidr & ~0xFF0F & 0xFF_FFFF_FFFF:
            return None
        index = (mpidr & 0xF) | ((mpidr >> 8) & 0xFF) << 4
        return index if index < self.nrcpus else None

    def call(self, regs: list[int]) -> int:
        """x0 of a PSCI call other than SYSTEM_OFF/SYSTEM_RESET (which end the VM)."""
        fid = regs[0] & FID_MASK
        if fid == PsciFid.VERSION:
            return PSCI_VERSION_1_1
        if fid == PsciFid.FEATURES:
            asked = regs[1] & FID_MASK
            ok = asked in self.FUNCTIONS or asked == SMCCC_VERSION
            return unsigned64(PsciReturn.SUCCESS if ok else PsciReturn.NOT_SUPPORTED)
        if fid in (PsciFid.CPU_ON, PsciFid.CPU_ON_64):
            target = self._cpu_index(regs[1] if fid & SMC64_BIT else regs[1] & FID_MASK)
            if target is None:
                return unsigned64(PsciReturn.INVALID_PARAMETERS)
            return unsigned64(PsciReturn.ALREADY_ON if target == 0 else PsciReturn.DENIED)
        if fid in (PsciFid.AFFINITY_INFO, PsciFid.AFFINITY_INFO_64):
            target = self._cpu_index(regs[1] if fid & SMC64_BIT else regs[1] & FID_MASK)
            if target is None or regs[2] != 0:
                return unsigned64(PsciReturn.INVALID_PARAMETERS)
            return PsciAffinityState.ON if target == 0 else PsciAffinityState.OFF
        return unsigned64(PsciReturn.NOT_SUPPORTED)
