"""The guest's device tree reader (guest/fdt.py) against libfdt (pylibfdt, an independent
implementation) on the VMM's blobs and dtc-compiled ones, on malformed blobs (one check
each), and fuzzed: any input gives a tree or FdtError."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import libfdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirealm.arch.fdt import FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_HEADER, FDT_MAGIC, FDT_NOP, FDT_PROP
from unirealm.guest.fdt import FdtError, Node, read_fdt
from unirealm.guest.kernel import parse_fdt
from unirealm.host.fdt import KvmtoolFdt, VirtioMmioNode
from unirealm.host.memmap import ARM_RTC_MMIO_BASE, ARM_UART_MMIO_BASE

DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc (device-tree-compiler) is not installed")

Tree = tuple[str, tuple[tuple[str, bytes], ...], tuple["Tree", ...]]


def libfdt_tree(blob: bytes) -> Tree:
    """The whole tree as libfdt walks it: (name, properties in order, children)."""
    fdt = libfdt.Fdt(blob)

    def walk(node: int) -> Tree:
        props = []
        off = fdt.first_property_offset(node, [libfdt.FDT_ERR_NOTFOUND])
        while off >= 0:
            prop = fdt.get_property_by_offset(off)
            props.append((prop.name, bytes(prop)))
            off = fdt.next_property_offset(off, [libfdt.FDT_ERR_NOTFOUND])
        children = []
        sub = fdt.first_subnode(node, [libfdt.FDT_ERR_NOTFOUND])
        while sub >= 0:
            children.append(walk(sub))
            sub = fdt.next_subnode(sub, [libfdt.FDT_ERR_NOTFOUND])
        return fdt.get_name(node), tuple(props), tuple(children)

    return walk(0)


def reader_tree(node: Node) -> Tree:
    return node.name, tuple(node.props), tuple(reader_tree(c) for c in node.children)


def vmm_blob() -> bytes:
    return KvmtoolFdt(
        nrcpus=2,
        mem_base=0x8000_0000,
        mem_size=256 << 20,
        bootargs="quiet -- sh -c 'ls /'",
        initrd=(0x8800_0000, 0x8801_2345),
        virtio_mmio=[VirtioMmioNode(0x1010000, 40), VirtioMmioNode(0x1010200, 41)],
        kaslr_seed=0x1234_5678_9ABC_DEF0,
        pmu=True,
    ).dtb()


DTS = """/dts-v1/;
/memreserve/ 0x80000000 0x1000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    compatible = "linux,dummy-virt";
    empty;
    bytes = [00 01 02 03 04];
    strings = "one", "two", "";
    node@1000 {
        reg = <0x0 0x1000 0x0 0x100>;
        deeper { deepest { value = <0xdeadbeef>; label = "x"; }; };
    };
    other { };
    chosen { bootargs = "console=ttyS0 -- app arg"; };
};
"""


def dtc_blob(tmp_path: Path, source: str = DTS, version: int = 17) -> bytes:
    src = tmp_path / "t.dts"
    src.write_text(source)
    out = tmp_path / "t.dtb"
    assert DTC is not None
    subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", "-V", str(version), "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def test_the_vmm_blob_reads_as_libfdt_reads_it() -> None:
    blob = vmm_blob()
    assert reader_tree(read_fdt(blob)) == libfdt_tree(blob)


@needs_dtc
@pytest.mark.parametrize("version", [16, 17])
def test_dtc_blobs_read_as_libfdt_reads_them(tmp_path: Path, version: int) -> None:
    blob = dtc_blob(tmp_path, version=version)
    root = read_fdt(blob)
    assert reader_tree(root) == libfdt_tree(blob)
    node = root.child("node@1000")
    assert node is not None
    deepest = node.children[0].children[0]
    assert deepest.name == "deepest" and deepest.prop("value") == b"\xde\xad\xbe\xef"
    assert root.prop("empty") == b"" and root.prop("missing") is None


def test_kernel_boot_facts_from_the_vmm_blob() -> None:
    info = parse_fdt(vmm_blob())
    assert info.ram == [(0x8000_0000, 256 << 20)]
    assert info.bootargs == "quiet -- sh -c 'ls /'"
    assert info.initrd == (0x8800_0000, 0x8801_2345)
    assert info.psci_method == "smc"  # a realm's DTB (KvmtoolFdt.realm defaults to True)
    found = {(d.compatible, d.base) for d in info.devices}
    assert {("virtio,mmio", 0x1010000), ("virtio,mmio", 0x1010200), ("ns16550a", ARM_UART_MMIO_BASE),
            ("motorola,mc146818", ARM_RTC_MMIO_BASE)} <= found


# --- malformed blobs: each check on its own ----------------------------------------------------
def build(struct_block: bytes, strings: bytes = b"reg\0", version: int = 17, last_comp: int = 16,
          total_extra: int = 0, magic: int = FDT_MAGIC) -> bytes:
    off_rsv = FDT_HEADER.size
    rsv = bytes(16)
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(struct_block)
    total = off_strings + len(strings)
    header = FDT_HEADER.pack(magic, total + total_extra, off_struct, off_strings, off_rsv, version, last_comp, 0,
                             len(strings), len(struct_block))
    return header + rsv + struct_block + strings


def tok(*words: int) -> bytes:
    return b"".join(struct.pack(">I", w) for w in words)


def begin(name: bytes) -> bytes:
    raw = name + b"\0"
    return tok(FDT_BEGIN_NODE) + raw.ljust((len(raw) + 3) & ~3, b"\0")


def prop(value: bytes, nameoff: int = 0) -> bytes:
    return tok(FDT_PROP, len(value), nameoff) + value.ljust((len(value) + 3) & ~3, b"\0")


GOOD = begin(b"") + prop(b"\x01\x02\x03") + begin(b"a@1") + tok(FDT_END_NODE) + tok(FDT_END_NODE, FDT_END)


def test_the_hand_built_blob_is_good() -> None:
    blob = build(GOOD)
    assert reader_tree(read_fdt(blob)) == libfdt_tree(blob) == ("", (("reg", b"\x01\x02\x03"),), (("a@1", (), ()),))
    nops = build(tok(FDT_NOP) + GOOD[:-4] + tok(FDT_NOP, FDT_END))
    assert reader_tree(read_fdt(nops)) == reader_tree(read_fdt(blob))


@pytest.mark.parametrize(("blob", "reason"), [
    (b"", "truncated header"),
    (build(GOOD)[:39], "truncated header"),
    (build(GOOD, magic=0xD00DFEEE), "bad magic"),
    (build(GOOD, version=15), "not readable"),
    (build(GOOD, last_comp=18), "not readable"),
    (build(GOOD, total_extra=1), "totalsize"),
    (build(GOOD)[:-1], "totalsize"),
    (build(GOOD[:-4]), "ends without FDT_END"),
    (build(GOOD[:-8] + tok(FDT_END)), "FDT_END inside a node"),
    (build(GOOD[:-4] + tok(FDT_BEGIN_NODE)), "after the root node"),
    (build(tok(FDT_PROP) + GOOD), "starts with token"),
    (build(begin(b"") + tok(7) + tok(FDT_END_NODE, FDT_END)), "unknown token"),
    (build(begin(b"") + prop(b"x", nameoff=4) + tok(FDT_END_NODE, FDT_END)), "outside the strings block"),
    (build(begin(b"") + prop(b"x") + tok(FDT_END_NODE, FDT_END), strings=b"reg"), "not NUL-terminated"),
    (build(begin(b"") + tok(FDT_PROP, 64, 0) + tok(FDT_END_NODE, FDT_END)), "runs past the structure block"),
    (build(begin(b"") + tok(FDT_PROP, 4)), "property header runs past"),
    (build(tok(FDT_BEGIN_NODE) + b"abcd"), "node name is not NUL-terminated"),
    (build(begin(b"") + begin(b"a") + tok(FDT_END_NODE) + prop(b"x") + tok(FDT_END_NODE, FDT_END)),
     "property after a subnode"),
])
def test_malformed_blobs_are_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(FdtError, match=reason):
        read_fdt(blob)


def test_blocks_outside_the_blob_are_refused() -> None:
    good = bytearray(build(GOOD))
    for field, value, reason in ((2, 0x1001, "structure block"), (2, len(good) - 4, "structure block"),
                                 (2, 8, "structure block"), (3, len(good), "strings block"),
                                 (8, 0x10000, "strings block"), (9, 0x10000, "structure block")):
        bad = bytearray(good)
        struct.pack_into(">I", bad, 4 * field, value)
        with pytest.raises(FdtError, match=reason):
            read_fdt(bytes(bad))


# --- fuzzing ---------------------------------------------------------------------------------
SEEDS = [vmm_blob(), build(GOOD)]


def _libfdt_or_none(blob: bytes) -> Tree | None:
    try:
        return libfdt_tree(blob)
    except Exception:  # libfdt refuses it somewhere in the walk
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_blobs_give_a_tree_or_fdterror(seed: bytes, data: st.DataObject) -> None:
    blob = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["byte", "word", "cut"]))
        at = data.draw(st.integers(0, len(blob) - 1)) if blob else 0
        if kind == "byte" and blob:
            blob[at] = data.draw(st.integers(0, 255))
        elif kind == "word" and len(blob) >= 4:
            at &= ~3
            struct.pack_into(">I", blob, min(at, len(blob) - 4), data.draw(st.sampled_from(
                [0, 1, 2, 3, 4, 9, 0xFFFFFFFF, len(blob), len(blob) + 4, data.draw(st.integers(0, 1 << 32 - 1))])))
        else:
            del blob[at:]
    try:
        root = read_fdt(bytes(blob))
    except FdtError:
        return
    theirs = _libfdt_or_none(bytes(blob))
    if theirs is not None:
        assert reader_tree(root) == theirs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_give_fdterror(raw: bytes) -> None:
    with pytest.raises(FdtError):
        read_fdt(raw)
