"""What the virtio device tests share: a flat PA-addressed memory standing in for the
machine's memory accessors."""

from __future__ import annotations


class FlatMemory:
    """A host memory object addressed by PA (as machine.memory accessors are)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.buf = bytearray(size)

    def read(self, pa: int, size: int) -> bytes:
        off = pa - self.base
        assert off >= 0 and off + size <= len(self.buf)
        return bytes(self.buf[off : off + size])

    def write(self, pa: int, data: bytes) -> None:
        off = pa - self.base
        assert off >= 0 and off + len(data) <= len(self.buf)
        self.buf[off : off + len(data)] = data
