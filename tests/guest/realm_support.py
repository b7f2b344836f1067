"""Guest code run as a realm on the real RMM, in process and without an image: the Python
kernel's own engine (machine/pykernel.py PyKernelEngine: stage-2 translation, GPT checks,
SMC traps to the RMM) runs a test's function in place of an image's boot entry, and the
host's REC loop (host/kvm.py RealmVm.run) answers its exits: RIPAS changes, faults on RAM
never populated (DATA_CREATE_UNKNOWN), shared pages (RTT_MAP_UNPROTECTED), host calls.

    result = run_in_realm(tmp_path, lambda kernel: ...)

The function gets a guest `Kernel` (guest/kernel.py) whose RSI driver, realm config and
page allocator are set up as the boot would: RSI detected, RSI_REALM_CONFIG read, RIPAS
RAM over [RAM_BASE, RAM_TOP). Whatever it raises is raised again in the test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiRecExitReason
from unirealm.arch.smccc import PsciFid
from unirealm.guest.kernel import Kernel
from unirealm.host.kvm import RealmConfig, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.machine.board import Machine
from unirealm.machine.pykernel import GuestCpu, PyKernelEngine
from unirealm.rmm.core import Rmm

IPA_BITS = 33
RAM_BASE = 0x8000_0000
POPULATED = 4  # measured data granules at RAM_BASE (the "image"); its last one is the config page
RAM_TOP = RAM_BASE + (2 << 20)  # RIPAS RAM, faulted in on first touch above the populated part


class FunctionEngine(PyKernelEngine):
    """PyKernelEngine with a Python function for a kernel."""

    def __init__(self, rmm: Rmm, realm: Any, body: Callable[[GuestCpu], None]) -> None:
        super().__init__(rmm.monitor.memory, lambda ipa, w, f: rmm.stage2_translate(realm, ipa), RAM_BASE,
                         [0, 0, 0, 0], rmm.config.cpu_model)
        self.body = body
        self.error: BaseException | None = None

    def boot_image(self) -> None:
        try:
            self.body(self.cpu)
        except Exception as exc:  # kept for the test: the host side never resumes this kernel
            self.error = exc
        self.cpu.smc(PsciFid.SYSTEM_OFF)  # the realm stops: RealmVm.run returns


@dataclass
class RealmRun:
    vm: RealmVm
    rmm: Rmm
    host_calls: list[list[int]] = field(default_factory=list)
    result: Any = None


def guest_kernel(cpu: GuestCpu) -> Kernel:
    """The guest kernel as boot() leaves it in a realm, before any device or app."""
    kernel = Kernel(cpu)
    assert kernel.rsi.detect() == (1, 0)
    kernel.realm = kernel.rsi.read_config(RAM_BASE + (POPULATED - 1) * GRANULE_SIZE)
    kernel.rsi.setup_memory(RAM_BASE + POPULATED * GRANULE_SIZE, RAM_TOP)
    kernel.pages.add(RAM_BASE + POPULATED * GRANULE_SIZE, RAM_TOP)
    return kernel


def run_in_realm(tmp: Path, fn: Callable[[Kernel], Any], hash_algo: int = 0, rpv: bytes = b"",
                 host_call: Callable[[int, list[int]], list[int]] | None = None) -> RealmRun:
    """Build a realm through RMI, run `fn(kernel)` in it to the end; its return value is in
    `.result`, its exception raised here."""
    machine = Machine(dram_size=32 << 20, data_dir=tmp)
    engines: list[FunctionEngine] = []
    run: RealmRun

    def body(cpu: GuestCpu) -> None:
        run.result = fn(guest_kernel(cpu))

    def factory(rmm: Any, realm: Any, index: int) -> FunctionEngine:
        engines.append(FunctionEngine(rmm, realm, body))
        return engines[-1]

    rmm = Rmm(machine.monitor, engine_factory=factory)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=IPA_BITS, hash_algo=hash_algo, rpv=rpv),
                 ram_ranges=[(RAM_BASE, RAM_TOP)])
    run = RealmRun(vm, rmm)

    def on_host_call(imm: int, gprs: list[int]) -> list[int]:
        run.host_calls.append(list(gprs))
        return host_call(imm, gprs) if host_call else gprs

    vm.on_host_call = on_host_call
    vm.create()
    vm.populate(RAM_BASE, bytes(POPULATED * GRANULE_SIZE), measured=True)
    vm.init_ripas(RAM_BASE + POPULATED * GRANULE_SIZE, RAM_TOP)
    rec = vm.create_rec(pc=RAM_BASE, gprs=[0] * 8, runnable=True)
    vm.activate()
    ex = vm.run(rec, max_exits=100_000)
    engine = engines[0]
    engine.close()
    for error in (engine.error, engine.finished):
        if error is not None:
            raise error
    assert ex.reason == RmiRecExitReason.PSCI and ex.gprs[0] == PsciFid.SYSTEM_OFF, ex
    return run
