"""The virtio-mmio transport's edges (host/devices/virtio_mmio.py): a realm's SharedView across
page boundaries, at the top of the IPA space and for empty transfers; DEVICE_NEEDS_RESET is
added to the status (the driver's bits stay) and a broken device processes nothing more;
the `--hostile` hooks (host/hostile.py) reach the used ring and the replies, and the guest's
request queue (guest/virtio.py) refuses or outlives them."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from unirealm.arch import p9
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.p9 import P9
from unirealm.arch.virtio import VIRTIO_F_EVENT_IDX, VirtioMmio, VirtioStatus, VirtqDescFlags, feature
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
    """Three consecutive IPA pages on non-adjacent host pages, out of order."""
    view, mem = shared_view({RAM_BASE: 5, RAM_BASE + GRANULE_SIZE: 2, RAM_BASE + 2 * GRANULE_SIZE: 9})
    data = os.urandom(10 * 1024)  # 10 KiB from 2 KiB into the first page (no period)
    view.write(RAM_BASE + 2048, data)
    assert mem.read(HOST + 5 * GRANULE_SIZE + 2048, 2048) == data[:2048]
    assert mem.read(HOST + 2 * GRANULE_SIZE, 4096) == data[2048:6144]
    assert mem.read(HOST + 9 * GRANULE_SIZE, 4096) == data[6144:]
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


# --- registers: what the transport's other corners say ----------------------------------------
def test_queues_that_do_not_exist_read_as_zero(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, _ = plain
    drv.w(VirtioMmio.QUEUE_SEL, 5)  # virtio-9p has one queue
    assert drv.r(VirtioMmio.QUEUE_NUM_MAX) == 0 and drv.r(VirtioMmio.QUEUE_READY) == 0
    drv.w(VirtioMmio.QUEUE_READY, 1)  # ignored, no crash
    assert drv.r(VirtioMmio.QUEUE_READY) == 0
    for reserved in (0x0FC, 0x0A8, 0x0C0, VirtioMmio.QUEUE_DESC_LOW):  # reserved or write-only
        assert drv.r(reserved) == 0


def test_a_queue_of_one_entry_is_valid_and_ready_can_be_cleared(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, dev = plain
    drv.negotiate(drv.features())
    drv.w(VirtioMmio.QUEUE_SEL, 0)
    drv.w(VirtioMmio.QUEUE_NUM, 1)  # 2^0: a power of two (virtio 1.2 §2.7)
    drv.w(VirtioMmio.QUEUE_READY, 1)  # addresses left at their reset value 0: aligned
    assert drv.r(VirtioMmio.QUEUE_READY) == 1 and dev.queues[0].num == 1
    drv.w(VirtioMmio.QUEUE_READY, 0)
    assert drv.r(VirtioMmio.QUEUE_READY) == 0
    drv.w(VirtioMmio.QUEUE_NUM, 3)  # not a power of two
    drv.w(VirtioMmio.QUEUE_READY, 1)
    assert drv.r(VirtioMmio.QUEUE_READY) == 0


def features_ok(drv, low: int | None, high: int | None) -> bool:  # type: ignore[no-untyped-def]
    """ACKNOWLEDGE | DRIVER, then only the feature words given, then FEATURES_OK."""
    drv.w(VirtioMmio.STATUS, 0)
    drv.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER)
    for sel, word in ((0, low), (1, high)):
        if word is not None:
            drv.w(VirtioMmio.DRIVER_FEATURES_SEL, sel)
            drv.w(VirtioMmio.DRIVER_FEATURES, word)
    drv.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK)
    return bool(drv.r(VirtioMmio.STATUS) & VirtioStatus.FEATURES_OK)


def test_driver_feature_words_replace_their_half_and_reset_clears_them(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, dev = plain
    version_1 = 1  # VIRTIO_F_VERSION_1 is bit 32: bit 0 of the high word
    assert features_ok(drv, 0xFFFF_FFFE, version_1) is False  # bits 1..31 are not offered
    assert features_ok(drv, None, version_1)  # the reset cleared the low word
    assert dev.driver_features == 1 << 32
    drv.w(VirtioMmio.STATUS, 0)
    drv.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER)
    drv.w(VirtioMmio.DRIVER_FEATURES_SEL, 1)
    drv.w(VirtioMmio.DRIVER_FEATURES, version_1)
    drv.w(VirtioMmio.DRIVER_FEATURES, 0)  # written again: replaces, not ORs
    drv.w(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK)
    assert not drv.r(VirtioMmio.STATUS) & VirtioStatus.FEATURES_OK  # VERSION_1 is required
    assert dev.driver_features == 0


def test_a_used_buffer_raises_the_interrupt_once_until_acknowledged(plain) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    drv, dev = plain
    edges: list[int] = []
    dev.on_interrupt = lambda: edges.append(1)
    drv.setup(drv.features() & ~feature(VIRTIO_F_EVENT_IDX))  # every used buffer wanted
    msg = p9.encode(P9.TVERSION, 1, msize=8192, version="9P2000.L")
    drv.request(msg)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 1 and edges == [1]
    drv.request(msg)  # still unacknowledged: coalesced, no new edge
    assert edges == [1]
    drv.w(VirtioMmio.INTERRUPT_ACK, 1)
    assert drv.r(VirtioMmio.INTERRUPT_STATUS) == 0
    drv.request(msg)
    assert edges == [1, 1]


def test_shared_view_accesses_inside_one_page() -> None:
    """The one-page path: canonical or aliased address, the right host page, and the same
    refusals as an access across pages."""
    view, mem = shared_view({RAM_BASE: 3, RAM_BASE + GRANULE_SIZE: 7})
    view.write(RAM_BASE + GRANULE_SIZE + 16, b"ring")
    assert mem.read(HOST + 7 * GRANULE_SIZE + 16, 4) == b"ring"
    assert view.read(RAM_BASE + GRANULE_SIZE + 16, 4) == b"ring"
    assert view.read((RAM_BASE + GRANULE_SIZE + 16) | BIT, 4) == b"ring"
    view.write((RAM_BASE + GRANULE_SIZE - 2) | BIT, b"ab")  # the last bytes of a page
    assert mem.read(HOST + 3 * GRANULE_SIZE + GRANULE_SIZE - 2, 2) == b"ab"
    with pytest.raises(DmaError, match="not memory the realm shared"):
        view.read(RAM_BASE + 2 * GRANULE_SIZE + 8, 2)
    with pytest.raises(DmaError, match="not memory the realm shared"):
        view.write(RAM_BASE + 5 * GRANULE_SIZE, b"x")
    with pytest.raises(DmaError, match="outside the IPA space"):
        view.read(2 * BIT - 2, 4)
