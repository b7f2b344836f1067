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
from unirealm.host.memmap import vcpu_mpidr

FID_MASK = 0xFFFF_FFFF
MPIDR_HWID_MASK = 0xFF_00FF_FFFF  # Aff3, Aff2, Aff1, Aff0
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
    """PSCI 1.1 for a plain VM's CPUs as KVM answers it (arch/arm64/kvm/psci.c), with the
    power state of each vCPU: the boot CPU is ON, the others OFF until CPU_ON. CPUs are
    named by MPIDR affinity (`mpidrs[i]` of vCPU i, as the DT's cpu nodes give them);
    a target with bits outside Aff3..Aff0, or no such CPU, is INVALID_PARAMETERS.

    CPU_ON makes the target ON_PENDING until its first instruction runs (the VMM calls
    `started`), and asks the VMM to start it (`on_cpu_on(target, entry, context_id)`);
    CPU_ON of a CPU that is ON is ALREADY_ON, of one ON_PENDING is ON_PENDING. CPU_OFF
    turns the caller OFF (no return). CPU_SUSPEND is a standby as KVM makes it (the VMM
    waits as for a WFI, then the call returns SUCCESS). AFFINITY_INFO reports the state
    of the target at lowest affinity level 0 (other levels, optional in PSCI 1.0+, are
    INVALID_PARAMETERS)."""

    FUNCTIONS = (
        PsciFid.VERSION, PsciFid.FEATURES, PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET,
        PsciFid.CPU_ON, PsciFid.CPU_ON_64, PsciFid.AFFINITY_INFO, PsciFid.AFFINITY_INFO_64,
        PsciFid.CPU_OFF, PsciFid.CPU_SUSPEND, PsciFid.CPU_SUSPEND_64,
    )

    def __init__(self, smccc: SmcccServices, nrcpus: int = 1, mpidrs: list[int] | None = None) -> None:
        self.smccc = smccc
        self.nrcpus = nrcpus
        mpidrs = mpidrs if mpidrs is not None else [vcpu_mpidr(i) for i in range(nrcpus)]
        self._by_mpidr = {m: i for i, m in enumerate(mpidrs)}
        self.states = [PsciAffinityState.ON] + [PsciAffinityState.OFF] * (nrcpus - 1)
        self.on_cpu_on: Callable[[int, int, int], None] | None = None

    def _cpu_index(self, mpidr: int) -> int | None:
        if mpidr & ~MPIDR_HWID_MASK:
            return None
        return self._by_mpidr.get(mpidr)

    def started(self, cpu: int) -> None:
        """vCPU `cpu` runs its first instruction after CPU_ON."""
        if self.states[cpu] == PsciAffinityState.ON_PENDING:
            self.states[cpu] = PsciAffinityState.ON

    def call(self, regs: list[int], caller: int = 0) -> int | None:
        """x0 of a PSCI call from vCPU `caller` other than SYSTEM_OFF/SYSTEM_RESET (which end
        the VM); None for a CPU_OFF, which does not return."""
        fid = regs[0] & FID_MASK
        wide = bool(fid & SMC64_BIT)

        def arg(n: int) -> int:
            return regs[n] if wide else regs[n] & FID_MASK

        if fid == PsciFid.VERSION:
            return PSCI_VERSION_1_1
        if fid == PsciFid.FEATURES:
            asked = regs[1] & FID_MASK
            ok = asked in self.FUNCTIONS or asked == SMCCC_VERSION
            return unsigned64(PsciReturn.SUCCESS if ok else PsciReturn.NOT_SUPPORTED)
        if fid in (PsciFid.CPU_ON, PsciFid.CPU_ON_64):
            target = self._cpu_index(arg(1))
            if target is None:
                return unsigned64(PsciReturn.INVALID_PARAMETERS)
            state = self.states[target]
            if state == PsciAffinityState.ON:
                return unsigned64(PsciReturn.ALREADY_ON)
            if state == PsciAffinityState.ON_PENDING:
                return unsigned64(PsciReturn.ON_PENDING)
            self.states[target] = PsciAffinityState.ON_PENDING
            if self.on_cpu_on is not None:
                self.on_cpu_on(target, arg(2), arg(3))
            return PsciReturn.SUCCESS
        if fid in (PsciFid.AFFINITY_INFO, PsciFid.AFFINITY_INFO_64):
            target = self._cpu_index(arg(1))
            if target is None or arg(2) != 0:
                return unsigned64(PsciReturn.INVALID_PARAMETERS)
            return int(self.states[target])
        if fid == PsciFid.CPU_OFF:
            self.states[caller] = PsciAffinityState.OFF
            return None
        if fid in (PsciFid.CPU_SUSPEND, PsciFid.CPU_SUSPEND_64):
            return PsciReturn.SUCCESS
        return unsigned64(PsciReturn.NOT_SUPPORTED)
