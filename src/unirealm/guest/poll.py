"""The files subsystem's readiness syscalls: ppoll, pselect6 and epoll, waiting in the
scheduler until a descriptor is ready or the timeout passes."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import FsError
from .fdtable import FD_MAX
from .pipes import EP_MAX_NESTS, EPOLLET, EpollFile
from .sched import ERESTARTNOHAND, Interrupted
from .signals import SIGSET_SIZE, restore_mask, temporary_mask
from .sysctx import (
    SyscallContext,
    _s32,
)
from .systable import SyscallSet
from .uapi import pack_timespec
from .vfs import (
    O_CLOEXEC,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    DirFile,
    RegFile,
)

if TYPE_CHECKING:
    pass

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLONESHOT, EPOLLWAKEUP, EPOLLEXCLUSIVE = 1 << 30, 1 << 29, 1 << 28
EP_PRIVATE_BITS = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE  # flags, not events
EPOLLEXCLUSIVE_OK_BITS = POLLIN | POLLOUT | POLLERR | POLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE

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

    def _sigmask_arg(self, mask: int, size: int) -> int | None:
        """The signal mask ppoll/pselect6 take (set_user_sigmask): none, or a sigset_t of
        its own size that can be read (EINVAL, EFAULT)."""
        if not mask:
            return None
        if size != SIGSET_SIZE:
            raise FsError(errno.EINVAL)
        return int.from_bytes(self.p.read(mask, SIGSET_SIZE), "little")

    def _wait_timed(self, ready: Callable[[], bool], tsp: int, console: bool, what: str,
                    sigmask: int | None = None) -> None:
        """Wait as ppoll/pselect6 do: with `sigmask` (if given) as the thread's mask
        meanwhile, the timeout from `tsp` (none: for ever), and what is left of it written
        back there (poll_select_finish; glibc's wrappers hide it). A signal ends the wait
        with ERESTARTNOHAND (EINTR once its handler runs, which the old mask follows)."""
        timeout = self._timeout(tsp)
        start = self.now_ns()
        t = self.p.current
        if sigmask is not None:
            temporary_mask(t, sigmask)
        try:
            self.block(ready, timeout, console, what)
        except Interrupted:
            if timeout is not None:
                self.p.write(tsp, pack_timespec(max(0, timeout - (self.now_ns() - start))))
            raise Interrupted(ERESTARTNOHAND) from None
        restore_mask(t)
        if timeout is not None:
            self.p.write(tsp, pack_timespec(max(0, timeout - (self.now_ns() - start))))

    @calls("ppoll")
    def sys_ppoll(self, fds: int, nfds: int, tsp: int, sigmask: int, sigsetsize: int, *_: int) -> int:
        if nfds > 1024:
            return -errno.EINVAL
        mask = self._sigmask_arg(sigmask, sigsetsize)
        raw = self.p.read(fds, 8 * nfds) if nfds else b""
        items = [struct.unpack_from("<ihh", raw, 8 * i)[:2] for i in range(nfds)]
        result: list[int] = []

        def ready() -> bool:
            nonlocal result
            result = self._poll_fds(items)
            return any(result)

        self._wait_timed(ready, tsp, self.on_console(fd for fd, _ in items), "ppoll", mask)
        out = bytearray(raw)
        for i, rev in enumerate(result):
            struct.pack_into("<h", out, 8 * i + 6, rev)
        if nfds:
            self.p.write(fds, bytes(out))
        return sum(1 for r in result if r)

    @calls("pselect6")
    def sys_pselect6(self, nfds: int, rp: int, wp: int, ep: int, tsp: int, sig: int, *_: int) -> int:
        if _s32(nfds) < 0:
            return -errno.EINVAL
        nfds = min(nfds & 0xFFFFFFFF, FD_MAX)  # core_sys_select: clamped to the table's size
        mask = None
        if sig:  # struct { const sigset_t *ss; size_t ss_len; }
            ss, ss_len = struct.unpack("<QQ", self.p.read(sig, 16))
            mask = self._sigmask_arg(ss, ss_len)
        nbytes = (nfds + 63) // 64 * 8
        sets = [int.from_bytes(self.p.read(a, nbytes), "little") & ((1 << nfds) - 1) if a else 0
                for a in (rp, wp, ep)]
        every = sets[0] | sets[1] | sets[2]
        members = [fd for fd in range(nfds) if every >> fd & 1]
        if any(self.fds.get(fd) is None for fd in members):
            return -errno.EBADF  # max_select_fd: a set names a descriptor that is not open
        watched = [fd for fd in members if (sets[0] | sets[1]) >> fd & 1]
        res: list[int] = [0, 0]

        def ready() -> bool:
            res[0] = res[1] = 0
            for fd in watched:
                entry = self.fds.get(fd)
                revents = POLLNVAL if entry is None else entry.file.poll()  # closed by another thread
                for k, want in ((0, POLLIN | POLLHUP | POLLERR | POLLNVAL), (1, POLLOUT | POLLERR | POLLNVAL)):
                    if sets[k] >> fd & 1 and revents & want:
                        res[k] |= 1 << fd
            return bool(res[0] or res[1])

        self._wait_timed(ready, tsp, self.on_console(watched), "pselect6", mask)
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
        """epoll_ctl(2) in do_epoll_ctl's order: the event read (but for DEL), both files,
        the target's poll support (EPERM), EPOLLEXCLUSIVE's limits, the instance itself and
        loops or too deep nesting (ELOOP), then the operation."""
        events = data = 0
        if op != EPOLL_CTL_DEL:
            events, data = struct.unpack("<IxxxxQ", self.p.read(event, 16))
        ep = self.file(epfd)
        target = self.file(fd)
        fd = _s32(fd)
        if isinstance(target, (RegFile, DirFile)):
            return -errno.EPERM  # no poll: regular files and directories are always ready
        if op != EPOLL_CTL_DEL and events & EPOLLEXCLUSIVE:
            if op == EPOLL_CTL_MOD:
                return -errno.EINVAL
            if op == EPOLL_CTL_ADD and (isinstance(target, EpollFile) or events & ~EPOLLEXCLUSIVE_OK_BITS):
                return -errno.EINVAL
        if target is ep or not isinstance(ep, EpollFile):
            return -errno.EINVAL
        if op == EPOLL_CTL_ADD and isinstance(target, EpollFile) and fd not in ep.interest:
            below = target.depth_below(ep)
            if below > EP_MAX_NESTS or below + 1 + ep.depth_above() > EP_MAX_NESTS:
                return -errno.ELOOP
        old = ep.interest.get(fd)
        if op == EPOLL_CTL_ADD:
            if old is not None:
                return -errno.EEXIST
            if isinstance(target, EpollFile):
                target.parents.append(ep)
        elif op == EPOLL_CTL_DEL:
            if old is None:
                return -errno.ENOENT
            del ep.interest[fd]
            ep.taken.pop(fd, None)
            if isinstance(old[0], EpollFile) and ep in old[0].parents:
                old[0].parents.remove(ep)
            return 0
        elif op == EPOLL_CTL_MOD:
            if old is None:
                return -errno.ENOENT
            if old[1] & EPOLLEXCLUSIVE:
                return -errno.EINVAL
        else:
            return -errno.EINVAL
        ep.interest[fd] = (target, events | POLLERR | POLLHUP, data)
        ep.arm(fd)
        return 0

    @calls("epoll_pwait")
    def sys_epoll_pwait(self, epfd: int, events: int, maxevents: int, timeout: int, sigmask: int = 0,
                        sigsetsize: int = 0, *_: int) -> int:
        ep = self.file(epfd)
        if not isinstance(ep, EpollFile) or _s32(maxevents) <= 0:
            return -errno.EINVAL
        mask = self._sigmask_arg(sigmask, sigsetsize)
        found: list[tuple[int, int, int]] = []

        def ready() -> bool:
            found.clear()
            for fd, (f, want, data) in list(ep.interest.items()):
                rev = ep.events(fd, f, want)
                if rev:
                    found.append((fd, rev, data))
                    if len(found) >= maxevents:
                        break
                else:
                    ep.take(fd, f, want)  # a wake-up with nothing ready now is used up
            return bool(found)

        t = _s32(timeout)
        th = self.p.current
        if mask is not None:
            temporary_mask(th, mask)
        try:
            self.block(ready, None if t < 0 else t * 1_000_000, self.on_console(ep.interest), "epoll_pwait")
        except Interrupted:
            raise Interrupted(errno.EINTR) from None  # epoll_wait is never restarted
        restore_mask(th)
        out = b"".join(struct.pack("<IxxxxQ", rev, data) for _, rev, data in found)
        for fd, _rev, _data in found:
            f, want, data = ep.interest[fd]
            ep.take(fd, f, want)
            if want & EPOLLONESHOT:
                ep.interest[fd] = (f, want & EP_PRIVATE_BITS, data)  # disarmed until EPOLL_CTL_MOD
        if out:
            self.p.write(events, out)
        return len(found)
