"""The newc ("new ASCII") cpio format, as the Linux kernel unpacks an initramfs.

Spec: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst. Each member
is a 110-byte header of ASCII hex fields, the NUL-terminated name padded so the header plus
name is a multiple of 4 bytes, then the data padded to a multiple of 4. The archive ends
with a member named "TRAILER!!!". Several archives may follow one another (with zero
padding between them), and each may be gzip-compressed; `iter_archive` handles both.

Used by the host's writer (host/cpio.py, `unirealm initrd`) and the guest's reader
(guest/cpio.py), so the layout is written down once.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC_NEWC = b"070701"
MAGIC_CRC = b"070702"  # same layout; `check` is the sum of the data bytes
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
          "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")

S_IFMT = 0o170000
S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK = 0o140000, 0o120000, 0o100000, 0o060000
S_IFDIR, S_IFCHR, S_IFIFO = 0o040000, 0o020000, 0o010000


class CpioError(ValueError):
    """The archive is corrupt or truncated."""


@dataclass
class Entry:
    name: str
    mode: int
    data: bytes = b""
    ino: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    devmajor: int = 0
    devminor: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def pack_entry(e: Entry) -> bytes:
    name = e.name.encode("utf-8", "surrogateescape") + b"\0"  # names as the host gave them
    values = (e.ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, len(e.data), e.devmajor, e.devminor,
              e.rdevmajor, e.rdevminor, len(name), 0)
    header = MAGIC_NEWC + b"".join(b"%08X" % (v & 0xFFFFFFFF) for v in values)
    out = header + name + b"\0" * _pad4(HEADER_SIZE + len(name)) + e.data + b"\0" * _pad4(len(e.data))
    return out


def pack_archive(entries: list[Entry]) -> bytes:
    body = b"".join(pack_entry(e) for e in entries)
    body += pack_entry(Entry(TRAILER, 0, nlink=1))
    return body + b"\0" * ((-len(body)) % 512)  # GNU cpio pads to its 512-byte block


def _parse(data: bytes, pos: int) -> tuple[list[Entry], int]:
    """One uncompressed archive starting at `pos`; returns its entries and the end offset."""
    entries: list[Entry] = []
    while True:
        if pos + HEADER_SIZE > len(data):
            raise CpioError(f"truncated cpio header at offset {pos}")
        magic = data[pos : pos + 6]
        if magic not in (MAGIC_NEWC, MAGIC_CRC):
            raise CpioError(f"bad cpio magic {magic!r} at offset {pos} (only newc is supported)")
        try:
            values = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise CpioError(f"corrupt cpio header at offset {pos}") from None
        f = dict(zip(FIELDS, values, strict=True))
        name_start = pos + HEADER_SIZE
        name_end = name_start + f["namesize"]
        if f["namesize"] == 0 or name_end > len(data):
            raise CpioError(f"truncated cpio name at offset {pos}")
        name = data[name_start : name_end - 1].decode("utf-8", "surrogateescape")
        data_start = name_end + _pad4(HEADER_SIZE + f["namesize"])
        data_end = data_start + f["filesize"]
        if data_end > len(data):
            raise CpioError(f"truncated cpio data for {name!r}")
        pos = data_end + _pad4(f["filesize"])
        if name == TRAILER:
            return entries, pos
        entries.append(Entry(name, f["mode"], bytes(data[data_start:data_end]), f["ino"], f["uid"], f["gid"],
                             f["nlink"], f["mtime"], f["devmajor"], f["devminor"], f["rdevmajor"], f["rdevminor"]))


def iter_archive(data: bytes) -> Iterator[Entry]:
    """Every member of one or more concatenated (optionally gzip-compressed) newc archives.
    Hard links (same ino and dev, nlink > 1) get the data of the member that carries it."""
    pos = 0
    links: dict[tuple[int, int, int], bytes] = {}
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if data[pos : pos + 2] == b"\x1f\x8b":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                inner = d.decompress(data[pos:])
            except zlib.error as exc:
                raise CpioError(f"corrupt gzip data: {exc}") from None
            if not d.eof:
                raise CpioError("truncated gzip data")
            yield from iter_archive(inner)
            pos = len(data) - len(d.unused_data)
            continue
        entries, pos = _parse(data, pos)
        for e in entries:
            key = (e.ino, e.devmajor, e.devminor)
            if (e.mode & S_IFMT) == S_IFREG and e.nlink > 1:
                if e.data:
                    links[key] = e.data
                else:
                    e.data = links.get(key, b"")
            yield e


def gzip_archive(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
