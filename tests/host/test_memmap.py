from __future__ import annotations

import struct

import pytest

from unirealm.host import memmap
from unirealm.host.memmap import (
    ARM64_IMAGE_MAGIC,
    Arm64ImageHeader,
    GuestLayout,
    IrqLines,
    MemoryLayoutError,
    VirtioMmioSpace,
    arm64_branch,
    build_arm64_image,
    default_ram_size,
    ipa_bits_for,
    kernel_mem_size,
    kernel_text_offset,
    parse_mem_option,
    parse_mem_size,
)

MiB = 1 << 20
GiB = 1 << 30


# --- the map itself -------------------------------------------------------------------------


def test_map_addresses_match_kvmtool():
    assert memmap.ARM_MEMORY_AREA == 0x8000_0000
    assert [memmap.serial_iobase(n) for n in range(4)] == [0x0100_0000, 0x0100_1000, 0x0100_2000, 0x0100_3000]
    assert memmap.ARM_RTC_MMIO_BASE == 0x0101_0000
    assert memmap.ARM_PVTIME_BASE == 0x0102_0000
    assert memmap.KVM_FLASH_MMIO_BASE == 0x0200_0000
    assert memmap.KVM_VIRTIO_MMIO_AREA == 0x0300_0000
    assert memmap.ARM_GIC_DIST_BASE == 0x3FFF_0000
    assert memmap.ARM_GIC_CPUI_BASE == 0x3FFD_0000
    assert memmap.KVM_PCI_CFG_AREA == 0x4000_0000
    assert memmap.KVM_PCI_MMIO_AREA == 0x5000_0000
    assert memmap.KVM_PCI_MMIO_AREA + memmap.ARM_PCI_MMIO_SIZE == memmap.ARM_MEMORY_AREA
    # virtio-mmio space runs up to the GIC block
    assert memmap.KVM_VIRTIO_MMIO_AREA + memmap.ARM_VIRTIO_MMIO_SIZE == memmap.ARM_GIC_CPUI_BASE


def test_serial_port_out_of_range():
    with pytest.raises(MemoryLayoutError):
        memmap.serial_iobase(4)


@pytest.mark.parametrize(("cpus", "base"), [(1, 0x3FFD_0000), (2, 0x3FFB_0000), (4, 0x3FF7_0000)])
def test_redistributors_below_distributor(cpus, base):
    assert memmap.gic_redists_base(cpus) == base
    assert memmap.gic_redists_base(cpus) + memmap.gic_redists_size(cpus) == memmap.ARM_GIC_DIST_BASE


def test_vcpu_mpidr():
    assert [memmap.vcpu_mpidr(i) for i in (0, 1, 15)] == [0, 1, 15]
    assert memmap.vcpu_mpidr(16) == 0x100
    assert memmap.vcpu_mpidr(0x1011) == 0x1_0101


@pytest.mark.parametrize(("cpus", "size"), [(1, 256 * MiB), (2, 320 * MiB), (4, 448 * MiB)])
def test_default_ram_size(cpus, size):
    assert default_ram_size(cpus) == size


def test_virtio_mmio_windows_in_registration_order():
    space = VirtioMmioSpace()
    assert [space.alloc() for _ in range(3)] == [0x0300_0000, 0x0300_0200, 0x0300_0400]
    tiny = VirtioMmioSpace(0x1000, 0x400)
    tiny.alloc()
    tiny.alloc()
    with pytest.raises(MemoryLayoutError):
        tiny.alloc()


def test_irq_lines_start_at_first_spi():
    lines = IrqLines()
    assert [lines.alloc() for _ in range(3)] == [32, 33, 34]
    last = IrqLines(255)
    assert last.alloc() == 255
    with pytest.raises(MemoryLayoutError):
        last.alloc()


# --- -m parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("256", 256 * MiB),
        ("256M", 256 * MiB),
        ("256m", 256 * MiB),
        ("1G", GiB),
        ("512K", 512 << 10),
        ("4096B", 4096),
        ("1T", 1 << 40),
        ("0x90000000", 0x9000_0000),
        ("0x100M", 256 * MiB),
    ],
)
def test_parse_mem_size(text, value):
    assert parse_mem_size(text) == value


@pytest.mark.parametrize(
    ("arg", "size", "addr"),
    [
        ("256", 256 * MiB, 0x8000_0000),
        ("1G", GiB, 0x8000_0000),
        ("512M@0x90000000", 512 * MiB, 0x9000_0000),
        ("512M@2048", 512 * MiB, 0x8000_0000),  # kvmtool's default unit applies to the address too
        ("64M@4G", 64 * MiB, 4 * GiB),
    ],
)
def test_parse_mem_option(arg, size, addr):
    assert parse_mem_option(arg) == (size, addr)


@pytest.mark.parametrize(
    ("arg", "fragment"),
    [
        ("0", "Invalid RAM size"),
        ("", "Invalid memory specifier"),
        ("abc", "Invalid memory specifier"),
        ("256X", "Invalid memory specifier"),
        ("256M@", "Missing memory address"),
        ("256M@0x40000000", "below the I/O region"),
        ("256M@1G", "below the I/O region"),
        ("256M@0x80000800", "not 4 KiB aligned"),
        ("-1", "Invalid memory specifier"),
    ],
)
def test_parse_mem_option_errors(arg, fragment):
    with pytest.raises(MemoryLayoutError, match=fragment) as exc:
        parse_mem_option(arg)
    assert "\n" not in str(exc.value)


# --- IPA width -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "size", "normal", "realm"),
    [
        (0x8000_0000, 256 * MiB, 32, 33),  # last address 0x8FFF_FFFF
        (0x8000_0000, 2 * GiB, 32, 33),  # last address 0xFFFF_FFFF
        (0x8000_0000, 2 * GiB + 4096, 33, 34),  # crosses 4 GiB
        (0x1_0000_0000, 64 * MiB, 33, 34),
        (0x8000_0000, 64 * GiB, 37, 38),
    ],
)
def test_ipa_bits_rule(base, size, normal, realm):
    assert ipa_bits_for(base, size, False) == normal
    assert ipa_bits_for(base, size, True) == realm


def test_ipa_bits_too_large():
    with pytest.raises(MemoryLayoutError, match="Memory too large"):
        ipa_bits_for(0x8000_0000, 1 << 48, False)


# --- the Image header -------------------------------------------------------------------------


def test_image_header_round_trip():
    hdr = Arm64ImageHeader(
        code0=0x91005A4D, code1=0x14000123, text_offset=0x80000, image_size=0x1234000, flags=0xA, res5=0x40
    )
    raw = hdr.pack()
    assert len(raw) == 64
    assert raw[0x38:0x3C] == b"ARM\x64"
    assert Arm64ImageHeader.parse(raw) == hdr
    # independent check of the byte layout with struct
    assert struct.unpack("<IIQQQQQQ4sI", raw) == (
        0x91005A4D,
        0x14000123,
        0x80000,
        0x1234000,
        0xA,
        0,
        0,
        0,
        ARM64_IMAGE_MAGIC,
        0x40,
    )


def test_image_header_flags():
    hdr = Arm64ImageHeader(flags=0xA)
    assert not hdr.is_big_endian and hdr.page_size == 4096 and hdr.phys_base_anywhere
    hdr = Arm64ImageHeader(flags=0x1 | (3 << 1))
    assert hdr.is_big_endian and hdr.page_size == 0x10000 and not hdr.phys_base_anywhere
    assert Arm64ImageHeader(flags=0).page_size is None


def test_image_header_rejects_non_images():
    assert Arm64ImageHeader.parse(b"\0" * 64) is None
    assert Arm64ImageHeader.parse(b"short") is None


def test_build_image_branches_past_header():
    img = build_arm64_image(b"\x1f\x20\x03\xd5" * 4, text_offset=0x20_0000)
    hdr = Arm64ImageHeader.parse(img)
    assert hdr is not None
    assert hdr.code0 == 0x14000010  # b #64
    assert hdr.image_size == len(img) == 80
    assert hdr.text_offset == 0x20_0000
    assert arm64_branch(0) == 0x14000000
    with pytest.raises(ValueError):
        arm64_branch(2)


def test_text_offset_rules():
    img = build_arm64_image(b"x" * 100, text_offset=0x10_0000)
    assert kernel_text_offset(img) == 0x10_0000
    # image_size 0 (pre-3.17 kernels): kvmtool ignores text_offset
    old = build_arm64_image(b"x" * 100, text_offset=0x10_0000, image_size=0)
    assert kernel_text_offset(old) == 0x80000
    assert kernel_text_offset(b"\x7fELF" + b"\0" * 100) == 0x80000
    assert kernel_text_offset(b"raw", 0x1000) == 0x1000
    assert kernel_text_offset(b"UNIK....", lambda k: 0x4000 if k.startswith(b"UNIK") else None) == 0x4000
    # a hook that declines falls back to the header
    assert kernel_text_offset(img, lambda k: None) == 0x10_0000


def test_kernel_mem_size_includes_bss():
    img = build_arm64_image(b"x" * 100, image_size=0x10000)
    assert kernel_mem_size(img) == 0x10000
    assert kernel_mem_size(b"y" * 77) == 77


# --- placement ---------------------------------------------------------------------------------


def test_layout_256m_no_initrd():
    lay = GuestLayout.compute(0x8000_0000, 256 * MiB, kernel_size=0x20_0000)
    assert lay.kernel_start == 0x8008_0000
    assert lay.kernel_end == 0x8028_0000
    # limit 0x8FFF_FFFF - (64 KiB + 2 MiB) rounded up to 2 MiB
    assert lay.dtb_start == 0x8FE0_0000
    assert lay.dtb_end == 0x8FE1_0000
    assert not lay.has_initrd and lay.initrd_start == lay.dtb_start == lay.initrd_end
    assert lay.ipa_bits == 32 and lay.unprotected_ipa_bit is None
    assert lay.last_ram_address == 0x8FFF_FFFF


def test_layout_realm_256m_with_initrd():
    lay = GuestLayout.compute(
        0x8000_0000, 256 * MiB, kernel_size=0x1_2345, initrd_size=0x3_0001, is_realm=True
    )
    assert lay.ipa_bits == 33
    assert lay.unprotected_ipa_bit == 0x1_0000_0000
    assert lay.kernel_end == 0x8009_3000  # rounded to a granule for a realm
    assert lay.initrd_start == 0x8FDC_FFFC  # kvmtool's: 4-byte aligned, size + 4 below the DTB
    assert lay.initrd_start % 4 == 0
    assert lay.initrd_end == 0x8FDF_FFFD <= lay.dtb_start - 3


def test_layout_normal_kernel_end_not_rounded():
    lay = GuestLayout.compute(0x8000_0000, 256 * MiB, kernel_size=0x1_2345)
    assert lay.kernel_end == 0x8009_2345


@pytest.mark.parametrize(
    ("mem", "dtb"),
    [
        ("64M", 0x83E0_0000),
        ("128", 0x87E0_0000),
        ("1G", 0x8FE0_0000),  # capped at 256 MiB of lowmem
        ("512M@0x90000000", 0x9FE0_0000),
        ("3M", 0x8020_0000),
    ],
)
def test_layout_dtb_for_mem_options(mem, dtb):
    size, addr = parse_mem_option(mem)
    lay = GuestLayout.compute(addr, size, kernel_size=0x1000, kernel_text_offset=0)
    assert lay.dtb_start == dtb
    assert lay.dtb_start % memmap.FDT_ALIGN == 0
    assert lay.dtb_end <= addr + min(size, 256 * MiB)


def test_layout_kernel_bss_from_image_header():
    img = build_arm64_image(b"k" * 0x1000, image_size=0x40_0000)
    lay = GuestLayout.for_images(0x8000_0000, 256 * MiB, img, b"i" * 10, is_realm=True)
    assert lay.kernel_file_end == 0x8008_0000 + len(img)
    assert lay.kernel_end == 0x8048_0000
    assert lay.initrd_size == 10


def test_layout_text_offset_hook():
    lay = GuestLayout.for_images(0x8000_0000, 256 * MiB, b"UNIK" + b"\0" * 60, text_offset=lambda k: 0)
    assert lay.kernel_start == 0x8000_0000


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ram_size": 256 * MiB, "kernel_size": 0x1000_0000}, "kernel image too big"),
        ({"ram_size": 64 * MiB, "kernel_size": 0x3F8_0000}, "kernel image too big"),
        ({"ram_size": 64 * MiB, "kernel_size": 0x3E0_0000}, "fdt overlaps with kernel"),
        ({"ram_size": 64 * MiB, "kernel_size": 0x100_0000, "kernel_image_size": 0x3D8_0001}, "fdt overlaps"),
        ({"ram_size": 64 * MiB, "kernel_size": 0x100_0000, "initrd_size": 0x300_0000}, "initrd overlaps"),
        ({"ram_size": 64 * MiB, "kernel_size": 0x1000, "initrd_size": 0x400_0000}, "initrd too big"),
        ({"ram_size": 256 * MiB, "kernel_size": 0}, "empty"),
        ({"ram_size": 0, "kernel_size": 0x1000}, "Invalid RAM size"),
    ],
)
def test_layout_errors(kwargs, fragment):
    with pytest.raises(MemoryLayoutError, match=fragment) as exc:
        GuestLayout.compute(0x8000_0000, **kwargs)
    assert "\n" not in str(exc.value)


def test_layout_ram_below_2g_rejected():
    with pytest.raises(MemoryLayoutError, match="below the I/O region"):
        GuestLayout.compute(0x4000_0000, 256 * MiB, kernel_size=0x1000)


def test_layout_ram_too_small_for_fdt():
    with pytest.raises(MemoryLayoutError, match="too small to hold the fdt"):
        GuestLayout.compute(0x8010_0000, 1 * MiB, kernel_size=0x1000, kernel_text_offset=0)


def test_layout_fdt_fits_exactly_after_kernel():
    # kernel ends exactly where the DTB starts: allowed; one byte more is an overlap
    size = 0x83E0_0000 - 0x8008_0000
    assert GuestLayout.compute(0x8000_0000, 64 * MiB, kernel_size=size).dtb_start == 0x83E0_0000
    with pytest.raises(MemoryLayoutError, match="fdt overlaps"):
        GuestLayout.compute(0x8000_0000, 64 * MiB, kernel_size=size + 1)


def test_layout_realm_initrd_never_shares_kernel_granule():
    # the initrd would start in the granule holding the kernel's last byte
    with pytest.raises(MemoryLayoutError, match="initrd overlaps"):
        GuestLayout.compute(
            0x8000_0000, 64 * MiB, kernel_size=0x100_0001, initrd_size=0x2D8_0000, is_realm=True
        )
    lay = GuestLayout.compute(
        0x8000_0000, 64 * MiB, kernel_size=0x100_0001, initrd_size=0x2D7_EFFC, is_realm=True
    )
    assert lay.kernel_end == 0x8108_1000 == lay.initrd_start
