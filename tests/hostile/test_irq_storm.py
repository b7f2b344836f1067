"""`unirealm run --hostile irq-storm` (unirealm.host.hostile_irq): the host injects
interrupts at every exit -- SGIs, PPIs, spurious device SPIs, list registers full of random
vINTIDs, bursts withdrawn before their acknowledge, an SPI line stuck high -- and, in a realm,
tries REC_ENTERs with list register and HCR contents DEN0137 1.0 forbids.

What must hold: a guest that checks the source of what it acknowledges stays correct
(tests/baremetal/irq_storm.S: every round's timer and virtio results right, its registers
intact, foreign interrupts only EOIed and 1023s counted), the RMM refuses every forbidden
entry with RMI_ERROR_REC, our unikernel and an app complete with the honest run's output,
and nothing hangs or ends in a traceback."""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import pytest
from tests.baremetal.guest_build import Guest, build

from unirealm.arch.gic import LR_STATE_ACTIVE, LR_STATE_PENDING, lr_state, lr_with_state, make_lr
from unirealm.arch.rmi import RmiStatus
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.hostile_irq import FORBIDDEN, REFUSE_EVERY, IrqStorm, _forbidden
from unirealm.host.kvm import RealmRec
from unirealm.host.memmap import KVM_IRQ_OFFSET, KVM_VIRTIO_MMIO_AREA, gic_redists_base
from unirealm.host.vmm import Vmm, VmmError
from unirealm.rmm.vgic import entry_state_valid

from .test_hostile_vmm import probe_image
from .test_hostile_vmm import run as run_cli

__all__ = ["probe_image"]  # the fixture, shared

ENVS = {"kvm": ["--platform", "kvm"], "rme": ["--platform", "rme"], "realm": ["--realm"]}
VIRTIO_SPI = KVM_IRQ_OFFSET + 4  # after kvmtool's four 8250 ports
ROUNDS = 20
SUM_OF_SQUARES = sum(i * i for i in range(ROUNDS))


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    return build("irq_storm", tmp_path_factory.mktemp("storm"), {
        "REDIST0": gic_redists_base(1),
        "VIRTIO_BASE": KVM_VIRTIO_MMIO_AREA,
        "VIRTIO_SPI": VIRTIO_SPI,
    })


def run_guest(guest: Guest, env: list[str], share: Path, storm: bool) -> tuple[dict[str, list[int]], int]:
    args = [*env, "-k", str(guest.image), "--9p", f"{share},hostshare", *(["--hostile", "irq-storm"] if storm else [])]
    vmm = Vmm(RunConfig.from_args(run_parser().parse_args(args)), out := io.BytesIO(), None, log_output=io.BytesIO())
    assert [(n.base, n.irq) for n in vmm.virtio_nodes] == [(KVM_VIRTIO_MMIO_AREA, VIRTIO_SPI)]
    result = vmm.run()
    lines = out.getvalue().decode().splitlines()
    assert result.status == 0 and lines[0] == "storm guest" and lines[-1] == "done", lines
    values = {name: [int(v, 16) for v in rest] for name, *rest in (line.split() for line in lines[1:-1])}
    return values, result.exits


@pytest.mark.parametrize("name", list(ENVS))
def test_a_guest_that_checks_its_sources_stays_correct(
    guest: Guest, name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    honest, honest_exits = run_guest(guest, ENVS[name], tmp_path, storm=False)
    # rounds, sum of round^2, failed checks; then timer, virtio, foreign, spurious interrupts
    assert honest == {"rounds": [ROUNDS, SUM_OF_SQUARES, 0], "counts": [ROUNDS, ROUNDS, 0, 0]}
    with caplog.at_level(logging.WARNING, logger="unirealm.hostile"):
        stormed, storm_exits = run_guest(guest, ENVS[name], tmp_path, storm=True)
    assert stormed["rounds"] == [ROUNDS, SUM_OF_SQUARES, 0]
    timer, virtio, foreign, spurious = stormed["counts"]
    # Each real interrupt counted once; the storm's were many, and some were withdrawn
    # between the exception and the acknowledge (1023).
    assert (timer, virtio) == (ROUNDS, ROUNDS)
    assert foreign >= ROUNDS and spurious > 0, stormed
    assert storm_exits > honest_exits
    messages = [r.getMessage() for r in caplog.records]
    assert any("interrupts injected" in m for m in messages), messages
    refused = [m for m in messages if "refused with ERROR_REC" in m]
    if name == "realm":
        assert len(refused) == 1 and all(f"{kind}: " in refused[0] for kind in FORBIDDEN), refused
    else:
        assert not refused


def test_an_rmm_that_took_forbidden_gic_state_stops_the_run(
    guest: Guest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the RMM's check (TF-RMM gic_validate_state) the attack is noticed: a REC_ENTER
    with forbidden contents that is not refused ends the run with one line."""
    from unirealm.rmm import vgic

    monkeypatch.setattr(vgic, "entry_state_valid", lambda hcr, lrs: True)
    with pytest.raises(VmmError, match=r"hostile irq-storm: REC_ENTER with .* answered SUCCESS, not ERROR_REC"):
        run_guest(guest, ENVS["realm"], tmp_path, storm=True)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    (root / "big").write_text("".join(f"line {i}\n" for i in range(2000)))
    return root


@pytest.mark.parametrize("platform", [["--realm"], ["--platform", "kvm"]])
def test_the_unikernel_and_its_app_complete_under_the_storm(
    probe_image: Path, share: Path, tmp_path: Path, platform: list[str]
) -> None:
    args = [*platform, "--9p", str(share)]
    honest = run_cli(probe_image, tmp_path, *args, params="-- cat /mnt/kvm_9p/big")
    stormed = run_cli(probe_image, tmp_path, *args, "--hostile", "irq-storm", params="-- cat /mnt/kvm_9p/big")
    assert honest[:2] == (0, (share / "big").read_text()), honest[2][-2000:]
    assert stormed[:2] == honest[:2], stormed[2][-2000:]
    assert "hostile irq-storm:" in stormed[2] and "interrupts injected" in stormed[2]
    if platform == ["--realm"]:
        assert "refused with ERROR_REC" in stormed[2], stormed[2][-2000:]


class _RefusingRmi:
    """An RMM that refuses every REC_ENTER with ERROR_REC (what the storm expects of its
    forbidden entries)."""

    def try_call(self, fid: int, *args: int) -> list[int]:
        return [int(RmiStatus.ERROR_REC)]


class _Vm:
    rmi = _RefusingRmi()

    def write_entry(self, *args: object) -> None:
        pass


def test_the_storms_own_entries_are_valid_and_each_forbidden_one_breaks_a_rule() -> None:
    """The storm's list registers pass TF-RMM's checks (else its realm runs would stop on
    ERROR_REC) and keep the honest vGIC's first and unchanged; each forbidden variant is
    one the RMM's check refuses."""
    rng = random.Random(7)
    honest = [make_lr(27, LR_STATE_PENDING, 0x80, eoi=True), make_lr(VIRTIO_SPI, LR_STATE_ACTIVE, 0)]
    assert entry_state_valid(0, honest)
    for kind in FORBIDDEN:
        assert not entry_state_valid(*_forbidden(rng, honest, 0, kind)), kind
    storm = IrqStorm(rng, [VIRTIO_SPI], 63)
    rec = RealmRec(pa=0, aux=[], run=0, index=0)
    sizes = set()
    for _ in range(300):
        hcr, lrs = storm.realm_entry(_Vm(), rec, 0, None, 0, honest)  # type: ignore[arg-type]
        assert entry_state_valid(hcr, lrs) and lrs[:2] == honest and len(lrs) <= 16
        sizes.add(len(lrs))
        # The realm acknowledged some (active now) and deactivated others (invalid).
        seen = [lr_with_state(lr, rng.choice((0, LR_STATE_ACTIVE, lr_state(lr)))) for lr in lrs]
        storm.realm_exit(rec, len(honest), seen)
    assert max(sizes) == 16 and min(sizes) < 16  # full, and withdrawn
    assert sum(storm.refused.values()) == 300 // REFUSE_EVERY and set(storm.refused) == set(FORBIDDEN)
