"""Anonymous files: pipes (their bytes in page-cache pages of guest RAM), eventfds and
epoll instances, the open-file objects pipe2, eventfd2 and epoll_create1 make."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..arch.cpio import S_IFIFO, S_IFREG
from .errors import BrokenPipe, FsError
from .pagecache import PAGE, FilePages
from .vfs import (
    FIONREAD,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    Inode,
    OpenFile,
    WouldBlock,
)

if TYPE_CHECKING:
    from .interfaces import UserMemory

PIPE_SIZE = 65536  # a new pipe's capacity: 16 pages
PIPE_SIZE_LIMIT = 1 << 31  # the largest capacity round_pipe_size gives (root: past pipe-max-size)
PIPE_BUF = 4096  # pipe(7): writes up to this size are atomic
EVENTFD_MAX = 0xFFFF_FFFF_FFFF_FFFE
EP_MAX_NESTS = 4  # the most epoll-to-epoll links on a path through nested instances
EPOLLET = 1 << 31


class PipeBuffer:
    """A pipe's bytes in flight, in page-cache pages of guest RAM: a FIFO over a sparse file
    whose consumed pages are given back as the reader passes them."""

    def __init__(self) -> None:
        self.pages = FilePages()
        self.head = 0  # the offset of the first unread byte; the file's size is the tail

    def __len__(self) -> int:
        return self.pages.size - self.head

    def put(self, data: bytes) -> int:
        return self.pages.write(self.pages.size, data)

    def take(self, size: int) -> bytes:
        out = self.pages.read(self.head, size)
        done = self.head // PAGE
        self.head += len(out)
        if self.head == self.pages.size:
            self.pages.truncate(0)  # empty: every page given back, the next write starts a fresh one
            self.head = 0
        elif self.head // PAGE > done:
            self.pages.punch(done * PAGE, (self.head // PAGE - done) * PAGE)
        return out

    def pages_held(self) -> int:
        """The pages the bytes in flight take: Linux's pipe_occupancy, one buffer a page."""
        return -(-self.pages.size // PAGE) - self.head // PAGE

    def room(self, capacity: int) -> int:
        """The bytes a write can add: the free pages and what is left of the last one."""
        return capacity - (self.pages.size - self.head // PAGE * PAGE)


class Pipe:
    def __init__(self) -> None:
        self.buf = PipeBuffer()
        self.size = PIPE_SIZE  # the capacity, F_GETPIPE_SZ / F_SETPIPE_SZ
        # wake-ups of the pipe's wait queues: rd_wait by writes (key EPOLLIN), wr_wait by
        # reads of a full pipe (key EPOLLOUT), both without a key filter (an end closed, a resize)
        self.rd_wakes = self.wr_wakes = self.all_wakes = 0
        self.readers = 0
        self.writers = 0
        self.inode = Inode(S_IFIFO | 0o600)


class PipeEnd(OpenFile):
    def __init__(self, pipe: Pipe, flags: int, write_end: bool) -> None:
        super().__init__(pipe.inode, flags | (O_WRONLY if write_end else O_RDONLY), f"pipe:[{pipe.inode.ino}]")
        self.pipe = pipe
        self.write_end = write_end
        if write_end:
            pipe.writers += 1
        else:
            pipe.readers += 1

    def read(self, size: int) -> bytes:
        p = self.pipe
        if self.write_end:
            raise FsError(errno.EBADF)
        if not p.buf:
            if p.writers == 0 or size == 0:
                return b""
            raise WouldBlock()
        was_full = p.buf.pages_held() >= p.size // PAGE
        out = p.buf.take(size)
        if was_full:
            p.wr_wakes += 1  # pipe_read wakes the writers only if the pipe was full
        return out

    def write(self, data: bytes) -> int:
        p = self.pipe
        if not self.write_end:
            raise FsError(errno.EBADF)
        if p.readers == 0:
            raise BrokenPipe()  # and SIGPIPE (pipe(7))
        room = p.buf.room(p.size)
        if room <= 0 or room < len(data) <= PIPE_BUF:
            raise WouldBlock()  # pipe(7): up to PIPE_BUF bytes go in at once or not at all
        done = p.buf.put(data[:room])
        p.rd_wakes += 1
        return done

    def poll(self) -> int:
        p = self.pipe
        if self.write_end:
            return (POLLERR if p.readers == 0 else 0) | (POLLOUT if p.buf.pages_held() < p.size // PAGE else 0)
        return (POLLIN if p.buf else 0) | (POLLHUP if p.writers == 0 else 0)

    def wakeups(self, events: int) -> int | None:
        p = self.pipe  # pipe_poll waits on both queues, from either end
        return p.all_wakes + (p.rd_wakes if events & POLLIN else 0) + (p.wr_wakes if events & POLLOUT else 0)

    def set_size(self, arg: int) -> int:
        """F_SETPIPE_SZ (pipe_set_size): the size rounded up to a power-of-two number of pages,
        one page at least (round_pipe_size), EINVAL past 2 GiB; our processes are root, so
        pipe-max-size does not bound it. EBUSY if the data held does not fit."""
        arg &= 0xFFFFFFFF  # an unsigned int
        if arg > PIPE_SIZE_LIMIT:
            raise FsError(errno.EINVAL)
        size = max(PAGE, 1 << (arg - 1).bit_length())
        if size // PAGE < self.pipe.buf.pages_held():
            raise FsError(errno.EBUSY)  # pipe_resize_ring: fewer pages than the data take
        self.pipe.size = size
        self.pipe.all_wakes += 1  # pipe_resize_ring: there may be room for the writers now
        return size

    def ioctl(self, req: int, arg: int, mem: UserMemory) -> int:
        if req == FIONREAD:
            mem.write(arg, len(self.pipe.buf).to_bytes(4, "little"))
            return 0
        raise FsError(errno.ENOTTY)

    def close(self) -> None:
        if self.write_end:
            self.pipe.writers -= 1
        else:
            self.pipe.readers -= 1
        self.pipe.all_wakes += 1  # pipe_release wakes both queues with every event


class EventFd(OpenFile):
    def __init__(self, initval: int, flags: int, semaphore: bool) -> None:
        super().__init__(Inode(S_IFREG | 0o600), flags | O_RDWR, "anon_inode:[eventfd]")
        self.value = initval
        self.semaphore = semaphore
        self.in_wakes = self.out_wakes = 0  # a write wakes with key EPOLLIN, a read with EPOLLOUT

    def read(self, size: int) -> bytes:
        if size < 8:
            raise FsError(errno.EINVAL)
        if self.value == 0:
            raise WouldBlock()
        v = 1 if self.semaphore else self.value
        self.value -= v
        self.out_wakes += 1
        return v.to_bytes(8, "little")

    def write(self, data: bytes) -> int:
        if len(data) < 8:
            raise FsError(errno.EINVAL)
        v = int.from_bytes(data[:8], "little")
        if v == 0xFFFF_FFFF_FFFF_FFFF:
            raise FsError(errno.EINVAL)
        if self.value + v > EVENTFD_MAX:
            raise WouldBlock()
        self.value += v
        self.in_wakes += 1
        return 8

    def poll(self) -> int:
        return (POLLIN if self.value else 0) | (POLLOUT if self.value < EVENTFD_MAX else 0)

    def wakeups(self, events: int) -> int | None:
        return (self.in_wakes if events & POLLIN else 0) + (self.out_wakes if events & POLLOUT else 0)


class EpollFile(OpenFile):
    def __init__(self, flags: int) -> None:
        super().__init__(Inode(S_IFREG | 0o600), flags | O_RDWR, "anon_inode:[eventpoll]")
        # fd -> (file, events, data); the events include EPOLLERR | EPOLLHUP, which epoll_ctl
        # adds, until EPOLLONESHOT disarms the entry down to its flags
        self.interest: dict[int, tuple[OpenFile, int, int]] = {}
        self.parents: list[EpollFile] = []  # the epoll instances this one is in
        # EPOLLET entries: the wake-ups of their file already taken (None: none yet)
        self.taken: dict[int, int | None] = {}

    def poll(self) -> int:
        """epoll(7): an epoll instance is readable while one of its files has an event it waits for."""
        ready = any(self.events(fd, f, want) for fd, (f, want, _data) in self.interest.items())
        return POLLIN if ready else 0

    def arm(self, fd: int) -> None:
        """EPOLL_CTL_ADD / MOD: the file's readiness is looked at afresh (ep_insert, ep_modify)."""
        self.taken[fd] = None

    def events(self, fd: int, f: OpenFile, want: int) -> int:
        """What the entry of `fd` reports now: the file's events it waits for; an EPOLLET
        entry only after a wake-up it has not taken yet (epoll(7): edge-triggered)."""
        rev = f.poll() & want
        if rev and want & EPOLLET:
            seen = self.taken.get(fd)
            if seen is not None and seen == f.wakeups(want):
                return 0
        return rev

    def take(self, fd: int, f: OpenFile, want: int) -> None:
        """The entry was looked at by epoll_wait: an EPOLLET one waits for the next wake-up."""
        if want & EPOLLET:
            self.taken[fd] = f.wakeups(want)

    def depth_below(self, inserting_into: EpollFile, depth: int = 0) -> int:
        """The longest chain of epoll instances under this one (ep_loop_check_proc), more than
        EP_MAX_NESTS if one of them is `inserting_into` (a loop) or the chain is too deep."""
        result = 0
        for f, _want, _data in self.interest.values():
            if isinstance(f, EpollFile):
                if f is inserting_into or depth > EP_MAX_NESTS:
                    result = EP_MAX_NESTS + 1
                else:
                    result = max(result, f.depth_below(inserting_into, depth + 1) + 1)
                if result > EP_MAX_NESTS:
                    break
        return result

    def depth_above(self) -> int:
        """The longest chain of epoll instances this one is in (ep_get_upwards_depth_proc)."""
        return max((p.depth_above() + 1 for p in self.parents), default=0)
