"""The unirealm kernel image: an arm64 Image whose body carries a Python unikernel.

Layout (all little-endian):
    0x0000  arm64 Image header, 64 bytes (Linux Documentation/arch/arm64/booting.rst);
            the VMM loads the file like any kernel, at RAM base + text_offset
    0x0040  UnikernelHeader (below)
    payload_offset  a zip archive: the guest package (`guest/`, `arch/`) and the app (`app/`);
            next to each module NAME.py its bytecode NAME.pyc (PYC_HEADER, then the code
            object marshalled at version 2), which the kernel's loader runs instead of
            compiling NAME.py when the header names this interpreter and NAME.py's hash

The vCPU recognises the magic at the boot PC + 0x40 and runs the Python kernel from the
payload bytes it reads out of guest memory — so the code that runs is the code that was
loaded (and, in a realm, measured).
"""

from __future__ import annotations

from typing import Any

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
PAYLOAD_BYTECODE_SUFFIX = "c"  # NAME.py -> NAME.pyc

# A hash-based pyc header (PEP 552): the interpreter's magic number, flags (bit 0: hash-based,
# bit 1: check the source), and importlib.util.source_hash of the module's source.
PYC_HEADER = Layout(
    "PycHeader",
    "PEP 552 deterministic pyc, hash-based and checked",
    16,
    (
        Field("magic", 0x00, "4s"),
        Field("flags", 0x04, "I"),
        Field("source_hash", 0x08, "8s"),
    ),
)
PYC_FLAGS_CHECKED_HASH = 0b11
# marshal version 2: no object references, whose use depends on reference counts; the same
# code gives the same bytes in any process (the image, and so the RIM, is reproducible).
PYC_MARSHAL_VERSION = 2
DEFAULT_ENTRY = "guest.kernel:boot"


def compile_member(member: str, source: bytes) -> Any:
    """A module of an image as the kernel's loader compiles it, and its NAME.pyc is made (a
    code object; `types` is not among the guest's imports)."""
    return compile(source, f"image://{member}", "exec")
