"""`unirealm run`'s DTB and launch are kvmtool-cca's: for each command line, the DTB the VMM
builds is byte for byte the one `unirealm measure -c unirealm ... kvmtool ARGS` models, and
the RIM predicted from run's own plan equals the kvmtool form's (tests/e2e/test_launch_plan.py
boots some of these and reads the RIM from the token)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from unirealm.attest.kvmtool import measure_kvmtool
from unirealm.attest.measure import measure_launch
from unirealm.cli.measure import launch_of_run
from unirealm.host.cmdline import parse_run_args, run_parser
from unirealm.host.cpio import write_initrd
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("launch")
    (root / "app.img").write_bytes(build_image(None))
    tree = root / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("x" * 1001)
    (root / "initrd.cpio").write_bytes(write_initrd(tree))
    (root / "share").mkdir()
    return {"IMG": str(root / "app.img"), "INITRD": str(root / "initrd.cpio"), "SHARE": str(root / "share")}


@pytest.mark.parametrize("flags", [
    "-c 1 -m 256M",
    "-c 4 -m 512M -p quiet",
    "-c 2 -m 64M -i INITRD -p root=/dev/vda2",
    "-c 1 -m 2G --console serial -p a=b -- x y",
    "-c 1 -m 128M --nodefaults -p verbatim",
    "-c 1 -m 256M --measurement-algo sha512 --irqchip gicv3 --realm-pv 0011",
    "-c 1 -m 256M --virtio-transport mmio",
    "-c 1 -m 256M --virtio-transport mmio --9p SHARE -n mode=none",
    "-c 2 -m 256M --virtio-transport mmio --9p SHARE,a --9p SHARE,b -n mode=user -i INITRD",
    "-c 1 -m 256M --disable-sve --no-pvtime --disable-mte --vcpu-affinity 0 --debug-iodelay 1",
])
def test_run_is_kvmtool_for_the_same_flags(flags: str, files: dict[str, str], tmp_path: Path) -> None:
    words = flags.split()
    if "-p" in words:  # -p takes the rest of the line as one argument
        at = words.index("-p")
        words = [*words[:at], "-p", " ".join(words[at + 1 :])]
    words = [files.get(w, w) for w in words]
    words = [w.replace("SHARE", files["SHARE"]) for w in words]
    argv = ["--realm", "-k", files["IMG"], *words]
    vmm = Vmm(parse_run_args(argv), io.BytesIO(), None)
    host = ["-c", "unirealm", "-k", files["IMG"]] + (["-i", files["INITRD"]] if "-i" in words else [])
    model = measure_kvmtool([*host, "--output-dtb", str(tmp_path / "x.dtb"), "kvmtool", *argv])
    assert vmm.dtb == model.dtb
    assert measure_launch(launch_of_run(run_parser().parse_args(argv))).digest == measure_launch(model.launch).digest
