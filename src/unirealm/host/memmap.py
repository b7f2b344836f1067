"""kvmtool's arm64 guest physical memory map, `-m` parsing, the arm64 Image header, image placement.

The map is kvmtool's `arm/include/arm-common/kvm-arch.h` (same for realms and normal VMs):

    0x0000_0000  PCI I/O port space (64 KiB)
    0x0100_0000  ns16550a UARTs, port n at + n * 0x1000     (ARM_UART_MMIO_BASE)
    0x0101_0000  RTC, motorola,mc146818                     (ARM_RTC_MMIO_BASE)
    0x0102_0000  PV time                                    (ARM_PVTIME_BASE)
    0x0200_0000  CFI flash, up to 16 MiB                    (KVM_FLASH_MMIO_BASE)
    0x0300_0000  virtio-mmio, 0x200 bytes per device        (KVM_VIRTIO_MMIO_AREA)
    0x3FFF_0000  GIC distributor, redistributors just below  (ARM_GIC_DIST_BASE)
    0x4000_0000  PCI config space (256 MiB ECAM)            (KVM_PCI_CFG_AREA)
    0x5000_0000  PCI MMIO window up to 2 GiB                (KVM_PCI_MMIO_AREA)
    0x8000_0000  RAM                                        (ARM_MEMORY_AREA)

Image placement follows kvmtool's `kvm__arch_load_kernel_image` (arm/kvm.c, with the realm
changes of the Arm kvmtool-cca branch): kernel at RAM + text_offset, DTB 2 MiB-aligned near
the top of min(RAM, 256 MiB), the initrd 4-byte aligned just below the DTB.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from unirealm.arch.gic import GICD_SIZE, GICR_SIZE, PPI_BASE, SGI_BASE, SPI_BASE
from unirealm.arch.layout import Field, Layout
from unirealm.arch.memory import GRANULE_SIZE, MAX_IPA_BITS, MIN_IPA_BITS, unprotected_bit
from unirealm.arch.timer import (
    PPI_HYP_TIMER,
    PPI_NONSECURE_PHYS_TIMER,
    PPI_SECURE_PHYS_TIMER,
    PPI_VIRT_TIMER,
)

SZ_4K = 0x1000
SZ_64K = 0x1_0000
SZ_2M = 0x20_0000
SZ_64M = 0x400_0000
SZ_256M = 0x1000_0000
SZ_2G = 0x8000_0000

# --- the memory map (kvm-arch.h) ---------------------------------------------------------

ARM_IOPORT_AREA = 0x0000_0000
ARM_IOPORT_SIZE = SZ_64K
ARM_MMIO_AREA = 0x0100_0000
ARM_AXI_AREA = 0x4000_0000
ARM_MEMORY_AREA = 0x8000_0000

ARM_UART_MMIO_BASE = ARM_MMIO_AREA
ARM_UART_MMIO_SIZE = 0x1_0000
SERIAL8250_NR_PORTS = 4  # ttyS0..ttyS3
SERIAL8250_PORT_STRIDE = 0x1000
SERIAL8250_REG_SIZE = 8  # the DT `reg` size: eight byte-wide registers, reg-shift 0
SERIAL8250_MMIO_WINDOW = 0x1000  # dispatch window per port; offsets >= 8 read as zero

ARM_RTC_MMIO_BASE = ARM_UART_MMIO_BASE + ARM_UART_MMIO_SIZE
ARM_RTC_MMIO_SIZE = 0x1_0000

ARM_PVTIME_BASE = ARM_RTC_MMIO_BASE + ARM_RTC_MMIO_SIZE
ARM_PVTIME_SIZE = SZ_64K

KVM_FLASH_MMIO_BASE = ARM_MMIO_AREA + 0x100_0000
KVM_FLASH_MAX_SIZE = 0x100_0000

ARM_GIC_DIST_SIZE = GICD_SIZE
ARM_GIC_CPUI_SIZE = 0x2_0000
ARM_GIC_SIZE = ARM_GIC_DIST_SIZE + ARM_GIC_CPUI_SIZE
ARM_GIC_DIST_BASE = ARM_AXI_AREA - ARM_GIC_DIST_SIZE
ARM_GIC_CPUI_BASE = ARM_GIC_DIST_BASE - ARM_GIC_CPUI_SIZE  # GICv2 only
ARM_GIC_REDIST_SIZE = GICR_SIZE  # one GICv3 redistributor (RD + SGI frames) per vCPU

KVM_VIRTIO_MMIO_AREA = KVM_FLASH_MMIO_BASE + KVM_FLASH_MAX_SIZE
ARM_VIRTIO_MMIO_SIZE = ARM_AXI_AREA - (KVM_VIRTIO_MMIO_AREA + ARM_GIC_SIZE)
VIRTIO_MMIO_IO_SIZE = 0x200

KVM_PCI_CFG_AREA = ARM_AXI_AREA
ARM_PCI_CFG_SIZE = 1 << 28
KVM_PCI_MMIO_AREA = KVM_PCI_CFG_AREA + ARM_PCI_CFG_SIZE
ARM_PCI_MMIO_SIZE = ARM_MEMORY_AREA - (ARM_AXI_AREA + ARM_PCI_CFG_SIZE)

# GIC interrupt numbering (arm-common/gic.h). kvmtool hands out device lines from the
# first SPI upwards in registration order (irq__alloc_line, KVM_IRQ_OFFSET).
GIC_SGI_IRQ_BASE = SGI_BASE
GIC_PPI_IRQ_BASE = PPI_BASE
GIC_SPI_IRQ_BASE = SPI_BASE
GIC_MAX_IRQ = 255  # kvmtool keeps line numbers in a u8
KVM_IRQ_OFFSET = GIC_SPI_IRQ_BASE

# Arm generic timer PPIs (INTIDs minus 16) in the DT order secure, non-secure, virtual, hyp.
ARCH_TIMER_PPIS = (
    PPI_SECURE_PHYS_TIMER - PPI_BASE,
    PPI_NONSECURE_PHYS_TIMER - PPI_BASE,
    PPI_VIRT_TIMER - PPI_BASE,
    PPI_HYP_TIMER - PPI_BASE,
)

# --- image placement constants (arm/kvm.c, include/kvm/fdt.h, kvm-config.h) ---------------

FDT_MAX_SIZE = SZ_64K
FDT_ALIGN = SZ_2M
ARM_KERN_OFFSET_DEFAULT = 0x80000  # TEXT_OFFSET assumed when the Image header says nothing
LOWMEM_LIMIT = SZ_256M  # Linux needs DTB and initrd inside the first 256 MiB (lowmem)
INITRD_ALIGN = 4  # kvmtool's: the initrd ends at least 4 bytes below the DTB
MIN_RAM_SIZE = SZ_64M
DEFAULT_RAM_PER_CPU = SZ_64M


class MemoryLayoutError(ValueError):
    """A memory option or image placement that kvmtool would refuse; the message is one line."""


def serial_iobase(port: int) -> int:
    if not 0 <= port < SERIAL8250_NR_PORTS:
        raise MemoryLayoutError(f"no 8250 port {port}: kvmtool has ports 0..{SERIAL8250_NR_PORTS - 1}")
    return ARM_UART_MMIO_BASE + port * SERIAL8250_PORT_STRIDE


def gic_redists_size(nrcpus: int) -> int:
    return nrcpus * ARM_GIC_REDIST_SIZE


def gic_redists_base(nrcpus: int) -> int:
    """GICv3 redistributors sit directly below the distributor, one 128 KiB frame pair per vCPU."""
    return ARM_GIC_DIST_BASE - gic_redists_size(nrcpus)


def vcpu_mpidr(vcpu_id: int) -> int:
    """The MPIDR affinity KVM gives vCPU `vcpu_id` at reset (Aff0 holds 16 CPUs, then Aff1, Aff2)."""
    return (vcpu_id & 0xF) | (((vcpu_id >> 4) & 0xFF) << 8) | (((vcpu_id >> 12) & 0xFF) << 16)


def default_ram_size(nrcpus: int) -> int:
    """kvmtool's default guest RAM: 64 MiB per vCPU plus 192 MiB (no host-RAM cap in the model)."""
    return DEFAULT_RAM_PER_CPU * (nrcpus + 3)


# --- `-m size[@addr]` ------------------------------------------------------------------

_UNIT_SHIFT = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_MEM_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)([bBkKmMgGtTpP]?)")


def parse_mem_size(text: str) -> int:
    """One `size[BKMGTP]` quantity. Decimal numbers default to MiB, as in kvmtool; a 0x-prefixed
    number without a unit is a byte count (nobody means 0x90000000 MiB)."""
    m = _MEM_NUMBER.fullmatch(text.strip())
    if m is None:
        raise MemoryLayoutError(f"Invalid memory specifier: {text!r}")
    digits, unit = m.groups()
    is_hex = digits[:2].lower() == "0x"
    value = int(digits, 16 if is_hex else 10)
    shift = _UNIT_SHIFT[unit.lower()] if unit else (0 if is_hex else 20)
    return value << shift


def parse_mem_option(arg: str, default_addr: int = ARM_MEMORY_AREA) -> tuple[int, int]:
    """`-m size[@addr]` -> (ram_size, ram_addr). Rejects zero sizes, a missing address after '@',
    and RAM below the 2 GiB I/O region (kvmtool's validate_mem_cfg)."""
    size_text, at, addr_text = arg.partition("@")
    size = parse_mem_size(size_text)
    if size == 0:
        raise MemoryLayoutError(f"Invalid RAM size: {arg!r}")
    addr = default_addr
    if at:
        if not addr_text:
            raise MemoryLayoutError(f"Missing memory address: {arg!r}")
        addr = parse_mem_size(addr_text)
    check_ram(addr, size)
    return size, addr


def check_ram(ram_addr: int, ram_size: int) -> None:
    if ram_size <= 0:
        raise MemoryLayoutError(f"Invalid RAM size: {ram_size:#x}")
    if ram_addr < ARM_MEMORY_AREA:
        raise MemoryLayoutError(
            f"RAM address {ram_addr:#x} is below the I/O region ending at {ARM_MEMORY_AREA >> 30}GB"
        )
    if ram_addr % SZ_4K or ram_size % SZ_4K:
        raise MemoryLayoutError(f"RAM {ram_size:#x}@{ram_addr:#x} is not 4 KiB aligned")


def ipa_bits_for(ram_addr: int, ram_size: int, is_realm: bool) -> int:
    """kvmtool's kvm__get_vm_type: max(32, fls(last RAM address)), plus one for a realm, whose
    top IPA bit selects the unprotected alias of the same memory."""
    last = ram_addr + ram_size - 1
    bits = max(MIN_IPA_BITS, last.bit_length()) + (1 if is_realm else 0)
    if bits > MAX_IPA_BITS:
        raise MemoryLayoutError(
            f"Memory too large for this system (needs {bits} bits, {MAX_IPA_BITS} available)"
        )
    return bits


# --- the arm64 Linux Image header ------------------------------------------------------

ARM64_IMAGE_MAGIC = b"ARM\x64"
ARM64_IMAGE_HEADER_SIZE = 64

ARM64_IMAGE_HEADER = Layout(
    "arm64_image_header",
    "Linux Documentation/arch/arm64/booting.rst, 4. Call the kernel image",
    ARM64_IMAGE_HEADER_SIZE,
    (
        Field("code0", 0x00, "I"),  # executable code (or the "MZ" of a PE/COFF stub)
        Field("code1", 0x04, "I"),
        Field("text_offset", 0x08, "Q"),  # image load offset from a 2 MiB-aligned RAM base
        Field("image_size", 0x10, "Q"),  # effective image size, BSS included; 0 on pre-3.17 kernels
        Field("flags", 0x18, "Q"),
        Field("res2", 0x20, "Q"),
        Field("res3", 0x28, "Q"),
        Field("res4", 0x30, "Q"),
        Field("magic", 0x38, "4s"),
        Field("res5", 0x3C, "I"),  # or the PE header offset
    ),
)

# flags (booting.rst): bit 0 endianness, bits 1-2 kernel page size, bit 3 physical placement.
ARM64_IMAGE_FLAG_BE = 1 << 0
ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT = 1
ARM64_IMAGE_FLAG_PAGE_SIZE_4K = 1
ARM64_IMAGE_FLAG_PAGE_SIZE_16K = 2
ARM64_IMAGE_FLAG_PAGE_SIZE_64K = 3
ARM64_IMAGE_FLAG_PHYS_BASE = 1 << 3  # 1: the image may be placed anywhere in RAM
ARM64_IMAGE_FLAGS_DEFAULT = (ARM64_IMAGE_FLAG_PAGE_SIZE_4K << ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT) | (
    ARM64_IMAGE_FLAG_PHYS_BASE
)


def arm64_branch(offset: int) -> int:
    """A64 `B <label>` at offset 0 jumping `offset` bytes forward: code0 of a built Image."""
    if offset % 4 or not -(1 << 27) <= offset < (1 << 27):
        raise ValueError(f"branch offset {offset:#x} is not encodable")
    return 0x1400_0000 | ((offset >> 2) & 0x03FF_FFFF)


@dataclass(frozen=True)
class Arm64ImageHeader:
    code0: int = 0
    code1: int = 0
    text_offset: int = ARM_KERN_OFFSET_DEFAULT
    image_size: int = 0
    flags: int = ARM64_IMAGE_FLAGS_DEFAULT
    res2: int = 0
    res3: int = 0
    res4: int = 0
    magic: bytes = ARM64_IMAGE_MAGIC
    res5: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Arm64ImageHeader | None:
        """The header at the start of `data`, or None when `data` is not an arm64 Image."""
        if len(data) < ARM64_IMAGE_HEADER_SIZE:
            return None
        fields = ARM64_IMAGE_HEADER.unpack(bytes(data[:ARM64_IMAGE_HEADER_SIZE]))
        if fields["magic"] != ARM64_IMAGE_MAGIC:
            return None
        return cls(**fields)

    def pack(self) -> bytes:
        return ARM64_IMAGE_HEADER.pack(
            code0=self.code0,
            code1=self.code1,
            text_offset=self.text_offset,
            image_size=self.image_size,
            flags=self.flags,
            res2=self.res2,
            res3=self.res3,
            res4=self.res4,
            magic=self.magic,
            res5=self.res5,
        )

    @property
    def is_big_endian(self) -> bool:
        return bool(self.flags & ARM64_IMAGE_FLAG_BE)

    @property
    def page_size(self) -> int | None:
        """Kernel page size in bytes, None when unspecified."""
        code = (self.flags >> ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT) & 0x3
        return {1: 0x1000, 2: 0x4000, 3: 0x10000}.get(code)

    @property
    def phys_base_anywhere(self) -> bool:
        return bool(self.flags & ARM64_IMAGE_FLAG_PHYS_BASE)


def build_arm64_image(
    body: bytes,
    *,
    text_offset: int = ARM_KERN_OFFSET_DEFAULT,
    image_size: int | None = None,
    flags: int = ARM64_IMAGE_FLAGS_DEFAULT,
    entry_offset: int = ARM64_IMAGE_HEADER_SIZE,
) -> bytes:
    """Header + body. code0 branches to `entry_offset` (by default the first byte after the
    header); image_size defaults to the whole file, i.e. no BSS beyond it."""
    total = ARM64_IMAGE_HEADER_SIZE + len(body)
    header = Arm64ImageHeader(
        code0=arm64_branch(entry_offset),
        text_offset=text_offset,
        image_size=total if image_size is None else image_size,
        flags=flags,
    )
    return header.pack() + body


TextOffsetHook = Callable[[bytes], int | None]


def kernel_text_offset(kernel: bytes, override: int | TextOffsetHook | None = None) -> int:
    """Where the kernel goes relative to the RAM base (kvm__arch_get_kern_offset).

    `override` may be an explicit offset, or a callable for non-Image kernels that returns an
    offset or None to fall back. Otherwise an Image header with a non-zero image_size supplies
    text_offset, and anything else gets 0x80000."""
    if isinstance(override, int):
        return override
    if override is not None:
        found = override(kernel)
        if found is not None:
            return found
    header = Arm64ImageHeader.parse(kernel)
    if header is not None and header.image_size:
        return header.text_offset
    return ARM_KERN_OFFSET_DEFAULT


def kernel_mem_size(kernel: bytes) -> int:
    """Bytes the kernel occupies once running: the header's image_size if given, else the file."""
    header = Arm64ImageHeader.parse(kernel)
    if header is not None and header.image_size:
        return max(header.image_size, len(kernel))
    return len(kernel)


# --- placement ---------------------------------------------------------------------------


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _align_down(value: int, align: int) -> int:
    return value & ~(align - 1)


def fdt_start(ram_base: int, ram_size: int) -> int:
    """Where kvmtool puts the DTB: FDT_ALIGN-aligned, FDT_MAX_SIZE + FDT_ALIGN below the last
    byte of lowmem (min(RAM, 256 MiB))."""
    limit = ram_base + min(ram_size, LOWMEM_LIMIT) - 1
    return _align_up(limit - (FDT_MAX_SIZE + FDT_ALIGN), FDT_ALIGN)


def initrd_start_below(dtb_start: int, initrd_size: int) -> int:
    """kvmtool's initrd placement: INITRD_ALIGN-aligned, its size plus INITRD_ALIGN below
    the DTB. In a realm the initrd's first granule is populated from its granule base (the
    bytes before it zero), so it may share that granule with nothing else."""
    return _align_up(dtb_start - initrd_size - INITRD_ALIGN, INITRD_ALIGN)


@dataclass(frozen=True)
class GuestLayout:
    """Where kvmtool puts the kernel, initrd and DTB in guest RAM, and the VM's IPA width."""

    ram_base: int
    ram_size: int
    is_realm: bool
    kernel_start: int
    kernel_file_size: int
    kernel_end: int  # end of the kernel's memory footprint; 4 KiB-aligned for a realm
    dtb_start: int
    initrd_start: int
    initrd_size: int
    ipa_bits: int
    dtb_size: int = FDT_MAX_SIZE

    @classmethod
    def compute(
        cls,
        ram_base: int,
        ram_size: int,
        kernel_size: int,
        kernel_text_offset: int = ARM_KERN_OFFSET_DEFAULT,
        initrd_size: int = 0,
        is_realm: bool = False,
        kernel_image_size: int = 0,
    ) -> GuestLayout:
        """`kernel_size` is the file size; `kernel_image_size` the Image header's effective size
        (BSS included), 0 when unknown."""
        check_ram(ram_base, ram_size)
        if kernel_size <= 0:
            raise MemoryLayoutError("kernel image is empty")
        if kernel_text_offset < 0 or initrd_size < 0:
            raise MemoryLayoutError("kernel offset and initrd size must not be negative")
        ipa_bits = ipa_bits_for(ram_base, ram_size, is_realm)

        lowmem_end = ram_base + min(ram_size, LOWMEM_LIMIT)  # exclusive
        limit = lowmem_end - 1  # kvmtool's `limit`: the last lowmem byte

        kernel_start = ram_base + kernel_text_offset
        if kernel_start + kernel_size > limit:
            raise MemoryLayoutError(
                f"kernel image too big to contain in guest memory "
                f"({kernel_size:#x} bytes at {kernel_start:#x}, lowmem ends at {lowmem_end:#x})"
            )
        kernel_end = kernel_start + max(kernel_size, kernel_image_size)
        if is_realm:
            # No two images may share a granule: each one is populated as whole granules.
            kernel_end = _align_up(kernel_end, GRANULE_SIZE)

        # Load backwards from the top of lowmem so the kernel has room to decompress / grow.
        dtb_start = fdt_start(ram_base, ram_size)
        if dtb_start < ram_base:
            raise MemoryLayoutError(f"RAM of {ram_size:#x} bytes is too small to hold the fdt")
        if dtb_start < kernel_end:
            raise MemoryLayoutError(
                f"fdt overlaps with kernel image (fdt at {dtb_start:#x}, kernel ends at {kernel_end:#x})"
            )

        initrd_start = dtb_start
        if initrd_size:
            initrd_start = initrd_start_below(dtb_start, initrd_size)
            if initrd_start < ram_base:
                raise MemoryLayoutError(f"initrd too big to contain in guest memory ({initrd_size:#x} bytes)")
            if initrd_start < kernel_end:
                raise MemoryLayoutError(
                    f"initrd overlaps with kernel image (initrd at {initrd_start:#x}, "
                    f"kernel ends at {kernel_end:#x})"
                )

        return cls(
            ram_base=ram_base,
            ram_size=ram_size,
            is_realm=is_realm,
            kernel_start=kernel_start,
            kernel_file_size=kernel_size,
            kernel_end=kernel_end,
            dtb_start=dtb_start,
            initrd_start=initrd_start,
            initrd_size=initrd_size,
            ipa_bits=ipa_bits,
        )

    @classmethod
    def for_images(
        cls,
        ram_base: int,
        ram_size: int,
        kernel: bytes,
        initrd: bytes | None = None,
        is_realm: bool = False,
        text_offset: int | TextOffsetHook | None = None,
    ) -> GuestLayout:
        """compute() with the offset and footprint read from the kernel bytes themselves."""
        header = Arm64ImageHeader.parse(kernel)
        return cls.compute(
            ram_base,
            ram_size,
            kernel_size=len(kernel),
            kernel_text_offset=kernel_text_offset(kernel, text_offset),
            initrd_size=len(initrd) if initrd else 0,
            is_realm=is_realm,
            kernel_image_size=header.image_size if header is not None else 0,
        )

    @property
    def ram_end(self) -> int:
        return self.ram_base + self.ram_size

    @property
    def last_ram_address(self) -> int:
        return self.ram_end - 1

    @property
    def kernel_file_end(self) -> int:
        return self.kernel_start + self.kernel_file_size

    @property
    def dtb_end(self) -> int:
        return self.dtb_start + self.dtb_size

    @property
    def initrd_end(self) -> int:
        return self.initrd_start + self.initrd_size

    @property
    def has_initrd(self) -> bool:
        return self.initrd_size > 0

    @property
    def unprotected_ipa_bit(self) -> int | None:
        """The realm's unprotected-alias bit, 1 << (ipa_bits - 1); None for a normal VM."""
        return unprotected_bit(self.ipa_bits) if self.is_realm else None


# --- device address and line allocation --------------------------------------------------


class VirtioMmioSpace:
    """kvmtool's virtio_mmio_get_io_space_block: 0x200-byte windows in registration order."""

    def __init__(self, base: int = KVM_VIRTIO_MMIO_AREA, size: int = ARM_VIRTIO_MMIO_SIZE) -> None:
        self._next = base
        self._end = base + size

    def alloc(self, size: int = VIRTIO_MMIO_IO_SIZE) -> int:
        if self._next + size > self._end:
            raise MemoryLayoutError("virtio-mmio window space exhausted")
        addr = self._next
        self._next += size
        return addr


class IrqLines:
    """kvmtool's irq__alloc_line: GIC INTIDs handed out from the first SPI in registration order."""

    def __init__(self, first: int = KVM_IRQ_OFFSET) -> None:
        self._first = first
        self._next = first

    def alloc(self) -> int:
        if self._next > GIC_MAX_IRQ:
            raise MemoryLayoutError("no more interrupt lines")
        irq = self._next
        self._next += 1
        return irq

    @property
    def allocated(self) -> int:
        """irq__get_nr_allocated_lines: how many lines were handed out."""
        return self._next - self._first
