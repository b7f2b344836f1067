"""epoll_ctl(2) and epoll(7) against the host kernel (Python's select.epoll over the same
calls): an instance added to itself (EINVAL), loops and nesting deeper than EP_MAX_NESTS
(ELOOP), EPOLLEXCLUSIVE's limits, files without poll (EPERM), and EPOLLONESHOT disarming an
entry, EPOLLERR and EPOLLHUP too, until EPOLL_CTL_MOD."""

from __future__ import annotations

import errno
import os
import select
import struct
from collections.abc import Callable
from pathlib import Path

from .fs_support import O_CREAT, O_RDWR, Fs

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP = 0x1, 0x4, 0x8, 0x10, 0x2000
EPOLLEXCLUSIVE, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 30, 1 << 31


def host(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return -(exc.errno or 0)
    return 0


class Guest:
    def __init__(self, fs: Fs) -> None:
        self.fs = fs

    def create(self) -> int:
        ep = self.fs("epoll_create1", 0)
        assert ep is not None and ep >= 0
        return ep

    def ctl(self, ep: int, op: int, fd: int, events: int = EPOLLIN, data: int = 0) -> int:
        self.fs.p.write(self.fs.buf + 0x100, struct.pack("<IxxxxQ", events, data))
        r = self.fs("epoll_ctl", ep, op, fd, self.fs.buf + 0x100)
        assert r is not None
        return r

    def wait(self, ep: int, maxevents: int = 8) -> list[tuple[int, int]]:
        n = self.fs("epoll_pwait", ep, self.fs.buf + 0x200, maxevents, 0, 0, 8)
        assert n is not None and n >= 0
        raw = self.fs.p.read(self.fs.buf + 0x200, 16 * n) if n else b""
        return [struct.unpack_from("<IxxxxQ", raw, 16 * i) for i in range(n)]

    def pipe(self) -> tuple[int, int]:
        assert self.fs("pipe2", self.fs.buf, 0) == 0
        r, w = struct.unpack("<ii", self.fs.p.read(self.fs.buf, 8))
        return r, w


def host_wait(ep: select.epoll) -> list[tuple[int, int]]:
    return [(ev, fd) for fd, ev in ep.poll(0)]


def test_an_instance_added_to_itself_is_einval(fs: Fs) -> None:
    g = Guest(fs)
    ep = g.create()
    h = select.epoll()
    want = host(lambda: h.register(h.fileno(), EPOLLIN))
    assert want == -errno.EINVAL
    assert g.ctl(ep, EPOLL_CTL_ADD, ep) == want
    assert g.ctl(ep, EPOLL_CTL_MOD, ep) == host(lambda: h.modify(h.fileno(), EPOLLIN))
    h.close()


def test_a_loop_of_instances_is_eloop(fs: Fs) -> None:
    g = Guest(fs)
    a, b, c = g.create(), g.create(), g.create()
    ha, hb, hc = select.epoll(), select.epoll(), select.epoll()
    assert g.ctl(a, EPOLL_CTL_ADD, b) == host(lambda: ha.register(hb.fileno(), EPOLLIN)) == 0
    assert g.ctl(b, EPOLL_CTL_ADD, c) == host(lambda: hb.register(hc.fileno(), EPOLLIN)) == 0
    want = host(lambda: hc.register(ha.fileno(), EPOLLIN))
    assert want == -errno.ELOOP
    assert g.ctl(c, EPOLL_CTL_ADD, a) == want
    # once the link is gone, the same edge makes no loop
    assert g.ctl(a, EPOLL_CTL_DEL, b) == host(lambda: ha.unregister(hb.fileno())) == 0
    assert g.ctl(c, EPOLL_CTL_ADD, a) == host(lambda: hc.register(ha.fileno(), EPOLLIN)) == 0
    for h in (ha, hb, hc):
        h.close()


def test_nesting_deeper_than_ep_max_nests_is_eloop(fs: Fs) -> None:
    """A chain grown at the top (each new instance holds the last) and one grown at the
    bottom (the last instance takes a new one): the same answers as the host's."""
    g = Guest(fs)
    for grow_at_top in (True, False):
        guest_chain, host_chain = [g.create()], [select.epoll()]
        got, want = [], []
        for _ in range(7):
            ge, he, last = g.create(), select.epoll(), host_chain[-1]
            if grow_at_top:
                got.append(g.ctl(ge, EPOLL_CTL_ADD, guest_chain[-1]))
                want.append(host(lambda he=he, last=last: he.register(last.fileno(), EPOLLIN)))
            else:
                got.append(g.ctl(guest_chain[-1], EPOLL_CTL_ADD, ge))
                want.append(host(lambda he=he, last=last: last.register(he.fileno(), EPOLLIN)))
            if want[-1] == 0:
                guest_chain.append(ge)
                host_chain.append(he)
        assert -errno.ELOOP in want and 0 in want
        assert got == want
        for h in host_chain:
            h.close()


def test_epollexclusive_only_with_add_and_plain_events(fs: Fs) -> None:
    g = Guest(fs)
    r, _w = g.pipe()
    hr, hw = os.pipe()
    ep, other = g.create(), g.create()
    h, hother = select.epoll(), select.epoll()
    cases = [
        (lambda: g.ctl(ep, EPOLL_CTL_ADD, r, EPOLLEXCLUSIVE | EPOLLIN | EPOLLRDHUP),
         lambda: h.register(hr, EPOLLEXCLUSIVE | EPOLLIN | EPOLLRDHUP)),
        (lambda: g.ctl(ep, EPOLL_CTL_ADD, other, EPOLLEXCLUSIVE | EPOLLIN),
         lambda: h.register(hother.fileno(), EPOLLEXCLUSIVE | EPOLLIN)),
        (lambda: g.ctl(ep, EPOLL_CTL_ADD, r, EPOLLEXCLUSIVE | EPOLLIN | EPOLLET),
         lambda: h.register(hr, EPOLLEXCLUSIVE | EPOLLIN | EPOLLET)),
        (lambda: g.ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN), lambda: h.modify(hr, EPOLLIN)),
        (lambda: g.ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN | EPOLLEXCLUSIVE),
         lambda: h.modify(hr, EPOLLIN | EPOLLEXCLUSIVE)),
        (lambda: g.ctl(ep, EPOLL_CTL_DEL, r), lambda: h.unregister(hr)),
        (lambda: g.ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN), lambda: h.register(hr, EPOLLIN)),
        (lambda: g.ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN | EPOLLEXCLUSIVE),
         lambda: h.modify(hr, EPOLLIN | EPOLLEXCLUSIVE)),
    ]
    got = [guest() for guest, _ in cases]
    want = [host(theirs) for _, theirs in cases]
    assert want == [-errno.EINVAL, -errno.EINVAL, 0, -errno.EINVAL, -errno.EINVAL, 0, 0, -errno.EINVAL]
    assert got == want
    for f in (h, hother):
        f.close()
    os.close(hr)
    os.close(hw)


def test_a_regular_file_or_directory_is_eperm(fs: Fs, tmp_path: Path) -> None:
    g = Guest(fs)
    ep, h = g.create(), select.epoll()
    f = fs.open("/tmp/plain", O_CREAT | O_RDWR)
    d = fs.open("/tmp", 0)
    hf = os.open(tmp_path / "plain", os.O_CREAT | os.O_RDWR)
    hd = os.open(tmp_path, os.O_RDONLY)
    want = [host(lambda: h.register(hf, EPOLLIN)), host(lambda: h.register(hd, EPOLLIN))]
    assert want == [-errno.EPERM, -errno.EPERM]
    assert [g.ctl(ep, EPOLL_CTL_ADD, f), g.ctl(ep, EPOLL_CTL_ADD, d)] == want
    os.close(hf)
    os.close(hd)
    h.close()


def test_oneshot_disarms_every_event_until_mod(fs: Fs) -> None:
    """After one report an EPOLLONESHOT entry reports nothing, not even the EPOLLHUP of a
    closed writer, until EPOLL_CTL_MOD arms it again."""
    g = Guest(fs)
    r, w = g.pipe()
    ep = g.create()
    hr, hw = os.pipe()
    h = select.epoll()
    assert g.ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN | EPOLLONESHOT, r) == 0
    h.register(hr, EPOLLIN | EPOLLONESHOT)
    assert fs.write(w, b"x") == 1 and os.write(hw, b"x") == 1
    got, want = [g.wait(ep)], [host_wait(h)]
    got.append(g.wait(ep))
    want.append(host_wait(h))  # still readable: disarmed
    assert fs("close", w) == 0
    os.close(hw)
    got.append(g.wait(ep))
    want.append(host_wait(h))  # the writer gone: still nothing
    assert g.ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN | EPOLLONESHOT, r) == 0
    h.modify(hr, EPOLLIN | EPOLLONESHOT)
    got.append(g.wait(ep))
    want.append(host_wait(h))
    got.append(g.wait(ep))
    want.append(host_wait(h))
    assert [len(x) for x in want] == [1, 0, 0, 1, 0]
    assert [[ev for ev, _ in x] for x in got] == [[ev for ev, _ in x] for x in want]
    assert [ev for ev, _ in want[3]] == [EPOLLIN | EPOLLHUP]
    assert got[0][0][1] == r
    os.close(hr)
    h.close()


class Both:
    """One scenario on the guest and on the host, step for step: the events each
    epoll_wait (timeout 0) returns."""

    def __init__(self, fs: Fs) -> None:
        self.g, self.fs = Guest(fs), fs
        self.gr, self.gw = self.g.pipe()
        self.hr, self.hw = os.pipe2(os.O_NONBLOCK)
        assert fs("fcntl", self.gr, 4, 0o4000) == 0 and fs("fcntl", self.gw, 4, 0o4000) == 0  # F_SETFL O_NONBLOCK
        self.gep, self.hep = self.g.create(), select.epoll()
        self.got: list[list[int]] = []
        self.want: list[list[int]] = []

    def watch(self, end: str, events: int) -> None:
        gfd, hfd = (self.gr, self.hr) if end == "r" else (self.gw, self.hw)
        assert self.g.ctl(self.gep, EPOLL_CTL_ADD, gfd, events, gfd) == 0
        self.hep.register(hfd, events)

    def write(self, n: int) -> None:
        assert self.fs.write(self.gw, b"w" * n) == os.write(self.hw, b"w" * n)

    def read(self, n: int) -> None:
        got = self.fs.read(self.gr, n)
        assert got == os.read(self.hr, n)

    def close_writer(self) -> None:
        assert self.fs("close", self.gw) == 0
        os.close(self.hw)
        self.hw = -1

    def wait(self) -> None:
        self.got.append(sorted(ev for ev, _ in self.g.wait(self.gep)))
        self.want.append(sorted(ev for ev, _ in host_wait(self.hep)))

    def close(self) -> None:
        self.hep.close()
        os.close(self.hr)
        if self.hw >= 0:
            os.close(self.hw)


def test_edge_triggered_reads_report_each_new_write_once(fs: Fs) -> None:
    """epoll(7)'s example: 2 kB written, 1 kB read, and the next epoll_wait has nothing,
    though data remain; each later write is a new edge; a closed writer one more."""
    b = Both(fs)
    b.watch("r", EPOLLIN | EPOLLET)
    b.wait()
    b.write(2048)
    b.wait()
    b.read(1024)
    b.wait()
    b.write(1)
    b.wait()
    b.wait()
    b.read(4096)
    b.wait()
    b.close_writer()
    b.wait()
    b.wait()
    assert b.want == [[], [EPOLLIN], [], [EPOLLIN], [], [], [EPOLLHUP], []]
    assert b.got == b.want
    b.close()


def test_edge_triggered_writes_report_room_after_a_full_pipe(fs: Fs) -> None:
    b = Both(fs)
    b.watch("w", EPOLLOUT | EPOLLET)
    b.wait()  # armed: writable at once
    b.wait()
    b.write(100)  # wakes the readers' queue only
    b.wait()
    b.read(100)  # the pipe was not full: no writer is woken
    b.wait()
    b.write(65536)
    b.wait()
    b.read(10)  # it was full, and still is: its 16 pages are all held
    b.wait()
    b.read(4096 - 10)  # a page given back: room for the writers
    b.wait()
    b.wait()
    b.write(1)  # into a fresh page: nothing for the writers' queue
    b.wait()
    assert b.want == [[EPOLLOUT], [], [], [], [], [], [EPOLLOUT], [], []]
    assert b.got == b.want
    b.close()


def test_level_triggered_entries_report_while_ready(fs: Fs) -> None:
    b = Both(fs)
    b.watch("r", EPOLLIN)
    b.write(10)
    b.wait()
    b.wait()
    b.read(10)
    b.wait()
    assert b.want == [[EPOLLIN], [EPOLLIN], []]
    assert b.got == b.want
    b.close()


def test_edge_triggered_eventfd(fs: Fs) -> None:
    g = Guest(fs)
    efd = fs("eventfd2", 0, 0o4000)
    assert efd is not None and efd >= 0
    hfd = os.eventfd(0, os.EFD_NONBLOCK)
    gep, hep = g.create(), select.epoll()
    assert g.ctl(gep, EPOLL_CTL_ADD, efd, EPOLLIN | EPOLLET) == 0
    hep.register(hfd, EPOLLIN | EPOLLET)
    got: list[list[int]] = []
    want: list[list[int]] = []

    def wait() -> None:
        got.append([ev for ev, _ in g.wait(gep)])
        want.append([ev for ev, _ in host_wait(hep)])

    one = (1).to_bytes(8, "little")
    for step in ("write", "wait", "wait", "write", "wait", "read", "wait", "write", "wait"):
        if step == "write":
            assert fs.write(efd, one) == os.write(hfd, one) == 8
        elif step == "read":
            assert fs.read(efd, 8) == os.read(hfd, 8)
        else:
            wait()
    assert want == [[EPOLLIN], [], [EPOLLIN], [], [EPOLLIN]]
    assert got == want
    hep.close()
    os.close(hfd)
