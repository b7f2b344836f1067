"""Signal delivery (guest/signals.py, guest/sigframe.py) on a real Process over the fake
CPU of tests/guest/test_syscall_fuzz.py, against Linux arm64: the rt_sigframe's layout
as the toolchain's own headers lay it out (a program printing offsetof() values, run
under qemu-aarch64-static), the handler's registers (arch/arm64/kernel/signal.c
setup_return), the masks of sigaction(2)/signal(7), restart codes as do_signal resolves
them, rt_sigreturn's restore and its bad frames, sigaltstack(2), setitimer(2), and the
load/store addresses of instructions GNU as encodes."""

from __future__ import annotations

import errno
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from unicorn import arm64_const as a64

from unirealm.guest import sigframe as sf
from unirealm.guest.faultaddr import access_address
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.sched import ERESTARTNOHAND, ERESTARTSYS, ProcessExit

from .process_support import call, scratch
from .test_syscall_fuzz import make_process

CC, QEMU, AS = (shutil.which(t) for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static", "aarch64-linux-gnu-as"))
SIGINT, SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGCHLD = 2, 9, 10, 11, 12, 13, 14, 15, 17
SIGSTOP, SIGRTMIN = 19, 34
SA_SIGINFO, SA_RESTORER, SA_ONSTACK, SA_RESTART, SA_NODEFER, SA_RESETHAND = (
    0x4, 0x04000000, 0x08000000, 0x10000000, 0x40000000, 0x80000000)
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
SI_USER, SI_KERNEL, SI_TKILL = 0, 0x80, -6
HANDLER, RESTORER = 0x401000, 0x402000
SVC_PC, AFTER_SVC = 0x400078, 0x40007C  # tiny_elf: `svc #0; b .`
X = [getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)] + [a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30]
Q = [getattr(a64, f"UC_ARM64_REG_Q{i}") for i in range(32)]
MASK64 = (1 << 64) - 1

OFFSETS_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <signal.h>
#include <sys/ucontext.h>
#include <asm/sigcontext.h>
#define P(name, value) printf("%s %lu\n", name, (unsigned long)(value))
int main(void) {
    P("sizeof_siginfo", sizeof(siginfo_t));
    P("si_signo", offsetof(siginfo_t, si_signo)); P("si_code", offsetof(siginfo_t, si_code));
    P("si_pid", offsetof(siginfo_t, si_pid)); P("si_uid", offsetof(siginfo_t, si_uid));
    P("si_addr", offsetof(siginfo_t, si_addr)); P("si_status", offsetof(siginfo_t, si_status));
    P("uc_flags", offsetof(ucontext_t, uc_flags)); P("uc_link", offsetof(ucontext_t, uc_link));
    P("uc_stack", offsetof(ucontext_t, uc_stack)); P("uc_sigmask", offsetof(ucontext_t, uc_sigmask));
    P("uc_mcontext", offsetof(ucontext_t, uc_mcontext)); P("sizeof_ucontext", sizeof(ucontext_t));
    P("ss_sp", offsetof(stack_t, ss_sp)); P("ss_flags", offsetof(stack_t, ss_flags));
    P("ss_size", offsetof(stack_t, ss_size));
    P("fault_address", offsetof(struct sigcontext, fault_address)); P("regs", offsetof(struct sigcontext, regs));
    P("sp", offsetof(struct sigcontext, sp)); P("pc", offsetof(struct sigcontext, pc));
    P("pstate", offsetof(struct sigcontext, pstate)); P("reserved", offsetof(struct sigcontext, __reserved));
    P("sizeof_fpsimd", sizeof(struct fpsimd_context)); P("fpsr", offsetof(struct fpsimd_context, fpsr));
    P("fpcr", offsetof(struct fpsimd_context, fpcr)); P("vregs", offsetof(struct fpsimd_context, vregs));
    P("FPSIMD_MAGIC", FPSIMD_MAGIC); P("ESR_MAGIC", ESR_MAGIC); P("sizeof_esr", sizeof(struct esr_context));
    P("SA_SIGINFO", SA_SIGINFO); P("SA_ONSTACK", SA_ONSTACK); P("SA_RESTART", SA_RESTART);
    P("SA_NODEFER", SA_NODEFER); P("SA_RESETHAND", SA_RESETHAND); P("MINSIGSTKSZ", MINSIGSTKSZ);
    return 0;
}
"""


@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The layout facts of the aarch64 toolchain's headers, printed by a program built with them."""
    if CC is None or QEMU is None:
        pytest.skip("aarch64-linux-gnu-gcc and qemu-aarch64-static are needed")
    out = tmp_path_factory.mktemp("offsets")
    (out / "offsets.c").write_text(OFFSETS_C)
    subprocess.run([CC, "-static", "-o", str(out / "offsets"), str(out / "offsets.c")], check=True)
    res = subprocess.run([QEMU, str(out / "offsets")], capture_output=True, check=True, text=True)
    return {k: int(v) for k, v in (line.split() for line in res.stdout.splitlines())}


@pytest.fixture
def proc() -> Iterator[Process]:
    try:
        p = make_process()
        p.uc.reg_write(a64.UC_ARM64_REG_PC, AFTER_SVC)
        yield p
    finally:
        Store.current = None


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def handle(p: Process, sig: int, flags: int = SA_RESTORER, mask: int = 0, handler: int = HANDLER) -> None:
    buf = scratch(p, 0x1000)
    p.write(buf, struct.pack("<QQQQ", handler, flags, RESTORER, mask))
    assert call(p, "rt_sigaction", sig, buf, 0, 8) == 0


def user_stack(p: Process, misalign: int = 8) -> int:
    """A stack for EL0 (64 KiB of fresh memory): SP near its top, `misalign` off 16."""
    sp = scratch(p, 0x10000) + 0xF000 + misalign
    p.uc.reg_write(a64.UC_ARM64_REG_SP, sp)
    return sp


def reg(p: Process, r: int) -> int:
    return p.uc.reg_read(r)


def sigmask(p: Process) -> int:
    return p.current.sigmask


def raise_(p: Process, sig: int) -> None:
    assert call(p, "tgkill", p.pid, p.current.tid, sig) == 0


# --- the frame's layout ------------------------------------------------------------------

def test_frame_layout_is_the_headers(linux: dict[str, int]) -> None:
    def headers(*keys: str) -> tuple[int, ...]:
        return tuple(linux[k] for k in keys)

    ours = {
        "siginfo": (sf.SIGINFO_SIZE, sf.UC_OFFSET),
        "ucontext": (sf.UC_FLAGS, sf.UC_LINK, sf.UC_STACK, sf.UC_SIGMASK, sf.UC_MCONTEXT),
        "frame": (sf.RT_SIGFRAME_SIZE,),
        "sigcontext": (sf.SC_FAULT_ADDRESS, sf.SC_REGS, sf.SC_SP, sf.SC_PC, sf.SC_PSTATE, sf.SC_RESERVED),
        "records": (sf.FPSIMD_MAGIC, sf.FPSIMD_CONTEXT_SIZE, sf.ESR_MAGIC, sf.ESR_CONTEXT_SIZE),
        "flags": (SA_SIGINFO, SA_ONSTACK, SA_RESTART, SA_NODEFER, SA_RESETHAND),
    }
    assert ours == {
        "siginfo": headers("sizeof_siginfo", "sizeof_siginfo"),
        "ucontext": headers("uc_flags", "uc_link", "uc_stack", "uc_sigmask", "uc_mcontext"),
        "frame": (linux["sizeof_siginfo"] + linux["sizeof_ucontext"],),
        "sigcontext": headers("fault_address", "regs", "sp", "pc", "pstate", "reserved"),
        "records": headers("FPSIMD_MAGIC", "sizeof_fpsimd", "ESR_MAGIC", "sizeof_esr"),
        "flags": headers("SA_SIGINFO", "SA_ONSTACK", "SA_RESTART", "SA_NODEFER", "SA_RESETHAND"),
    }


def test_built_ucontext_puts_each_field_at_its_header_offset(linux: dict[str, int]) -> None:
    regs = sf.UserRegs([0x1000 + i for i in range(31)], 0xAAA0, 0xBBB4, 0x6000_0000, 0x8000_0011, 0x0300_0000,
                       [(i << 64) | (0xF0 + i) for i in range(32)])
    uc = sf.build_ucontext(regs, 0x1234_5678_9ABC, (0x7000, SS_ONSTACK, 0x4000), 0xDEAD)
    mc = linux["uc_mcontext"]
    assert struct.unpack_from("<QQ", uc, 0) == (0, 0)  # uc_flags, uc_link
    st = linux["uc_stack"]
    assert struct.unpack_from("<Q", uc, st + linux["ss_sp"])[0] == 0x7000
    assert struct.unpack_from("<i", uc, st + linux["ss_flags"])[0] == SS_ONSTACK
    assert struct.unpack_from("<Q", uc, st + linux["ss_size"])[0] == 0x4000
    assert struct.unpack_from("<Q", uc, linux["uc_sigmask"])[0] == 0x1234_5678_9ABC
    assert struct.unpack_from("<Q", uc, mc + linux["fault_address"])[0] == 0xDEAD
    assert list(struct.unpack_from("<31Q", uc, mc + linux["regs"])) == regs.x
    assert struct.unpack_from("<QQQ", uc, mc + linux["sp"]) == (0xAAA0, 0xBBB4, 0x6000_0000)
    assert linux["pc"] == linux["sp"] + 8 and linux["pstate"] == linux["pc"] + 8
    fp = mc + linux["reserved"]
    assert struct.unpack_from("<II", uc, fp) == (linux["FPSIMD_MAGIC"], linux["sizeof_fpsimd"])
    assert struct.unpack_from("<II", uc, fp + linux["fpsr"]) == (0x8000_0011, 0x0300_0000)
    v = fp + linux["vregs"]
    assert [int.from_bytes(uc[v + 16 * i : v + 16 * i + 16], "little") for i in range(32)] == regs.v
    end = fp + linux["sizeof_fpsimd"]
    assert uc[end : end + 8] == bytes(8)  # the null record ends the list
    assert sf.parse_ucontext(uc) == (regs, 0x1234_5678_9ABC, (0x7000, SS_ONSTACK, 0x4000))


def test_frame_sits_under_the_frame_record_16_aligned() -> None:
    # get_sigframe: record = round_down(sp - 16, 16); frame = record - sizeof(struct rt_sigframe)
    for sp, record in ((0x10000, 0xFFF0), (0x10008, 0xFFF0), (0x1000F, 0xFFF0), (0x10010, 0x10000)):
        assert sf.place_frame(sp) == (record - 4688, record)


# --- delivery ----------------------------------------------------------------------------

def test_handler_entry_registers_and_frame(proc: Process) -> None:
    sp = user_stack(proc)
    for i in range(31):
        proc.uc.reg_write(X[i], 0x100 + i)
    proc.uc.reg_write(Q[5], (0x55 << 120) | 0x5)
    proc.uc.reg_write(a64.UC_ARM64_REG_NZCV, 0x6000_0000)
    handle(proc, SIGUSR1, SA_RESTORER | SA_SIGINFO, mask=bit(SIGTERM))
    proc.current.sigmask = bit(SIGINT)
    raise_(proc, SIGUSR1)
    assert proc.syscalls.do_signal()
    record = (sp - 16) & ~15
    frame = record - 4688
    assert reg(proc, a64.UC_ARM64_REG_PC) == HANDLER
    assert reg(proc, a64.UC_ARM64_REG_SP) == frame
    assert [reg(proc, X[i]) for i in (0, 1, 2)] == [SIGUSR1, frame, frame + 128]
    assert reg(proc, X[29]) == record and reg(proc, X[30]) == RESTORER
    assert struct.unpack("<QQ", proc.read(record, 16)) == (0x100 + 29, 0x100 + 30)  # fp, lr
    info = proc.read(frame, 128)
    assert struct.unpack_from("<iiiiiI", info) == (SIGUSR1, 0, SI_TKILL, 0, proc.pid, 0)
    regs, mask, _ = sf.parse_ucontext(proc.read(frame + 128, 4688 - 128))
    assert mask == bit(SIGINT)  # what sigreturn restores
    assert regs.x == [0x100 + i for i in range(31)] and regs.sp == sp and regs.pc == AFTER_SVC
    assert regs.pstate == 0x6000_0000 and regs.v[5] == (0x55 << 120) | 0x5
    assert sigmask(proc) == bit(SIGINT) | bit(SIGTERM) | bit(SIGUSR1)  # old | sa_mask | itself


def test_without_sa_siginfo_x1_x2_and_info_are_left(proc: Process) -> None:
    sp = user_stack(proc)
    frame = ((sp - 16) & ~15) - 4688
    proc.write(frame, b"\xee" * 128)
    proc.uc.reg_write(X[1], 0x1111)
    proc.uc.reg_write(X[2], 0x2222)
    handle(proc, SIGUSR2)
    raise_(proc, SIGUSR2)
    proc.syscalls.do_signal()
    assert (reg(proc, X[0]), reg(proc, X[1]), reg(proc, X[2])) == (SIGUSR2, 0x1111, 0x2222)
    assert proc.read(frame, 128) == b"\xee" * 128


def test_sigreturn_restores_everything(proc: Process) -> None:
    sp = user_stack(proc)
    before = {r: 0x3000 + i for i, r in enumerate(X)}
    before.update({q: (i + 1) << 100 | i for i, q in enumerate(Q)})
    before.update({a64.UC_ARM64_REG_NZCV: 0x9000_0000, a64.UC_ARM64_REG_FPCR: 0x0040_0000,
                   a64.UC_ARM64_REG_FPSR: 0x0000_0010})
    for r, v in before.items():
        proc.uc.reg_write(r, v)
    handle(proc, SIGUSR1, mask=bit(SIGTERM))
    raise_(proc, SIGUSR1)
    proc.syscalls.do_signal()
    # the handler clobbers registers and the mask, then returns through the restorer
    for r in [*X, *Q]:
        proc.uc.reg_write(r, 0x77)
    proc.uc.reg_write(a64.UC_ARM64_REG_FPCR, 0)
    proc.current.sigmask |= bit(SIGALRM)
    assert call(proc, "rt_sigreturn") == 0x3000
    assert {r: reg(proc, r) for r in before} == before
    assert reg(proc, a64.UC_ARM64_REG_SP) == sp and reg(proc, a64.UC_ARM64_REG_PC) == AFTER_SVC
    assert sigmask(proc) == 0


def test_a_handler_may_change_the_frame(proc: Process) -> None:
    user_stack(proc)
    handle(proc, SIGUSR1)
    raise_(proc, SIGUSR1)
    proc.syscalls.do_signal()
    frame = reg(proc, a64.UC_ARM64_REG_SP)
    mc = frame + 128 + 176
    proc.write(mc + 8 + 8 * 3, (0xABCD).to_bytes(8, "little"))  # x3
    proc.write(mc + 264, (0x400100).to_bytes(8, "little"))  # pc
    proc.write(frame + 128 + 40, (bit(SIGUSR2) | bit(SIGKILL)).to_bytes(8, "little"))  # uc_sigmask
    call(proc, "rt_sigreturn")
    assert reg(proc, X[3]) == 0xABCD and reg(proc, a64.UC_ARM64_REG_PC) == 0x400100
    assert sigmask(proc) == bit(SIGUSR2)  # SIGKILL can never be blocked


def test_sigreturn_takes_the_mask_and_the_alternate_stack_as_unsigned_64_bit_words(proc: Process) -> None:
    """uc_sigmask's bit 63 is signal 64 (SIGRTMAX), and ss_sp and ss_size are unsigned longs
    (stack_t): all three come back whole from a frame whose words have their top bit set."""
    frame = deliver_and_corrupt(proc, 128 + 40, (bit(64) | bit(SIGUSR2)).to_bytes(8, "little"))
    top = 0x8000_0000_0000_0000
    proc.write(frame + 128 + 16, struct.pack("<QiiQ", top | 0x7000, 0, 0, top | 0x4000))  # enabled
    call(proc, "rt_sigreturn")
    assert sigmask(proc) == bit(64) | bit(SIGUSR2)
    assert proc.current.altstack == (top | 0x7000, 0, top | 0x4000)


def deliver_and_corrupt(p: Process, at: int, data: bytes) -> int:
    user_stack(p)
    handle(p, SIGUSR1)
    raise_(p, SIGUSR1)
    p.syscalls.do_signal()
    frame = reg(p, a64.UC_ARM64_REG_SP)
    p.write(frame + at, data)
    return frame


RESERVED = 128 + 176 + 288


@pytest.mark.parametrize(("at", "data"), [
    (128 + 176 + 272, (0x5).to_bytes(8, "little")),  # pstate EL1h
    (128 + 176 + 272, (0x10).to_bytes(8, "little")),  # AArch32
    (128 + 176 + 272, (0x80).to_bytes(8, "little")),  # IRQs masked
    (RESERVED, struct.pack("<II", 0, 0)),  # no fpsimd_context
    (RESERVED, struct.pack("<II", sf.FPSIMD_MAGIC, 512)),  # its size wrong
    (RESERVED, struct.pack("<II", 0x12345678, 528)),  # an unknown record
    (RESERVED + 528, struct.pack("<II", sf.FPSIMD_MAGIC, 528)),  # a second fpsimd_context
    (RESERVED + 528, struct.pack("<II", sf.ESR_MAGIC, 8192)),  # a record past __reserved
])
def test_bad_frames_force_sigsegv(proc: Process, at: int, data: bytes) -> None:
    deliver_and_corrupt(proc, at, data)
    with pytest.raises(ProcessExit) as ended:
        call(proc, "rt_sigreturn")
    assert (ended.value.status, ended.value.signal) == (128 + SIGSEGV, SIGSEGV)


def test_an_esr_record_is_accepted_and_a_segv_handler_takes_a_bad_frame(proc: Process) -> None:
    deliver_and_corrupt(proc, RESERVED + 528, struct.pack("<IIQ", sf.ESR_MAGIC, 16, 0x9200_0047))
    call(proc, "rt_sigreturn")
    assert reg(proc, a64.UC_ARM64_REG_PC) == AFTER_SVC
    handle(proc, SIGSEGV)
    assert reg(proc, a64.UC_ARM64_REG_SP) & 15 == 8  # the interrupted SP: no frame is there
    call(proc, "rt_sigreturn")
    assert proc.current.pending.bits == bit(SIGSEGV)
    assert proc.syscalls.do_signal() and reg(proc, X[0]) == SIGSEGV


def test_a_frame_that_cannot_be_written_is_sigsegv(proc: Process) -> None:
    proc.uc.reg_write(a64.UC_ARM64_REG_SP, 0xDEAD_0000_0000)
    handle(proc, SIGUSR1)
    raise_(proc, SIGUSR1)
    with pytest.raises(ProcessExit) as ended:
        proc.syscalls.do_signal()
    assert (ended.value.status, ended.value.signal) == (128 + SIGSEGV, SIGSEGV)


# --- masks and queues --------------------------------------------------------------------

def test_nodefer_and_resethand(proc: Process) -> None:
    user_stack(proc)
    handle(proc, SIGUSR1, SA_RESTORER | SA_NODEFER | SA_RESETHAND, mask=bit(SIGUSR2))
    raise_(proc, SIGUSR1)
    proc.syscalls.do_signal()
    assert sigmask(proc) == bit(SIGUSR2)  # not the signal itself
    assert proc.state.sigactions.get(SIGUSR1, bytes(32))[:8] == bytes(8)  # SIG_DFL again
    raise_(proc, SIGUSR1)
    with pytest.raises(ProcessExit) as ended:
        proc.syscalls.do_signal()
    assert (ended.value.status, ended.value.signal) == (128 + SIGUSR1, SIGUSR1)


def test_blocked_signals_stay_pending_then_arrive_lowest_first_nested(proc: Process) -> None:
    user_stack(proc)
    buf = scratch(proc, 0x1000)
    for sig in (SIGUSR1, SIGUSR2, SIGTERM):
        handle(proc, sig)
    proc.write(buf, (bit(SIGUSR1) | bit(SIGUSR2) | bit(SIGTERM)).to_bytes(8, "little"))
    assert call(proc, "rt_sigprocmask", SIG_BLOCK, buf, 0, 8) == 0
    for sig in (SIGTERM, SIGUSR2, SIGUSR1, SIGUSR1):
        raise_(proc, sig)
    assert not proc.syscalls.do_signal()  # all blocked
    assert call(proc, "rt_sigpending", buf + 8, 8) == 0
    assert int.from_bytes(proc.read(buf + 8, 8), "little") == bit(SIGUSR1) | bit(SIGUSR2) | bit(SIGTERM)
    assert call(proc, "rt_sigprocmask", SIG_UNBLOCK, buf, 0, 8) == 0
    assert proc.syscalls.do_signal()
    # SIGUSR1 (once: standard signals do not queue) first, each next one nested on top of it
    frames = []
    while reg(proc, a64.UC_ARM64_REG_PC) == HANDLER and len(frames) < 5:
        frames.append((reg(proc, X[0]), reg(proc, a64.UC_ARM64_REG_SP)))
        call(proc, "rt_sigreturn")
    # the last delivered is the innermost frame: it runs first
    assert [s for s, _ in frames] == [SIGTERM, SIGUSR2, SIGUSR1]
    assert frames[0][1] < frames[1][1] < frames[2][1]


def test_ignored_signals_are_discarded_and_rt_signals_queue(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    raise_(proc, SIGCHLD)  # SIG_DFL, ignored by default: never pending
    assert proc.current.pending.bits == 0
    proc.write(buf, (bit(SIGUSR1) | bit(SIGRTMIN)).to_bytes(8, "little"))
    call(proc, "rt_sigprocmask", SIG_BLOCK, buf, 0, 8)
    raise_(proc, SIGUSR1)
    for _ in range(3):
        raise_(proc, SIGRTMIN)
    handle(proc, SIGUSR1, handler=1)  # SIG_IGN discards the pending one, blocked or not
    assert proc.current.pending.bits == bit(SIGRTMIN)
    proc.write(buf + 32, bytes(16))  # a zero timeout
    got = [call(proc, "rt_sigtimedwait", buf, buf + 64, buf + 32, 8) for _ in range(4)]
    assert got == [SIGRTMIN, SIGRTMIN, SIGRTMIN, -errno.EAGAIN]
    assert struct.unpack_from("<iiii", proc.read(buf + 64, 16))[:3] == (SIGRTMIN, 0, SI_TKILL)


def test_kill_queues_for_the_process_with_si_user(proc: Process) -> None:
    user_stack(proc)
    handle(proc, SIGUSR1, SA_RESTORER | SA_SIGINFO)
    assert call(proc, "kill", proc.pid, SIGUSR1) == 0
    assert proc.shared_pending.bits == bit(SIGUSR1) and proc.current.pending.bits == 0
    proc.syscalls.do_signal()
    assert struct.unpack_from("<iii", proc.read(reg(proc, X[1]), 12)) == (SIGUSR1, 0, SI_USER)
    assert call(proc, "kill", 99999, SIGUSR1) == -errno.ESRCH
    assert call(proc, "kill", proc.pid, 65) == -errno.EINVAL
    assert call(proc, "tgkill", proc.pid, 99999, SIGUSR1) == -errno.ESRCH
    assert call(proc, "tgkill", 0, proc.current.tid, SIGUSR1) == -errno.EINVAL
    assert call(proc, "tkill", -1, SIGUSR1) == -errno.EINVAL


# --- interrupted syscalls ------------------------------------------------------------------

def interrupted_read(p: Process, flags: int) -> tuple[int, int, int]:
    """A read on an empty pipe while SIGUSR1 (handled with `flags`) is pending: (x0, PC,
    the pipe's fd) once the handler has returned."""
    user_stack(p)
    buf = scratch(p, 0x1000)
    assert call(p, "pipe2", buf, 0) == 0
    rfd = struct.unpack("<i", p.read(buf, 4))[0]
    handle(p, SIGUSR1, flags)
    raise_(p, SIGUSR1)
    p.uc.reg_write(X[0], rfd)
    result = call(p, "read", rfd, buf + 64, 1)
    assert result == -ERESTARTSYS
    p.set_result(result)
    p.syscalls.do_signal()
    call(p, "rt_sigreturn")  # back from the handler
    return reg(p, X[0]), reg(p, a64.UC_ARM64_REG_PC), rfd


def test_a_read_interrupted_without_sa_restart_is_eintr(proc: Process) -> None:
    x0, pc, _ = interrupted_read(proc, SA_RESTORER)
    assert (x0, pc) == ((-errno.EINTR) & MASK64, AFTER_SVC)


def test_a_read_interrupted_with_sa_restart_runs_again(proc: Process) -> None:
    x0, pc, rfd = interrupted_read(proc, SA_RESTORER | SA_RESTART)
    assert (x0, pc) == (rfd, SVC_PC)  # the svc again, with its first argument back


def test_a_restart_code_without_a_handler_restarts(proc: Process) -> None:
    proc.current.syscall_x0 = 42
    proc.set_result(-ERESTARTNOHAND)
    assert proc.syscalls.do_signal()
    assert (reg(proc, X[0]), reg(proc, a64.UC_ARM64_REG_PC)) == (42, SVC_PC)


def test_sigsuspend_is_eintr_even_with_sa_restart_and_restores_the_mask(proc: Process) -> None:
    user_stack(proc)
    buf = scratch(proc, 0x1000)
    handle(proc, SIGUSR1, SA_RESTORER | SA_RESTART)
    proc.current.sigmask = bit(SIGUSR1) | bit(SIGUSR2)
    raise_(proc, SIGUSR1)  # blocked for now
    proc.write(buf, bit(SIGUSR2).to_bytes(8, "little"))
    proc.uc.reg_write(X[0], buf)
    result = call(proc, "rt_sigsuspend", buf, 8)
    assert result == -ERESTARTNOHAND
    proc.set_result(result)
    proc.syscalls.do_signal()
    assert sigmask(proc) == bit(SIGUSR2) | bit(SIGUSR1)  # the suspend mask | the signal
    frame = reg(proc, a64.UC_ARM64_REG_SP)
    assert int.from_bytes(proc.read(frame + 128 + 40, 8), "little") == bit(SIGUSR1) | bit(SIGUSR2)
    call(proc, "rt_sigreturn")
    assert reg(proc, X[0]) == (-errno.EINTR) & MASK64 and sigmask(proc) == bit(SIGUSR1) | bit(SIGUSR2)
    assert call(proc, "rt_sigsuspend", buf, 4) == -errno.EINVAL


def test_nanosleep_interrupted_writes_the_time_left(proc: Process) -> None:
    user_stack(proc)
    buf = scratch(proc, 0x1000)
    handle(proc, SIGALRM, SA_RESTORER | SA_RESTART)
    raise_(proc, SIGALRM)
    proc.write(buf, struct.pack("<qq", 5, 0))
    result = call(proc, "nanosleep", buf, buf + 16)
    proc.set_result(result)
    sec, nsec = struct.unpack("<qq", proc.read(buf + 16, 16))
    assert 0 < sec * 10**9 + nsec <= 5 * 10**9
    proc.syscalls.do_signal()
    call(proc, "rt_sigreturn")
    assert reg(proc, X[0]) == (-errno.EINTR) & MASK64  # EINTR despite SA_RESTART


# --- the alternate stack and faults ------------------------------------------------------------

def test_sa_onstack_runs_on_the_alternate_stack(proc: Process) -> None:
    sp = user_stack(proc)
    alt = scratch(proc, 0x8000)
    buf = scratch(proc, 0x1000)
    proc.write(buf, struct.pack("<QiiQ", alt, SS_AUTODISARM - (1 << 32), 0, 0x8000))
    assert call(proc, "sigaltstack", buf, 0) == 0
    handle(proc, SIGUSR1, SA_RESTORER | SA_ONSTACK)
    raise_(proc, SIGUSR1)
    proc.syscalls.do_signal()
    frame = reg(proc, a64.UC_ARM64_REG_SP)
    assert frame == ((alt + 0x8000 - 16) & ~15) - 4688
    assert struct.unpack_from("<QiiQ", proc.read(frame + 128 + 16, 24)) == (alt, SS_AUTODISARM - (1 << 32), 0, 0x8000)
    assert call(proc, "sigaltstack", 0, buf + 32) == 0  # auto-disarmed in the handler
    assert struct.unpack("<QiiQ", proc.read(buf + 32, 24)) == (0, SS_DISABLE, 0, 0)
    call(proc, "rt_sigreturn")
    assert reg(proc, a64.UC_ARM64_REG_SP) == sp
    call(proc, "sigaltstack", 0, buf + 32)
    assert struct.unpack("<QiiQ", proc.read(buf + 32, 24)) == (alt, SS_AUTODISARM - (1 << 32), 0, 0x8000)


def test_sigaltstack_refusals(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    alt = scratch(proc, 0x4000)
    proc.write(buf, struct.pack("<QiiQ", alt, 0, 0, 2048))
    assert call(proc, "sigaltstack", buf, 0) == -errno.ENOMEM
    proc.write(buf, struct.pack("<QiiQ", alt, 4, 0, 0x4000))
    assert call(proc, "sigaltstack", buf, 0) == -errno.EINVAL
    proc.write(buf, struct.pack("<QiiQ", alt, 0, 0, 0x4000))
    assert call(proc, "sigaltstack", buf, 0) == 0
    proc.uc.reg_write(a64.UC_ARM64_REG_SP, alt + 0x2000)  # running on it
    assert call(proc, "sigaltstack", buf, buf + 32) == -errno.EPERM
    assert call(proc, "sigaltstack", 0, buf + 32) == 0
    assert struct.unpack("<QiiQ", proc.read(buf + 32, 24)) == (alt, SS_ONSTACK, 0, 0x4000)


def test_a_fault_goes_to_its_handler_with_si_addr(proc: Process) -> None:
    user_stack(proc)
    handle(proc, SIGSEGV, SA_RESTORER | SA_SIGINFO)
    assert proc.syscalls.fault_signal(SIGSEGV, 1, 0x1234)
    proc.syscalls.do_signal()
    info = proc.read(reg(proc, X[1]), 24)
    assert struct.unpack_from("<iiiiQ", info) == (SIGSEGV, 0, 1, 0, 0x1234)
    frame = reg(proc, a64.UC_ARM64_REG_SP)
    assert int.from_bytes(proc.read(frame + 128 + 176, 8), "little") == 0x1234  # fault_address
    # blocked, the fault kills: the handler is reset and the signal unblocked (force_sig_fault)
    assert not proc.syscalls.fault_signal(SIGSEGV, 1, 0x1234)
    assert proc.state.sigactions.get(SIGSEGV) is None and not sigmask(proc) & bit(SIGSEGV)


@pytest.mark.parametrize(("reason", "detail", "signo", "code"), [
    ("exception", 1, 4, 1),  # an undefined instruction: SIGILL, ILL_ILLOPC (arm64 do_el0_undef)
    ("exception", 7, 5, 1),  # BRK: SIGTRAP, TRAP_BRKPT
])
def test_el0_exceptions_become_signals_with_linuxs_codes_at_the_pc(proc: Process, reason: str, detail: int,
                                                                   signo: int, code: int) -> None:
    user_stack(proc)
    handle(proc, signo, SA_RESTORER | SA_SIGINFO)
    proc.fault(reason, SVC_PC, detail)
    assert proc.syscalls.do_signal()
    info = proc.read(reg(proc, X[1]), 24)
    assert struct.unpack_from("<iiiiQ", info) == (signo, 0, code, 0, SVC_PC)  # si_addr: the instruction


def test_an_unmapped_access_is_segv_maperr_at_the_accessed_address(proc: Process) -> None:
    """A data abort outside every VMA: SIGSEGV, SEGV_MAPERR, si_addr the address the abort
    reported when the instruction at the PC decodes to no access on that page (tiny_elf's
    `svc #0` is no load or store)."""
    user_stack(proc)
    handle(proc, SIGSEGV, SA_RESTORER | SA_SIGINFO)
    proc.fault("fault", SVC_PC, 0x7000_1234)
    assert proc.syscalls.do_signal()
    info = proc.read(reg(proc, X[1]), 24)
    assert struct.unpack_from("<iiiiQ", info) == (SIGSEGV, 0, 1, 0, 0x7000_1234)


# --- ITIMER_REAL ------------------------------------------------------------------------------

def test_setitimer_getitimer_and_expiry(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, struct.pack("<qqqq", 0, 250_000, 3, 0))  # interval 0.25 s, value 3 s
    assert call(proc, "setitimer", 0, buf, buf + 32) == 0
    assert proc.read(buf + 32, 32) == bytes(32)
    assert call(proc, "getitimer", 0, buf + 64) == 0
    isec, iusec, vsec, vusec = struct.unpack("<qqqq", proc.read(buf + 64, 32))
    assert (isec, iusec) == (0, 250_000) and 2 * 10**6 < vsec * 10**6 + vusec <= 3 * 10**6
    proc.write(buf, struct.pack("<qqqq", 0, 0, 0, 1))  # 1 us
    assert call(proc, "setitimer", 0, buf, 0) == 0
    proc.sched.run_timers()
    assert proc.shared_pending.bits == 0 or proc.shared_pending.bits == bit(SIGALRM)
    while not proc.shared_pending.bits:
        proc.sched.run_timers()
    info = proc.shared_pending.info[SIGALRM][0]
    assert struct.unpack_from("<iii", info) == (SIGALRM, 0, SI_KERNEL)
    assert proc not in proc.sched.timers  # one shot
    for bad in (struct.pack("<qqqq", 0, 0, 0, 1_000_000), struct.pack("<qqqq", -1, 0, 1, 0)):
        proc.write(buf, bad)
        assert call(proc, "setitimer", 0, buf, 0) == -errno.EINVAL
    assert call(proc, "setitimer", 1, buf, 0) == -errno.EINVAL


# --- fault addresses ---------------------------------------------------------------------------

INSNS = [
    ("ldr x1, [x2, #16]", 0x1010), ("str w1, [x2, #-3]!", 0xFFD), ("ldr x1, [x2], #8", 0x1000),
    ("ldur x1, [x2, #-5]", 0xFFB), ("ldr x1, [x2, x4, lsl #3]", 0x1000 + 0x18),
    ("ldrb w1, [x2, w3, sxtw]", 0x1000 - 16), ("ldr w1, [x2, w3, uxtw #2]", 0x1000 + 0xFFFF_FFF0 * 4),
    ("ldp x1, x4, [x2, #-16]", 0xFF0), ("stp q1, q4, [x2, #32]!", 0x1020), ("ldp w1, w4, [x2], #8", 0x1000),
    ("ldr q0, [x2, #32]", 0x1020), ("ldr x1, .+8", None), ("ldxr x1, [x2]", 0x1000),
    ("ldr x1, [sp, #8]", 0x8008), ("stlr w1, [x2]", 0x1000), ("ldadd x1, x4, [x2]", 0x1000),
    ("ld1 {v0.16b}, [x2]", 0x1000), ("add x1, x2, x3", "none"),
]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    if AS is None:
        pytest.skip("aarch64-linux-gnu-as is not installed")
    out: Path = tmp_path_factory.mktemp("insns")
    (out / "i.s").write_text(".arch armv8.1-a\n" + "".join(f"    {i}\n" for i, _ in INSNS))
    subprocess.run([AS, "-o", str(out / "i.o"), str(out / "i.s")], check=True)
    subprocess.run([shutil.which("aarch64-linux-gnu-objcopy") or "objcopy", "-O", "binary", "-j", ".text",
                    str(out / "i.o"), str(out / "i.bin")], check=True)
    code = (out / "i.bin").read_bytes()
    return [int.from_bytes(code[4 * k : 4 * k + 4], "little") for k in range(len(INSNS))]


def test_access_addresses_of_encoded_loads_and_stores(encoded: list[int]) -> None:
    regs = {2: 0x1000, 3: 0x1_FFFF_FFF0, 4: 3, 31: 0x8000}
    for k, ((text, want), insn) in enumerate(zip(INSNS, encoded, strict=True)):
        pc = 0x400000 + 4 * k
        got = access_address(insn, lambda n: regs.get(n, 0), pc)
        expected = pc + 8 if want is None else None if want == "none" else want
        assert got == expected, text
