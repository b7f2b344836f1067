"""The scheduler's EL0 run loop and its helpers, driven by a scripted address space: the SVC
fast path, restart waits (PC back on the svc), park_until results, the tick and slices,
context switches, faults, process exit and deadlock; plus the futex and timer corners
Linux defines (FUTEX_REQUEUE with no waiter left, a restart wait never sees -ETIMEDOUT)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from unirealm.guest.sched import (
    DEADLOCK_STATUS,
    RUNNING,
    SLICE,
    TICK_NS,
    Blocked,
    ProcessExit,
    Scheduler,
    SigQueue,
    Thread,
)

Step = Callable[[int], tuple[str, int, int]]


class FakeCpu:
    def __init__(self) -> None:
        self.t = 0
        self.cntfrq = 1_000_000_000
        self.wfis = 0

    def cntvct(self) -> int:
        return self.t

    def wfi(self) -> None:
        self.wfis += 1
        self.t += 1_000_000


class Space:
    """EL0 of one process: registers, saved contexts as dicts, and `run` following a script."""

    def __init__(self) -> None:
        self.regs: dict[str, int] = {"pc": 0, "x0": 0}
        self.steps: deque[Step] = deque()
        self.runs: list[tuple[int, int]] = []

    def run(self, pc: int, count: int) -> tuple[str, int, int]:
        self.runs.append((pc, count))
        self.regs["pc"] = pc
        reason, pc, detail = self.steps.popleft()(pc)
        self.regs["pc"] = pc
        return reason, pc, detail

    def reg(self, name: str) -> int:
        return self.regs[name]

    def set_reg(self, name: str, value: int) -> None:
        self.regs[name] = value

    def set_x0(self, value: int) -> None:
        self.regs["x0"] = value

    def set_gpr(self, n: int, value: int) -> None:
        self.regs[f"x{n}"] = value

    def save_context(self, ctx: Any = None) -> dict[str, int]:
        return dict(self.regs)

    def restore_context(self, ctx: dict[str, int]) -> None:
        self.regs = dict(ctx)


class Syscalls:
    def __init__(self) -> None:
        self.slow_path: frozenset[int] = frozenset({1})
        self.handler: Callable[[int, list[int]], int | None] = lambda nr, args: 0
        self.slow: Callable[[], None] = lambda: None
        self.handled: list[tuple[int, list[int]]] = []
        self.returns = 0

    def handle(self, nr: int, args: list[int]) -> int | None:
        self.handled.append((nr, args))
        return self.handler(nr, args)

    def dispatch(self) -> None:
        self.slow()

    def do_signal(self) -> bool:  # the return to EL0: these tests send no signals
        self.returns += 1
        return False


class Proc:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.threads: list[Thread] = []
        self.pid = 1
        self.space = Space()
        self.syscalls = Syscalls()
        self.released = False
        self.argv = ["/bin/app"]
        self.exited: list[int] = []
        self.signals: list[int] = []
        self.shared_pending = SigQueue()  # signals sent to the process as a whole
        self.faults: list[tuple[str, int, int]] = []
        self.shared_pending = SigQueue()  # signals sent to the process as a whole

    def exit(self, status: int, signal: int = 0) -> None:
        self.exited.append(status)
        self.signals.append(signal)
        for t in list(self.threads):
            self.sched.kill(t)
        self.released = True

    def fault(self, reason: str, pc: int, detail: int) -> None:
        self.faults.append((reason, pc, detail))
        raise ProcessExit.killed(11)


class Kernel(SimpleNamespace):
    def __init__(self, **kw: Any) -> None:
        super().__init__(cpu=FakeCpu(), console=None, logs=[], **kw)

    def log(self, msg: str, error: bool = False) -> None:
        self.logs.append((msg, error))


def setup(n: int = 1, **kw: Any) -> tuple[Scheduler, Proc, list[Thread]]:
    s = Scheduler(Kernel(**kw))  # type: ignore[arg-type]
    p = Proc(s)
    ts = [s.new_thread(p) for _ in range(n)]  # type: ignore[arg-type]
    return s, p, ts


def svc(reason: str = "svc") -> Step:
    return lambda pc: (reason, pc + 4, 0)


def raising(exc: BaseException) -> Callable[[], None]:
    def go() -> None:
        raise exc
    return go


def test_blocked_carries_what_it_waits_for() -> None:
    b = Blocked(lambda: True, 7, True, "read from pipe:[4]")
    assert str(b) == "read from pipe:[4]"
    assert (b.deadline, b.console, b.what, b.ready()) == (7, True, "read from pipe:[4]", True)


def test_park_until_delivers_its_result_once_ready() -> None:
    s, _p, (a, b) = setup(2)
    box = {"ready": False}
    s.park_until(a, lambda: box["ready"], 42, "wait4 for pid 9")
    assert (a.deadline, a.console, a.what, a.restart) == (None, False, "wait4 for pid 9", None)
    assert a.state == "blocked"
    s.start(b)
    assert s.pick() is b
    box["ready"] = True
    assert s.pick() is a and a.result == 42


def test_requeue_when_the_wake_took_every_waiter() -> None:
    """FUTEX_REQUEUE returns the woken plus the moved; a futex left with no waiter is fine."""
    s, p, ts = setup(2)
    for t in ts:
        s.futex_wait(t, (p, 0x10), 0xFFFFFFFF, None)
    assert s.futex_requeue((p, 0x10), (p, 0x20), 5, 5) == 2
    assert s.futexes == {}
    assert s.futex_requeue((p, 0x30), (p, 0x40), 1, 1) == 0


def test_a_restart_wait_after_a_futex_wait_never_sees_etimedout() -> None:
    """Only a futex wait's timeout delivers -ETIMEDOUT; a restarted syscall re-runs and
    measures its own timeout."""
    s, p, (a,) = setup(1)
    s.futex_wait(a, (p, 0x10), 0xFFFFFFFF, None)
    assert s.futex_wake((p, 0x10), 1) == 1 and a.futex is None
    s.runq.clear()
    s.park(a, Blocked(lambda: False, 3_000_000, False, "nanosleep"))
    assert s.pick() is a
    assert a.result is None and s.now_ns() >= 3_000_000


def test_next_deadline_takes_the_tick_the_network_and_extra() -> None:
    net = SimpleNamespace(next_deadline=lambda: 9_000, poll=lambda: None)
    s, p, (a,) = setup(1, net=net)
    s.futex_wait(a, (p, 0x10), 0xFFFFFFFF, 50_000)
    assert s.next_deadline() == 9_000
    s.tick_at = 4_000
    assert s.next_deadline() == 4_000
    assert s.next_deadline(extra=1_000) == 1_000
    s.tick_at = None
    net.next_deadline = lambda: None
    assert s.next_deadline() == 50_000


def test_idle_looks_at_the_console_only_when_no_interrupt_explains_the_wake() -> None:
    touches: list[int] = []
    console = SimpleNamespace(touch=lambda: touches.append(1))
    s, _p, _ts = setup(1)
    s.kernel.console = console
    s.idle(console=True)  # no GIC: a bare WFI
    assert touches == [1] and s.cpu.wfis == 1
    taken = deque([1, 0])
    gic, _p, _ts = setup(1, irq=object(), wait=lambda deadline: taken.popleft())
    gic.kernel.console = console
    gic.idle(console=True)
    assert touches == [1]  # an interrupt was taken
    gic.idle(console=True)
    assert touches == [1, 1]


def test_fast_svc_sets_x0_and_hands_over_when_needed() -> None:
    s, p, (a, b) = setup(2)
    s.current = a
    a.state = RUNNING
    s.sliced = True
    p.syscalls.handler = lambda nr, args: 123
    a.restart = (5,)
    assert s.fast_svc(64, 1, 2, 3, 4, 5, 6) is True
    assert p.space.regs["x0"] == 123 and p.syscalls.handled == [(64, [1, 2, 3, 4, 5, 6])]
    assert a.restart is None and s.pending is None
    p.space.regs["x0"] = 7
    p.syscalls.handler = lambda nr, args: None  # the handler set x0 itself (or none)
    assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is True and p.space.regs["x0"] == 7
    assert s.fast_svc(1, 0, 0, 0, 0, 0, 0) is False and s.pending is None  # the slow path
    blocked = Blocked(lambda: False, None, False, "x")
    p.syscalls.handler = lambda nr, args: (_ for _ in ()).throw(blocked)
    assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is False and s.pending is blocked
    s.start(b)  # a woken thread while EL0 is not sliced: the loop takes over
    s.sliced = False
    p.syscalls.handler = lambda nr, args: 0
    assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is False and s.pending == "done"
    s.sliced = True
    assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is True
    a.state = "blocked"
    assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is False and s.pending == "done"


class Timer:
    def __init__(self) -> None:
        self.armed: list[int | None] = []

    def arm(self, deadline: int | None) -> None:
        self.armed.append(deadline)


def test_arm_tick_only_while_contended() -> None:
    s, _p, (a, b) = setup(2)
    irq = SimpleNamespace(timer=Timer())
    s.cpu.t = 5_000
    s.current = a
    s.arm_tick(irq)  # type: ignore[arg-type]
    assert s.sliced is False and s.tick_at is None and irq.timer.armed == []
    s.start(b)
    s.arm_tick(irq)  # type: ignore[arg-type]
    assert s.sliced is True and s.tick_at == 5_000 + TICK_NS and irq.timer.armed == [5_000 + TICK_NS]
    s.cpu.t = 6_000
    s.arm_tick(irq)  # type: ignore[arg-type]
    assert s.tick_at == 5_000 + TICK_NS  # kept until it fires


def test_interrupted_preempts_only_on_the_tick_with_someone_runnable() -> None:
    s, _p, (a, b) = setup(2)
    taken: list[int] = []
    irq = SimpleNamespace(take=lambda: taken.append(1))
    s.current = a
    a.state = RUNNING
    s.interrupted(None)
    s.start(b)
    s.tick_at = 100
    s.cpu.t = 50
    s.interrupted(irq)  # type: ignore[arg-type]
    assert taken == [1] and s.preemptions == 0 and list(s.runq) == [b] and s.tick_at == 100
    s.cpu.t = 100
    s.interrupted(irq)  # type: ignore[arg-type]
    assert s.preemptions == 1 and list(s.runq) == [b, a] and s.tick_at is None
    s.runq.clear()
    s.tick_at = 100
    s.interrupted(irq)  # type: ignore[arg-type]
    assert s.preemptions == 1 and s.tick_at is None


def test_run_restarts_a_blocked_svc_and_switches_threads() -> None:
    s, p, (_a, b) = setup(2)
    b.ctx = {"pc": 0x2000, "x0": 0}
    s.start(b)
    box = {"ready": False}
    seen: list[tuple[str, int]] = []

    def a_blocks(pc: int) -> tuple[str, int, int]:
        seen.append(("a", pc))
        p.syscalls.slow = raising(Blocked(lambda: box["ready"], None, False, "read from pipe"))
        return "svc", pc + 4, 0

    def b_makes_ready(pc: int) -> tuple[str, int, int]:
        seen.append(("b", pc))
        box["ready"] = True
        p.syscalls.slow = lambda: None
        return "svc", pc + 4, 0

    def b_slice_ends(pc: int) -> tuple[str, int, int]:
        seen.append(("b", pc))
        return "count", pc + 40, 0

    def a_exits(pc: int) -> tuple[str, int, int]:
        seen.append(("a", pc))
        p.syscalls.slow = raising(ProcessExit(0x105))
        return "svc", pc + 4, 0

    p.space.steps.extend([a_blocks, b_makes_ready, b_slice_ends, a_exits])
    assert s.run(p, 0x1000) == 5  # type: ignore[arg-type]
    # a's svc at 0x1000 runs again after the wait; b resumes where its slice ended
    assert seen == [("a", 0x1000), ("b", 0x2000), ("b", 0x2004), ("a", 0x1000)]
    assert [count for _pc, count in p.space.runs] == [SLICE, SLICE, SLICE, SLICE]
    assert p.exited == [5] and b.ctx is None and s.live == 0


def test_run_parks_a_thread_the_fast_path_blocked() -> None:
    s, p, (a, b) = setup(2)
    b.ctx = {"pc": 0x3000, "x0": 0}
    s.start(b)
    box = {"ready": False}

    def a_fast_blocks(pc: int) -> tuple[str, int, int]:
        s.current = a
        p.syscalls.handler = lambda nr, args: (_ for _ in ()).throw(
            Blocked(lambda: box["ready"], None, False, "poll"))
        assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is False
        return "svc", pc + 4, 0

    def b_wakes_and_yields(pc: int) -> tuple[str, int, int]:
        assert pc == 0x3000 and a.state == "blocked" and a.restart == (None,)
        box["ready"] = True
        return "count", pc + 8, 0

    def a_again(pc: int) -> tuple[str, int, int]:
        assert pc == 0x1000  # back on its svc
        p.syscalls.handler = lambda nr, args: (_ for _ in ()).throw(ProcessExit(3))
        assert s.fast_svc(64, 0, 0, 0, 0, 0, 0) is False
        return "svc", pc + 4, 0

    p.space.steps.extend([a_fast_blocks, b_wakes_and_yields, a_again])
    assert s.run(p, 0x1000) == 3  # type: ignore[arg-type]
    assert p.space.steps == deque()


def test_run_hands_a_fault_to_the_process() -> None:
    s, p, (_a,) = setup(1)
    p.space.steps.append(lambda pc: ("fault_read", pc, 0xDEAD))
    assert s.run(p, 0x1000) == 139  # type: ignore[arg-type]
    assert p.faults == [("fault_read", 0x1000, 0xDEAD)]
    assert (p.exited, p.signals) == ([139], [11])  # killed by SIGSEGV: the run ends with 128 + 11
    assert p.space.runs == [(0x1000, 0)]  # a lone thread runs without slices


def test_run_reports_a_deadlock() -> None:
    s, p, (_a,) = setup(1)

    def blocks(pc: int) -> tuple[str, int, int]:
        p.syscalls.slow = raising(Blocked(lambda: False, None, False, "read from pipe:[7]"))
        return "svc", pc + 4, 0

    p.space.steps.append(blocks)
    assert s.run(p, 0x1000) == DEADLOCK_STATUS  # type: ignore[arg-type]
    ((msg, error),) = s.kernel.logs
    assert error is True and msg.startswith("/bin/app: deadlock") and "read from pipe:[7]" in msg
    assert p.exited == [DEADLOCK_STATUS]


def test_run_delivers_a_woken_futex_waiters_result() -> None:
    s, p, (a, b) = setup(2)
    b.ctx = {"pc": 0x2000, "x0": 99}
    s.start(b)

    def a_waits(pc: int) -> tuple[str, int, int]:
        p.space.regs["x0"] = 0x40  # the futex address in x0, replaced by the result
        p.syscalls.slow = lambda: s.futex_wait(a, (p, 0x40), 0xFFFFFFFF, None)
        return "svc", pc + 4, 0

    def b_wakes(pc: int) -> tuple[str, int, int]:
        assert pc == 0x2000 and p.space.regs["x0"] == 99
        p.syscalls.slow = lambda: None
        assert s.futex_wake((p, 0x40), 1) == 1
        return "count", pc + 8, 0

    def a_resumes(pc: int) -> tuple[str, int, int]:
        assert pc == 0x1004 and p.space.regs["x0"] == 0  # after its svc, FUTEX_WAIT's 0
        p.syscalls.slow = raising(ProcessExit(0))
        return "svc", pc + 4, 0

    p.space.steps.extend([a_waits, b_wakes, a_resumes])
    assert s.run(p, 0x1000) == 0  # type: ignore[arg-type]
    assert p.space.steps == deque() and a.result is None


def test_sched_yield_goes_behind_every_runnable_thread() -> None:
    """sched_yield(2): the caller moves to the end of the queue of runnable threads; alone,
    it just goes on. A waiter whose condition now holds counts as runnable."""
    s, _p, (a, b, c, d) = setup(4)
    s.current = a
    a.state = RUNNING
    s.yield_current()
    assert a.state == RUNNING and not s.runq
    s.start(b)
    box = {"ready": False}
    s.park(c, Blocked(lambda: box["ready"], None, False, "read"))
    s.start(d)
    s.yield_current()
    assert list(s.runq) == [b, d, a] and a.state == "runnable"
    s.runq.clear()
    box["ready"] = True
    s.yield_current()
    assert list(s.runq) == [c, a]


def test_sched_yield_without_a_running_thread_changes_nothing() -> None:
    """Between threads (an idle CPU, nothing current) there is no caller to move: the queue of
    runnable threads stays as it is."""
    s, _p, (a, b) = setup(2)
    s.start(a)
    s.start(b)
    assert s.current is None
    s.yield_current()
    assert list(s.runq) == [a, b] and a.state == b.state == "runnable"


def test_futex_wake_is_fifo() -> None:
    s, p, ts = setup(4)
    for t in ts:
        s.futex_wait(t, (p, 0x10), 0xFFFFFFFF, None)
    assert s.futex_wake((p, 0x10), 2) == 2
    assert list(s.runq) == ts[:2]
    assert [t.tid for t in s.futexes[(p, 0x10)]] == [t.tid for t in ts[2:]]


def test_a_sleeper_wakes_at_its_deadline_not_before() -> None:
    """nanosleep: the timer is armed for the absolute deadline; the thread runs again only
    once the clock has reached it."""
    deadlines: list[int | None] = []
    s, _p, (a,) = setup(1, irq=object(), wait=lambda d: (deadlines.append(d), s.cpu.wfi(), 1)[2])
    s.cpu.t = 1_000
    s.park(a, Blocked(lambda: False, 2_500_000, False, "nanosleep"))
    assert s.pick() is a
    assert deadlines[0] == 2_500_000 and s.now_ns() >= 2_500_000
    assert a.result is None and a.restart == (2_500_000,)


def test_now_ns_is_whole_nanoseconds_rounded_down() -> None:
    s, _p, _ts = setup(1)
    s.cpu.cntfrq = 3
    s.cpu.t = 1
    assert s.now_ns() == 333_333_333 and isinstance(s.now_ns(), int)
    s.cpu.cntfrq, s.cpu.t = 62_500_000, 5
    assert s.now_ns() == 80


def test_poll_lets_the_network_work_first() -> None:
    polls: list[int] = []
    s, _p, (a,) = setup(1, net=SimpleNamespace(poll=lambda: polls.append(1), next_deadline=lambda: None))
    s.park(a, Blocked(lambda: bool(polls), None, False, "recv"))
    s.poll()
    assert polls == [1] and list(s.runq) == [a]


def test_describe_names_every_waiter() -> None:
    s, p, (a, b) = setup(2)
    assert s.describe() == "no thread left to run"
    s.park(a, Blocked(lambda: False, None, False, ""))
    s.park(b, Blocked(lambda: False, None, False, "accept"))
    p.pid = 7
    assert s.describe() == f"thread {a.tid} (pid 7): blocked; thread {b.tid} (pid 7): accept"


def test_preemptions_are_counted() -> None:
    s, _p, (a, b) = setup(2)
    irq = SimpleNamespace(take=lambda: None)
    s.current = a
    a.state = RUNNING
    for n in (1, 2):
        other = b if s.current is a else a
        s.start(other)
        s.tick_at = s.now_ns()
        s.interrupted(irq)  # type: ignore[arg-type]
        assert s.preemptions == n
        s.current = s.runq.popleft()
        assert s.current is other
        s.current.state = RUNNING
        s.runq.clear()


def test_run_takes_an_interrupt_with_a_gic() -> None:
    taken: list[int] = []
    irq = SimpleNamespace(take=lambda: taken.append(1), timer=None)
    s, p, (_a,) = setup(1, irq=irq)
    p.space.steps.extend([lambda pc: ("irq", pc + 8, 0), lambda pc: ("fault_exec", pc, 1)])
    assert s.run(p, 0x1000) == 139  # type: ignore[arg-type]
    assert taken == [1] and p.faults == [("fault_exec", 0x1008, 1)]
