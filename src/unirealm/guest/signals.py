"""The signals subsystem, as Linux arm64 has it (kernel/signal.c, arch/arm64/kernel/signal.c).

Implemented:
- dispositions (rt_sigaction): SIG_DFL, SIG_IGN or a handler, with sa_mask and the flags
  SA_SIGINFO, SA_ONSTACK, SA_RESTART, SA_NODEFER, SA_RESETHAND, SA_RESTORER; ignoring a
  signal discards its pending instances. execve resets handlers to SIG_DFL (guest/fork.py).
- pending signals per thread (tkill, tgkill, faults, SIGPIPE) and per process (kill,
  ITIMER_REAL): a standard signal is pending once, a real-time one (32..64) once per
  sending. Generation discards an ignored signal the target does not block. Delivery
  happens at every return to EL0 (after a syscall, a preemption, an interrupt, a fault):
  the thread's own queue first, then the process's; synchronous signals (SIGSEGV, SIGBUS,
  SIGILL, SIGTRAP, SIGFPE, SIGSYS) first, then the lowest number. Blocked signals stay
  pending (rt_sigpending shows them).
- a handler runs on an rt_sigframe (guest/sigframe.py) on the thread's stack, or on its
  sigaltstack with SA_ONSTACK when not already on it (SS_AUTODISARM included): x0 = signo,
  x1/x2 = &info/&uc with SA_SIGINFO, SP = the frame, x29 = the frame record, x30 =
  sa_restorer with SA_RESTORER, else the vDSO's __kernel_rt_sigreturn. While it runs
  sa_mask and the signal itself (unless SA_NODEFER) are blocked; further pending signals
  nest frames at once. A frame that cannot be written forces SIGSEGV.
- rt_sigreturn restores x0..x30, SP, PC, NZCV, FPSR, FPCR, q0..q31, the mask and the
  alternate stack; a misaligned or unreadable frame, a PSTATE that is not EL0t with DAIF
  clear, or bad __reserved records force SIGSEGV.
- default actions: terminate and core kill the process: its parent's wait4 sees
  WIFSIGNALED with the signal (never WCOREDUMP: no core file is written, and RLIMIT_CORE
  reads 0), a shell reports 128 + sig, and the first process's death ends the run with
  128 + sig; SIGCHLD, SIGURG, SIGWINCH and SIGCONT are ignored. A child's end sends its
  parent SIGCHLD while the parent lives (CLD_EXITED with the exit code, CLD_KILLED with the
  signal, si_pid). The stop signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) are treated
  as ignored: no process is ever stopped.
- interrupted syscalls: a wait cut short by a deliverable signal ends with Linux's restart
  codes; at delivery ERESTARTSYS becomes EINTR or (SA_RESTART) a restart, ERESTARTNOHAND
  (poll, select, sigsuspend) EINTR, and with no handler run every one restarts. nanosleep
  and clock_nanosleep return EINTR with the time left; epoll_pwait and rt_sigtimedwait EINTR.
- rt_sigsuspend, rt_sigtimedwait, rt_sigpending, sigaltstack, kill (a pid, 0 or -pgid: the
  caller's own process, as every process is its own group here; -1: every other process
  but init), tkill, tgkill; setitimer/getitimer ITIMER_REAL (SIGALRM, si_code SI_KERNEL).
- synchronous faults (guest/process.py): SIGSEGV (SEGV_MAPERR / SEGV_ACCERR, si_addr and
  sigcontext.fault_address the faulting address), SIGBUS, SIGILL, SIGTRAP (BRK) go to a
  handler, which resumes at the faulting instruction; blocked or ignored, they kill.

Not implemented: ITIMER_VIRTUAL and ITIMER_PROF (EINVAL), rt_sigqueueinfo, signalfd,
restart_syscall, job control (stopping and continuing), the esr_context record (no ESR is
known for an EL0 fault here), core dumps, SA_NOCLDWAIT/SIG_IGN auto-reaping of children.

Why one module: dispositions, the pending queues, delivery at the return to EL0 and the
syscalls that change them are one state machine over the same per-thread and per-process
state (as kernel/signal.c is); the frame's bytes are sigframe.py's.

A signal set is Linux's sigset_t: 64 bits, signal n at bit n - 1; SIGKILL and SIGSTOP can
be neither caught nor blocked."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, cast

from unicorn import arm64_const as a64

from ..arch.image import PAYLOAD_VDSO
from .loader import VDSO_BASE, vdso_symbol
from .sched import (
    BLOCKED,
    DEADLOCK_STATUS,
    ERESTART_RESTARTBLOCK,
    ERESTARTNOHAND,
    ERESTARTNOINTR,
    ERESTARTSYS,
    Interrupted,
    ProcessExit,
    SigQueue,
    Thread,
)
from .sigframe import (
    CLD_EXITED,
    CLD_KILLED,
    RT_SIGFRAME_SIZE,
    SI_KERNEL,
    SI_TKILL,
    SI_USER,
    SIGINFO_SIZE,
    UC_OFFSET,
    BadFrame,
    UserRegs,
    build_ucontext,
    parse_ucontext,
    place_frame,
    siginfo_chld,
    siginfo_fault,
    siginfo_kill,
)
from .sysctx import SyscallContext, _s32
from .systable import SyscallSet
from .uapi import (
    NSEC,
    NSIG,
    SIGALRM,
    SIGBUS,
    SIGCHLD,
    SIGCONT,
    SIGFPE,
    SIGILL,
    SIGKILL,
    SIGRTMIN,
    SIGSEGV,
    SIGSTOP,
    SIGSYS,
    SIGTRAP,
    SIGTSTP,
    SIGTTIN,
    SIGTTOU,
    SIGURG,
    SIGWINCH,
    TIMESPEC_SIZE,
    timespec_ns,
)

if TYPE_CHECKING:
    from .process import Process

calls = SyscallSet("signals")

SIGSET_SIZE = 8  # sizeof(sigset_t)
SIG_DFL, SIG_IGN = 0, 1  # sa_handler
SA_SIGINFO, SA_RESTORER, SA_ONSTACK, SA_RESTART = 0x4, 0x04000000, 0x08000000, 0x10000000
SA_NODEFER, SA_RESETHAND = 0x40000000, 0x80000000
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
MINSIGSTKSZ = 5120  # arm64's (include/uapi/asm/signal.h)
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
RESTART_CODES = (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK)


def bit(sig: int) -> int:
    return 1 << (sig - 1)


UNBLOCKABLE = bit(SIGKILL) | bit(SIGSTOP)
DEFAULT_IGNORE = frozenset({SIGCHLD, SIGURG, SIGWINCH, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU})
SYNCHRONOUS = bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE) | bit(SIGSYS)
X_REGS = [getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)] + [a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30]
FRAME_REGS = [*X_REGS, a64.UC_ARM64_REG_SP, a64.UC_ARM64_REG_PC, a64.UC_ARM64_REG_NZCV, a64.UC_ARM64_REG_FPSR,
              a64.UC_ARM64_REG_FPCR, *(getattr(a64, f"UC_ARM64_REG_Q{i}") for i in range(32))]
ITIMERVAL = struct.Struct("<qqqq")  # it_interval, it_value: struct timeval each


def unpack_action(raw: bytes) -> tuple[int, int, int, int]:
    """arm64's struct sigaction: (sa_handler, sa_flags, sa_restorer, sa_mask)."""
    handler, flags, restorer, mask = struct.unpack("<QQQQ", raw)
    return handler, flags, restorer, mask


def dequeue(queue: SigQueue, allowed: int) -> tuple[int, bytes] | None:
    """The next signal of `queue` among `allowed` (next_signal: synchronous ones first,
    then the lowest number), taken off it with its siginfo."""
    bits = queue.bits & allowed
    if not bits:
        return None
    pick = bits & SYNCHRONOUS or bits
    sig = (pick & -pick).bit_length()
    infos = queue.info.get(sig, [])
    info = infos.pop(0) if infos else siginfo_kill(sig, SI_KERNEL, 0)
    if not infos:
        queue.info.pop(sig, None)
        queue.bits &= ~bit(sig)
    return sig, info


def flush(queue: SigQueue, sig: int) -> None:
    queue.bits &= ~bit(sig)
    queue.info.pop(sig, None)


def temporary_mask(t: Thread, mask: int) -> None:
    """rt_sigsuspend, ppoll, pselect6: `mask` while the call waits; the old one comes back
    after the handler of the signal that ends the wait (or at once without one)."""
    if t.saved_sigmask is None:
        t.saved_sigmask = t.sigmask
    t.sigmask = mask & ~UNBLOCKABLE


def restore_mask(t: Thread) -> None:
    if t.saved_sigmask is not None:
        t.sigmask, t.saved_sigmask = t.saved_sigmask, None


class RealTimer:
    """A process's ITIMER_REAL: SIGALRM at expiry, then again every `interval` ns."""

    def __init__(self, layer: Signals, due: int, interval: int) -> None:
        self.layer, self.due, self.interval = layer, due, interval

    def __call__(self) -> None:
        p = self.layer.p
        sched = p.sched
        if self.interval:
            now = sched.now_ns()
            self.due += ((now - self.due) // self.interval + 1) * self.interval  # hrtimer_forward
            sched.timers[p] = (self.due, self)
        else:
            sched.timers.pop(p, None)
        self.layer.send(p, None, SIGALRM, siginfo_kill(SIGALRM, SI_KERNEL, 0))


class Signals(SyscallContext):
    _sigtramp: int | None = None

    # --- dispositions -----------------------------------------------------------------
    def action(self, sig: int) -> tuple[int, int, int, int]:
        raw = self.p.state.sigactions.get(sig)
        return (SIG_DFL, 0, 0, 0) if raw is None else unpack_action(raw)

    def set_default(self, sig: int) -> None:
        self.p.state.sigactions.pop(sig, None)

    def ignored(self, t: Thread, sig: int) -> bool:
        """Whether a signal sent now would be discarded (sig_ignored): not blocked, and
        SIG_IGN or a SIG_DFL whose default is to ignore it."""
        if t.sigmask & bit(sig) or sig == SIGKILL:
            return False
        handler = self.action(sig)[0]
        return handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORE)

    @calls("rt_sigaction")
    def sys_rt_sigaction(self, sig: int, act: int, oldact: int, sigsetsize: int, *_: int) -> int:
        if sigsetsize != SIGSET_SIZE or not 1 <= sig <= NSIG or (sig in (SIGKILL, SIGSTOP) and act):
            return -errno.EINVAL
        new = self.p.read(act, 32) if act else None
        if oldact:
            self.p.write(oldact, self.p.state.sigactions.get(sig, bytes(32)))
        if new is not None:
            handler, flags, restorer, mask = unpack_action(new)
            self.p.state.sigactions[sig] = struct.pack("<QQQQ", handler, flags, restorer, mask & ~UNBLOCKABLE)
            if handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORE):
                # POSIX: a pending signal set to be ignored is discarded, blocked or not
                flush(self.p.shared_pending, sig)
                for t in self.p.threads:
                    flush(t.pending, sig)
        return 0

    # --- masks ------------------------------------------------------------------------
    @calls("rt_sigprocmask")
    def sys_rt_sigprocmask(self, how: int, new: int, old: int, sigsetsize: int, *_: int) -> int:
        if sigsetsize != SIGSET_SIZE:
            return -errno.EINVAL
        t = self.p.current
        before = t.sigmask
        if new:
            m = int.from_bytes(self.p.read(new, SIGSET_SIZE), "little") & ~UNBLOCKABLE
            if how == SIG_BLOCK:
                t.sigmask = before | m
            elif how == SIG_UNBLOCK:
                t.sigmask = before & ~m
            elif how == SIG_SETMASK:
                t.sigmask = m
            else:
                return -errno.EINVAL
        if old:
            self.p.write(old, before.to_bytes(SIGSET_SIZE, "little"))
        return 0

    @calls("rt_sigpending")
    def sys_rt_sigpending(self, uset: int, sigsetsize: int, *_: int) -> int:
        """The blocked signals pending for the thread or its process."""
        if sigsetsize > SIGSET_SIZE:
            return -errno.EINVAL
        t = self.p.current
        pending = (t.pending.bits | self.p.shared_pending.bits) & t.sigmask
        self.p.write(uset, pending.to_bytes(SIGSET_SIZE, "little")[:sigsetsize])
        return 0

    @calls("rt_sigsuspend")
    def sys_rt_sigsuspend(self, mask: int, sigsetsize: int, *_: int) -> int:
        if sigsetsize != SIGSET_SIZE:
            return -errno.EINVAL
        temporary_mask(self.p.current, int.from_bytes(self.p.read(mask, SIGSET_SIZE), "little"))
        try:
            self.block(lambda: False, None, console=False, what="rt_sigsuspend")
        except Interrupted:
            raise Interrupted(ERESTARTNOHAND) from None
        self.p.kernel.log(f"{self.p.argv[0]}: deadlock: rt_sigsuspend waits for a signal nothing can send",
                          error=True)
        raise ProcessExit(DEADLOCK_STATUS)

    @calls("rt_sigtimedwait")
    def sys_rt_sigtimedwait(self, uthese: int, uinfo: int, uts: int, sigsetsize: int, *_: int) -> int:
        """Take one of the signals of the set off the pending queues, waiting at most the
        timeout (EAGAIN after it; EINTR when another signal is delivered meanwhile)."""
        if sigsetsize != SIGSET_SIZE:
            return -errno.EINVAL
        these = int.from_bytes(self.p.read(uthese, SIGSET_SIZE), "little") & ~UNBLOCKABLE
        timeout = timespec_ns(self.p.read(uts, TIMESPEC_SIZE)) if uts else None
        t = self.p.current

        def ready() -> bool:  # looked at by the scheduler too: it takes nothing
            return bool((t.pending.bits | self.p.shared_pending.bits) & these)

        try:
            if not self.block(ready, timeout, console=False, what="rt_sigtimedwait"):
                return -errno.EAGAIN
        except Interrupted:
            return -errno.EINTR
        got = dequeue(t.pending, these) or dequeue(self.p.shared_pending, these)
        assert got is not None
        sig, info = got
        if uinfo:
            self.p.write(uinfo, info)
        return sig

    # --- the alternate stack --------------------------------------------------------------
    def sas_ss_flags(self, t: Thread, sp: int) -> int:
        ss_sp, flags, size = t.altstack
        if not size:
            return SS_DISABLE
        on = not flags & SS_AUTODISARM and ss_sp < sp and sp - ss_sp <= size
        return SS_ONSTACK if on else 0

    def set_altstack(self, t: Thread, ss: tuple[int, int, int], sp: int) -> int:
        """do_sigaltstack's checks and change; 0 or a negative errno."""
        if self.sas_ss_flags(t, sp) == SS_ONSTACK:
            return -errno.EPERM
        ss_sp, flags, size = ss
        mode = flags & ~SS_AUTODISARM
        if mode not in (0, SS_ONSTACK, SS_DISABLE):
            return -errno.EINVAL
        if mode == SS_DISABLE:
            ss_sp = size = 0
        elif size < MINSIGSTKSZ:
            return -errno.ENOMEM
        t.altstack = (ss_sp, flags, size)
        return 0

    @calls("sigaltstack")
    def sys_sigaltstack(self, ss: int, old: int, *_: int) -> int:
        t = self.p.current
        sp = self.p.uc.reg_read(a64.UC_ARM64_REG_SP)
        new = struct.unpack("<QiiQ", self.p.read(ss, 24)) if ss else None
        ss_sp, flags, size = t.altstack
        before = struct.pack("<QiiQ", ss_sp, _s32(self.sas_ss_flags(t, sp) | (flags & SS_AUTODISARM)), 0, size)
        if new is not None:
            err = self.set_altstack(t, (new[0], new[1] & 0xFFFFFFFF, new[3]), sp)
            if err:
                return err
        if old:
            self.p.write(old, before)
        return 0

    # --- sending ------------------------------------------------------------------------
    def send(self, target: Process, t: Thread | None, sig: int, info: bytes) -> None:
        """send_signal: `sig` queued for thread `t` of `target`, or for the process as a
        whole (t None), and a thread that can take it woken from an interruptible wait."""
        layer = target.syscalls
        assert isinstance(layer, Signals)
        if not target.threads:
            return
        if layer.ignored(t or target.threads[0], sig):
            return
        queue = t.pending if t is not None else target.shared_pending
        if sig < SIGRTMIN and queue.bits & bit(sig):
            return  # a standard signal is pending once
        queue.bits |= bit(sig)
        queue.info.setdefault(sig, []).append(info)
        for th in [t] if t is not None else target.threads:
            if not th.sigmask & bit(sig):
                self.interrupt_wait(th)
                break

    def interrupt_wait(self, t: Thread) -> None:
        """A thread in a futex wait is woken by a signal it takes: the wait ends with
        ERESTARTSYS (ERESTARTNOHAND with a timeout). Restart-style waits look at the
        signals themselves (Process.wait)."""
        if t.state == BLOCKED and t.futex is not None and t.ctx is not None:
            t.syscall_x0 = t.ctx.reg_read(a64.UC_ARM64_REG_X0)
            self.p.sched.wake(t, -(ERESTARTNOHAND if t.deadline is not None else ERESTARTSYS))

    def thread_signal(self, sig: int) -> None:
        """`sig` raised by the kernel at the calling thread (send_sig: SIGPIPE)."""
        self.send(self.p, self.p.current, sig, siginfo_kill(sig, SI_USER, self.p.pid))

    def child_exited(self, pid: int, status: int, signal: int = 0) -> None:
        """do_notify_parent: SIGCHLD for a child of this process that ended, CLD_EXITED
        with its exit code, or CLD_KILLED with the signal that killed it (never
        CLD_DUMPED: no core file is written)."""
        if signal:
            info = siginfo_chld(CLD_KILLED, pid, signal)
        else:
            info = siginfo_chld(CLD_EXITED, pid, status)
        self.send(self.p, None, SIGCHLD, info)

    def parent_died(self, sig: int, pid: int) -> None:
        """PR_SET_PDEATHSIG's signal, for this process as a whole, from its parent `pid` that ended."""
        self.send(self.p, None, sig, siginfo_kill(sig, SI_USER, pid))

    def fault_signal(self, sig: int, code: int, addr: int) -> bool:
        """A synchronous fault's signal forced on the calling thread (force_sig_fault):
        True if a handler will run; False if it is to kill (no handler, or one that is
        blocked or ignored, which Linux resets to SIG_DFL)."""
        self.p.current.fault_address = addr
        return self.force(sig, siginfo_fault(sig, code, addr))

    def force(self, sig: int, info: bytes) -> bool:
        """force_sig_info on the calling thread: True if a handler will run."""
        t = self.p.current
        handler = self.action(sig)[0]
        if t.sigmask & bit(sig) or handler == SIG_IGN:
            self.set_default(sig)
            t.sigmask &= ~bit(sig)
            return False
        if handler == SIG_DFL:
            return False
        if not t.pending.bits & bit(sig):
            t.pending.bits |= bit(sig)
            t.pending.info[sig] = [info]
        return True

    def force_sigsegv(self, sig: int) -> None:
        """No frame could be written for `sig` (or rt_sigreturn found a bad one): SIGSEGV,
        fatal if it was SIGSEGV's own frame or no handler takes it."""
        if sig == SIGSEGV:
            self.set_default(SIGSEGV)
        if not self.force(SIGSEGV, siginfo_kill(SIGSEGV, SI_KERNEL, 0)):
            self.die_of(SIGSEGV)

    def die_of(self, sig: int) -> None:
        """The default action of a terminating signal: the process is killed by `sig` (its
        parent's wait4 sees WIFSIGNALED; as the first process the run ends with 128 + sig)."""
        # The first process's death ends the run and a fault is a crash: shown even when
        # quiet. A child killed by a signal someone sent (a shell's kill, timeout) is
        # ordinary: an info line, as Linux logs nothing for it.
        crash = self.p.parent is None or bool(bit(sig) & SYNCHRONOUS)
        self.p.kernel.log(f"{self.p.argv[0]}: killed by signal {sig}", error=crash)
        raise ProcessExit.killed(sig)

    def targets(self, pid: int) -> list[Process]:
        """The processes kill(pid) names (every process is its own group here)."""
        live = [q for q in cast("list[Process]", self.p.sched.processes) if q.exit_status is None and q.threads]
        if pid == -1:
            return [q for q in live if q.pid not in (1, self.p.pid)]
        want = self.p.pid if pid == 0 else abs(pid)
        return [q for q in live if q.pid == want]

    @calls("kill")
    def sys_kill(self, pid: int, sig: int, *_: int) -> int:
        pid = _s32(pid)
        procs = self.targets(pid)
        if not procs:
            return -errno.ESRCH
        if not 0 <= sig <= NSIG:
            return -errno.EINVAL
        if sig:
            for q in procs:
                self.send(q, None, sig, siginfo_kill(sig, SI_USER, self.p.pid))
        return 0

    def send_thread(self, tgid: int, tid: int, sig: int) -> int:
        for q in cast("list[Process]", self.p.sched.processes):
            for t in q.threads:
                if t.tid == tid and (tgid == 0 or q.pid == tgid):
                    if not 0 <= sig <= NSIG:
                        return -errno.EINVAL
                    if sig:
                        self.send(q, t, sig, siginfo_kill(sig, SI_TKILL, self.p.pid))
                    return 0
        return -errno.ESRCH

    @calls("tgkill")
    def sys_tgkill(self, tgid: int, tid: int, sig: int, *_: int) -> int:
        tgid, tid = _s32(tgid), _s32(tid)
        if tgid <= 0 or tid <= 0:
            return -errno.EINVAL
        return self.send_thread(tgid, tid, sig)

    @calls("tkill")
    def sys_tkill(self, tid: int, sig: int, *_: int) -> int:
        tid = _s32(tid)
        if tid <= 0:
            return -errno.EINVAL
        return self.send_thread(0, tid, sig)

    # --- interval timers ------------------------------------------------------------------
    def _itimer(self) -> bytes:
        entry = self.p.sched.timers.get(self.p)
        if entry is None:
            return bytes(ITIMERVAL.size)
        due, timer = entry
        assert isinstance(timer, RealTimer)
        left = max(due - self.now_ns(), 1000)  # an expiring timer shows 1 us
        return ITIMERVAL.pack(timer.interval // NSEC, timer.interval % NSEC // 1000, left // NSEC,
                              left % NSEC // 1000)

    @calls("getitimer")
    def sys_getitimer(self, which: int, value: int, *_: int) -> int:
        if _s32(which) != ITIMER_REAL:
            return -errno.EINVAL
        self.p.write(value, self._itimer())
        return 0

    @calls("setitimer")
    def sys_setitimer(self, which: int, value: int, ovalue: int, *_: int) -> int:
        if _s32(which) != ITIMER_REAL:
            return -errno.EINVAL
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(self.p.read(value, ITIMERVAL.size)) if value else (0, 0, 0, 0)
        if min(isec, iusec, vsec, vusec) < 0 or iusec >= 1_000_000 or vusec >= 1_000_000:
            return -errno.EINVAL
        old = self._itimer()
        if vsec or vusec:
            due = self.now_ns() + vsec * NSEC + vusec * 1000
            self.p.sched.timers[self.p] = (due, RealTimer(self, due, isec * NSEC + iusec * 1000))
        else:
            self.p.sched.timers.pop(self.p, None)
        if ovalue:
            self.p.write(ovalue, old)
        return 0

    # --- delivery -------------------------------------------------------------------------
    def sigtramp(self) -> int:
        """The vDSO's __kernel_rt_sigreturn (0 when the image has no vDSO)."""
        if self._sigtramp is None:
            try:
                offset = vdso_symbol(self.p.cpu.read_image_file(PAYLOAD_VDSO), "__kernel_rt_sigreturn")
            except KeyError:
                offset = None
            self._sigtramp = 0 if offset is None else VDSO_BASE + offset
        return self._sigtramp

    def user_regs(self) -> UserRegs:
        r = list(self.p.uc.reg_read_batch(FRAME_REGS))
        return UserRegs(r[:31], r[31], r[32], r[33] & 0xF000_0000, r[34], r[35], r[36:68])

    def set_user_regs(self, regs: UserRegs) -> None:
        uc = self.p.uc
        for reg, value in zip(FRAME_REGS, [*regs.x, regs.sp, regs.pc, regs.pstate & 0xF000_0000, regs.fpsr,
                                           regs.fpcr, *regs.v], strict=True):
            uc.reg_write(reg, value)

    def do_signal(self) -> bool:
        """The return to EL0 (arm64's do_signal): resolve a syscall's restart code, then
        take the pending signals the thread does not block, running each one's action;
        every handler gets a frame, nested on the one before. True if EL0's registers
        changed."""
        from .process import TRAMPOLINE_VA
        t = self.p.current
        uc = self.p.uc
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if pc == TRAMPOLINE_VA:
            return False  # a new process that has not reached EL0 yet: at its first stop
        changed = False
        orig_x0, t.syscall_x0 = t.syscall_x0, None
        code = 0
        if orig_x0 is not None:
            ret = uc.reg_read(a64.UC_ARM64_REG_X0)
            if (1 << 64) - ret in RESTART_CODES:
                code = (1 << 64) - ret
                uc.reg_write(a64.UC_ARM64_REG_X0, orig_x0)  # the svc runs again ...
                uc.reg_write(a64.UC_ARM64_REG_PC, pc - 4)
                changed = True
        delivered = False
        while True:
            got = dequeue(t.pending, ~t.sigmask) or dequeue(self.p.shared_pending, ~t.sigmask)
            if got is None:
                break
            sig, info = got
            handler, flags, restorer, mask = self.action(sig)
            if handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORE):
                continue
            if handler == SIG_DFL:
                self.die_of(sig)
            if flags & SA_RESETHAND:
                self.set_default(sig)
            if code in (ERESTARTNOHAND, ERESTART_RESTARTBLOCK) or (code == ERESTARTSYS and not flags & SA_RESTART):
                uc.reg_write(a64.UC_ARM64_REG_X0, -errno.EINTR & ((1 << 64) - 1))  # ... unless it is EINTR
                uc.reg_write(a64.UC_ARM64_REG_PC, pc)
            code = 0
            self.setup_frame(t, sig, info, handler, flags, restorer, mask)
            delivered = changed = True
        if not delivered:
            restore_mask(t)
        return changed

    def setup_frame(self, t: Thread, sig: int, info: bytes, handler: int, flags: int, restorer: int,
                    mask: int) -> None:
        """setup_rt_frame and signal_delivered: the frame, the handler's registers, its mask."""
        regs = self.user_regs()
        ss_sp, ss_flags, ss_size = t.altstack
        on = self.sas_ss_flags(t, regs.sp)
        top = ss_sp + ss_size if flags & SA_ONSTACK and on == 0 else regs.sp
        frame, record = place_frame(top)
        oldmask = t.sigmask if t.saved_sigmask is None else t.saved_sigmask
        uc = build_ucontext(regs, oldmask, (ss_sp, _s32(on | (ss_flags & SS_AUTODISARM)), ss_size), t.fault_address)
        try:
            self.p.write(record, struct.pack("<QQ", regs.x[29], regs.x[30]))
            self.p.write(frame + UC_OFFSET, uc)
            if flags & SA_SIGINFO:
                self.p.write(frame, info[:SIGINFO_SIZE])
        except MemoryError:
            self.force_sigsegv(sig)
            return
        if ss_flags & SS_AUTODISARM:
            t.altstack = (0, SS_DISABLE, 0)
        w = self.p.uc.reg_write
        w(a64.UC_ARM64_REG_X0, sig)
        if flags & SA_SIGINFO:
            w(a64.UC_ARM64_REG_X1, frame)
            w(a64.UC_ARM64_REG_X2, frame + UC_OFFSET)
        w(a64.UC_ARM64_REG_SP, frame)
        w(a64.UC_ARM64_REG_X29, record)
        w(a64.UC_ARM64_REG_X30, restorer if flags & SA_RESTORER else self.sigtramp())
        w(a64.UC_ARM64_REG_PC, handler)
        t.saved_sigmask = None
        t.sigmask |= (mask | (0 if flags & SA_NODEFER else bit(sig))) & ~UNBLOCKABLE

    @calls("rt_sigreturn")
    def sys_rt_sigreturn(self, *_: int) -> int | None:
        """Restore what the frame at SP saved; a bad frame forces SIGSEGV."""
        t = self.p.current
        sp = self.p.uc.reg_read(a64.UC_ARM64_REG_SP)
        t.syscall_x0 = None
        try:
            if sp & 0xF:
                raise BadFrame("misaligned")
            regs, mask, stack = parse_ucontext(self.p.read(sp + UC_OFFSET, RT_SIGFRAME_SIZE - UC_OFFSET))
        except (BadFrame, MemoryError):
            self.p.kernel.log(f"{self.p.argv[0]}: bad frame in rt_sigreturn: sp={sp:#x}", error=True)
            self.force_sigsegv(0)
            return 0
        t.sigmask = mask & ~UNBLOCKABLE
        self.set_user_regs(regs)
        self.set_altstack(t, (stack[0], stack[1] & 0xFFFFFFFF, stack[2]), regs.sp)  # errors squashed
        return regs.x[0]
