from __future__ import annotations

import pytest

from unirealm.host.devices.mmio import MmioBus, MmioDevice, MmioError, MmioOverlapError


class Regs:
    """A plain register file: 8-byte little-endian cells."""

    def __init__(self) -> None:
        self.cells: dict[int, int] = {}
        self.log: list[tuple[str, int, int, int]] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0))
        return self.cells.get(offset, 0xFFFF_FFFF_FFFF_FFFF)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.cells[offset] = value


def test_protocol_check():
    assert isinstance(Regs(), MmioDevice)


def test_dispatch_relative_offsets():
    bus = MmioBus()
    a, b = Regs(), Regs()
    bus.register(0x0100_0000, 0x1000, a, "uart0")
    bus.register(0x0300_0000, 0x200, b, "virtio0")
    assert bus.write(0x0300_0010, 4, 0x1234).handled
    assert b.log == [("w", 0x10, 4, 0x1234)]
    res = bus.read(0x0300_0010, 4)
    assert res.handled and res.value == 0x1234 and res.region is not None and res.region.name == "virtio0"
    # read values are truncated to the access size
    assert bus.read(0x0100_0000, 1).value == 0xFF
    assert a.log == [("r", 0, 1, 0)]


def test_unclaimed_access_is_flagged():
    bus = MmioBus()
    bus.register(0x1000, 0x100, Regs())
    for addr in (0x0FFF, 0x1100, 0x0, 0x4000_0000):
        r = bus.read(addr, 4)
        assert not r.handled and r.value == 0 and r.region is None
        assert not bus.write(addr, 4, 1).handled


def test_access_straddling_window_end_is_unclaimed():
    bus = MmioBus()
    dev = Regs()
    bus.register(0x1000, 0x100, dev)
    assert not bus.read(0x10FC, 8).handled
    assert bus.read(0x10F8, 8).handled
    assert len(dev.log) == 1


def test_write_value_masked_to_size():
    bus = MmioBus()
    dev = Regs()
    bus.register(0x1000, 0x100, dev)
    bus.write(0x1000, 1, 0x1FF)
    assert dev.cells[0] == 0xFF


@pytest.mark.parametrize(
    ("base", "size"),
    [(0x1000, 0x100), (0x0F80, 0x100), (0x10FF, 0x10), (0x0800, 0x1000), (0x1010, 0x10)],
)
def test_overlap_rejected(base, size):
    bus = MmioBus()
    bus.register(0x1000, 0x100, Regs(), "first")
    with pytest.raises(MmioOverlapError, match="overlaps first"):
        bus.register(base, size, Regs())


def test_adjacent_windows_allowed_and_sorted():
    bus = MmioBus()
    bus.register(0x1100, 0x100, Regs(), "b")
    bus.register(0x1000, 0x100, Regs(), "a")
    bus.register(0x1200, 0x100, Regs(), "c")
    assert [r.name for r in bus.regions] == ["a", "b", "c"]
    assert bus.find(0x10FF).name == "a"
    assert bus.find(0x1100).name == "b"


def test_unregister():
    bus = MmioBus()
    bus.register(0x1000, 0x100, Regs())
    bus.unregister(0x1000)
    assert not bus.read(0x1000, 1).handled
    bus.register(0x1000, 0x100, Regs())  # the window is free again
    with pytest.raises(MmioError):
        bus.unregister(0x2000)


@pytest.mark.parametrize("size", [0, 3, 16])
def test_bad_access_size(size):
    bus = MmioBus()
    with pytest.raises(MmioError):
        bus.read(0x1000, size)


def test_bad_registration():
    bus = MmioBus()
    with pytest.raises(MmioError):
        bus.register(0x1000, 0, Regs())


def test_trace_hook():
    seen = []
    bus = MmioBus(trace=lambda *a: seen.append(a))
    bus.register(0x1000, 0x100, Regs())
    bus.write(0x1000, 2, 0xABCD)
    bus.read(0x2000, 4)
    assert seen == [(True, 0x1000, 2, 0xABCD, True), (False, 0x2000, 4, 0, False)]


def test_region_contains_its_last_byte_by_default():
    bus = MmioBus()
    region = bus.register(0x1000, 0x100, Regs())
    assert region.contains(0x10FF) and not region.contains(0x1100)
    assert not region.contains(0x10FF, 2)


def test_window_at_zero_allowed_negative_refused():
    bus = MmioBus()
    bus.register(0, 0x10, Regs())
    assert bus.read(0, 1).handled
    with pytest.raises(MmioError, match="negative"):
        bus.register(-0x10, 0x10, Regs())


def test_default_name_is_the_device_class_and_write_names_the_region():
    bus = MmioBus()
    region = bus.register(0x1000, 0x100, Regs())
    assert region.name == "Regs"
    assert bus.write(0x1000, 4, 1).region is region
    with pytest.raises(MmioError, match="size 3 is not 1, 2, 4 or 8"):
        bus.write(0x1000, 3, 1)
