"""Every `unirealm run` flag either changes what the VMM builds (device tree, RIM, traces) or
is refused with one clear line; kvmtool flags that change nothing here are accepted with a
one-line note on stderr."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import libfdt
import pytest

from unirealm.cli.main import main
from unirealm.host.cmdline import CmdlineError, parse_run_args, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm, VmmError


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
    assert fdt.getprop(chosen, "bootargs").as_str().startswith("console=hvc0")
    windows = sorted(d.name for d in v.virtio)
    assert windows == ["virtio-console", "virtio-net:0"]
    hvc = v.console.hvc
    assert hvc is not None and v.virtio[-1] is hvc
    region = next(r for r in v.bus.regions if r.name == "virtio-console")
    assert v.bus.read(region.base + 8, 4).value == 3  # DeviceID: console
    assert fdt.path_offset(f"/virtio@{region.base:x}") >= 0
    plain = vmm(image)
    assert plain.console.hvc is None and not plain.virtio
    assert libfdt.Fdt(plain.dtb).getprop(libfdt.Fdt(plain.dtb).path_offset("/chosen"), "bootargs").as_str() \
        .startswith("console=ttyS0")


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
