"""The channel between a kernel process and its engine in the monitor's process.

One SOCK_SEQPACKET socket pair; every message is one packet of a fixed little-endian layout
whose first byte names it. What crosses is what the hardware carries between a PE and its
hypervisor: the register file and PC at a trap and at the resume, the trap's syndrome
(SMC/HVC, a data abort with its IPA, size, direction and stored value, WFI, a host
interrupt), the completion the hypervisor injects (SEA, UNDEF, an exception), stage-2
answers (a granule of the memory file and whether it is writable, or a fault) and TLB
invalidations by IPA range. No Python object is ever serialised.
"""

from __future__ import annotations

import struct
from enum import IntEnum

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
    # engine -> kernel process
    RESUME = 16  # RESUME layout
    GRANT = 17  # a run of granules stage 2 maps for the access: GRANT layout
    DENY = 18  # the access faults without a trap (GPT): DENY layout
    REVOKE = 19  # unmap an IPA range now (stage-2 change, PAS change): REVOKE layout


class TrapKind(IntEnum):
    SMC = 1
    HVC = 2
    WFI = 3
    DATA_ABORT = 4
    IRQ = 5


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


# msg, kind, flags, size, pc, x0..x30, ipa, value
TRAP = struct.Struct(f"<BBBB4xQ{NUM_GPRS}QQQ")
# msg, fault, irq_pending, pc, x0..x30, fault address, esr
RESUME = struct.Struct(f"<BBB5xQ{NUM_GPRS}QQQ")
# msg, writable, count (granules), ipa, file offset
GRANT = struct.Struct("<BB2xIQQ")
DENY = struct.Struct("<BB")
# msg, ipa, size
REVOKE = struct.Struct("<B7xQQ")
ACK = struct.Struct("<B")
HELLO = struct.Struct("<B")
STOPPED_HEADER = struct.Struct("<B")  # followed by a UTF-8 reason
MAX_MESSAGE = max(TRAP.size, RESUME.size, 512)
