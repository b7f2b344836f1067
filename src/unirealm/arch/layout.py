"""A small declarative little-endian struct helper for the spec's fixed-offset layouts.

The RMM spec describes its ABI structures as fields at fixed offsets inside a zero-padded
granule (e.g. RmiRealmParams, DEN0137 B3.4.x). `struct` alone cannot express gaps and
arrays at arbitrary offsets without hand-computed pad bytes, so each layout lists
(name, offset, format) once and this module packs and unpacks it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    fmt: str  # a struct format without byte-order prefix, e.g. "Q", "B", "64s", "31Q"

    # Derived once per field (a REC exit packs and unpacks its run page's fields every time).
    @cached_property
    def size(self) -> int:
        return self.packer.size

    @cached_property
    def is_array(self) -> bool:
        return self.fmt[:-1].isdigit() and self.fmt[-1] != "s"

    @cached_property
    def count(self) -> int:
        """Elements of an array field."""
        return int(self.fmt[:-1]) if self.is_array else 1

    @cached_property
    def packer(self) -> struct.Struct:
        return struct.Struct("<" + self.fmt)


@dataclass(frozen=True)
class Layout:
    """A byte layout: a name, its spec section, its total size and its fields."""

    name: str
    section: str
    size: int
    fields: tuple[Field, ...]
    _by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        end = 0
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.offset < end:
                raise ValueError(f"{self.name}: field {f.name} overlaps the previous one")
            end = f.offset + f.size
            self._by_name[f.name] = f
        if end > self.size:
            raise ValueError(f"{self.name}: fields run past {self.size} bytes")

    def compiled(self) -> struct.Struct:
        """One struct.Struct for the whole layout (gaps as pad bytes), its values in field
        order: for hot paths packing a layout of scalar and byte-string fields at once."""
        fmt, end = "<", 0
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.is_array:
                raise ValueError(f"{self.name}: field {f.name} is an array")
            fmt += f"{f.offset - end}x{f.fmt}" if f.offset > end else f.fmt
            end = f.offset + f.size
        return struct.Struct(fmt + (f"{self.size - end}x" if self.size > end else ""))

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def offset(self, name: str) -> int:
        return self._by_name[name].offset

    def unpack(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        if len(data) < self.size:
            raise ValueError(f"{self.name}: need {self.size} bytes, got {len(data)}")
        out: dict[str, Any] = {}
        for f in self.fields:
            vals = f.packer.unpack_from(data, f.offset)
            out[f.name] = list(vals) if f.is_array else vals[0]
        return out

    def pack(self, /, **values: Any) -> bytes:
        buf = bytearray(self.size)
        self.pack_into(buf, 0, **values)
        return bytes(buf)

    def pack_into(self, buf: bytearray | memoryview, base: int, /, **values: Any) -> None:
        for name, value in values.items():
            f = self._by_name.get(name)
            if f is None:
                raise KeyError(f"{self.name} has no field {name!r}")
            if f.is_array:
                count = f.count
                vals = list(value) + [0] * (count - len(value))
                f.packer.pack_into(buf, base + f.offset, *vals[:count])
            else:
                f.packer.pack_into(buf, base + f.offset, value)
