"""Building and checking unirealm kernel images (layout: arch/image.py).

The payload zip is deterministic (sorted names, fixed timestamps, no extra fields), so the
same sources and app always give the same bytes — and so the same RIM.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import zipfile
from dataclasses import dataclass
from pathlib import Path

import unirealm
from unirealm.arch.image import (
    DEFAULT_ENTRY,
    PAYLOAD_ALIGN,
    PAYLOAD_APP_DIR,
    PAYLOAD_BYTECODE_SUFFIX,
    PAYLOAD_VDSO,
    PYC_FLAGS_CHECKED_HASH,
    PYC_HEADER,
    PYC_MARSHAL_VERSION,
    UNIKERNEL_HEADER,
    UNIKERNEL_HEADER_OFFSET,
    UNIKERNEL_MAGIC,
    UNIKERNEL_VERSION,
    compile_member,
)
from unirealm.arch.memory import GRANULE_SIZE

from .memmap import ARM64_IMAGE_HEADER_SIZE, ARM_KERN_OFFSET_DEFAULT, Arm64ImageHeader, arm64_branch
from .toolchain import vdso

KERNEL_BSS = 64 << 10  # boot memory the kernel claims past its file (RIPAS RAM from load)
ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)
PACKAGE_ROOT = Path(unirealm.__file__).parent


class ImageFormatError(ValueError):
    """The file is not a usable unirealm kernel image."""


@dataclass(frozen=True)
class ImageInfo:
    size: int
    payload_offset: int
    payload_size: int
    entry: str
    bss_size: int
    files: tuple[str, ...]


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def bytecode(member: str, source: bytes) -> bytes:
    """NAME.pyc of an image's module NAME.py (arch/image.py): compiled as the kernel's loader
    compiles it, marshalled reproducibly."""
    header = PYC_HEADER.pack(magic=importlib.util.MAGIC_NUMBER, flags=PYC_FLAGS_CHECKED_HASH,
                             source_hash=importlib.util.source_hash(source))
    return header + marshal.dumps(compile_member(member, source), PYC_MARSHAL_VERSION)


def payload_zip(app: bytes | None, app_name: str = "app", extra: dict[str, bytes] | None = None) -> bytes:
    files: dict[str, bytes] = {}
    for package in ("guest", "arch"):
        for path in sorted((PACKAGE_ROOT / package).rglob("*.py")):
            member, source = path.relative_to(PACKAGE_ROOT).as_posix(), path.read_bytes()
            files[member] = source
            files[member + PAYLOAD_BYTECODE_SUFFIX] = bytecode(member, source)
    files[PAYLOAD_VDSO] = vdso()
    if app is not None:
        files[PAYLOAD_APP_DIR + app_name] = app
    for name, data in (extra or {}).items():
        files[name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            _add(zf, name, files[name])
    return buf.getvalue()


def build_image(app: bytes | None, app_name: str = "app", extra: dict[str, bytes] | None = None) -> bytes:
    payload = payload_zip(app, app_name, extra)
    payload_offset = PAYLOAD_ALIGN
    file_size = payload_offset + len(payload)
    image_size = -(-file_size // GRANULE_SIZE) * GRANULE_SIZE + KERNEL_BSS
    arm64 = Arm64ImageHeader(
        code0=arm64_branch(UNIKERNEL_HEADER_OFFSET),
        text_offset=ARM_KERN_OFFSET_DEFAULT,
        image_size=image_size,
    )
    header = UNIKERNEL_HEADER.pack(
        magic=UNIKERNEL_MAGIC,
        version=UNIKERNEL_VERSION,
        header_size=UNIKERNEL_HEADER.size,
        payload_offset=payload_offset,
        payload_size=len(payload),
        entry=DEFAULT_ENTRY.encode(),
        bss_size=KERNEL_BSS,
        payload_sha256=hashlib.sha256(payload).digest(),
    )
    image = bytearray(file_size)
    image[:ARM64_IMAGE_HEADER_SIZE] = arm64.pack()
    image[UNIKERNEL_HEADER_OFFSET : UNIKERNEL_HEADER_OFFSET + len(header)] = header
    image[payload_offset:] = payload
    return bytes(image)


def inspect_image(data: bytes) -> ImageInfo | None:
    """The unikernel header of `data`, None if it is not a unirealm image at all; raises
    ImageFormatError when it claims to be one but is truncated or inconsistent."""
    if len(data) < UNIKERNEL_HEADER_OFFSET + UNIKERNEL_HEADER.size:
        head = data[UNIKERNEL_HEADER_OFFSET : UNIKERNEL_HEADER_OFFSET + 8]
        if head and head == UNIKERNEL_MAGIC[: len(head)]:
            raise ImageFormatError("truncated unirealm image (header cut short)")
        return None
    h = UNIKERNEL_HEADER.unpack(data[UNIKERNEL_HEADER_OFFSET:])
    if h["magic"] != UNIKERNEL_MAGIC:
        return None
    if h["version"] != UNIKERNEL_VERSION:
        raise ImageFormatError(f"unirealm image version {h['version']} is not supported")
    end = h["payload_offset"] + h["payload_size"]
    if end > len(data):
        raise ImageFormatError(f"truncated unirealm image: {len(data)} bytes, header says {end}")
    payload = data[h["payload_offset"] : end]
    if hashlib.sha256(payload).digest() != h["payload_sha256"]:
        raise ImageFormatError("unirealm image payload does not match its hash")
    try:
        files = tuple(zipfile.ZipFile(io.BytesIO(payload)).namelist())
    except zipfile.BadZipFile:
        raise ImageFormatError("unirealm image payload is not a zip archive") from None
    entry = h["entry"].rstrip(b"\0").decode("ascii", "replace")
    return ImageInfo(len(data), h["payload_offset"], h["payload_size"], entry, h["bss_size"], files)
