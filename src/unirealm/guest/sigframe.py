"""The arm64 signal frame, byte for byte as Linux builds it (arch/arm64/kernel/signal.c,
include/uapi/asm/sigcontext.h and ucontext.h), and the siginfo_t it carries.

struct rt_sigframe is a siginfo_t (128 bytes) followed by a struct ucontext:

| offset in ucontext | field |
|---|---|
| 0 | uc_flags (0) |
| 8 | uc_link (NULL) |
| 16 | uc_stack: ss_sp, ss_flags (int, then 4 bytes of padding), ss_size |
| 40 | uc_sigmask (the 8-byte sigset_t the handler's return restores) |
| 48 | padding to glibc's 128-byte sigset_t |
| 176 | uc_mcontext, a struct sigcontext (16-byte aligned) |

struct sigcontext: fault_address (0), regs[31] (8), sp (256), pc (264), pstate (272), then
__reserved[4096] (288, 16-byte aligned): a list of records, each an _aarch64_ctx head
(magic, size: u32 each). Linux writes an fpsimd_context first (FPSIMD_MAGIC, 528 bytes:
fpsr, fpcr, vregs[32]) and ends the list with a null record. The frame sits below a frame
record (fp, lr) that is 16 bytes under the interrupted SP, rounded down to 16: x29 points
at that record, SP at the frame.

On rt_sigreturn the records are read back (parse_user_sigframe): an fpsimd_context is
required, once and of its exact size; an esr_context is ignored; the null record ends the
list; anything else, or a record running past __reserved, makes the frame bad.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SIGINFO_SIZE = 128
UC_OFFSET = SIGINFO_SIZE  # struct rt_sigframe: info, then uc
UC_FLAGS, UC_LINK, UC_STACK, UC_SIGMASK, UC_MCONTEXT = 0, 8, 16, 40, 176
SC_FAULT_ADDRESS, SC_REGS, SC_SP, SC_PC, SC_PSTATE, SC_RESERVED = 0, 8, 256, 264, 272, 288
RESERVED_SIZE = 4096
MCONTEXT = UC_OFFSET + UC_MCONTEXT  # uc.uc_mcontext within the frame
RESERVED = MCONTEXT + SC_RESERVED  # uc.uc_mcontext.__reserved within the frame
RT_SIGFRAME_SIZE = RESERVED + RESERVED_SIZE  # sizeof(struct rt_sigframe): 4688
FRAME_RECORD_SIZE = 16  # struct frame_record: fp, lr

FPSIMD_MAGIC, ESR_MAGIC, EXTRA_MAGIC = 0x46508001, 0x45535201, 0x45585401
FPSIMD_CONTEXT_SIZE = 8 + 4 + 4 + 32 * 16  # head, fpsr, fpcr, vregs[32]: 528
ESR_CONTEXT_SIZE = 16

# PSTATE bits a valid EL0 AArch64 state may hold (valid_native_regs): NZCV; M[4:0] = EL0t,
# and D, A, I, F clear.
PSR_MODE_MASK, PSR_MODE32_BIT = 0x0F, 0x10
PSR_DAIF = 0x3C0
PSR_NZCV = 0xF000_0000

# si_code values (include/uapi/asm-generic/siginfo.h)
SI_USER, SI_KERNEL, SI_QUEUE, SI_TIMER, SI_TKILL = 0, 0x80, -1, -2, -6
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


class BadFrame(Exception):
    """rt_sigreturn found no frame it may restore (Linux then forces SIGSEGV)."""


@dataclass
class UserRegs:
    """EL0's register state as a signal frame holds it."""

    x: list[int] = field(default_factory=lambda: [0] * 31)  # x0..x30
    sp: int = 0
    pc: int = 0
    pstate: int = 0
    fpsr: int = 0
    fpcr: int = 0
    v: list[int] = field(default_factory=lambda: [0] * 32)  # q0..q31, 128 bits each


def siginfo(signo: int, code: int, *fields: tuple[int, str, int]) -> bytes:
    """A siginfo_t: si_signo, si_errno (0), si_code, then the union's fields at their
    offsets (offset, struct format, value), e.g. (16, "<i", pid) for si_pid."""
    buf = bytearray(SIGINFO_SIZE)
    struct.pack_into("<iii", buf, 0, signo, 0, code)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def siginfo_kill(signo: int, code: int, pid: int, uid: int = 0) -> bytes:
    """kill/tkill/tgkill and the kernel's own (SI_USER, SI_TKILL, SI_KERNEL): si_pid, si_uid."""
    return siginfo(signo, code, (16, "<i", pid), (20, "<I", uid))


def siginfo_fault(signo: int, code: int, addr: int) -> bytes:
    """A synchronous fault (SIGSEGV, SIGBUS, SIGILL, SIGTRAP): si_addr."""
    return siginfo(signo, code, (16, "<Q", addr))


def siginfo_chld(code: int, pid: int, status: int, uid: int = 0) -> bytes:
    """SIGCHLD: si_pid, si_uid, si_status (the exit code or the signal), si_utime, si_stime."""
    return siginfo(17, code, (16, "<i", pid), (20, "<I", uid), (24, "<i", status))


def info_signo(info: bytes) -> int:
    return int.from_bytes(info[:4], "little", signed=True)


def place_frame(sp: int) -> tuple[int, int]:
    """(frame, frame record) for a signal delivered with stack pointer `sp` (get_sigframe):
    the record 16 bytes below `sp` rounded down to 16, the frame right under it."""
    record = (sp - FRAME_RECORD_SIZE) & ~0xF
    return record - RT_SIGFRAME_SIZE, record


def build_ucontext(regs: UserRegs, sigmask: int, stack: tuple[int, int, int], fault_address: int) -> bytes:
    """The frame's struct ucontext (everything after siginfo): what the handler's return
    restores, as setup_sigframe writes it."""
    uc = bytearray(RT_SIGFRAME_SIZE - UC_OFFSET)
    ss_sp, ss_flags, ss_size = stack
    struct.pack_into("<QQQiiQQ", uc, UC_FLAGS, 0, 0, ss_sp, ss_flags, 0, ss_size, sigmask)
    mc = UC_MCONTEXT
    struct.pack_into("<Q31QQQQ", uc, mc + SC_FAULT_ADDRESS, fault_address, *regs.x, regs.sp, regs.pc, regs.pstate)
    rsv = mc + SC_RESERVED
    struct.pack_into("<IIII", uc, rsv, FPSIMD_MAGIC, FPSIMD_CONTEXT_SIZE, regs.fpsr, regs.fpcr)
    for i, q in enumerate(regs.v):
        uc[rsv + 16 + 16 * i : rsv + 32 + 16 * i] = q.to_bytes(16, "little")
    # the null record that ends the list: already zero at rsv + FPSIMD_CONTEXT_SIZE
    return bytes(uc)


def valid_pstate(pstate: int) -> bool:
    """Whether `pstate` is an AArch64 EL0t state with D, A, I and F clear (valid_native_regs)."""
    return not pstate & (PSR_MODE_MASK | PSR_MODE32_BIT | PSR_DAIF)


def parse_ucontext(uc: bytes) -> tuple[UserRegs, int, tuple[int, int, int]]:
    """What rt_sigreturn restores from a frame's ucontext: the registers, the signal mask
    and uc_stack (the alternate stack). BadFrame if the state or the records are invalid."""
    if len(uc) != RT_SIGFRAME_SIZE - UC_OFFSET:
        raise BadFrame("truncated")
    ss_sp, ss_flags, _, ss_size, sigmask = struct.unpack_from("<QiiQQ", uc, UC_STACK)
    mc = UC_MCONTEXT
    words = struct.unpack_from("<31QQQQ", uc, mc + SC_REGS)
    regs = UserRegs(list(words[:31]), words[31], words[32], words[33])
    if not valid_pstate(regs.pstate):
        raise BadFrame(f"pstate {regs.pstate:#x}")
    rsv = mc + SC_RESERVED
    offset, fpsimd = 0, False
    while True:
        if offset + 8 > RESERVED_SIZE:
            raise BadFrame("records run past __reserved")
        magic, size = struct.unpack_from("<II", uc, rsv + offset)
        if magic == 0:
            if size:
                raise BadFrame("a null record with a size")
            break
        if size < 8 or size & 0xF or offset + size > RESERVED_SIZE:
            raise BadFrame(f"record {magic:#x} of size {size}")
        if magic == FPSIMD_MAGIC:
            if fpsimd or size != FPSIMD_CONTEXT_SIZE:
                raise BadFrame("fpsimd_context")
            fpsimd = True
            regs.fpsr, regs.fpcr = struct.unpack_from("<II", uc, rsv + offset + 8)
            base = rsv + offset + 16
            regs.v = [int.from_bytes(uc[base + 16 * i : base + 16 * i + 16], "little") for i in range(32)]
        elif magic != ESR_MAGIC:
            raise BadFrame(f"record {magic:#x}")
        offset += size
    if not fpsimd:
        raise BadFrame("no fpsimd_context")
    return regs, sigmask, (ss_sp, ss_flags, ss_size)
