"""The host's physical interrupt (machine/interrupt.py): raising it marks it pending and
stops every CPU inside `emu_start` (Unicorn's documented `emu_stop`: emulation returns
from `emu_start` at the next translation block), again at each kick, until it is cleared."""

from __future__ import annotations

import struct
import threading
import time

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from unirealm.machine.interrupt import HOST_IRQ, HostInterrupt

B_SELF = 0x14000000  # b . (B with imm26 = 0: branches to itself)


class FakeCpu:
    """Counts the emu_stop calls it gets (a Uc's one method the interrupt uses)."""

    def __init__(self, fails: bool = False) -> None:
        self.stops = 0
        self.fails = fails

    def emu_stop(self) -> None:
        self.stops += 1
        if self.fails:
            raise RuntimeError("the engine is gone")


def test_a_new_interrupt_is_not_pending_and_has_no_deadline() -> None:
    irq = HostInterrupt()
    assert irq.pending is False
    assert irq.deadline is None
    irq.kick()  # no CPU runs: nothing to stop
    assert irq.pending is False
    assert HOST_IRQ.pending is False  # the machine's own one, between runs


def test_raise_marks_pending_and_stops_each_running_cpu_once() -> None:
    irq = HostInterrupt()
    a, b, idle = FakeCpu(), FakeCpu(), FakeCpu()
    with irq.running(a), irq.running(b):
        irq.raise_()
        assert irq.pending is True
        assert (a.stops, b.stops, idle.stops) == (1, 1, 0)
        irq.kick()  # again: one may have entered emu_start after the last kick
        assert (a.stops, b.stops) == (2, 2)
    irq.kick()  # both left emu_start: no longer stopped
    assert (a.stops, b.stops) == (2, 2)
    assert irq.pending is True  # until the host takes it
    irq.clear()
    assert irq.pending is False


def test_a_cpu_that_leaves_with_an_exception_is_no_longer_stopped() -> None:
    irq = HostInterrupt()
    cpu = FakeCpu()
    try:
        with irq.running(cpu):
            raise ValueError("the run failed")
    except ValueError:
        pass
    irq.raise_()
    assert cpu.stops == 0 and irq.pending


def test_one_cpu_failing_to_stop_does_not_keep_the_others_running() -> None:
    irq = HostInterrupt()
    cpus = [FakeCpu(fails=True), FakeCpu(), FakeCpu(fails=True), FakeCpu()]
    with irq.running(cpus[0]), irq.running(cpus[1]), irq.running(cpus[2]), irq.running(cpus[3]):
        irq.raise_()  # no exception reaches the raiser
    assert [c.stops for c in cpus] == [1, 1, 1, 1]
    assert irq.pending


def test_a_signal_handler_may_raise_it_while_its_thread_holds_the_lock() -> None:
    # A Python signal handler runs between any two bytecodes of the main thread: here, while
    # that thread is inside `running`'s bookkeeping (the CPU's hash is taken under the lock).
    irq = HostInterrupt()
    done = threading.Event()

    class Interrupted(FakeCpu):
        fired = False

        def __hash__(self) -> int:
            if not Interrupted.fired:
                Interrupted.fired = True
                irq.raise_()  # the handler, in the same thread
            return id(self)

    cpu = Interrupted()

    def enter() -> None:
        with irq.running(cpu):
            pass
        done.set()

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    assert done.wait(5), "raising the interrupt from inside its own bookkeeping deadlocked"
    assert irq.pending


def test_raise_from_another_thread_ends_a_unicorn_run_of_an_endless_loop() -> None:
    irq = HostInterrupt()
    uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, struct.pack("<I", B_SELF))
    timer = threading.Timer(0.05, irq.raise_)
    start = time.monotonic()
    timer.start()
    with irq.running(uc):
        uc.emu_start(0x1000, 0x2000, timeout=10_000_000)  # 10 s unless stopped
    elapsed = time.monotonic() - start
    timer.join()
    assert irq.pending and elapsed < 5
    assert uc.reg_read(a64.UC_ARM64_REG_PC) == 0x1000  # still at the loop
