"""A small declarative little-endian struct helper for the spec's fixed-offset layouts.

The RMM spec describes its ABI structures as fields at fixed offsets inside a zero-padded
granule (e.g. RmiRealmParams, DEN0137 B3.4.x). `struct` alone cannot express gaps and
arrays at arbitrary offsets without hand-computed pad bytes, so each layout lists
(name, offset, format) once and this module packs and unpacks it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
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

    def span(self, names: Iterable[str], start: int, end: int) -> Span:
        """A compiled codec for the bytes [start, end) of this layout holding the fields `names`
        (the other bytes of the span pack as zeros): one struct for a hot path that reads or
        writes one part of a layout, e.g. RmiRecEnter or RmiRecExit of RmiRecRun."""
        return Span(self, tuple(self._by_name[n] for n in names), start, end)

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


class Span:
    """Fields of a Layout in [start, end), packed and unpacked by one struct.Struct for the
    scalars (the arrays' bytes as padding in it) and one per array; bytes of the span outside
    the fields pack as zeros. Arrays unpack as lists; packing pads a short array with zeros
    and a missing field is zero."""

    def __init__(self, layout: Layout, fields: tuple[Field, ...], start: int, end: int) -> None:
        self.layout, self.start, self.end = layout, start, end
        self.fields = tuple(sorted(fields, key=lambda f: f.offset))
        fmt, at = "<", start
        scalars: list[str] = []
        self._arrays: list[tuple[str, int, struct.Struct, int]] = []  # name, offset in the span, codec, count
        for f in self.fields:
            if f.offset < at or f.offset + f.size > end:
                raise ValueError(f"{layout.name}: field {f.name} is outside [{start:#x}, {end:#x})")
            fmt += f"{f.offset - at}x" if f.offset > at else ""
            if f.is_array:
                fmt += f"{f.size}x"
                self._arrays.append((f.name, f.offset - start, f.packer, f.count))
            else:
                fmt += f.fmt
                scalars.append(f.name)
            at = f.offset + f.size
        self.packer = struct.Struct(fmt + (f"{end - at}x" if end > at else ""))
        self.size = self.packer.size
        self._scalars = tuple(scalars)
        # Packing: one struct with the arrays inline, fed one flat argument list.
        full, at = "<", start
        for f in self.fields:
            full += (f"{f.offset - at}x" if f.offset > at else "") + f.fmt
            at = f.offset + f.size
        self._full = struct.Struct(full + (f"{end - at}x" if end > at else ""))
        # Each field's place in that flat list (and its element count for an array), and the
        # list of zeros a pack starts from: a pack only places the fields it is given.
        slots: dict[str, tuple[int, int]] = {}
        position = 0
        for f in self.fields:
            slots[f.name] = (position, f.count if f.is_array else 0)
            position += f.count if f.is_array else 1
        self._slots = slots
        self._zeros = [0] * position

    def unpack(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """The fields from `data`, the span's bytes (data[0] is the layout's byte `start`)."""
        out = dict(zip(self._scalars, self.packer.unpack_from(data, 0), strict=True))
        for name, offset, packer, _ in self._arrays:
            out[name] = list(packer.unpack_from(data, offset))
        return out

    def pack(self, /, **values: Any) -> bytes:
        """The span's bytes: each named field, zero elsewhere."""
        slots = self._slots
        args = self._zeros.copy()
        for name, value in values.items():
            slot = slots.get(name)
            if slot is None:
                raise KeyError(f"{self.layout.name} span has no field {name!r}")
            at, count = slot
            if not count:
                args[at] = value
            elif value:  # None or empty: zeros
                n = len(value)
                if n > count:
                    value, n = value[:count], count
                args[at : at + n] = value
        return self._full.pack(*args)
