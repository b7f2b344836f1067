"""The device tree reader the kernel boots with: the flattened blob's header and its
structure block (Devicetree Specification v0.4 chapter 5; layouts in arch/fdt.py) into a
tree of nodes and their properties.

Every offset is checked before it is used: the blob holds `totalsize` bytes, the structure
and strings blocks lie inside it, every token is 4-byte aligned and inside the structure
block, names are NUL-terminated inside their block, and the tokens nest (one root node,
then FDT_END). A version 16 blob (no size_dt_struct) is read to the end of the blob.
Malformed input raises FdtError with a one-line reason, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..arch.fdt import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_HEADER,
    FDT_MAGIC,
    FDT_NOP,
    FDT_PROP,
    FDT_PROP_HEADER,
    FDT_VERSION,
)

FIRST_VERSION = 16  # the oldest layout this reader knows (v16: no size_dt_struct)
_TOKEN = struct.Struct(">I")
_PROP = struct.Struct(FDT_PROP_HEADER.format.replace("III", "II"))  # FDT_PROP_HEADER after its token: len, nameoff


class FdtError(ValueError):
    """Not a well-formed flattened device tree."""


@dataclass
class Node:
    name: str  # node-name@unit-address; "" for the root
    props: list[tuple[str, bytes]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    def prop(self, name: str) -> bytes | None:
        """The value of the first property called `name` (libfdt's fdt_getprop)."""
        return next((value for pname, value in self.props if pname == name), None)

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)


def read_fdt(blob: bytes) -> Node:
    """The root node of the tree in `blob`."""
    if len(blob) < FDT_HEADER.size:
        raise FdtError(f"truncated header ({len(blob)} bytes)")
    (magic, totalsize, off_struct, off_strings, _off_rsvmap, version, last_comp, _boot_cpu, size_strings,
     size_struct) = FDT_HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise FdtError(f"bad magic {magic:#x}")
    if version < FIRST_VERSION or last_comp > FDT_VERSION:
        raise FdtError(f"version {version} (last compatible {last_comp}) is not readable")
    if not FDT_HEADER.size <= totalsize <= len(blob):
        raise FdtError(f"totalsize {totalsize} but {len(blob)} bytes")
    if version < 17:
        size_struct = totalsize - off_struct if off_struct <= totalsize else 0
    if off_struct % 4 or off_struct + size_struct > totalsize or off_struct < FDT_HEADER.size:
        raise FdtError("the structure block is outside the blob")
    if off_strings + size_strings > totalsize:
        raise FdtError("the strings block is outside the blob")
    strings = blob[off_strings : off_strings + size_strings]
    return _Walker(blob[off_struct : off_struct + size_struct], strings).tree()


class _Walker:
    def __init__(self, block: bytes, strings: bytes) -> None:
        self.block = block
        self.strings = strings
        self.pos = 0

    def token(self) -> int:
        if self.pos + 4 > len(self.block):
            raise FdtError("the structure block ends without FDT_END")
        (tok,) = _TOKEN.unpack_from(self.block, self.pos)
        self.pos += 4
        return int(tok)

    def cstring(self, data: bytes, start: int, what: str) -> str:
        end = data.find(b"\0", start)
        if end < 0:
            raise FdtError(f"{what} is not NUL-terminated")
        return data[start:end].decode("utf-8", "surrogateescape")

    def align(self) -> None:
        self.pos = (self.pos + 3) & ~3

    def tree(self) -> Node:
        tok = self.token()
        while tok == FDT_NOP:
            tok = self.token()
        if tok != FDT_BEGIN_NODE:
            raise FdtError(f"the structure block starts with token {tok:#x}, not FDT_BEGIN_NODE")
        root = self.begin_node()
        stack = [root]
        while stack:
            tok = self.token()
            if tok == FDT_BEGIN_NODE:
                node = self.begin_node()
                stack[-1].children.append(node)
                stack.append(node)
            elif tok == FDT_PROP:
                if stack[-1].children:
                    raise FdtError(f"property after a subnode in {stack[-1].name or '/'}")
                stack[-1].props.append(self.prop())
            elif tok == FDT_END_NODE:
                stack.pop()
            elif tok == FDT_END:
                raise FdtError("FDT_END inside a node")
            elif tok != FDT_NOP:
                raise FdtError(f"unknown token {tok:#x} at structure offset {self.pos - 4:#x}")
        tok = self.token()
        while tok == FDT_NOP:
            tok = self.token()
        if tok != FDT_END:
            raise FdtError(f"token {tok:#x} after the root node, not FDT_END")
        return root

    def begin_node(self) -> Node:
        end = self.block.find(b"\0", self.pos)
        if end < 0:
            raise FdtError("a node name is not NUL-terminated")
        name = self.block[self.pos : end].decode("utf-8", "surrogateescape")
        self.pos = end + 1
        self.align()
        return Node(name)

    def prop(self) -> tuple[str, bytes]:
        if self.pos + _PROP.size > len(self.block):
            raise FdtError("a property header runs past the structure block")
        length, nameoff = _PROP.unpack_from(self.block, self.pos)
        self.pos += _PROP.size
        if self.pos + length > len(self.block):
            raise FdtError(f"a property value of {length} bytes runs past the structure block")
        value = self.block[self.pos : self.pos + length]
        self.pos += length
        self.align()
        if nameoff >= len(self.strings):
            raise FdtError(f"property name offset {nameoff} is outside the strings block")
        return self.cstring(self.strings, nameoff, "a property name"), bytes(value)
