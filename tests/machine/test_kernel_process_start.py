"""Starting a kernel process's engine (machine/kernel_process.py): the spare a VM's first
vCPU takes, the HELLO it waits for (the child's descriptor numbers and its seccomp listener),
and what it does when the child does not say hello."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from unirealm.machine import kernel_process
from unirealm.machine.kernel_process import KernelProcess, KernelProcessStopped
from unirealm.machine.memory import PhysicalMemory

from .channel_layout import HELLO_FMT


@dataclass
class FakeSpawn:
    """A started interpreter as kernel_spawn.Spawn hands it over; this test is the child."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket
    child: socket.socket
    memfd_ro: int
    irq: int
    limit: int
    cpu_model: str
    discarded: bool = False

    def bind(self, memory_fd: int, limit: int, cpu_model: str) -> FakeSpawn:
        self.limit, self.cpu_model = limit, cpu_model
        return self

    def discard(self) -> None:
        self.discarded = True
        self.proc.kill()
        self.proc.wait()


def fake(limit: int, cpu_model: str = "max") -> FakeSpawn:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return FakeSpawn(subprocess.Popen(["sleep", "60"]), parent, child, os.eventfd(0), os.eventfd(0), limit, cpu_model)


@pytest.fixture
def memory() -> Iterator[PhysicalMemory]:
    mem = PhysicalMemory(size=1 << 20)
    yield mem
    kernel_process.discard_spare(mem)


def make(memory: PhysicalMemory) -> KernelProcess:
    return KernelProcess(memory, lambda ipa, write, fetch: None, 0x8000_0000, [1, 2], "max", 1 << 20)


def test_the_engine_takes_the_spare_and_reads_its_hello(memory: PhysicalMemory) -> None:
    spare = fake((1 << 20) + kernel_process.OVERHEAD)
    kernel_process._SPARES[id(memory)] = spare  # type: ignore[assignment]
    listener = os.eventfd(0)
    socket.send_fds(spare.child, [HELLO_FMT.pack(4, 11, 12)], [listener])
    os.close(listener)
    kp = make(memory)
    assert kp.pid is None
    kp._start()
    try:
        assert id(memory) not in kernel_process._SPARES and not spare.discarded
        assert kp.pid == spare.proc.pid
        assert (kp._child_memfd, kp._child_memfd_ro) == (11, 12)
        assert kp._listener >= 0 and os.fstat(kp._listener)
        assert (kp._memfd_ro, kp._irq) == (spare.memfd_ro, spare.irq)
        assert kp._sock is spare.sock
        timeout = spare.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("ll"))
        assert struct.unpack("ll", timeout) == (0, 20_000)
        kp.emu_stop()  # the host's interrupt: the eventfd is written
        assert os.eventfd_read(spare.irq) == 1
    finally:
        kp.close()
        spare.child.close()
    assert kp._sock is None and (kp._listener, kp._memfd_ro, kp._irq) == (-1, -1, -1)
    assert spare.proc.returncode is not None
    kp.emu_stop()  # closed: nothing to write


def test_a_start_is_logged_with_the_pid_and_the_limit(memory: PhysicalMemory, caplog: pytest.LogCaptureFixture) -> None:
    limit = (1 << 20) + kernel_process.OVERHEAD
    spare = fake(limit)
    kernel_process._SPARES[id(memory)] = spare  # type: ignore[assignment]
    listener = os.eventfd(0)
    socket.send_fds(spare.child, [HELLO_FMT.pack(4, 11, 12)], [listener])
    os.close(listener)
    kp = make(memory)
    caplog.set_level(logging.DEBUG, logger="unirealm.machine.kernel_process")
    kp._start()
    try:
        assert [r.getMessage() for r in caplog.records] == [
            f"kernel process {spare.proc.pid} started (limit {limit // (1 << 20)} MiB)"]
    finally:
        kp.close()
        spare.child.close()


def test_a_spare_for_another_limit_or_model_is_discarded(memory: PhysicalMemory,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for limit, model in ((1 << 30, "max"), ((1 << 20) + kernel_process.OVERHEAD, "cortex-a710")):
        spare, new = fake(limit, model), fake(0)
        kernel_process._SPARES[id(memory)] = spare  # type: ignore[assignment]
        monkeypatch.setattr(kernel_process, "take", lambda new=new: new)
        listener = os.eventfd(0)
        socket.send_fds(new.child, [HELLO_FMT.pack(4, 5, 6)], [listener])
        os.close(listener)
        kp = make(memory)
        kp._start()
        try:
            assert spare.discarded and not new.discarded
            assert kp.pid == new.proc.pid
            assert (new.limit, new.cpu_model) == ((1 << 20) + kernel_process.OVERHEAD, "max")
        finally:
            kp.close()  # the new one's socket and descriptors with it
            new.child.close()
            spare.child.close()
            spare.sock.close()
            os.close(spare.memfd_ro)
            os.close(spare.irq)


@pytest.mark.parametrize(("hello", "fds"), [(HELLO_FMT.pack(4, 5, 6), 0), (HELLO_FMT.pack(3, 5, 6), 1),
                                            (HELLO_FMT.pack(4, 5, 6)[:-1], 1), (b"", 0)])
def test_a_child_that_does_not_say_hello_is_killed(memory: PhysicalMemory, hello: bytes, fds: int) -> None:
    spare = fake((1 << 20) + kernel_process.OVERHEAD)
    kernel_process._SPARES[id(memory)] = spare  # type: ignore[assignment]
    if hello:
        listener = os.eventfd(0)
        socket.send_fds(spare.child, [hello], [listener] * fds)
        os.close(listener)
    else:
        spare.child.close()  # the child died before its HELLO
    kp = make(memory)
    with pytest.raises(KernelProcessStopped, match="failed to start"):
        kp.run()
    assert spare.proc.returncode is not None
    kp.close()
    spare.child.close()


def test_a_child_that_never_answers_times_out(memory: PhysicalMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_process, "START_TIMEOUT", 0.05)
    spare = fake((1 << 20) + kernel_process.OVERHEAD)
    kernel_process._SPARES[id(memory)] = spare  # type: ignore[assignment]
    kp = make(memory)
    with pytest.raises(KernelProcessStopped, match=r"^the kernel process did not start$"):
        kp._start()
    assert spare.proc.returncode is not None
    kp.close()
    spare.child.close()


def test_prestart_binds_one_spare_per_memory(memory: PhysicalMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeSpawn] = []

    def take() -> FakeSpawn:
        made.append(fake(0, ""))
        return made[-1]

    monkeypatch.setattr(kernel_process, "take", take)
    kernel_process.prestart(memory, 64 << 20)
    kernel_process.prestart(memory, 32 << 20)  # one is there already
    assert len(made) == 1
    assert (made[0].limit, made[0].cpu_model) == ((64 << 20) + kernel_process.OVERHEAD, "max")
    kernel_process.discard_spare(memory)
    assert made[0].discarded and id(memory) not in kernel_process._SPARES
    kernel_process.discard_spare(memory)  # none left: nothing to do
    kernel_process.prestart(memory, None, "cortex-a710")  # the whole memory as RAM
    assert (made[1].limit, made[1].cpu_model) == (memory.size + kernel_process.OVERHEAD, "cortex-a710")
    for s in made:
        s.child.close()
        s.sock.close()
        os.close(s.memfd_ro)
        os.close(s.irq)


def test_the_limit_is_the_ram_and_the_overhead(memory: PhysicalMemory) -> None:
    kp = KernelProcess(memory, lambda ipa, write, fetch: None, 0, [], "max", 8 << 20)
    assert kp.limit == (8 << 20) + kernel_process.OVERHEAD
    kp.close()
    kp = KernelProcess(memory, lambda ipa, write, fetch: None, 0, [], "max")
    assert kp.limit == memory.size + kernel_process.OVERHEAD
    assert kp._child_memfd == kp._child_memfd_ro == -1  # no child yet: no descriptor of its is known
    kp.close()
