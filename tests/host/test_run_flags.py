"""Every `unirealm run` flag either changes what the VMM builds (device tree, RIM, traces) or
is refused with one clear line; kvmtool flags that change nothing here are accepted with a
one-line note on stderr."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import libfdt
import pytest

from unirealm.arch.rmi import RmiRealmFlags, feat_reg0_pack
from unirealm.cli.main import main
from unirealm.host.cmdline import CmdlineError, parse_run_args, run_parser
from unirealm.host.fdt import kvmtool_bootargs
from unirealm.host.image import build_image
from unirealm.host.rmi_client import RmiCallError
from unirealm.host.vmm import Vmm, VmmError
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm
from unirealm.rmm.state import RmmState


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "app.img"
    path.write_bytes(build_image(None))
    return path


def vmm(image: Path, *flags: str) -> Vmm:
    return Vmm(parse_run_args(["-k", str(image), *flags]), io.BytesIO(), None)


def chosen(dtb: bytes) -> tuple[libfdt.Fdt, int]:
    fdt = libfdt.Fdt(dtb)
    return fdt, fdt.path_offset("/chosen")


def rim(image: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    capsys.readouterr()
    assert main(["measure", "--realm", "-k", str(image), *flags]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("RIM"))
    return line.split()[-1]


def test_kaslr_seed_reaches_chosen_and_the_rim(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fdt, node = chosen(vmm(image, "--kaslr-seed", "0x1122334455667788").dtb)
    assert fdt.getprop(node, "kaslr-seed").as_uint64() == 0x1122334455667788
    fdt, node = chosen(vmm(image).dtb)
    with pytest.raises(libfdt.FdtException):
        fdt.getprop(node, "kaslr-seed")
    base = rim(image, capsys)
    assert rim(image, capsys, "--kaslr-seed", "1") != base
    assert rim(image, capsys, "--kaslr-seed", "2") not in (base, rim(image, capsys, "--kaslr-seed", "1"))


def test_irqchip_gicv3_is_the_device_tree_gic(image: Path) -> None:
    fdt = libfdt.Fdt(vmm(image, "--irqchip", "gicv3").dtb)
    assert fdt.getprop(fdt.path_offset("/intc"), "compatible").as_str() == "arm,gic-v3"


@pytest.mark.parametrize("chip", ["gicv2", "gicv2m", "gicv3-its"])
def test_irqchips_not_modelled_are_refused(chip: str, image: Path) -> None:
    with pytest.raises(CmdlineError, match=f"irqchip {chip} is not modelled"):
        vmm(image, "--irqchip", chip)


@pytest.mark.parametrize(("flags", "message"), [
    (["-d", "disk.img"], "virtio block devices \\(-d\\) are not available"),
    (["--console", "virtio", "--virtio-transport", "mmio-legacy"], "--console virtio needs the modern virtio-mmio"),
])
def test_devices_not_modelled_are_refused(flags: list[str], message: str, image: Path) -> None:
    with pytest.raises(VmmError, match=message):
        vmm(image, *flags)


def test_console_virtio_is_a_virtio_mmio_node_and_hvc0(image: Path) -> None:
    """`--console virtio`: one virtio-mmio window after the others, whose device is a
    virtio-console (id 3), and console=hvc0 on the command line; the UARTs stay."""
    v = vmm(image, "--console", "virtio", "-n", "mode=user")
    fdt = libfdt.Fdt(v.dtb)
    chosen = fdt.path_offset("/chosen")
    assert "console=hvc0" in fdt.getprop(chosen, "bootargs").as_str().split()
    windows = sorted(d.name for d in v.virtio)
    assert windows == ["virtio-console", "virtio-net:0"]
    hvc = v.console.hvc
    assert hvc is not None and v.virtio[-1] is hvc
    region = next(r for r in v.bus.regions if r.name == "virtio-console")
    assert v.bus.read(region.base + 8, 4).value == 3  # DeviceID: console
    assert fdt.path_offset(f"/virtio@{region.base:x}") >= 0
    plain = vmm(image)
    assert plain.console.hvc is None and not plain.virtio
    # without --console the command line is kvmtool's default; stdio stays on ttyS0 (no hvc0 device)
    assert libfdt.Fdt(plain.dtb).getprop(libfdt.Fdt(plain.dtb).path_offset("/chosen"), "bootargs").as_str() \
        == kvmtool_bootargs("")


def test_help_lists_only_what_works() -> None:
    text = run_parser().format_help()
    assert "--disk" not in text and "-d image" not in text and "--force-pci" not in text
    assert "hv" not in text.split("--console", 1)[1].split("\n", 1)[0].replace("hvc0", "")
    assert "gicv2" not in text and "gicv3-its" not in text


def test_force_pci_is_refused(capsys: pytest.CaptureFixture[str], image: Path) -> None:
    assert main(["run", "-k", str(image), "--force-pci"]) == 2
    assert "--force-pci: no PCI bus is modelled" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--no-pvtime", "--disable-mte", "--debug-single-step", "--debug-ioport",
                                  "--debug-iodelay 5", "--vcpu-affinity 0-1"])
def test_kvmtool_flags_that_change_nothing_get_a_note(flag: str, image: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert vmm(image, *shlex.split(flag)).dtb == vmm(image).dtb
    assert rim(image, capsys, *shlex.split(flag)) == rim(image, capsys)
    missing = str(tmp_path / "none.img")
    assert main(["run", "-k", missing, *shlex.split(flag)]) == 2  # the note comes before the run
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"unirealm run: note: {flag.split()[0]}: accepted, changes nothing (")


def test_debug_mmio_traces_mmio() -> None:
    assert parse_run_args(["--debug-mmio"]).trace == {"mmio"}
    assert parse_run_args([]).trace == frozenset()


# --- SVE and the PMU: RmiRealmParams and the DT when the RMM offers them, refused otherwise ---
OFFERING = feat_reg0_pack(S2SZ=48, NUM_BPS=5, NUM_WPS=3, HASH_SHA_256=1, HASH_SHA_512=1, GICV3_NUM_LRS=15,
                          MAX_RECS_ORDER=9, SVE_EN=1, SVE_VL=3, PMU_EN=1, PMU_NUM_CTRS=8)


@pytest.fixture
def offering(monkeypatch: pytest.MonkeyPatch) -> None:
    """An RMM whose FeatReg0 offers realms SVE up to 512 bits and a PMU with 8 counters."""
    monkeypatch.setattr(RmmState, "feat_reg0", OFFERING)


@pytest.mark.parametrize(("flags", "message"), [
    (["--sve-max-vl", "256"], "--sve-max-vl: this RMM offers realms no SVE (RMI_FEATURES FeatReg0.SVE_EN = 0)"),
    (["--sve-vl", "256"], "--sve-vl: this RMM offers realms no SVE"),
    (["--pmu"], "--pmu: this RMM offers realms no PMU (RMI_FEATURES FeatReg0.PMU_EN = 0)"),
    (["--pmu-counters", "4"], "--pmu-counters: this RMM offers realms no PMU"),
])
def test_sve_and_pmu_this_rmm_does_not_offer_are_refused(flags: list[str], message: str, image: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "measure"):
        assert main([command, "--realm", "-k", str(image), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_pmu_is_refused_for_a_plain_vm(image: Path) -> None:
    with pytest.raises(VmmError, match="--pmu: the vCPU model has no PMUv3"):
        vmm(image, "--pmu")


def test_sve_max_vl_reaches_the_realm_params_and_the_rim(offering: None, image: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = vmm(image, "--realm", "--sve-max-vl", "256").realm_config()
    assert cfg.flags == RmiRealmFlags.SVE and cfg.sve_vl == 1  # 256 bits: two quadwords, minus one
    assert vmm(image, "--realm").realm_config().flags == 0
    base = rim(image, capsys)
    assert rim(image, capsys, "--sve-max-vl", "256") == rim(image, capsys, "--sve-vl", "256") != base
    assert rim(image, capsys, "--sve-max-vl", "512") not in (base, rim(image, capsys, "--sve-max-vl", "256"))
    with pytest.raises(VmmError, match="--sve-max-vl 1024: this RMM offers at most 512 bits"):
        vmm(image, "--realm", "--sve-max-vl", "1024")
    with pytest.raises(CmdlineError, match="name different vector lengths"):
        vmm(image, "--realm", "--sve-max-vl", "256", "--sve-vl", "512")


def test_pmu_reaches_the_realm_params_the_dt_and_the_rim(offering: None, image: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pmu = vmm(image, "--realm", "--pmu")
    assert pmu.realm_config().flags == RmiRealmFlags.PMU and pmu.realm_config().pmu_num_ctrs == 8
    assert vmm(image, "--realm", "--pmu", "--pmu-counters", "3").realm_config().pmu_num_ctrs == 3
    fdt = libfdt.Fdt(pmu.dtb)
    assert fdt.getprop(fdt.path_offset("/pmu"), "compatible").as_str() == "arm,armv8-pmuv3"
    fdt = libfdt.Fdt(vmm(image, "--realm").dtb)
    with pytest.raises(libfdt.FdtException):
        fdt.path_offset("/pmu")
    base = rim(image, capsys)
    assert rim(image, capsys, "--pmu") not in (base, rim(image, capsys, "--pmu", "--pmu-counters", "3"))
    with pytest.raises(VmmError, match="--pmu-counters 9: this RMM offers at most 8 counters"):
        vmm(image, "--realm", "--pmu", "--pmu-counters", "9")


def test_an_rmm_that_offers_sve_and_pmu_creates_the_realm_and_one_that_does_not_refuses(
        image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parameters reach REALM_CREATE: accepted as FeatReg0 offers, ERROR_INPUT beyond it."""
    def build(*flags: str) -> None:
        v = vmm(image, "--realm", *flags)
        machine = Machine(dram_size=v.cfg.ram_size + (128 << 20), rme=True)
        Rmm(machine.monitor)
        realm = v.realm_vm(machine)
        v.build_realm(realm)
        realm.destroy()

    monkeypatch.setattr(RmmState, "feat_reg0", OFFERING)
    build("--sve-max-vl", "512", "--pmu")
    v = vmm(image, "--realm", "--sve-max-vl", "512", "--pmu")
    monkeypatch.setattr(RmmState, "feat_reg0", feat_reg0_pack(S2SZ=48, NUM_BPS=5, NUM_WPS=3, HASH_SHA_256=1))
    machine = Machine(dram_size=v.cfg.ram_size + (128 << 20), rme=True)
    Rmm(machine.monitor)
    with pytest.raises(RmiCallError, match="REALM_CREATE failed: ERROR_INPUT"):
        v.realm_vm(machine).create()


def test_measure_models_sve_and_pmu_on_a_host_that_has_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def measured(*vmm_args: str) -> tuple[str, bytes]:
        out = tmp_path / "out.dtb"
        assert main(["measure", "-c", "fvp", "--output-dtb", str(out), "kvmtool", "--realm", "-c", "1", "-m", "256M",
                     *vmm_args]) == 0
        return capsys.readouterr().out.splitlines()[0], out.read_bytes()

    base, dtb = measured()
    with_pmu, pmu_dtb = measured("--pmu")
    assert with_pmu != base and b"arm,armv8-pmuv3" in pmu_dtb and b"arm,armv8-pmuv3" not in dtb
    # fvp's SVE is 512 bits: the realm gets it unless --sve-max-vl lowers it or --disable-sve drops it
    assert measured("--sve-max-vl", "512")[0] == base
    assert len({base, measured("--sve-max-vl", "256")[0], measured("--disable-sve")[0]}) == 3


def test_virtio_transport_mmio_adds_kvmtools_default_nic(image: Path, tmp_path: Path) -> None:
    """kvmtool adds a user-mode NIC when no -n names one; on virtio-mmio it is a DT node."""
    fdt = libfdt.Fdt(vmm(image, "--virtio-transport", "mmio").dtb)
    assert fdt.getprop(fdt.path_offset("/virtio@3000000"), "compatible").as_str() == "virtio,mmio"
    for flags in ([], ["--virtio-transport", "mmio", "-n", "mode=none"]):
        with pytest.raises(libfdt.FdtException):
            libfdt.Fdt(vmm(image, *flags).dtb).path_offset("/virtio@3000000")
    with pytest.raises(VmmError, match="--virtio-transport mmio-legacy: kvmtool adds its default NIC there"):
        vmm(image, "--virtio-transport", "mmio-legacy")
    assert vmm(image, "--virtio-transport", "mmio-legacy", "-n", "mode=none").dtb == vmm(image).dtb


def test_virtio_devices_without_a_transport_get_a_note(image: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-k", str(tmp_path / "none.img"), "--9p", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("unirealm run: note: --virtio-transport not given: the virtio devices use mmio (kvmtool's "
                      "default, pci, is not modelled) and no default NIC is added; kvmtool's equivalent adds "
                      "--virtio-transport mmio -n mode=none")
    assert parse_run_args(["--9p", str(tmp_path), "--virtio-transport", "mmio"]).notes == ()
