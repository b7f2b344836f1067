"""The process subsystem's lifecycle syscalls: clone (a new process, or a thread through
guest/threads.py), vfork, execve and wait4. A forked child gets a copy of its parent's
ProcState (one object, copied as a whole), of its address space (every page copied, shared
mappings shared) and of its registers, returning 0 from the svc.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn import arm64_const as a64

from ..arch.memory import GRANULE_SIZE
from .loader import ExecError, load_program, parse_elf
from .process import Process, comm_of
from .sched import ProcessExit
from .sysctx import SyscallContext, _s32
from .systable import SyscallSet
from .threads import (
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
    clone_thread,
    start_clone,
)
from .vfs import DirInode, FsError, RegInode

if TYPE_CHECKING:
    from .interfaces import SyscallEntry

WNOHANG, WUNTRACED, WCONTINUED = 1, 2, 8
__WNOTHREAD, __WALL, __WCLONE = 0x20000000, 0x40000000, 0x80000000
WAIT4_OPTIONS = WNOHANG | WUNTRACED | WCONTINUED | __WNOTHREAD | __WALL | __WCLONE  # what wait4 takes
# what a forked child inherits beyond memory (and an exec clears)
FORK_REGS = [*(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)), a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30,
             a64.UC_ARM64_REG_NZCV, a64.UC_ARM64_REG_TPIDR_EL0, a64.UC_ARM64_REG_FPCR, a64.UC_ARM64_REG_FPSR,
             *(getattr(a64, f"UC_ARM64_REG_Q{i}") for i in range(32))]

calls = SyscallSet("process")


def fork(p: Process, flags: int, stack: int, ptid: int, tls: int, ctid: int,
         syscalls: Callable[[Process], SyscallEntry]) -> int | None:
    """A new process with a copy of this one's memory, fds and registers (fork, and
    vfork, whose parent waits until the child execs or exits)."""
    if p.kernel.pages.free_bytes < (len(p.mm.owned) + 1) * GRANULE_SIZE:
        return -errno.ENOMEM  # the copy would not fit
    child = Process(p.kernel, p.state.fork(), syscalls, parent=p)
    t = child.threads[0]
    # registers: the parent's, returning 0 from the svc, entered at EL0 through the trampoline
    parent = p.current
    regs = {r: p.uc.reg_read(r) for r in FORK_REGS}
    regs[a64.UC_ARM64_REG_X0] = 0
    sp = stack or p.uc.reg_read(a64.UC_ARM64_REG_SP)
    if flags & CLONE_SETTLS:
        regs[a64.UC_ARM64_REG_TPIDR_EL0] = tls
    for r, v in regs.items():
        child.uc.reg_write(r, v)
    child.space.set_reg("pc", child.enter_el0(sp, p.uc.reg_read(a64.UC_ARM64_REG_PC)))
    t.ctx = child.space.save_context()
    start_clone(p, child, parent, t, flags, ptid, ctid)
    t.altstack = parent.altstack  # a copy of the address space keeps the alternate stack
    if flags & CLONE_VFORK:
        p.sched.park_until(parent, lambda: child.execed or child.exit_status is not None, child.pid,
                           f"vfork child {child.pid}")
        return None
    return child.pid


def execve(p: Process, path: str, argv: list[str], envp: list[str]) -> int | None:
    """Replace this process's program (its threads, memory, close-on-exec fds)."""
    node, canon = p.vfs.walk(path, p.state.cwd)
    if isinstance(node, DirInode):
        return -errno.EACCES
    if not isinstance(node, RegInode):
        return -errno.EACCES
    if not node.mode & 0o111:
        return -errno.EACCES
    data = bytes(node.data)
    try:
        elf = parse_elf(data, canon)
    except ExecError:
        return -errno.ENOEXEC
    if elf.interp is not None:  # opened and checked before the old program goes (load_elf_binary)
        try:
            interp = p.vfs.read_file(elf.interp)
        except FsError as exc:
            return -exc.errno
        try:
            parse_elf(interp, elf.interp)
        except ExecError:
            return -errno.ELIBBAD
    # the point of no return
    me = p.current
    for t in list(p.threads):
        if t is not me:
            p.sched.kill(t)
    p.mm.clear()
    p.state.fds.close_on_exec()
    # handlers do not survive the old program; SIG_IGN does (flush_signal_handlers)
    ignored = {sig: a for sig, a in p.state.sigactions.items() if a[:8] == (1).to_bytes(8, "little")}
    p.state.sigactions.clear()
    p.state.sigactions.update({sig: (1).to_bytes(8, "little") + bytes(24) for sig in ignored})
    me.altstack = (0, 2, 0)  # SS_DISABLE
    me.comm = comm_of(path)
    p.state.dumpable = 1  # begin_new_exec: SUID_DUMP_USER for a program that is not setuid
    p.state.argv, p.state.envp, p.state.exe_path = argv, envp, canon
    try:
        p.state.entry, p.state.auxv = load_program(p.mm, p.vfs, data, canon)
    except ExecError as exc:
        p.kernel.log(str(exc), error=True)
        raise ProcessExit(127) from None
    sp = p.setup_stack()
    for r in FORK_REGS:
        p.uc.reg_write(r, 0)
    p.uc.reg_write(a64.UC_ARM64_REG_SP, sp)
    p.uc.reg_write(a64.UC_ARM64_REG_PC, p.state.entry)
    me.clear_tid = 0
    me.robust_list = (0, 0)
    p.execed = True
    return None


class Fork(SyscallContext):
    @calls("clone")
    def sys_clone(self, flags: int, stack: int, ptid: int, tls: int, ctid: int, *_: int) -> int | None:
        # copy_process: CLONE_THREAD needs CLONE_SIGHAND, which needs CLONE_VM
        if (flags & CLONE_THREAD and not flags & CLONE_SIGHAND) or (flags & CLONE_SIGHAND and not flags & CLONE_VM):
            return -errno.EINVAL
        if flags & CLONE_THREAD:
            return clone_thread(self.p, flags, stack, ptid, tls, ctid)
        if flags & CLONE_SIGHAND or (flags & CLONE_VM and not flags & CLONE_VFORK):  # shared handlers or memory
            if not self.log.warned_clone:
                self.log.warned_clone = True
                self.p.kernel.log(f"clone with flags {flags:#x} is not supported (ENOSYS)")
            return -errno.ENOSYS
        return fork(self.p, flags, stack, ptid, tls, ctid, self.for_child)

    @calls("clone3")
    def sys_clone3(self, *_: int) -> int:
        return -errno.ENOSYS  # glibc falls back to clone

    @calls("execve")
    def sys_execve(self, pathp: int, argvp: int, envpp: int, *_: int) -> int | None:
        return execve(self.p, self.path(pathp), self._strings(argvp), self._strings(envpp))

    def _strings(self, addr: int) -> list[str]:
        out: list[str] = []
        while addr:
            ptr = int.from_bytes(self.p.read(addr + 8 * len(out), 8), "little")
            if not ptr:
                break
            if len(out) >= 4096:
                raise FsError(errno.E2BIG)
            out.append(self.p.read_cstring(ptr, 1 << 17).decode("utf-8", "surrogateescape"))
        return out

    @calls("wait4")
    def sys_wait4(self, pid: int, wstatus: int, options: int, rusage: int, *_: int) -> int:
        pid = _s32(pid)
        if options & ~WAIT4_OPTIONS & 0xFFFFFFFF:  # an int: the register's upper half is not read
            return -errno.EINVAL
        children = [c for c in self.p.children if pid <= 0 or c.pid == pid]
        if not children:
            return -errno.ECHILD

        def zombie() -> Process | None:
            return next((c for c in children if c.exit_status is not None), None)

        if zombie() is None:
            if options & WNOHANG:
                return 0
            if not self.block(lambda: zombie() is not None, console=False, what=f"wait4({pid})"):
                return -errno.ECHILD
        child = zombie()
        if child is None or child.exit_status is None:
            return -errno.ECHILD
        self.p.children.remove(child)
        if child in self.p.sched.processes:  # reaped: gone from /proc too
            self.p.sched.processes.remove(child)
        if wstatus:
            self.p.write(wstatus, child.wait_status.to_bytes(4, "little"))
        if rusage:
            self.p.write(rusage, bytes(144))
        return child.pid
