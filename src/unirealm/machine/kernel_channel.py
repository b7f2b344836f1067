"""The channel between a kernel process and its engine in the monitor's process.

One SOCK_SEQPACKET socket pair; every message is one packet of a fixed little-endian layout
whose first byte names it. What crosses is what the hardware carries between a PE and its
hypervisor: the register file and PC at a trap and at the resume, the trap's syndrome
(SMC/HVC, a data abort with its IPA, size, direction and stored value, WFI, a host
interrupt, an MRS/MSR of the CPU interface's or the timers' system registers), the completion the hypervisor injects (SEA, UNDEF, an exception), stage-2
answers (a granule of the memory file and whether it is writable, or a fault) and TLB
invalidations by IPA range. No Python object is ever serialised.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from unirealm.arch.gic import IccSysreg
from unirealm.arch.timer import CntSysreg

NUM_GPRS = 31
# The kernel process maps guest memory at WINDOW + IPA (IPAs below WINDOW_SIZE, 16 TiB): the
# only place a mapping of the memory file may be (seccomp and the engine's approval).
WINDOW = 0x1000_0000_0000
WINDOW_SIZE = 1 << 44
MAP_FIXED = 0x10  # <sys/mman.h>; the mmap module does not name it


class Msg(IntEnum):
    # kernel process -> engine
    TRAP = 1  # the PE stopped: TRAP layout
    ACK = 2  # a REVOKE is done
    STOPPED = 3  # the kernel ended (or crashed): STOPPED layout
    HELLO = 4  # ready, the seccomp listener travels with it (SCM_RIGHTS)
    POSTED = 5  # an MRS/MSR completed without an answer (LINE_POSTABLE): POSTED layout
    POSTED_MMIO = 6  # an emulated MMIO write completed without an answer: POSTED_MMIO layout
    # engine -> kernel process
    RESUME = 16  # RESUME layout
    GRANT = 17  # a run of granules stage 2 maps for the access: GRANT layout
    DENY = 18  # the access faults without a trap (GPT): DENY layout
    REVOKE = 19  # unmap an IPA range now (stage-2 change, PAS change): REVOKE layout
    SYSREG_DONE = 20  # a SYSREG trap served by the vCPU's interrupt lines: SYSREG_DONE layout
    SETUP = 21  # the VM the started interpreter runs for: SETUP layout, its descriptors by SCM_RIGHTS


class TrapKind(IntEnum):
    SMC = 1
    HVC = 2
    WFI = 3
    DATA_ABORT = 4
    IRQ = 5
    # MRS/MSR of an ICC_*/CNT* register: ipa = arch.sysreg.sysreg_key, value = the MSR's value,
    # TRAP_WRITE for an MSR. Served inside run() by the owner's InterruptLines, as a
    # machine-code vCPU's UC_HOOK_INSN serves it; answered with SYSREG_DONE, never RESUME.
    SYSREG = 6


# TRAP flags
TRAP_WRITE = 1  # a data abort's direction
TRAP_PROBE = 2  # a data abort that is only a trap if stage 2 does not map the page as memory
TRAP_QUERY = 4  # a stage-2 question that never traps (GRANT or DENY)
TRAP_SIXTY_FOUR = 8  # the syndrome's SF


class Fault(IntEnum):
    """What RESUME injects."""

    NONE = 0
    SEA = 1
    UNDEF = 2
    EXCEPTION = 3


class Deny(IntEnum):
    UNMAPPED = 0  # stage 2 maps nothing the access may use (QUERY only)
    GPF = 1  # stage 2 maps it, the GPT refuses this world's access


# RESUME's line byte and SYSREG_DONE's lines: the host's interrupt (machine.interrupt
# HOST_IRQ), and the PE's IRQ/FIQ inputs as its InterruptLines signal them (machine.irq
# PENDING_IRQ/FIQ, shifted by LINES_SHIFT) before the kernel's own mask.
LINE_HOST_IRQ = 1
LINES_SHIFT = 1
# SYSREG_DONE: the access changed what the owner must see now (a deadline passed, a write
# that traps to EL2): the kernel sends an IRQ TRAP next, and the engine's run() ends.
LINE_EXIT = 8
# RESUME and SYSREG_DONE: until the next answer the PE may complete these accesses itself and
# tell the engine afterwards (Msg.POSTED, applied in order before its next message): MSR of
# the POSTED_WRITES registers, and an MRS of ICC_IAR1_EL1 when the answer's `iar1` (what
# that read returns now) is not NO_IAR1. Nothing the engine owns changes between two of its
# answers but through the PE's own accesses, so the read's value is the one it would have
# read; a posted access the engine would have answered with LINE_EXIT, or one that signals
# an interrupt the answer did not, makes the engine raise the host's interrupt instead (the
# PE's run stops at its next look, as for any asynchronous interrupt). An engine whose
# lines could trap these accesses to EL2 does not set it.
LINE_POSTABLE = 16
NO_IAR1 = 0xFFFF_FFFF
# RESUME and SYSREG_DONE: until the next answer a write to a page whose last access the engine
# emulated (MMIO, not memory) may be posted too (Msg.POSTED_MMIO), as a store to Device-nGnRE
# memory completes before it reaches the device: later accesses stay in order behind it. Only
# an engine whose owner emulates those writes itself offers it (a plain VM's VMM, never a
# realm's: there each one is a REC exit the host must see), and not in the VMM's --hostile
# test modes, which may answer a write with an abort.
LINE_MMIO_POSTABLE = 32
POSTED_WRITES = frozenset({IccSysreg.EOIR0, IccSysreg.EOIR1, CntSysreg.CNTV_CTL_EL0, CntSysreg.CNTV_CVAL_EL0})

# msg, kind, flags, size, pc, x0..x30, ipa, value
TRAP = struct.Struct(f"<BBBB4xQ{NUM_GPRS}QQQ")
# msg, fault, lines (LINE_HOST_IRQ | PENDING_* << LINES_SHIFT | LINE_POSTABLE), iar1, pc,
# x0..x30, fault address, esr
RESUME = struct.Struct(f"<BBBxIQ{NUM_GPRS}QQQ")
# msg, served (0: UNDEFINED), lines, iar1, value read (0 for an MSR)
SYSREG_DONE = struct.Struct("<BBBxIQ")
# msg, TRAP_WRITE or 0, the register's sysreg_key, the value written or read
POSTED = struct.Struct("<BB2xIQ")
# msg, size, IPA, value written
POSTED_MMIO = struct.Struct("<BB6xQQ")
# msg, writable, count (granules), ipa, file offset
GRANT = struct.Struct("<BB2xIQQ")
DENY = struct.Struct("<BB")
# msg, ipa, size
REVOKE = struct.Struct("<B7xQQ")
ACK = struct.Struct("<B")
# msg, the child's descriptor numbers of the memory file and of its read-only twin (what its
# mmap calls name, and the seccomp notifications show)
HELLO = struct.Struct("<B3xii")
# msg, address-space limit, CPU model (ASCII, NUL-padded); the memory file, its read-only
# twin and the interrupt eventfd travel with it (SCM_RIGHTS), in that order
SETUP = struct.Struct("<B7xQ16s")
SETUP_FDS = 3
STOPPED_HEADER = struct.Struct("<B")  # followed by a UTF-8 reason
MAX_MESSAGE = max(TRAP.size, RESUME.size, 512)
