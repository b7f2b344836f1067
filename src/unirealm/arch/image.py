"""The unirealm kernel image: an arm64 Image whose body carries a Python unikernel.

Layout (all little-endian):
    0x0000  arm64 Image header, 64 bytes (Linux Documentation/arch/arm64/booting.rst);
            the VMM loads the file like any kernel, at RAM base + text_offset
    0x0040  UnikernelHeader (below)
    payload_offset  a zip archive: the guest package (`guest/`, `arch/`) and the app (`app/`)

The vCPU recognises the magic at the boot PC + 0x40 and runs the Python kernel from the
payload bytes it reads out of guest memory — so the code that runs is the code that was
loaded (and, in a realm, measured).
"""

from __future__ import annotations

from .layout import Field, Layout

UNIKERNEL_HEADER_OFFSET = 0x40
UNIKERNEL_MAGIC = b"UNIREALM"
UNIKERNEL_VERSION = 1
PAYLOAD_ALIGN = 0x1000
ENTRY_SIZE = 64

UNIKERNEL_HEADER = Layout(
    "UnikernelHeader",
    "unirealm kernel image format, version 1 (this module)",
    0xC0,
    (
        Field("magic", 0x00, "8s"),
        Field("version", 0x08, "I"),
        Field("header_size", 0x0C, "I"),
        Field("payload_offset", 0x10, "Q"),
        Field("payload_size", 0x18, "Q"),
        Field("entry", 0x20, f"{ENTRY_SIZE}s"),  # "module:function" inside the payload
        Field("bss_size", 0x60, "Q"),  # memory the kernel claims past the file (RIPAS RAM at load)
        Field("payload_sha256", 0x68, "32s"),
    ),
)

# Paths inside the payload zip
PAYLOAD_GUEST_PACKAGE = "guest/"
PAYLOAD_ARCH_PACKAGE = "arch/"
PAYLOAD_APP_DIR = "app/"
PAYLOAD_VDSO = "vdso/linux-vdso.so.1"  # built from guest/asm/vdso.S
DEFAULT_ENTRY = "guest.kernel:boot"
