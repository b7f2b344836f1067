"""Threads on one vCPU: cooperative green threads, each a saved EL0 register context.

Every thread of every process runs on its process's EL0 address space (one Unicorn
instance per process). A thread gives the CPU away inside a syscall: when it blocks
(futex, a read on an empty pipe, poll, sleep, wait4), yields or exits; and when it is
preempted. While another thread is runnable (or a waiter's condition may have become true
through the running thread), EL0 runs in instruction-count slices, at whose ends the PE's
IRQ input is sampled (EL0 code cannot be stopped from another thread: machine/pykernel.py).
With the GIC (Kernel.irq) preemption is the virtual timer's tick: the timer is armed TICK_NS
ahead, and its interrupt, taken at the first slice end after it fires, sends the running
thread behind the runnable ones; a lone thread runs without a tick or slices. Without a
GIC, every slice end preempts.

Before EL0 runs and before every idle WFI the virtual timer is armed for the earliest
deadline: a sleeper's, a poll/epoll/futex timeout, the TCP and ARP timers, the tick. Device
interrupts (the NIC's SPI) are taken whenever EL0 stops and after every WFI (guest/irq.py);
the waiters they may have made ready are looked at right after.

Two ways to block:
- a futex wait parks the thread with an explicit result: FUTEX_WAKE (or a timeout)
  makes it runnable with x0 = 0 (or -ETIMEDOUT), and it resumes after its svc;
- every other wait is a restart: the thread's PC goes back to its svc, it becomes
  runnable when its condition holds or its deadline passes, and the syscall runs again
  (seeing the same absolute deadline, so a timeout is measured once).

When nothing can run but a thread waits for a deadline or for a device, the vCPU
idles (WFI) until an interrupt. When nothing can run and nothing could ever wake anyone, that is a deadlock:
it is reported and the program ends with status DEADLOCK_STATUS.
"""

from __future__ import annotations

import errno
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .uapi import NSEC

if TYPE_CHECKING:
    from .interfaces import CpuContext, Kernel, Task
    from .irq import Interrupts

RUNNING, RUNNABLE, BLOCKED, DEAD = "running", "runnable", "blocked", "dead"
SLICE = 200_000  # instructions per time slice while several threads could run (no GIC)
TICK_NS = 10_000_000  # the preemption tick with the GIC (Linux's HZ=100)
DEADLOCK_STATUS = 134
# Linux's internal restart codes (include/linux/errno.h), never seen by EL0.
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
FutexKey = tuple[object, int]  # (the address space, the futex word's address)


class Blocked(Exception):
    """Raised by a syscall that must wait: the scheduler parks the thread for a restart."""

    def __init__(self, ready: Callable[[], bool], deadline: int | None, console: bool, what: str) -> None:
        super().__init__(what)
        self.ready = ready
        self.deadline = deadline
        self.console = console
        self.what = what


class Interrupted(Exception):
    """Raised by a wait that a signal cut short: the syscall ends with -`code`, one of
    Linux's restart codes (ERESTARTSYS by default) or EINTR, which the return to EL0 turns
    into -EINTR or a restart (guest/signals.py do_signal)."""

    def __init__(self, code: int = ERESTARTSYS) -> None:
        super().__init__(code)
        self.code = code


class Deadlock(Exception):
    pass


@dataclass(eq=False)
class SigQueue:
    """Pending signals (Linux's struct sigpending): the set, and each one's siginfo (a
    standard signal is pending at most once, a real-time one once per sending)."""

    bits: int = 0
    info: dict[int, list[bytes]] = field(default_factory=dict)


class ProcessExit(Exception):
    """The process ends: `status` is its exit code; `signal`, when not 0, the signal that
    killed it (the exit code is then 128 + signal, what a shell reports and what the run
    ends with when it is the first process)."""

    def __init__(self, status: int, signal: int = 0) -> None:
        super().__init__(status)
        self.status = status
        self.signal = signal

    @classmethod
    def killed(cls, sig: int) -> ProcessExit:
        return cls(128 + sig, sig)


@dataclass(eq=False)
class Thread:
    tid: int
    proc: Task
    ctx: CpuContext | None = None  # the saved register context while not running
    clear_tid: int = 0  # CLONE_CHILD_CLEARTID / set_tid_address: zeroed and woken at exit
    robust_list: tuple[int, int] = (0, 0)
    sigmask: int = 0
    altstack: tuple[int, int, int] = (0, 2, 0)  # (ss_sp, ss_flags, ss_size): SS_DISABLE
    pending: SigQueue = field(default_factory=SigQueue)  # signals sent to this thread
    saved_sigmask: int | None = None  # the mask rt_sigsuspend/ppoll replaced (restored after)
    syscall_x0: int | None = None  # the x0 of a syscall that returned a restart code
    fault_address: int = 0  # the last fault's address (sigcontext.fault_address)
    comm: str = ""  # task_struct.comm: the executed file's name, or PR_SET_NAME's (15 bytes at most)
    state: str = RUNNABLE
    # while blocked
    ready: Callable[[], bool] | None = None
    deadline: int | None = None
    console: bool = False
    futex: tuple[FutexKey, int] | None = None  # (key, bitset)
    what: str = ""
    result: int | None = None  # x0 to deliver when it runs again
    ready_result: int | None = None  # x0 for a park_until waiter once ready
    restart: tuple[int | None] | None = None  # the deadline of a restarted syscall


class Scheduler:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.cpu = kernel.cpu
        self.ids = itertools.count(1)
        self.current: Thread | None = None
        self.runq: deque[Thread] = deque()
        self.waiting: list[Thread] = []
        self.futexes: dict[FutexKey, list[Thread]] = {}
        self.live = 0  # threads not dead, all processes
        self.processes: list[Task] = []
        self.pending: BaseException | str | None = None  # what the SVC fast path left to do
        self.sliced = False  # whether EL0 is preempted now (instruction-count slices, or the tick)
        self.tick_at: int | None = None  # the preemption tick armed (GIC only)
        self.preemptions = 0
        # each process's ITIMER_REAL: (when it expires, what its expiry does)
        self.timers: dict[Task, tuple[int, Callable[[], None]]] = {}

    def now_ns(self) -> int:
        return self.cpu.cntvct() * NSEC // self.cpu.cntfrq

    # --- threads ----------------------------------------------------------------------
    def new_thread(self, proc: Task, tid: int | None = None) -> Thread:
        t = Thread(next(self.ids) if tid is None else tid, proc)
        proc.threads.append(t)
        self.live += 1
        return t

    def alone(self) -> bool:
        """Whether the running thread is the only one alive (it may then wait in place)."""
        return self.live == 1

    def start(self, t: Thread) -> None:
        t.state = RUNNABLE
        self.runq.append(t)

    def may_preempt(self) -> bool:
        """Whether another thread can run now or could become runnable without a syscall of
        the running one (a deadline, a condition polled on devices): EL0 then runs in
        slices. A thread in a futex wait without a timeout is woken only by a syscall."""
        return bool(self.runq) or bool(self.timers) or \
            any(t.deadline is not None or t.ready is not None for t in self.waiting)

    def signal_work(self, t: Thread) -> bool:
        """Whether the return of `t` to EL0 has signals to look at: one pending that it does
        not block, or a syscall's restart code to resolve. A thread about to run its svc
        again (a restart-style wait) has none yet: the syscall itself sees the signal."""
        return t.restart is None and (t.syscall_x0 is not None or
                                      bool((t.pending.bits | t.proc.shared_pending.bits) & ~t.sigmask))

    def run_timers(self) -> None:
        """Expire the interval timers that are due (each re-arms or drops itself)."""
        if not self.timers:
            return
        now = self.now_ns()
        for due, expire in list(self.timers.values()):
            if now >= due:
                expire()

    def park(self, t: Thread, blocked: Blocked) -> None:
        """The running thread waits for a restart of its syscall (PC already rewound)."""
        t.state = BLOCKED
        t.ready, t.deadline, t.console, t.what = blocked.ready, blocked.deadline, blocked.console, blocked.what
        t.restart = (blocked.deadline,)
        t.ready_result = None
        self.waiting.append(t)

    def park_until(self, t: Thread, ready: Callable[[], bool], result: int, what: str) -> None:
        """The running thread waits for `ready()`, then resumes after its svc with x0 = result."""
        t.state = BLOCKED
        t.ready, t.deadline, t.console, t.what = ready, None, False, what
        t.restart = None
        t.ready_result = result
        self.waiting.append(t)

    def futex_wait(self, t: Thread, key: FutexKey, bitset: int, deadline: int | None) -> None:
        t.state = BLOCKED
        t.ready, t.deadline, t.console = None, deadline, False
        t.futex = (key, bitset)
        t.what = f"futex wait on {key[1]:#x}"
        self.futexes.setdefault(key, []).append(t)
        self.waiting.append(t)

    def futex_wake(self, key: FutexKey, count: int, bitset: int = 0xFFFFFFFF) -> int:
        queue = self.futexes.get(key)
        woken = 0
        if not queue:
            return 0
        for t in list(queue):
            if woken >= count:
                break
            assert t.futex is not None
            if t.futex[1] & bitset:
                self.wake(t, 0)
                woken += 1
        return woken

    def futex_requeue(self, key: FutexKey, key2: FutexKey, wake: int, move: int) -> int:
        woken = self.futex_wake(key, wake)
        queue = self.futexes.get(key, [])
        moved = 0
        for t in list(queue):
            if moved >= move:
                break
            queue.remove(t)
            assert t.futex is not None
            t.futex = (key2, t.futex[1])
            t.what = f"futex wait on {key2[1]:#x}"
            self.futexes.setdefault(key2, []).append(t)
            moved += 1
        if not queue:
            self.futexes.pop(key, None)
        return woken + moved

    def _unqueue(self, t: Thread) -> None:
        if t in self.waiting:
            self.waiting.remove(t)
        if t.futex is not None:
            queue = self.futexes.get(t.futex[0])
            if queue is not None and t in queue:
                queue.remove(t)
                if not queue:
                    del self.futexes[t.futex[0]]
            t.futex = None
        t.ready = None
        t.deadline = None

    def wake(self, t: Thread, result: int | None = None) -> None:
        self._unqueue(t)
        t.result = result
        t.state = RUNNABLE
        self.runq.append(t)

    def yield_current(self) -> None:
        """The running thread goes behind every thread that can run now (if any)."""
        t = self.current
        if t is None or not (self.runq or self.waiting):
            return
        self.poll()
        if self.runq:
            t.state = RUNNABLE
            self.runq.append(t)

    def kill(self, t: Thread) -> None:
        """Remove a thread for good (its process exited, or the thread called exit)."""
        if t.state == DEAD:
            return
        self._unqueue(t)
        if t in self.runq:
            self.runq.remove(t)
        t.state = DEAD
        t.ctx = None
        self.live -= 1
        if t in t.proc.threads:
            t.proc.threads.remove(t)

    # --- choosing who runs --------------------------------------------------------------
    def poll(self) -> None:
        """Waiters whose condition now holds, or whose deadline passed, become runnable."""
        self.poll_devices()
        self.run_timers()
        now: int | None = None
        for t in list(self.waiting):
            if t.ready is not None and t.ready():
                self.wake(t, t.ready_result)
                continue
            if t.deadline is not None:
                if now is None:
                    now = self.now_ns()
                if now >= t.deadline:
                    self.wake(t, -errno.ETIMEDOUT if t.futex is not None else None)

    def pick(self) -> Thread:
        """The next thread to run; idles while only sleepers or console readers wait."""
        while True:
            self.poll()
            if self.runq:
                return self.runq.popleft()
            if not self.timers and not any(t.deadline is not None or t.console for t in self.waiting):
                raise Deadlock(self.describe())
            console = any(t.console for t in self.waiting)
            self.idle(console)

    def next_deadline(self, extra: int | None = None) -> int | None:
        """The earliest time something is due without an interrupt of a device: a waiter's
        deadline, the network's timers, the preemption tick, `extra`."""
        times = [t.deadline for t in self.waiting if t.deadline is not None]
        net = getattr(self.kernel, "net", None)
        if net is not None and (due := net.next_deadline()) is not None:
            times.append(due)
        if self.tick_at is not None:
            times.append(self.tick_at)
        times += [due for due, _ in self.timers.values()]
        if extra is not None:
            times.append(extra)
        return min(times, default=None)

    def interrupts(self) -> Interrupts | None:
        return getattr(self.kernel, "irq", None)  # None: no GIC (or a kernel without one)

    def idle(self, console: bool, deadline: int | None = None) -> None:
        """Nothing can run: WFI until an interrupt (the timer armed for the earliest
        deadline, `deadline` included), then let devices work."""
        taken = 0
        # Nothing runs, so nothing is to be preempted: a tick armed while threads contended
        # would wake this WFI at once (and every one after it, as it is in the past).
        self.tick_at = None
        if self.interrupts() is None:
            self.cpu.wfi()
        else:
            taken = self.kernel.wait(self.next_deadline(deadline))
        if self.kernel.console is not None and not taken:
            # A wake-up no interrupt explains (console input, which has no interrupt here, or
            # the host's spurious one): look at the console; the VMM sees the guest active.
            self.kernel.console.touch()
        self.poll_devices()
        self.run_timers()

    def poll_devices(self) -> None:
        """The NIC's used ring is read here too (frames in, TCP timers, ACKs out): a load of
        guest memory, and the only way to see frames without a GIC."""
        net = getattr(self.kernel, "net", None)
        if net is not None:
            net.poll()

    def describe(self) -> str:
        parts = [f"thread {t.tid} (pid {t.proc.pid}): {t.what or 'blocked'}" for t in self.waiting]
        return "; ".join(parts) or "no thread left to run"

    # --- the EL0 run loop ---------------------------------------------------------------
    def fast_svc(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> bool:
        """A syscall inside the CPU's SVC hook. True: done, EL0 goes on. False: `run()` stops
        and the loop below finishes it (self.pending says what is left)."""
        self.pending = None
        t = self.current
        assert t is not None
        p = t.proc
        if nr in p.syscalls.slow_path:
            return False  # dispatched from the loop
        try:
            result = p.syscalls.handle(nr, [a0, a1, a2, a3, a4, a5])
        except (Blocked, ProcessExit) as exc:
            self.pending = exc
            return False
        t.restart = None
        if result is not None:
            p.space.set_x0(result)
        if t.state != RUNNING:
            self.pending = "done"  # it blocked, yielded or exited: someone else runs
            return False
        if self.signal_work(t):
            self.pending = "done"  # a signal to deliver (or a syscall to restart) first
            return False
        if self.runq and not self.sliced:
            self.pending = "done"  # it woke a thread: EL0 goes on in slices
            return False
        return True

    def arm_tick(self, irq: Interrupts) -> None:
        """Before EL0 runs: the tick while another thread could run (kept where it is until it
        fires), and the timer for the earliest deadline. A lone runnable thread leaves the
        timer as it is: its EL0 code runs without slices, so no interrupt could stop it
        before its next syscall, and the timer is armed again before the next WFI."""
        contended = self.may_preempt()
        self.sliced = contended  # the fast path hands a woken thread over at once otherwise
        if not contended:
            self.tick_at = None  # a lone thread stops only at its syscalls: no timer needed
            return
        if self.tick_at is None:
            self.tick_at = self.now_ns() + TICK_NS
        if irq.timer is not None:
            irq.timer.arm(self.next_deadline())

    def interrupted(self, irq: Interrupts | None) -> None:
        """EL0 stopped for an interrupt: take it; the tick, or a waiter it made ready,
        sends the running thread behind the runnable ones."""
        if irq is None:
            return
        irq.take()
        ticked = self.tick_at is not None and self.now_ns() >= self.tick_at
        if ticked:
            self.tick_at = None
        self.poll()
        if self.runq and ticked:
            self.preemptions += 1
            self.yield_current()

    def switch(self, old: Thread, new: Thread) -> None:
        if new is not old:
            if old.state != DEAD and not old.proc.released:
                old.ctx = old.proc.space.save_context(old.ctx)
            assert new.ctx is not None, "a thread that is not running has its registers saved"
            new.proc.space.restore_context(new.ctx)
        self.current = new
        new.state = RUNNING
        if new.result is not None:
            new.proc.space.set_gpr(0, new.result)
            new.result = None

    def run(self, init: Task, pc: int) -> int:
        """Run until the first process ends; returns its exit status."""
        self.current = init.threads[0]
        self.current.state = RUNNING
        irq = self.interrupts()
        while True:
            t = self.current
            p = t.proc
            try:
                # the return to EL0: signals first (a handler's frame, a restart, or the end)
                if self.signal_work(t) and p.syscalls.do_signal():
                    pc = p.space.reg("pc")
                if irq is None:
                    self.sliced = self.may_preempt()
                else:
                    self.arm_tick(irq)
                reason, pc, detail = p.space.run(pc, SLICE if self.sliced else 0)
                pending, self.pending = self.pending, None
                if reason == "svc" and pending is not None:
                    if isinstance(pending, Blocked):
                        p.space.set_reg("pc", pc - 4)
                        self.park(t, pending)
                    elif isinstance(pending, ProcessExit):
                        raise pending
                elif reason == "svc":
                    try:
                        p.syscalls.dispatch()
                    except Blocked as blocked:
                        p.space.set_reg("pc", pc - 4)  # the svc runs again when it can proceed
                        self.park(t, blocked)
                    else:
                        t.restart = None
                elif reason == "count":
                    self.run_timers()
                    if irq is None:
                        self.yield_current()  # without a GIC the slice is the preemption
                elif reason == "irq":
                    self.interrupted(irq)
                else:
                    p.fault(reason, pc, detail)
            except ProcessExit as done:
                p.exit(done.status & 0xFF, done.signal)
                if p is init:
                    return done.status & 0xFF
            if t.state != RUNNING:
                try:
                    nxt = self.pick()
                except Deadlock as exc:
                    self.kernel.log(f"{init.argv[0]}: deadlock: every thread is blocked and nothing can wake "
                                    f"them: {exc}", error=True)
                    init.exit(DEADLOCK_STATUS)
                    return DEADLOCK_STATUS
                self.switch(t, nxt)
            pc = self.current.proc.space.reg("pc")
