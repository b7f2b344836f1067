"""The kernel channel's messages as kernel_channel.py's comments document them, spelled out
independently of its struct definitions: what the channel tests pack and unpack."""

from __future__ import annotations

import struct

# message numbers
TRAP, ACK, STOPPED, HELLO, POSTED = 1, 2, 3, 4, 5
RESUME, GRANT, DENY, REVOKE, SYSREG_DONE, SETUP = 16, 17, 18, 19, 20, 21
# trap kinds, TRAP flags, RESUME faults, line bits
SMC, HVC, WFI, DATA_ABORT, IRQ, SYSREG = 1, 2, 3, 4, 5, 6
F_WRITE, F_PROBE, F_QUERY, F_SF = 1, 2, 4, 8
SEA, UNDEF, EXCEPTION = 1, 2, 3
HOST_LINE, IRQ_LINE, FIQ_LINE, EXIT_LINE, POSTABLE_LINE = 1, 2, 4, 8, 16
NO_IAR1 = 0xFFFF_FFFF  # an answer's iar1 when no ICC_IAR1_EL1 read is foreseen
# msg, kind, flags, size, pc, x0..x30, ipa, value
TRAP_FMT = struct.Struct("<BBBB4xQ31QQQ")
# msg, fault, lines, iar1, pc, x0..x30, fault address, esr
RESUME_FMT = struct.Struct("<BBBxIQ31QQQ")
# msg, served, lines, iar1, value
SYSREG_DONE_FMT = struct.Struct("<BBBxIQ")
# msg, write flag, register key, value
POSTED_FMT = struct.Struct("<BB2xIQ")
# msg, writable, count, ipa, file offset
GRANT_FMT = struct.Struct("<BB2xIQQ")
# msg, ipa, size
REVOKE_FMT = struct.Struct("<B7xQQ")
# msg, the child's memory-file and read-only-twin numbers
HELLO_FMT = struct.Struct("<B3xii")
# msg, address-space limit, CPU model
SETUP_FMT = struct.Struct("<B7xQ16s")
