"""The files subsystem's readiness syscalls: ppoll, pselect6 and epoll, waiting in the
scheduler until a descriptor is ready or the timeout passes."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .pipes import EpollFile
from .sysctx import (
    SyscallContext,
    _s32,
)
from .systable import SyscallSet
from .vfs import (
    O_CLOEXEC,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
)

if TYPE_CHECKING:
    pass

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLET, EPOLLONESHOT = 1 << 31, 1 << 30

calls = SyscallSet("files")


class Poll(SyscallContext):
    def _poll_fds(self, items: list[tuple[int, int]]) -> list[int]:
        out = []
        for fd, events in items:
            if fd < 0:
                out.append(0)
                continue
            entry = self.fds.get(fd)
            if entry is None:
                out.append(POLLNVAL)
                continue
            out.append(entry.file.poll() & (events | POLLERR | POLLHUP))
        return out

    @calls("ppoll")
    def sys_ppoll(self, fds: int, nfds: int, tsp: int, *_: int) -> int:
        if nfds > 1024:
            return -errno.EINVAL
        raw = self.p.read(fds, 8 * nfds) if nfds else b""
        items = [struct.unpack_from("<ihh", raw, 8 * i)[:2] for i in range(nfds)]
        result: list[int] = []

        def ready() -> bool:
            nonlocal result
            result = self._poll_fds(items)
            return any(result)

        self.block(ready, self._timeout(tsp), self.on_console(fd for fd, _ in items), "ppoll")
        out = bytearray(raw)
        for i, rev in enumerate(result):
            struct.pack_into("<h", out, 8 * i + 6, rev)
        if nfds:
            self.p.write(fds, bytes(out))
        return sum(1 for r in result if r)

    @calls("pselect6")
    def sys_pselect6(self, nfds: int, rp: int, wp: int, ep: int, tsp: int, *_: int) -> int:
        nbytes = (nfds + 63) // 64 * 8
        sets = [int.from_bytes(self.p.read(a, nbytes), "little") if a else 0 for a in (rp, wp)]
        res: list[int] = [0, 0]

        def ready() -> bool:
            res[0] = res[1] = 0
            for fd in range(nfds):
                for k, want in ((0, POLLIN | POLLHUP | POLLERR), (1, POLLOUT | POLLERR)):
                    if sets[k] >> fd & 1:
                        entry = self.fds.get(fd)
                        if entry is None or entry.file.poll() & want:
                            res[k] |= 1 << fd
            return bool(res[0] or res[1])

        watched = [fd for fd in range(nfds) if (sets[0] | sets[1]) >> fd & 1]
        self.block(ready, self._timeout(tsp), self.on_console(watched), "pselect6")
        for k, a in enumerate((rp, wp)):
            if a:
                self.p.write(a, res[k].to_bytes(nbytes, "little"))
        if ep:
            self.p.write(ep, bytes(nbytes))
        return bin(res[0]).count("1") + bin(res[1]).count("1")

    @calls("epoll_create1")
    def sys_epoll_create1(self, flags: int, *_: int) -> int:
        return self.install(EpollFile(0), bool(flags & O_CLOEXEC))

    @calls("epoll_ctl")
    def sys_epoll_ctl(self, epfd: int, op: int, fd: int, event: int, *_: int) -> int:
        ep = self.file(epfd)
        if not isinstance(ep, EpollFile):
            return -errno.EINVAL
        target = self.file(fd)
        fd = _s32(fd)
        if op == EPOLL_CTL_DEL:
            if ep.interest.pop(fd, None) is None:
                return -errno.ENOENT
            return 0
        events, data = struct.unpack("<IxxxxQ", self.p.read(event, 16))
        if op == EPOLL_CTL_ADD:
            if fd in ep.interest:
                return -errno.EEXIST
        elif op == EPOLL_CTL_MOD:
            if fd not in ep.interest:
                return -errno.ENOENT
        else:
            return -errno.EINVAL
        ep.interest[fd] = (target, events, data)
        return 0

    @calls("epoll_pwait")
    def sys_epoll_pwait(self, epfd: int, events: int, maxevents: int, timeout: int, *_: int) -> int:
        ep = self.file(epfd)
        if not isinstance(ep, EpollFile) or _s32(maxevents) <= 0:
            return -errno.EINVAL
        found: list[tuple[int, int, int]] = []

        def ready() -> bool:
            found.clear()
            for fd, (f, want, data) in list(ep.interest.items()):
                rev = f.poll() & (want | POLLERR | POLLHUP)
                if rev:
                    found.append((fd, rev, data))
                    if len(found) >= maxevents:
                        break
            return bool(found)

        t = _s32(timeout)
        self.block(ready, None if t < 0 else t * 1_000_000, self.on_console(ep.interest), "epoll_pwait")
        out = b"".join(struct.pack("<IxxxxQ", rev, data) for _, rev, data in found)
        for fd, _rev, _data in found:
            f, want, data = ep.interest[fd]
            if want & EPOLLONESHOT:
                ep.interest[fd] = (f, 0, data)
        if out:
            self.p.write(events, out)
        return len(found)
