"""The threads subsystem: clone of a thread, thread exit (CLONE_CHILD_CLEARTID and its
wake-up), futexes (FUTEX_WAIT/WAKE, their _BITSET forms, REQUEUE/CMP_REQUEUE, with relative,
absolute CLOCK_MONOTONIC or CLOCK_REALTIME timeouts), and the thread syscalls. The wait
queues and the green threads themselves are guest/sched.py's.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from unicorn import arm64_const as a64

from .errors import FsError
from .sched import ProcessExit, Thread
from .sysctx import SyscallContext, _s32
from .systable import SyscallSet
from .uapi import TIMESPEC_SIZE, timespec_ns

if TYPE_CHECKING:
    from .process import Process

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND, CLONE_VFORK = 0x100, 0x200, 0x400, 0x800, 0x4000
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS, CLONE_PARENT_SETTID = 0x10000, 0x40000, 0x80000, 0x100000
CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x200000, 0x1000000
FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 0, 1, 3, 4, 9, 10
FUTEX_CLOCK_REALTIME = 256

calls = SyscallSet("threads")


def clone_thread(p: Process, flags: int, stack: int, ptid: int, tls: int, ctid: int) -> int:
    """clone(CLONE_VM | CLONE_THREAD | CLONE_SIGHAND ...): a thread of `p` that starts after
    the caller's svc with x0 = 0 (and its own stack and TLS)."""
    if not flags & CLONE_SIGHAND:
        return -errno.EINVAL
    parent = p.current
    t = p.sched.new_thread(p)
    ctx = p.space.save_context()  # the parent's registers, PC just after its svc
    ctx.reg_write(a64.UC_ARM64_REG_X0, 0)
    if stack:
        ctx.reg_write(a64.UC_ARM64_REG_SP, stack)
    if flags & CLONE_SETTLS:
        ctx.reg_write(a64.UC_ARM64_REG_TPIDR_EL0, tls)
    t.ctx = ctx
    start_clone(p, p, parent, t, flags, ptid, ctid)
    return t.tid


def start_clone(p: Process, child: Process, caller: Thread, t: Thread, flags: int, ptid: int, ctid: int) -> None:
    """The end of every clone: the caller's signal mask, the TID stores CLONE_PARENT_SETTID
    (in the caller's memory) and CLONE_CHILD_SETTID (in the child's) ask for,
    CLONE_CHILD_CLEARTID's address, and the new thread runnable."""
    t.sigmask = caller.sigmask
    t.comm = caller.comm
    tid = t.tid.to_bytes(4, "little")
    if flags & CLONE_PARENT_SETTID:
        p.write(ptid, tid)
    if flags & CLONE_CHILD_SETTID:
        child.write(ctid, tid)
    if flags & CLONE_CHILD_CLEARTID:
        t.clear_tid = ctid
    p.sched.start(t)


def exit_thread(p: Process, status: int) -> int | None:
    """`exit`: the calling thread ends; the last one ends the process."""
    t = p.current
    if len(p.threads) <= 1:
        raise ProcessExit(status)
    thread_gone(p, t)
    p.sched.kill(t)
    return None


def thread_gone(p: Process, t: Thread) -> None:
    """CLONE_CHILD_CLEARTID: zero the TID word and wake its waiter (pthread_join)."""
    if t.clear_tid:
        try:
            p.write(t.clear_tid, bytes(4))
        except MemoryError:
            return
        p.sched.futex_wake((p, t.clear_tid), 1)


def futex(p: Process, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int | None:
    """futex(2), its checks in Linux's order: the timeout (EFAULT, EINVAL), the clock
    (FUTEX_CLOCK_REALTIME only with FUTEX_WAIT_BITSET, else ENOSYS), then the command's own
    (a zero bitset, negative requeue counts, a misaligned word: EINVAL; the word's value:
    EAGAIN). FUTEX_WAKE's count is an int of which at least one is woken (futex_wake)."""
    cmd = op & 0x7F  # without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
    deadline = None
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET) and timeout:
        try:
            ns = timespec_ns(p.read(timeout, TIMESPEC_SIZE))
        except FsError as exc:
            return -exc.errno
        if cmd == FUTEX_WAIT:  # relative
            deadline = p.sched.now_ns() + ns
        elif op & FUTEX_CLOCK_REALTIME:  # absolute CLOCK_REALTIME
            deadline = ns - p.kernel.realtime_offset_ns
        else:  # absolute CLOCK_MONOTONIC
            deadline = ns
    if op & FUTEX_CLOCK_REALTIME and cmd != FUTEX_WAIT_BITSET:
        return -errno.ENOSYS
    key = (p, uaddr)
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        bitset = 0xFFFFFFFF if cmd == FUTEX_WAIT else val3 & 0xFFFFFFFF
        if not bitset or uaddr & 3:
            return -errno.EINVAL
        if int.from_bytes(p.read(uaddr, 4), "little") != val & 0xFFFFFFFF:
            return -errno.EAGAIN
        if deadline is not None and deadline <= p.sched.now_ns():
            return -errno.ETIMEDOUT
        p.sched.futex_wait(p.current, key, bitset, deadline)
        return None  # x0 arrives with the wake-up (0) or the timeout (-ETIMEDOUT)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = 0xFFFFFFFF if cmd == FUTEX_WAKE else val3 & 0xFFFFFFFF
        if not bitset or uaddr & 3:
            return -errno.EINVAL
        return p.sched.futex_wake(key, max(_s32(val), 1), bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        nr_wake, nr_requeue = _s32(val), _s32(timeout)  # the count to move travels in the timeout's register
        if nr_wake < 0 or nr_requeue < 0 or uaddr & 3 or uaddr2 & 3:
            return -errno.EINVAL
        if cmd == FUTEX_CMP_REQUEUE and int.from_bytes(p.read(uaddr, 4), "little") != val3 & 0xFFFFFFFF:
            return -errno.EAGAIN
        return p.sched.futex_requeue(key, (p, uaddr2), nr_wake, nr_requeue)
    return -errno.ENOSYS


class Threads(SyscallContext):
    @calls("exit")
    def sys_exit(self, status: int, *_: int) -> int | None:
        return exit_thread(self.p, status & 0xFF)

    @calls("set_tid_address")
    def sys_set_tid_address(self, addr: int, *_: int) -> int:
        self.p.current.clear_tid = addr
        return self.p.current.tid

    @calls("set_robust_list")
    def sys_set_robust_list(self, head: int, length: int, *_: int) -> int:
        if length != 24:
            return -errno.EINVAL
        self.p.current.robust_list = (head, length)
        return 0

    @calls("gettid")
    def sys_gettid(self, *_: int) -> int:
        return self.p.current.tid

    @calls("sched_getaffinity")
    def sys_sched_getaffinity(self, pid: int, size: int, mask: int, *_: int) -> int:
        """One CPU: a mask of one unsigned long with bit 0 (a size that is not a whole
        number of longs is EINVAL, as Linux's)."""
        size &= 0xFFFFFFFF  # unsigned int len
        if size < 8 or size & 7:
            return -errno.EINVAL
        if not self._task(pid):
            return -errno.ESRCH
        self.p.write(mask, (1).to_bytes(8, "little"))
        return 8

    @calls("sched_setaffinity")
    def sys_sched_setaffinity(self, pid: int, size: int, mask: int, *_: int) -> int:
        """A mask that keeps CPU 0 is what the thread has already; one without it names no
        CPU there is (EINVAL)."""
        size &= 0xFFFFFFFF
        raw = self.p.read(mask, min(size, 8)) if size else b""
        if not self._task(pid):
            return -errno.ESRCH
        if not int.from_bytes(raw, "little") & 1:
            return -errno.EINVAL
        return 0

    def _task(self, pid: int) -> bool:
        """Whether `pid` (0: the caller) names a live thread."""
        pid = _s32(pid)
        return pid == 0 or any(t.tid == pid for proc in self.p.sched.processes for t in proc.threads)

    @calls("sched_yield")
    def sys_sched_yield(self, *_: int) -> int:
        self.p.sched.yield_current()
        return 0

    @calls("futex")
    def sys_futex(self, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int | None:
        return futex(self.p, uaddr, op, val, timeout, uaddr2, val3)

    @calls("membarrier")
    def sys_membarrier(self, *_: int) -> int:
        return 0
