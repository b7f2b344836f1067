"""Interrupts, timers and SMP for a bare-metal AArch64 guest (tests/baremetal/irq.S) through
the VMM with `-c 4`: the virtual timer's PPI (INTID 27) acknowledged and EOIed, not taken
while PSTATE.I masks it and taken right after the unmask (ELR = the next instruction, SPSR
with I clear, ESR untouched), WFI woken by the timer, CPUs 1-3 started with PSCI CPU_ON
each storing its MPIDR_EL1 (KVM's: bit 31 set, Aff0 = index), a CPU_SUSPEND standby
ended by the CPU's own timer, AFFINITY_INFO states
(DEN0022 §5.7: ON 0, OFF 1, ON_PENDING 2), PSCI return codes for a bad MPIDR and a CPU that
is on, an SGI from CPU 0 to CPU 3 through ICC_SGI1R_EL1, and a virtio-9p device's SPI after
a notify (the INTID the DT gives it).

Environments are parametrised by name: "kvm" and "rme" run the guest as a normal VM;
"realm" runs it as a realm (its RECs' interrupts through the list registers the host fills,
SGIs through the host's vGIC, PSCI through the RMM and PSCI_COMPLETE), where the virtqueue
lies in a page the guest made RIPAS EMPTY with RSI_IPA_STATE_SET and addresses through its
unprotected alias, the device's SPI reaching the REC through a list register."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import pytest

from unirealm.arch.smccc import PsciAffinityState, PsciReturn, unsigned64
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.memmap import KVM_IRQ_OFFSET, KVM_VIRTIO_MMIO_AREA, gic_redists_base
from unirealm.host.vmm import Vmm, VmmError

from .guest_build import Guest, build

NRCPUS = 4
ENVS = {"kvm": ["--platform", "kvm"], "rme": ["--platform", "rme"], "realm": ["--realm"]}
TICKS_5MS = 312_500
RUN_LIMIT = 60.0  # seconds: a run takes a few; one past this is a hung guest
# kvmtool's line order: four 8250 ports take the first SPIs, then the virtio devices.
VIRTIO_SPI = KVM_IRQ_OFFSET + 4


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    return build("irq", tmp_path_factory.mktemp("baremetal"), {
        "REDIST0": gic_redists_base(NRCPUS),
        "VIRTIO_BASE": KVM_VIRTIO_MMIO_AREA,
        "VIRTIO_SPI": VIRTIO_SPI,
    })


def run(guest: Guest, env: list[str], share: Path, trace: list[str] | None = None) -> tuple[int, dict[str, list[int]]]:
    extra = ["--trace", "irq"] if trace is not None else []
    args = [*env, "-c", str(NRCPUS), "-k", str(guest.image), "--9p", f"{share},hostshare", *extra]
    cfg = RunConfig.from_args(run_parser().parse_args(args))
    out = io.BytesIO()
    vmm = Vmm(cfg, out, None, trace=trace.append if trace is not None else None, log_output=io.BytesIO())
    # The guest was assembled with the window and INTID the DT gives the 9p device.
    assert [(n.base, n.irq) for n in vmm.virtio_nodes] == [(KVM_VIRTIO_MMIO_AREA, VIRTIO_SPI)]
    # A guest that keeps aborting (its `unexpected` faulting again, CPU 0 spinning on a
    # mailbox) must not hang the test: past RUN_LIMIT the VMM is stopped as SIGTERM stops
    # it (status 143), and the test fails with one line and the guest's last output.
    watchdog, fired = None, threading.Event()

    def stop_the_vmm() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():  # where the VMM's handler goes
        watchdog = threading.Timer(RUN_LIMIT, stop_the_vmm)
        watchdog.start()
    try:
        status = vmm.run().status
    finally:
        if watchdog is not None:
            watchdog.cancel()
    lines = out.getvalue().decode().splitlines()
    if fired.is_set():
        pytest.fail(f"the guest ran past {RUN_LIMIT} s and was stopped; its last lines: {lines[-3:]}")
    assert lines[0] == "irq guest" and lines[-1] == "done", lines
    results = {}
    for line in lines[1:-1]:
        name, *values = line.split()
        results[name] = [int(v, 16) for v in values]
    return status, results


@pytest.mark.parametrize("name", list(ENVS))
def test_interrupts_timers_and_smp(guest: Guest, name: str, tmp_path: Path) -> None:
    status, r = run(guest, ENVS[name], tmp_path)
    sym = guest.symbols
    assert status == 0, r
    # Masked: the timer's PPI was asserted all along, yet nothing was taken.
    assert r["masked"] == [0]
    # Taken at the first instruction after MSR DAIFClr: ELR there, SPSR = EL1h with D, A, F
    # still masked and I clear (NZCV as the guest's last compare left them), ESR_EL1 as
    # the guest left it.
    intid, elr, spsr, esr_value = r["timer"]
    assert (intid, elr, spsr & 0x3FF, esr_value) == (27, sym["after_unmask"], 0x345, 0x5600_ABCD)
    # WFI slept until the timer's deadline and woke on its interrupt.
    intid, ticks = r["wfi"]
    assert intid == 27 and ticks >= TICKS_5MS
    # AFFINITY_INFO: CPU 1 OFF before CPU_ON; CPU_ON SUCCESS; just after it ON_PENDING or
    # ON (it may already have run); CPU 0 ON; no CPU at MPIDR 0x100.
    off, on_result, after, cpu0, bad = r["aff"]
    assert off == PsciAffinityState.OFF and on_result == PsciReturn.SUCCESS
    assert after in (PsciAffinityState.ON_PENDING, PsciAffinityState.ON)
    assert cpu0 == PsciAffinityState.ON and bad == unsigned64(PsciReturn.INVALID_PARAMETERS)
    assert r["on"] == [unsigned64(PsciReturn.INVALID_PARAMETERS), unsigned64(PsciReturn.ALREADY_ON)]
    assert r["mpidr"] == [0x8000_0001, 0x8000_0002, 0x8000_0003]
    # CPU 2's CPU_SUSPEND standby (IRQs masked) returned SUCCESS once its timer's PPI was pending.
    result, ticks = r["suspend"]
    assert result == PsciReturn.SUCCESS and ticks >= TICKS_5MS // 5
    assert r["off"] == [PsciAffinityState.OFF]
    # The SGI reached CPU 3 (its handler acknowledged INTID 5), not CPU 0.
    assert r["sgi"] == [5, 2]
    # The 9p request completed inside the notify; its used-buffer interrupt was the SPI
    # (InterruptStatus: used buffer), and the used ring holds descriptor 0's chain with the
    # length of the Rversion written (size[4] type[1] tag[2] msize[4] version[s]).
    rversion = 4 + 1 + 2 + 4 + 2 + len("9P2000.L")
    assert r["virtio"] == [VIRTIO_SPI, 1, 1, 0, rversion, rversion, 101]


def test_trace_irq_reports_injection_acknowledge_and_eoi(guest: Guest, tmp_path: Path) -> None:
    trace: list[str] = []
    status, _ = run(guest, ENVS["kvm"], tmp_path, trace)
    assert status == 0
    irq = [line for line in trace if line.startswith("IRQ ")]
    for event in ("raise", "inject", "ack", "eoi", "deactivate"):
        assert any(line.startswith(f"IRQ {event} intid=27 vcpu=0") for line in irq), event
    assert any(line.startswith("IRQ sgi intid=5 vcpu=3") for line in irq)
    assert any(line.startswith("IRQ ack intid=5 vcpu=3") for line in irq)
    assert any(line.startswith(f"IRQ ack intid={VIRTIO_SPI} vcpu=0") for line in irq)


def test_trace_irq_in_a_realm_shows_what_the_host_sees(guest: Guest, tmp_path: Path) -> None:
    """In a realm the host sees its own side only: the list registers it fills (inject) and
    what the exits give back (ack, deactivate), and the SGI the realm's trapped write sent."""
    trace: list[str] = []
    status, _ = run(guest, ENVS["realm"], tmp_path, trace)
    assert status == 0
    irq = [line.split()[:4] for line in trace if line.startswith("IRQ ")]
    for event in ("inject", "ack", "deactivate"):
        assert ["IRQ", event, "intid=27", "vcpu=0"] in irq, event
    assert ["IRQ", "sgi", "intid=5", "vcpu=3"] in irq
    assert ["IRQ", "inject", "intid=5", "vcpu=3"] in irq and ["IRQ", "ack", "intid=5", "vcpu=3"] in irq
    # The 9p device's SPI: raised by the host's device model, then in a list register, then acked.
    spi = f"intid={VIRTIO_SPI}"
    for event in ("raise", "inject", "ack", "deactivate"):
        assert ["IRQ", event, spi, "vcpu=0"] in irq, event


@pytest.mark.parametrize("name", ["kvm", "rme"])
def test_a_wfi_nothing_can_end_stops_the_run_with_one_line(name: str, tmp_path: Path) -> None:
    image = build("wfi_forever", tmp_path).image
    cfg = RunConfig.from_args(run_parser().parse_args([*ENVS[name], "-c", "2", "-k", str(image)]))
    with pytest.raises(VmmError, match="every vCPU waits for an interrupt and nothing can raise one"):
        Vmm(cfg, io.BytesIO(), None, log_output=io.BytesIO()).run()
