"""The kernel log's levels and the console loglevel, in Linux's terms (printk levels,
`quiet`, `debug`, `loglevel=N`): a message reaches the log UART when its level is below the
console loglevel. The unikernel starts at Linux's `quiet` level, so a launch prints errors
only (in a realm every byte on a 16550 is a REC exit); `loglevel=7` or `debug` on the
kernel command line gives the whole boot log, as `quiet` takes it away again."""

from __future__ import annotations

LOGLEVEL_REQUESTED = -1  # what an option asked for (attest=, ukrsi.selftest): shown at any loglevel
LOGLEVEL_ERR = 3  # KERN_ERR
LOGLEVEL_WARNING = 4  # KERN_WARNING
LOGLEVEL_INFO = 6  # KERN_INFO
CONSOLE_LOGLEVEL_QUIET = 4  # `quiet`: errors only (this kernel's default)
CONSOLE_LOGLEVEL_DEFAULT = 7  # Linux's default: everything but debug messages
CONSOLE_LOGLEVEL_DEBUG = 10  # `debug`
CONSOLE_LOGLEVEL_MAX = 15


def console_loglevel(options: list[str]) -> tuple[int, str | None]:
    """The console loglevel the kernel options set, read in order as Linux's early parameters
    are (the last of `quiet`, `debug` and `loglevel=N` wins), and the complaint about a
    malformed `loglevel=` (which changes nothing) if there was one."""
    level, problem = CONSOLE_LOGLEVEL_QUIET, None
    for opt in options:
        if opt == "quiet":
            level = CONSOLE_LOGLEVEL_QUIET
        elif opt == "debug":
            level = CONSOLE_LOGLEVEL_DEBUG
        elif opt.startswith("loglevel="):
            value = opt.partition("=")[2]
            if value.isdigit() and int(value) <= CONSOLE_LOGLEVEL_MAX:
                level = int(value)
            else:
                problem = f"malformed option {opt!r} (0..{CONSOLE_LOGLEVEL_MAX}): ignored"
    return level, problem
