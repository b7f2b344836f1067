"""Starting a kernel process's interpreter (kernel_child.py), apart from handing it a VM.

The interpreter starts with its channel as its only descriptor and an empty environment,
loads Unicorn and what a unirealm kernel may import, then waits for SETUP: the VM's memory
file, its read-only twin, the interrupt eventfd (SCM_RIGHTS), the address-space limit and
the CPU model. Only then does it bound itself, close everything else and install its
seccomp filter (kernel_child.main). Starting is thus separate from binding: `unirealm run`
starts one first thing (`start_early`), so the interpreter's start runs on another core
while the VMM imports its own modules and builds the VM. This module imports little, so
that start comes before the VMM's imports.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from . import kernel_channel as ch

# Internal switch for the benchmarks' baseline: the Python kernel as a greenlet of this
# interpreter (no isolation). Anything else runs it in a kernel process.
IN_PROCESS_ENV = "UNIREALM_IN_PROCESS_KERNEL"
SRC_ROOT = str(Path(__file__).resolve().parents[2])  # where the unirealm package lives
BOOTSTRAP = (f"import sys; sys.path.insert(0, {SRC_ROOT!r}); "
             "from unirealm.machine.kernel_child import main; sys.exit(main(sys.argv[1:]))")


class Spawn:
    """A kernel process started, its channel the only descriptor it has; `bind` hands it
    a VM's memory (the read-only memory file and the interrupt eventfd are opened here)."""

    def __init__(self) -> None:
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.memfd_ro = self.irq = -1
        self.limit, self.cpu_model = 0, ""
        argv = [sys.executable, "-I", "-c", BOOTSTRAP, str(child.fileno())]
        self.proc = subprocess.Popen(argv, env={}, cwd="/", pass_fds=(child.fileno(),), close_fds=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        child.close()

    def bind(self, memory_fd: int, limit: int, cpu_model: str) -> Spawn:
        """SETUP: the memory file `memory_fd`, its read-only twin and a new interrupt eventfd.
        A child that died meanwhile is found when its HELLO does not come."""
        self.limit, self.cpu_model = limit, cpu_model
        self.memfd_ro = os.open(f"/proc/self/fd/{memory_fd}", os.O_RDONLY | os.O_CLOEXEC)
        self.irq = os.eventfd(0, os.EFD_CLOEXEC)
        setup = ch.SETUP.pack(ch.Msg.SETUP, limit, cpu_model.encode("ascii"))
        with contextlib.suppress(OSError):
            socket.send_fds(self.sock, [setup], [memory_fd, self.memfd_ro, self.irq])
        return self

    def discard(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.sock.close()
        for fd in (self.memfd_ro, self.irq):
            if fd >= 0:
                os.close(fd)
        self.memfd_ro = self.irq = -1


_EARLY: list[Spawn] = []  # an interpreter started before its VM exists (at most one)


def start_early() -> None:
    """Start the next kernel process's interpreter now, before any VM exists; the first VM
    of this process that needs one takes it (`take`). `discard_early` ends it unused."""
    if not _EARLY and os.environ.get(IN_PROCESS_ENV) != "1":
        _EARLY.append(Spawn())


def take() -> Spawn:
    """The interpreter `start_early` started, or a new one."""
    return _EARLY.pop() if _EARLY else Spawn()


def discard_early() -> None:
    while _EARLY:
        _EARLY.pop().discard()
