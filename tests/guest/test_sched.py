"""The green-thread scheduler: futex queues (bitsets, requeue, timeouts), restart waits,
deadlock detection, and the register context a thread switch saves (TPIDR_EL0 included)."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
from unicorn import arm64_const as a64

from unirealm.guest.sched import BLOCKED, DEAD, RUNNABLE, Blocked, Deadlock, Scheduler
from unirealm.machine.el0space import El0Space


class FakeCpu:
    def __init__(self) -> None:
        self.t = 0
        self.wfis = 0
        self.cntfrq = 1_000_000_000

    def cntvct(self) -> int:
        return self.t

    def wfi(self) -> None:
        self.wfis += 1
        self.t += 1_000_000  # a millisecond passes per idle


@pytest.fixture
def sched() -> Scheduler:
    return Scheduler(SimpleNamespace(cpu=FakeCpu(), console=None, log=lambda *a, **k: None))


class FakeProc:
    def __init__(self) -> None:
        self.threads: list = []
        self.pid = 0


def proc(s: Scheduler, n: int = 1) -> tuple[FakeProc, list]:
    p = FakeProc()
    ts = [s.new_thread(p) for _ in range(n)]
    p.pid = ts[0].tid
    return p, ts


def test_futex_wake_respects_count_and_bitset(sched: Scheduler) -> None:
    p, (a, b, c) = proc(sched, 3)
    key = (p, 0x1000)
    sched.futex_wait(a, key, 0b01, None)
    sched.futex_wait(b, key, 0b10, None)
    sched.futex_wait(c, key, 0xFFFFFFFF, None)
    assert sched.futex_wake(key, 10, 0b10) == 2  # b and c, not a
    assert [t.tid for t in sched.runq] == [b.tid, c.tid]
    assert b.result == 0 and a.state == BLOCKED
    assert sched.futex_wake((p, 0x2000), 1) == 0
    assert sched.futex_wake(key, 1) == 1 and a.state == RUNNABLE
    assert not sched.futexes


def test_futex_requeue_moves_waiters(sched: Scheduler) -> None:
    p, ts = proc(sched, 4)
    for t in ts:
        sched.futex_wait(t, (p, 0x10), 0xFFFFFFFF, None)
    assert sched.futex_requeue((p, 0x10), (p, 0x20), 1, 2) == 3
    assert len(sched.futexes[(p, 0x20)]) == 2 and len(sched.futexes[(p, 0x10)]) == 1
    assert sched.futex_wake((p, 0x20), 5) == 2


def test_futex_timeout_delivers_etimedout(sched: Scheduler) -> None:
    p, (a, b) = proc(sched, 2)
    sched.futex_wait(a, (p, 0x10), 0xFFFFFFFF, 3_000_000)
    sched.futex_wait(b, (p, 0x14), 0xFFFFFFFF, 10_000_000)
    assert sched.pick() is a  # idles until a's deadline
    assert a.result == -errno.ETIMEDOUT and not sched.futexes.get((p, 0x10))
    assert 3_000_000 <= sched.now_ns() < 10_000_000


def test_restart_waiter_runs_when_ready(sched: Scheduler) -> None:
    _p, (a, b) = proc(sched, 2)
    box = {"ready": False}
    sched.park(a, Blocked(lambda: box["ready"], None, False, "read from pipe"))
    sched.start(b)
    assert sched.pick() is b
    box["ready"] = True
    assert sched.pick() is a and a.restart == (None,) and a.result is None


def test_deadlock_is_detected_and_described(sched: Scheduler) -> None:
    p, (a, b) = proc(sched, 2)
    sched.futex_wait(a, (p, 0x40), 0xFFFFFFFF, None)
    sched.park(b, Blocked(lambda: False, None, False, "read from pipe:[3]"))
    with pytest.raises(Deadlock, match=r"futex wait on 0x40.*read from pipe:\[3\]"):
        sched.pick()


def test_console_reader_is_not_a_deadlock(sched: Scheduler) -> None:
    _p, (a,) = proc(sched, 1)
    calls = iter([False, False, True])
    sched.park(a, Blocked(lambda: next(calls), None, True, "read from /dev/console"))
    assert sched.pick() is a and sched.cpu.wfis == 2


def test_kill_removes_a_waiter(sched: Scheduler) -> None:
    p, (a, b) = proc(sched, 2)
    sched.futex_wait(a, (p, 8), 0xFFFFFFFF, None)
    sched.kill(a)
    assert a.state == DEAD and not sched.futexes and sched.live == 1 and p.threads == [b]
    assert sched.alone()


def test_context_carries_tpidr_el0_and_registers() -> None:
    cpu = SimpleNamespace(_spaces=[])
    space = El0Space(cpu, "a72")  # type: ignore[arg-type]
    space.set_reg("tpidr_el0", 0x1111)
    space.set_gpr(3, 33)
    saved = space.save_context()
    other = space.save_context()
    other.reg_write(a64.UC_ARM64_REG_TPIDR_EL0, 0x2222)
    other.reg_write(a64.UC_ARM64_REG_X3, 44)
    space.restore_context(other)
    assert space.reg("tpidr_el0") == 0x2222 and space.gpr(3) == 44
    space.restore_context(saved)
    assert space.reg("tpidr_el0") == 0x1111 and space.gpr(3) == 33
    assert space.save_context(saved) is saved
    space.close()


def test_slices_only_while_another_thread_could_run(sched: Scheduler) -> None:
    p, (a, b, c) = proc(sched, 3)
    sched.futex_wait(a, (p, 0x10), 0xFFFFFFFF, None)
    sched.futex_wait(b, (p, 0x20), 0xFFFFFFFF, None)
    assert not sched.may_preempt()  # only a syscall of the running thread can wake them
    sched.futex_wake((p, 0x10), 1)
    assert sched.may_preempt()  # a is runnable
    sched.runq.clear()
    sched.futex_wait(c, (p, 0x30), 0xFFFFFFFF, 5_000)
    assert sched.may_preempt()  # c's timeout can pass while EL0 runs


class WaitingKernel(SimpleNamespace):
    """A kernel with a GIC: `wait` records the deadline the scheduler idles until."""

    def wait(self, deadline: int | None) -> int:
        self.deadlines.append(deadline)
        self.cpu.wfi()
        return 1


def test_idle_drops_a_preemption_tick_left_from_contention() -> None:
    kernel = WaitingKernel(cpu=FakeCpu(), console=None, log=lambda *a, **k: None, irq=object(), deadlines=[])
    s = Scheduler(kernel)
    p, (a, b) = proc(s, 2)
    s.tick_at = 500  # armed while both could run; both now wait
    kernel.cpu.t = 10_000
    s.futex_wait(a, (p, 0x10), 0xFFFFFFFF, None)
    s.futex_wait(b, (p, 0x20), 0xFFFFFFFF, 2_000_000)
    s.idle(False)
    assert s.tick_at is None
    assert kernel.deadlines == [b.deadline]  # b's timeout, not the stale tick in the past
