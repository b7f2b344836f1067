"""The virtio-mmio transport's edges (host/devices/virtio_mmio.py): a realm's SharedView across
page boundaries, at the top of the IPA space and for empty transfers; DEVICE_NEEDS_RESET is
added to the status (the driver's bits stay) and a broken device processes nothing more;
the `--hostile` hooks (host/hostile.py) reach the used ring and the replies, and the guest's
request queue (guest/virtio.py) refuses or outlives them."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from unirealm.arch import p9
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.p9 import P9
from unirealm.arch.virtio import VirtioMmio, VirtioStatus, VirtqDescFlags
from unirealm.guest.virtio import VirtioError
from unirealm.host.devices.virtio_mmio import DmaError, SharedView
from unirealm.host.hostile import Hostile

from .test_virtio_mmio import OUT, RAM_BASE, plain  # noqa: F401  (the fixture)
from .virtio_support import FlatMemory

HOST = 0x88_0000_0000
BIT = 1 << 32


def shared_view(pages: dict[int, int]) -> tuple[SharedView, FlatMemory]:
    mem = FlatMemory(HOST, 16 * GRANULE_SIZE)
    return SharedView(mem, {ipa | BIT: HOST + slot * GRANULE_SIZE for ipa, slot in pages.items()}, BIT), mem


def test_shared_view_spans_pages_mapped_anywhere() -> None:
    """Two consecutive IPA pages on non-adjacent, reversed host pages."""
    view, mem = shared_view({RAM_BASE: 5, RAM_BASE + GRANULE_SIZE: 2})
    data = bytes(range(256)) * 24  # 6 KiB from 2 KiB into the first page
    view.write(RAM_BASE + 2048, data)
    assert mem.read(HOST + 5 * GRANULE_SIZE + 2048, 2048) == data[:2048]
    assert mem.read(HOST + 2 * GRANULE_SIZE, 4096) == data[2048:]
    assert view.read(RAM_BASE + 2048, len(data)) == data
    assert view.read(RAM_BASE + 2048 | BIT, len(data)) == data  # the aliased address too


def test_shared_view_empty_transfers_and_the_top_of_the_ipa_space() -> None:
    top = 2 * BIT - GRANULE_SIZE  # the last page of the IPA space (its unprotected alias)
    view, _ = shared_view({RAM_BASE: 0, top & ~BIT: 1})
    assert view.read(RAM_BASE, 0) == b""
    view.write(RAM_BASE, b"")
    view.write(top, b"end")
    assert view.read(top + GRANULE_SIZE - 3, 3) == bytes(3) and view.read(top, 3) == b"end"
    for addr, size in ((top, GRANULE_SIZE + 1), (2 * BIT, 1), (2 * BIT + 0x1000, 16), (-1, 1), (RAM_BASE, -1)):
        with pytest.raises(DmaError, match="outside the IPA space"):
            view.read(addr, size)


def break_device(drv, dev) -> int:  # type: ignore[no-untyped-def]
    """A descriptor past RAM: the device fails. Returns the status before."""
    before = drv.r(VirtioMmio.STATUS)
    drv.desc(0, OUT, 20, VirtqDescFlags.NEXT, 1)
    drv.desc(1, RAM_BASE + (1 << 40), 64, VirtqDescFlags.WRITE)
    drv.post(0)
    return before


def test_needs_reset_is_added_to_the_status(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, dev = plain
    drv.setup()
    before = break_device(drv, dev)
    assert before & VirtioStatus.DRIVER_OK
    assert drv.r(VirtioMmio.STATUS) == before | VirtioStatus.DEVICE_NEEDS_RESET


def test_a_broken_device_answers_nothing_more(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, dev = plain
    drv.setup()
    break_device(drv, dev)
    used_before = drv.used()
    drv.view.write(OUT, p9.encode(P9.TVERSION, 1, msize=8192, version="9P2000.L"))
    drv.desc(0, OUT, 21, VirtqDescFlags.NEXT, 1)
    drv.desc(1, OUT + 0x1000, 4096, VirtqDescFlags.WRITE)
    drv.post(0)  # still DRIVER_OK, but NEEDS_RESET: the notify is ignored
    assert drv.used() == used_before


def test_hostile_used_entries_reach_the_ring_and_the_guest_refuses_them(tmp_path: Path) -> None:
    from tests.guest.test_request_queue import TVERSION, queue_pair

    queue, device, _ = queue_pair(tmp_path)
    device.hostile = Hostile(frozenset({"used-bogus"}))
    with pytest.raises(VirtioError, match="does not match the request"):
        queue.request(TVERSION)
    q = device.queues[0]
    uid, length = struct.unpack("<II", device.memory.read(q.used + 4, 8))
    assert uid >= q.num or length > queue.buffer_size  # what the attack wrote


def test_hostile_toctou_overwrites_replies_the_guest_already_copied(tmp_path: Path) -> None:
    from tests.guest.test_request_queue import TVERSION, queue_pair

    queue, device, view = queue_pair(tmp_path)
    device.hostile = hostile = Hostile(frozenset({"toctou"}))
    reply = queue.request(TVERSION)
    (memory, addr, length), = hostile.written
    assert memory is view and length == len(reply)
    assert view.read(addr, length) == reply  # the device wrote the reply there
    hostile.at_exit()
    assert view.read(addr, length) != reply  # overwritten in shared memory...
    assert p9.decode(reply)[0] == P9.RVERSION  # ...after the guest took its copy
