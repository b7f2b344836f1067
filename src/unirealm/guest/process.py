"""A Linux process on the unikernel: what it is (ProcState, copied as a whole by fork), its
address space (guest/addrspace.py) and threads (guest/sched.py), how it enters EL0 and what
happens when EL0 stops on something other than a syscall, and its end.

Its program is loaded by guest/loader.py, its syscalls are handled by the table
guest/syscalls.py assembles (handed in as a factory, so nothing here imports a syscall
module), fork and execve are guest/fork.py's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from unicorn import arm64_const as a64

from ..arch.memory import GRANULE_SIZE
from .addrspace import PROT_EXEC, PROT_READ, AddressSpace, page_down
from .faultaddr import access_address
from .fdtable import FdTable
from .loader import AuxvInfo, load_program, setup_stack
from .sched import Blocked, Interrupted, ProcessExit, Scheduler, SigQueue, Thread
from .uapi import SIGBUS, SIGILL, SIGSEGV, SIGTRAP
from .vfs import Vfs

if TYPE_CHECKING:
    from .interfaces import Cpu, El0Space, Kernel, Registers, SyscallEntry

TRAMPOLINE_VA = 0x1000
ILL_ILLOPC, TRAP_BRKPT, BUS_ADRERR, SEGV_MAPERR, SEGV_ACCERR = 1, 1, 2, 1, 2  # si_code values
EXCP_BKPT = 7  # the exception number the CPU reports for BRK (QEMU's, as Unicorn's)
DEFAULT_ENV = ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/", "TERM=dumb"]
GPRS_SP = [*(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)), a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30,
           a64.UC_ARM64_REG_SP]  # a base register's number: x0..x30, 31 = SP
SYSCALL_REGS = [a64.UC_ARM64_REG_X8, *(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(6))]  # nr, x0..x5


@dataclass
class ProcState:
    """Everything about a process that fork hands its child as it is (Linux's mm-less part
    of task_struct: the program and its arguments, files_struct, fs_struct, sighand): one
    object, copied as a whole by `fork()`. execve resets parts of it in place."""

    argv: list[str]
    envp: list[str]
    exe_path: str
    start_ns: int
    fds: FdTable = field(default_factory=FdTable)
    cwd: str = "/"
    umask: int = 0o022
    # prctl(2)'s per-process settings that fork keeps: PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE,
    # PR_SET_TIMERSLACK (ns), PR_SET_THP_DISABLE, PR_SET_KEEPCAPS
    no_new_privs: int = 0
    dumpable: int = 1
    timer_slack_ns: int = 50_000
    thp_disable: int = 0
    keepcaps: int = 0
    sigactions: dict[int, bytes] = field(default_factory=dict)
    entry: int = 0  # where the program (or its interpreter) starts
    auxv: AuxvInfo = field(default_factory=dict)

    def fork(self) -> ProcState:
        """The child's copy: every container copied (the open files shared, one more
        reference each), so neither side's later changes reach the other."""
        return replace(self, argv=list(self.argv), envp=list(self.envp), fds=self.fds.copy(),
                       sigactions=dict(self.sigactions), auxv=dict(self.auxv))


TASK_COMM_LEN = 16  # comm's bytes, its NUL included (include/linux/sched.h)


def comm_of(path: str) -> str:
    """The name exec gives a task (begin_new_exec: kbasename of the file name it was given,
    cut to TASK_COMM_LEN - 1 bytes)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")[:TASK_COMM_LEN - 1]
    return name.decode("utf-8", "surrogateescape")


class Process:
    def __init__(self, kernel: Kernel, state: ProcState, syscalls: Callable[[Process], SyscallEntry],
                 vfs: Vfs | None = None, sched: Scheduler | None = None, parent: Process | None = None) -> None:
        self.kernel = kernel
        self.cpu: Cpu = kernel.cpu
        self.vfs: Vfs = vfs if vfs is not None else parent.vfs if parent is not None else Vfs()
        self.sched: Scheduler = sched if sched is not None else parent.sched if parent is not None else Scheduler(kernel)
        self.state = state
        self.threads: list[Thread] = []
        self.shared_pending = SigQueue()  # signals sent to the process as a whole
        self.pid = self.sched.new_thread(self).tid
        self.sched.processes.append(self)
        self.parent = parent
        self.children: list[Process] = []
        self.exit_status: int | None = None  # set when it ends: a zombie until wait4 reaps it
        self.started_ns = self.sched.now_ns()  # /proc/PID/stat's starttime
        self.exit_comm = ""  # the main thread's name when the process ended (a zombie's comm)
        self.pdeath_signal = 0  # PR_SET_PDEATHSIG: sent when the parent ends (not inherited)
        self.term_signal = 0  # the signal that ended it, if one did
        self.execed = False  # a vfork parent waits for this (or the exit)
        self.released = False
        self.trampoline_ipa: int | None = None
        space = self.cpu.el0_space()
        if parent is None:
            self.mm = AddressSpace(kernel, space, self.describe)
            if "nofastsvc" not in kernel.options:  # kernel option: every SVC leaves run()
                space.on_svc = self.sched.fast_svc
        else:
            parent.children.append(self)
            self.mm = parent.mm.fork(space, self.describe)  # every page this process has, copied
            space.on_svc = parent.space.on_svc
        self.syscalls = syscalls(self)

    @classmethod
    def spawn(cls, kernel: Kernel, elf_bytes: bytes, argv: list[str], exe_path: str,
              syscalls: Callable[[Process], SyscallEntry], envp: list[str] | None = None, vfs: Vfs | None = None,
              sched: Scheduler | None = None) -> Process:
        """A new process running the program `elf_bytes` (ExecError if it cannot be loaded)."""
        cpu = kernel.cpu
        state = ProcState(argv, list(DEFAULT_ENV) if envp is None else envp, exe_path,
                          cpu.cntvct() * 1_000_000_000 // cpu.cntfrq)
        p = cls(kernel, state, syscalls, vfs, sched)
        p.state.entry, p.state.auxv = load_program(p.mm, p.vfs, elf_bytes, exe_path)
        p.threads[0].comm = comm_of(exe_path)
        return p

    def describe(self) -> str:
        return f"{self.pid} ({self.argv[0]})"

    @property
    def argv(self) -> list[str]:
        return self.state.argv

    @property
    def exe_path(self) -> str:
        return self.state.exe_path

    @property
    def space(self) -> El0Space:
        return self.mm.space

    @property
    def uc(self) -> Registers:
        return self.mm.space.uc

    # --- user memory (copy_from_user / copy_to_user) ------------------------------------------
    def read(self, va: int, size: int) -> bytes:
        return self.mm.read(va, size)

    def write(self, va: int, data: bytes) -> None:
        self.mm.write(va, data)

    def read_cstring(self, va: int, limit: int = 4096) -> bytes:
        return self.mm.read_cstring(va, limit)

    def accessible(self, va: int, size: int, write: bool) -> int:
        return self.mm.accessible(va, size, write)

    # --- registers ------------------------------------------------------------------------
    def syscall_args(self) -> list[int]:
        return list(self.uc.reg_read_batch(SYSCALL_REGS))

    def set_result(self, value: int) -> None:
        self.space.set_x0(value)

    # --- threads and waiting --------------------------------------------------------------
    @property
    def current(self) -> Thread:
        t = self.sched.current
        assert t is not None
        return t

    def idle(self, deadline: int | None = None) -> None:
        self.sched.idle(True, deadline)

    def signalled(self, t: Thread) -> bool:
        """Whether a signal `t` does not block is pending (Linux's signal_pending)."""
        return bool((t.pending.bits | self.shared_pending.bits) & ~t.sigmask)

    def wait(self, ready: Callable[[], bool], timeout_ns: int | None, console: bool, what: str = "waiting") -> bool:
        """Wait until `ready()`; False once the timeout passes; Interrupted (ERESTARTSYS)
        when a signal the thread does not block is pending first. A lone thread waits in
        place; otherwise the thread is parked and its syscall restarts when `ready()` holds
        or a signal arrives (with the same absolute deadline)."""
        t = self.current
        now = self.sched.now_ns()
        if t.restart is not None:
            deadline, t.restart = t.restart[0], None
        else:
            deadline = None if timeout_ns is None else now + timeout_ns
        if ready():
            return True
        if self.signalled(t):
            raise Interrupted
        if deadline is not None and now >= deadline:
            return False
        if not self.sched.alone():
            raise Blocked(lambda: ready() or self.signalled(t), deadline, console, what)
        while True:
            if deadline is None and not console and not self.sched.timers:
                return False  # nothing could ever make it ready, nor send a signal
            self.idle(deadline)
            if ready():
                return True
            if self.signalled(t):
                raise Interrupted
            if deadline is not None and self.sched.now_ns() >= deadline:
                return False

    # --- running --------------------------------------------------------------------------
    def setup_stack(self) -> int:
        s = self.state
        return setup_stack(self.mm, s.exe_path, s.argv, s.envp, s.auxv, self.kernel.realtime_offset_ns)

    def enter_el0(self, sp: int, entry: int) -> int:
        """Drop to EL0 the way a kernel does: ELR_EL1 = entry, SP_EL0 = sp, SPSR = EL0t, ERET."""
        tramp = self.kernel.pages.alloc(1)
        # msr spsr_el1, xzr ; eret
        self.cpu.write(tramp, struct.pack("<II", 0xD518401F, 0xD69F03E0))
        self.space.map(TRAMPOLINE_VA, tramp, GRANULE_SIZE, PROT_READ | PROT_EXEC)
        self.space.set_reg("elr_el1", entry)
        self.space.set_reg("sp_el0", sp)
        self.trampoline_ipa = tramp
        return TRAMPOLINE_VA

    def fault(self, reason: str, pc: int, detail: int) -> None:
        """EL0 stopped on something other than a syscall: page it in, or raise the signal
        Linux does (SIGBUS, SIGSEGV with SEGV_MAPERR or SEGV_ACCERR, SIGTRAP for BRK,
        SIGILL) at the thread: a handler runs with the faulting instruction's PC in its
        frame; without one (or with it blocked or ignored) the process ends as the signal's
        default action says."""
        sys = self.syscalls
        if reason == "fault":
            vma = self.mm.find_vma(detail)
            page = page_down(detail)
            if vma is not None and page not in self.mm.owned and vma.prot:
                try:
                    self.mm.populate(page, vma.prot, vma)  # demand paging
                except MemoryError as exc:
                    if sys.fault_signal(SIGBUS, BUS_ADRERR, self.fault_address(pc, detail)):
                        return
                    self.kernel.log(f"{self.argv[0]}: bus error: {exc} (pc {pc:#x})", error=True)
                    raise ProcessExit.killed(SIGBUS) from None
                return
            if sys.fault_signal(SIGSEGV, SEGV_MAPERR if vma is None else SEGV_ACCERR, self.fault_address(pc, detail)):
                return
            self.kernel.log(f"{self.argv[0]}: segmentation fault at {detail:#x} (pc {pc:#x})", error=True)
            raise ProcessExit.killed(SIGSEGV)
        if detail == EXCP_BKPT:
            if sys.fault_signal(SIGTRAP, TRAP_BRKPT, pc):
                return
            self.kernel.log(f"{self.argv[0]}: trace/breakpoint trap at pc {pc:#x}", error=True)
            raise ProcessExit.killed(SIGTRAP)
        if sys.fault_signal(SIGILL, ILL_ILLOPC, pc):
            return
        self.kernel.log(f"{self.argv[0]}: illegal instruction at pc {pc:#x}", error=True)
        raise ProcessExit.killed(SIGILL)

    def fault_address(self, pc: int, page: int) -> int:
        """The address a data or instruction abort at `pc` on `page` faulted at: the
        access's own address when the instruction decodes to one on that page."""
        try:
            insn = int.from_bytes(self.read(pc, 4), "little")
        except MemoryError:
            return pc if page_down(pc) == page else page  # the fetch itself faulted
        uc = self.uc
        addr = access_address(insn, lambda n: uc.reg_read(GPRS_SP[n]), pc)
        if addr is None or page_down(addr) == page:
            return page if addr is None else addr
        return page  # an access running into the next page faults at its start

    def run(self) -> int:
        """Run the program until this (the first) process ends; its exit status."""
        sp = self.setup_stack()
        pc = self.enter_el0(sp, self.state.entry)
        sched = self.sched
        try:
            return sched.run(self, pc)
        finally:
            for p in list(sched.processes):
                p.release()

    # --- the end --------------------------------------------------------------------------
    def exit(self, status: int, signal: int = 0) -> None:
        """The whole process ends (exit_group, the last thread's exit, a fatal fault, a
        signal's default action: `signal` then names it)."""
        self.exit_comm = self.comm
        for t in list(self.threads):
            self.sched.kill(t)
        self.exit_status = status
        self.term_signal = signal
        self.sched.timers.pop(self, None)
        self.release()
        if self.parent is not None and self.parent.exit_status is None:
            self.parent.syscalls.child_exited(self.pid, status, signal)  # SIGCHLD
        for child in self.children:  # PR_SET_PDEATHSIG
            if child.exit_status is None and child.pdeath_signal:
                child.syscalls.parent_died(child.pdeath_signal, self.pid)

    @property
    def comm(self) -> str:
        """The process's name: its first thread's (or, once it ended, what that was)."""
        return self.threads[0].comm if self.threads else self.exit_comm

    @property
    def wait_status(self) -> int:
        """The status wait4 reports (include/uapi/linux/wait.h's encoding, kernel/exit.c):
        the exit code in bits 8..15, or the killing signal in bits 0..6. No core file is
        written (RLIMIT_CORE is 0), so WCOREDUMP (0x80) is never set."""
        if self.term_signal:
            return self.term_signal & 0x7F
        return ((self.exit_status or 0) & 0xFF) << 8

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.state.fds.close_all()
        self.mm.release()
        if self.trampoline_ipa is not None:
            self.kernel.pages.release(self.trampoline_ipa)
            self.trampoline_ipa = None
