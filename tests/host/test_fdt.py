"""The guest device tree (host/fdt.KvmtoolFdt): kvmtool-cca's nodes and properties, read back
with dtc and pylibfdt, and the errors it refuses."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import libfdt
import pytest

from unirealm.host.fdt import (
    FdtError,
    KvmtoolFdt,
    VirtioMmioNode,
    dump_dtb,
    kvmtool_bootargs,
    kvmtool_serial_ports,
)
from unirealm.host.memmap import GuestLayout, IrqLines, VirtioMmioSpace

MiB = 1 << 20
DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc (device-tree-compiler) is not installed")


def realm_fdt(nrcpus: int = 1, initrd: bool = True, **extra: object) -> KvmtoolFdt:
    layout = GuestLayout.compute(
        0x8000_0000, 256 * MiB, kernel_size=0x10000, initrd_size=0x1234 if initrd else 0, is_realm=True
    )
    irqs = IrqLines()
    kvmtool_serial_ports(irqs)  # the UARTs take the first four lines, as in the VMM
    space = VirtioMmioSpace()
    virtio = [VirtioMmioNode(space.alloc(), irqs.alloc()) for _ in range(2)]
    args: dict[str, object] = {
        "virtio_mmio": virtio, "kaslr_seed": 0xDEAD_BEEF_0000_0001, "its": False,
        "initrd": (layout.initrd_start, layout.initrd_end) if initrd else None,
    }
    args.update(extra)
    return KvmtoolFdt(nrcpus, layout.ram_base, layout.ram_size, "console=ttyS0 earlycon", **args)  # type: ignore[arg-type]


def dts_of(dtb: bytes, tmp_path: Path) -> str:
    path = tmp_path / "guest.dtb"
    dump_dtb(path, dtb)
    out = subprocess.run([DTC, "-I", "dtb", "-O", "dts", str(path)], capture_output=True, text=True, check=True)
    return out.stdout


def node_text(dts: str, name: str) -> str:
    m = re.search(r"\n\t" + re.escape(name) + r" \{\n(.*?)\n\t\};", dts, re.S)
    assert m, f"node {name} missing"
    return m.group(1)


def cells(fdt: libfdt.Fdt, path: str, prop: str) -> tuple[int, ...]:
    raw = bytes(fdt.getprop(fdt.path_offset(path), prop))
    return struct.unpack(f">{len(raw) // 4}I", raw)


def u64s(fdt: libfdt.Fdt, path: str, prop: str) -> tuple[int, ...]:
    raw = bytes(fdt.getprop(fdt.path_offset(path), prop))
    return struct.unpack(f">{len(raw) // 8}Q", raw)


def strlist(fdt: libfdt.Fdt, path: str, prop: str) -> list[str]:
    raw = bytes(fdt.getprop(fdt.path_offset(path), prop))
    return raw.rstrip(b"\0").decode().split("\0")


@needs_dtc
def test_dtc_decompiles_all_nodes(tmp_path: Path) -> None:
    dts = dts_of(realm_fdt(nrcpus=2).dtb(), tmp_path)
    assert 'compatible = "linux,dummy-virt";' in dts and 'model = "linux,dummy-virt-realm";' in dts
    assert "#address-cells = <0x02>;" in dts and "#size-cells = <0x02>;" in dts
    assert "interrupt-parent = <0x01>;" in dts

    chosen = node_text(dts, "chosen")
    assert 'bootargs = "console=ttyS0 earlycon";' in chosen
    assert "linux,initrd-start = <0x00 0x8fdfedc8>;" in chosen  # 4-byte aligned, size + 4 below the DTB
    assert "linux,initrd-end = <0x00 0x8fdffffc>;" in chosen
    assert "kaslr-seed = <0xdeadbeef 0x01>;" in chosen

    memory = node_text(dts, "memory@80000000")
    assert 'device_type = "memory";' in memory
    assert "reg = <0x00 0x80000000 0x00 0x10000000>;" in memory

    cpus = node_text(dts, "cpus")
    for n in (0, 1):
        assert f"cpu@{n} {{" in cpus and f"reg = <0x{n:02x}>;" in cpus
    assert cpus.count('compatible = "arm,armv8";') == 2
    assert cpus.count('device_type = "cpu";') == 2
    assert cpus.count('enable-method = "psci";') == 2

    psci = node_text(dts, "psci")
    assert r'compatible = "arm,psci-1.0\0arm,psci-0.2\0arm,psci";' in psci
    assert 'method = "smc";' in psci

    timer = node_text(dts, "timer")
    assert r'compatible = "arm,armv8-timer\0arm,armv7-timer";' in timer
    assert "interrupts = <0x01 0x0d 0x08 0x01 0x0e 0x08 0x01 0x0b 0x08>;" in timer
    assert "always-on;" in timer

    intc = node_text(dts, "intc")
    assert 'compatible = "arm,gic-v3";' in intc
    assert "#interrupt-cells = <0x03>;" in intc and "interrupt-controller;" in intc
    # distributor, then 2 redistributors directly below it; no ITS
    assert "reg = <0x00 0x3fff0000 0x00 0x10000 0x00 0x3ffb0000 0x00 0x40000>;" in intc
    assert "phandle = <0x01>;" in intc and "msic" not in intc

    uart0 = node_text(dts, "U6_16550A@1000000")
    assert 'compatible = "ns16550a";' in uart0
    assert "reg = <0x00 0x1000000 0x00 0x08>;" in uart0
    assert "interrupts = <0x00 0x00 0x04>;" in uart0
    assert "clock-frequency = <0x1c2000>;" in uart0
    assert "interrupts = <0x00 0x03 0x04>;" in node_text(dts, "U6_16550A@1003000")

    v0 = node_text(dts, "virtio@3000000")
    assert 'compatible = "virtio,mmio";' in v0
    assert "reg = <0x00 0x3000000 0x00 0x200>;" in v0
    assert "dma-coherent;" in v0
    assert "interrupts = <0x00 0x04 0x01>;" in v0
    assert "interrupts = <0x00 0x05 0x01>;" in node_text(dts, "virtio@3000200")

    assert 'compatible = "motorola,mc146818";' in node_text(dts, "rtc@1010000")
    pci = node_text(dts, "pci@40000000")
    assert 'compatible = "pci-host-ecam-generic";' in pci and "msi-map" not in pci


@needs_dtc
def test_dtc_round_trip_is_stable(tmp_path: Path) -> None:
    src = tmp_path / "g.dts"
    src.write_text(dts_of(realm_fdt().dtb(), tmp_path))
    out = subprocess.run([DTC, "-I", "dts", "-O", "dtb", str(src)], capture_output=True, check=True).stdout
    assert libfdt.Fdt(out).path_offset("/psci") >= 0


def test_pylibfdt_parses_back() -> None:
    dtb = realm_fdt(nrcpus=3).dtb()
    fdt = libfdt.Fdt(dtb)
    assert len(dtb) == 0x10000 and fdt.totalsize() < len(dtb)  # padded to FDT_MAX_SIZE
    root = fdt.path_offset("/")
    assert fdt.getprop(root, "compatible").as_str() == "linux,dummy-virt"
    assert fdt.getprop(root, "#address-cells").as_uint32() == 2
    assert u64s(fdt, "/memory@80000000", "reg") == (0x8000_0000, 256 * MiB)
    chosen = fdt.path_offset("/chosen")
    assert fdt.getprop(chosen, "bootargs").as_str() == "console=ttyS0 earlycon"
    assert u64s(fdt, "/chosen", "linux,initrd-start") == (0x8FDF_EDC8,)
    assert u64s(fdt, "/chosen", "linux,initrd-end") == (0x8FDF_FFFC,)
    assert fdt.getprop(chosen, "kaslr-seed").as_uint64() == 0xDEAD_BEEF_0000_0001
    assert [cells(fdt, f"/cpus/cpu@{n}", "reg") for n in range(3)] == [(0,), (1,), (2,)]
    assert u64s(fdt, "/intc", "reg") == (0x3FFF_0000, 0x10000, 0x3FF9_0000, 0x60000)
    gic = fdt.path_offset("/intc")
    assert fdt.get_phandle(gic) == 1
    assert fdt.node_offset_by_phandle(cells(fdt, "/", "interrupt-parent")[0]) == gic
    assert strlist(fdt, "/psci", "compatible") == ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
    assert cells(fdt, "/psci", "cpu_on") == (0xC400_0003,)
    assert cells(fdt, "/U6_16550A@1002000", "clock-frequency") == (1843200,)
    assert cells(fdt, "/virtio@3000000", "interrupts") == (0, 4, 1)
    spis = [cells(fdt, p, "interrupts")[1] for p in ("/U6_16550A@1000000", "/virtio@3000000", "/virtio@3000200")]
    assert len(set(spis)) == 3


def test_its_pmu_and_a_normal_vm() -> None:
    fdt = libfdt.Fdt(realm_fdt(its=True, pmu=True).dtb())
    its = fdt.path_offset("/intc/msic")
    assert fdt.getprop(its, "compatible").as_str() == "arm,gic-v3-its"
    assert cells(fdt, "/pci@40000000", "msi-map") == (0, fdt.get_phandle(its), 0, 0x1_0000)
    assert cells(fdt, "/pmu", "interrupts") == (1, 7, 4)
    fdt = libfdt.Fdt(realm_fdt(realm=False, initrd=False, kaslr_seed=None).dtb())
    assert fdt.getprop(fdt.path_offset("/psci"), "method").as_str() == "hvc"
    with pytest.raises(libfdt.FdtException):
        fdt.getprop(fdt.path_offset("/"), "model")
    chosen = fdt.path_offset("/chosen")
    for prop in ("linux,initrd-start", "kaslr-seed"):
        with pytest.raises(libfdt.FdtException):
            fdt.getprop(chosen, prop)


@pytest.mark.parametrize(("params", "console", "nodefaults", "bootargs"), [
    ("", None, False, " console=hvc0 root=/dev/vda rw "),
    ("quiet -- a", "serial", False, " console=ttyS0 root=/dev/vda rw  quiet -- a"),
    ("root=/dev/vda2", "serial", False, " console=ttyS0 root=/dev/vda2"),
    ("quiet -- a", "serial", True, "quiet -- a"),
])
def test_kvmtool_bootargs(params: str, console: str | None, nodefaults: bool, bootargs: str) -> None:
    assert kvmtool_bootargs(params, console, nodefaults) == bootargs


def test_dtb_is_deterministic() -> None:
    assert realm_fdt().dtb() == realm_fdt().dtb()
    assert realm_fdt().dtb() != realm_fdt(initrd=False).dtb()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"nrcpus": 0}, "at least one vCPU"),
    ({"virtio_mmio": [VirtioMmioNode(0x0300_0000, 1020)]}, "not an SPI"),
    ({"initrd": (0x9000_0000, 0x8000_0000)}, "initrd ends"),
    ({"bootargs": "x" * 0x10000}, "too large"),
])
def test_errors(kwargs: dict[str, object], fragment: str) -> None:
    base: dict[str, object] = {"nrcpus": 1, "mem_base": 0x8000_0000, "mem_size": 64 * MiB, "bootargs": ""}
    base.update(kwargs)
    with pytest.raises(FdtError, match=fragment) as exc:
        KvmtoolFdt(**base).dtb()  # type: ignore[arg-type]
    assert "\n" not in str(exc.value)


def test_dump_dtb_writes_the_blob(tmp_path: Path) -> None:
    dtb = realm_fdt().dtb()
    path = tmp_path / "out.dtb"
    dump_dtb(path, dtb)
    assert path.read_bytes() == dtb
    assert path.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"
