"""`unirealm measure [HOST OPTIONS] kvmtool VMM-ARGS...` against the reference tool's published
golden RIMs (cca-realm-measurements, tests/cmdline.rs), and each option taking effect."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import libfdt
import pytest

Cli = Callable[..., tuple[int, str, str]]

# The reference tool's published values for these command lines.
GOLDEN_MINIMAL = "998dfdf6401d69f73ed88ac53d62d5ea2cfac6320b887ce4599aa8671791d4d"  # published as a prefix
GOLDEN_FIRMWARE = "cf37146fce0ad50e1be1a04580c1024e5449b430b0dd96b6ef5c9a2b73767bf5"
GOLDEN_FIRMWARE_B64 = "zzcUb84K1Q4b4aBFgMECTlRJtDCw3Za271yaK3N2e/UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
ZERO_REM = "00" * 64
HOST = ["--num-wps", "6", "--num-bps", "6"]
VMM = ["kvmtool", "--realm", "-c", "1", "-m", "512M"]


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "firmware"
    path.write_bytes(b"FW CONTENT")
    return path


def rim(cli: Cli, *args: object) -> str:
    status, out, err = cli("measure", *args)
    assert status == 0, err
    return out.splitlines()[0].removeprefix("RIM: ")


def test_minimal_launch_matches_the_reference_tool(cli: Cli) -> None:
    status, out, _ = cli("measure", *HOST, *VMM)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("RIM: " + GOLDEN_MINIMAL)
    assert lines[0] == "RIM: " + (GOLDEN_MINIMAL + "0").ljust(128, "0")
    assert lines[1:] == [f"REM{i}: {ZERO_REM}" for i in range(4)]


def test_firmware_launch_matches_the_reference_tool(cli: Cli, firmware: Path) -> None:
    status, out, _ = cli("measure", *HOST, "-f", firmware, *VMM[:2], "--firmware", "firmware", *VMM[2:])
    assert status == 0
    assert out.splitlines() == [f"RIM: {GOLDEN_FIRMWARE}{'00' * 32}", *(f"REM{i}: {ZERO_REM}" for i in range(4))]
    status, out, _ = cli("measure", *HOST, "-f", firmware, "--print-b64", *VMM[:2], "--firmware", "firmware",
                         *VMM[2:])
    assert out.splitlines()[0] == f"RIM: {GOLDEN_FIRMWARE_B64}"


def test_ignored_kvmtool_flags_keep_the_rim(cli: Cli) -> None:
    extra = ["--debug", "--debug-single-step", "--debug-mmio", "--force-pci", "--no-pvtime", "--vcpu-affinity",
             "AFF", "--disable-mte"]
    assert rim(cli, *HOST, *VMM, *extra).startswith(GOLDEN_MINIMAL)


def test_the_dtb_is_kvmtools(cli: Cli, tmp_path: Path) -> None:
    """Read back with libfdt: kvmtool's nodes, the ITS and the PCI bridge by default, padded to 64 KiB."""
    out = tmp_path / "out.dtb"
    rim(cli, "--output-dtb", out, *HOST, *VMM, "-p", "quiet")
    blob = out.read_bytes()
    assert len(blob) == 0x10000
    fdt = libfdt.Fdt(blob)
    names = []
    node = fdt.first_subnode(0, [libfdt.FDT_ERR_NOTFOUND])
    while node >= 0:
        names.append(fdt.get_name(node))
        node = fdt.next_subnode(node, [libfdt.FDT_ERR_NOTFOUND])
    assert names == ["chosen", "memory@80000000", "cpus", "psci", "intc", "timer", "U6_16550A@1000000",
                     "U6_16550A@1001000", "U6_16550A@1002000", "U6_16550A@1003000", "rtc@1010000", "pci@40000000"]
    chosen = fdt.path_offset("/chosen")
    assert fdt.getprop(chosen, "bootargs").as_str() == " console=hvc0 root=/dev/vda rw  quiet"
    its = fdt.path_offset("/intc/msic")
    assert fdt.getprop(its, "compatible").as_str() == "arm,gic-v3-its"
    assert bytes(fdt.getprop(fdt.path_offset("/memory@80000000"), "reg")) == \
        (0x8000_0000).to_bytes(8, "big") + (512 << 20).to_bytes(8, "big")
    # the same bytes given back with --dtb measure the same
    assert rim(cli, "--dtb", out, *HOST, *VMM, "-p", "quiet") == rim(cli, *HOST, *VMM, "-p", "quiet")
    changed = bytearray(blob)
    changed[-1] = 1
    (tmp_path / "changed.dtb").write_bytes(bytes(changed))
    assert rim(cli, "--dtb", tmp_path / "changed.dtb", *HOST, *VMM, "-p", "quiet") != \
        rim(cli, *HOST, *VMM, "-p", "quiet")


@pytest.mark.parametrize("change", [
    ["-p", "root=/dev/vda2"], ["--irqchip", "gicv3"], ["--virtio-transport", "mmio"], ["-c", "2"],
    ["-m", "1G"], ["--measurement-algo", "sha512"], ["--pmu"],
])
def test_each_vmm_option_changes_the_rim(change: list[str], cli: Cli) -> None:
    args = [*HOST, *VMM]
    if change[0] in ("-c", "-m"):
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    assert not rim(cli, *args).startswith(GOLDEN_MINIMAL)


def test_the_rpv_is_not_in_the_rim(cli: Cli) -> None:
    assert rim(cli, *HOST, *VMM, "--realm-pv", "tenant").startswith(GOLDEN_MINIMAL)


def test_mmio_devices_and_nics(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out.dtb"
    rim(cli, "--output-dtb", out, *HOST, *VMM, "--virtio-transport", "mmio", "--9p", "dir", "-n", "mode=user")
    fdt = libfdt.Fdt(out.read_bytes())
    for i in range(2):  # the 9p share and the user NIC: a -n replaces kvmtool's default NIC
        fdt.path_offset(f"/virtio@{0x3000000 + i * 0x200:x}")
    with pytest.raises(libfdt.FdtException):
        fdt.path_offset("/virtio@3000400")
    # with no -n kvmtool adds its user-mode NIC: the same two windows
    assert rim(cli, *HOST, *VMM, "--virtio-transport", "mmio", "--9p", "dir") == \
        rim(cli, *HOST, *VMM, "--virtio-transport", "mmio", "--9p", "dir", "-n", "mode=user")
    assert rim(cli, *HOST, *VMM, "--virtio-transport", "mmio", "--9p", "dir", "-n", "mode=none") != \
        rim(cli, *HOST, *VMM, "--virtio-transport", "mmio", "--9p", "dir")
    assert rim(cli, *HOST, *VMM, "-n", "mode=none").startswith(GOLDEN_MINIMAL)  # no node on PCI either way


def test_initrd_sits_four_bytes_below_the_dtb(cli: Cli, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"INITRD CONTENT")
    out = tmp_path / "out.dtb"
    rim(cli, "-i", initrd, "--output-dtb", out, *HOST, *VMM, "-i", "initrd")
    fdt = libfdt.Fdt(out.read_bytes())
    chosen = fdt.path_offset("/chosen")
    start = fdt.getprop(chosen, "linux,initrd-start").as_uint64()
    end = fdt.getprop(chosen, "linux,initrd-end").as_uint64()
    assert (start, end - start) == (0x8FE00000 - 14 - 4 + 2, 14)  # aligned up to 4 bytes


def test_host_profiles_and_capabilities(cli: Cli, tmp_path: Path) -> None:
    assert rim(cli, "-c", "rmm-1.0-eac5", *VMM) == rim(cli, "--num-wps", "2", "--num-bps", "2", *VMM)
    conf = tmp_path / "host.conf"
    conf.write_text("# a host\nnum_bps = 6\nnum_wps = 6\n")
    assert rim(cli, "-c", conf, *VMM).startswith(GOLDEN_MINIMAL)
    assert rim(cli, "-c", "fvp", *VMM) != rim(cli, "-c", "qemu", *VMM)
    # a host with SVE: --disable-sve takes it away, --sve-max-vl lowers it
    sve = rim(cli, *HOST, "--sve-vl", "512", *VMM)
    assert sve != rim(cli, *HOST, *VMM)
    assert rim(cli, *HOST, "--sve-vl", "512", *VMM, "--disable-sve").startswith(GOLDEN_MINIMAL)
    assert rim(cli, *HOST, "--sve-vl", "512", *VMM, "--sve-max-vl", "256") not in (sve, GOLDEN_MINIMAL)


@pytest.mark.parametrize(("args", "message"), [
    (["kvmtool", "--realm", "-c", "1", "-m", "512M"], "num_wps is not known"),
    ([*HOST, "kvmtool", "--realm", "-m", "512M"], "number of vCPUs is not known"),
    ([*HOST, "kvmtool", "--realm", "-c", "1"], "default guest RAM size"),
    ([*HOST, "kvmtool", "-c", "1", "-m", "512M"], "only a realm"),
    ([*HOST, *VMM, "-k", "Image"], "give the file as a host option"),
    ([*HOST, "-k", "x", "-f", "y", *VMM, "-k", "x", "-f", "y"], "a firmware launch loads no kernel"),
    ([*HOST, *VMM, "--pmu-counters", "2"], "needs --pmu"),
    (["-c", "unirealm", *VMM, "--pmu"], "the host offers realms no PMU"),
    (["-c", "unirealm", *VMM, "--sve-max-vl", "256"], "the host offers realms no SVE"),
    (["-c", "unirealm", *VMM, "--irqchip", "gicv3-its"], "the host's GIC has no ITS"),
    (["-c", "unirealm", *VMM[:-1], "256T"], "Memory too large"),
    ([*HOST, *VMM, "--firmware", "fw"], "give the file as a host option"),
    ([*HOST, *VMM, "--irqchip", "gicv2"], "a realm needs gicv3 or gicv3-its"),
    ([*HOST, *VMM, "--colour"], "unrecognized arguments: --colour"),
    (["-c", "nosuch", *VMM], "not a host profile"),
])
def test_refusals(args: list[str], message: str, cli: Cli) -> None:
    status, _, err = cli("measure", *args)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_printed_b64_is_the_hex(cli: Cli) -> None:
    hexed = rim(cli, *HOST, *VMM)
    assert base64.b64decode(rim(cli, "--print-b64", *HOST, *VMM)).hex() == hexed


@pytest.mark.parametrize(("args", "message"), [
    ([*HOST, *VMM, "--vfio-pci", "0000:00:01.0"], "kvmtool --vfio-pci: device assignment is not modelled"),
    ([*HOST, *VMM[:-1], "512M@0x90000000"], "kvmtool -m SIZE@ADDR: moving RAM is not modelled"),
    ([*HOST, *VMM, "--pmu", "--pmu-counters", "six"], "kvmtool --pmu-counters six: not a number"),
    ([*HOST, *VMM, "--sve-max-vl", "wide"], "kvmtool --sve-max-vl wide: not a number"),
    # RAM at 2 GiB up to 6 GiB ends at bit 33; a realm adds its unprotected half: 34 bits
    ([*HOST, "--ipa-bits", "33", *VMM[:-1], "4G"], "kvmtool -m 4G: needs 34 IPA bits, the host has 33"),
    ([*HOST, *VMM, "-n", "mode=none,trans=mmio"], "kvmtool -n trans=mmio: differs from --virtio-transport pci"),
    ([*HOST, *VMM, "-n", "mode=tap,script"], "kvmtool -n mode=tap,script: malformed parameter script"),
])
def test_refusals_word_for_word(args: list[str], message: str, cli: Cli) -> None:
    status, _, err = cli("measure", *args)
    assert (status, err.strip()) == (2, f"unirealm measure: error: {message}")


def test_the_host_bits_bound_the_ram(cli: Cli) -> None:
    assert rim(cli, *HOST, "--ipa-bits", "34", *VMM[:-1], "4G") == rim(cli, *HOST, *VMM[:-1], "4G")


def test_a_pmu_has_kvmtools_node(cli: Cli, tmp_path: Path) -> None:
    """kvmtool's arm/pmu.c: /pmu after the timer, arm,armv8-pmuv3, the PMU's PPI 23 (cell 7 =
    23 - 16, level high = 4, PPI = 1); none without --pmu."""
    out = tmp_path / "out.dtb"
    rim(cli, "--output-dtb", out, *HOST, *VMM, "--pmu")
    fdt = libfdt.Fdt(out.read_bytes())
    node = fdt.path_offset("/pmu")
    assert fdt.getprop(node, "compatible").as_str() == "arm,armv8-pmuv3"
    cells = bytes(fdt.getprop(node, "interrupts"))
    assert [int.from_bytes(cells[i:i + 4], "big") for i in range(0, 12, 4)] == [1, 7, 4]
    assert fdt.get_name(fdt.next_subnode(fdt.path_offset("/timer"))) == "pmu"
    rim(cli, "--output-dtb", out, *HOST, *VMM)
    with pytest.raises(libfdt.FdtException):
        libfdt.Fdt(out.read_bytes()).path_offset("/pmu")


def test_nic_parameters_are_comma_separated(cli: Cli, tmp_path: Path) -> None:
    """-n takes key=value,...: mode=none with other keys still has no NIC, trans= is checked."""
    out = tmp_path / "out.dtb"
    mmio = [*HOST, *VMM, "--virtio-transport", "mmio"]
    rim(cli, "--output-dtb", out, *mmio, "-n", "mode=none,trans=mmio")
    with pytest.raises(libfdt.FdtException):
        libfdt.Fdt(out.read_bytes()).path_offset("/virtio@3000000")
    assert rim(cli, *mmio, "-n", "mode=none,trans=mmio") == rim(cli, *mmio, "-n", "mode=none")
    assert rim(cli, *mmio, "-n", "mode=user,trans=mmio") == rim(cli, *mmio)


def test_a_profile_named_by_its_config_path(cli: Cli) -> None:
    """The tool's configs/NAME.conf given as a path not present here names the built-in profile."""
    qemu = rim(cli, "-c", "qemu", *VMM)
    assert rim(cli, "-c", "/opt/cca-realm-measurements/configs/qemu.conf", *VMM) == qemu
    assert rim(cli, "-c", "configs/qemu.conf", *VMM) == qemu
    assert qemu != rim(cli, "-c", "fvp", *VMM)


def test_a_size_without_unit_is_mib(cli: Cli) -> None:
    assert rim(cli, *HOST, *VMM[:-1], "512").startswith(GOLDEN_MINIMAL)


def test_a_kernel_sits_at_its_text_offset(tmp_path: Path) -> None:
    """An arm64 Image (Documentation/arch/arm64/booting.rst header: text_offset at 8, image_size
    at 16, magic "ARM\\x64" at 56) is loaded text_offset above the start of RAM, the REC starts
    there with x0 = the DTB, and the DTB lies 2 MiB aligned below the top of RAM."""
    from unirealm.attest import measure as m
    from unirealm.attest.kvmtool import measure_kvmtool

    header = bytearray(64)
    header[8:16] = (0x80000).to_bytes(8, "little")
    header[16:24] = (0x200000).to_bytes(8, "little")
    header[56:60] = b"ARM\x64"
    image = tmp_path / "Image"
    image.write_bytes(bytes(header) + b"\x1f\x20\x03\xd5" * 256)
    launch = measure_kvmtool([*HOST, "-k", str(image), "kvmtool", "--realm", "-c", "1", "-m", "512M",
                              "-k", "Image"]).launch
    data = [op for op in launch.operations if isinstance(op, m.DataOp)]
    (rec,) = [op for op in launch.operations if isinstance(op, m.RecOp)]
    assert data[0].ipa == 0x8008_0000 and data[0].content == image.read_bytes()
    assert rec.pc == 0x8008_0000
    (dtb,) = rec.gprs
    assert dtb % (2 << 20) == 0 and 0x8000_0000 < dtb < 0x8000_0000 + (512 << 20)
    assert data[-1].ipa == dtb
