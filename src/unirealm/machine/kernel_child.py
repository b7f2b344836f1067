"""A kernel process: the Python kernel of one vCPU, alone in a fresh interpreter.

`python -m unirealm.machine.kernel_child CHANNEL` is started by kernel_spawn.Spawn with an
empty environment and its channel as its only descriptor. Before it reads a byte of the
image it:

1. clears its environment and imports the modules a unirealm kernel may use (nothing can be
   opened later) -- this much before any VM exists (kernel_spawn.start_early);
2. waits for SETUP: the memory file, its read-only twin and the interrupt eventfd
   (SCM_RIGHTS), the address-space limit and the CPU model; it ends quietly if the channel
   closes first;
3. bounds its address space (RLIMIT_AS = LIMIT: the VM's RAM plus a fixed overhead, the
   mappings of guest RAM included);
4. closes every other descriptor, ignores the terminal's signals, dies with its parent;
5. installs a seccomp filter: the system calls an interpreter running Unicorn makes, reads
   and writes only on its channel and its interrupt descriptor, and mmap of the memory file
   only through the parent's approval (user notification: the parent lets a mapping through
   only at offsets it granted, into the IPA window, with the granted writability).

It then runs the kernel with `GuestCpu` as its only door: each trap is a TRAP message and
the kernel waits for RESUME; each stage-2 miss is a TRAP the parent may answer with a GRANT
(the process maps those granules of the memory file at WINDOW + IPA) instead of a trap;
REVOKE unmaps a range at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import mmap
import os
import resource
import signal
import socket
import sys
import threading
from typing import Any

from unirealm.arch.gic import SPECIAL_INTIDS, IccSysreg
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE

from . import kernel_channel as ch
from . import seccomp as sc
from .el0space import El0Space
from .interrupt import HOST_IRQ
from .irq import PENDING_FIQ, PENDING_IRQ
from .pykernel import GuestFault, KernelCore
from .uc_regfile import register_file_offsets
from .vcpu import DataAbortTrap, HvcTrap, IrqTrap, SmcTrap, Trap, WfxTrap
from .vcpu_stops import no_exit_request_offset

# Guest memory is mapped at WINDOW + IPA: IPA-contiguous granules of contiguous file
# offsets merge into one mapping, and an EL0 CPU maps neighbours as one region.
WINDOW, WINDOW_SIZE = ch.WINDOW, ch.WINDOW_SIZE
# What a unirealm kernel may import from outside its image (guest/ and arch/ import these).
PRELOAD = (
    "base64", "binascii", "bisect", "calendar", "cbor2", "collections", "collections.abc", "contextlib",
    "dataclasses", "datetime",
    "encodings.ascii", "encodings.cp437", "encodings.idna", "encodings.latin_1", "enum", "errno", "functools", "gzip",
    "hashlib", "heapq", "io", "itertools", "json", "locale", "math", "random", "string", "struct",
    "textwrap", "traceback", "typing", "unicorn", "unicorn.arm64_const", "weakref", "zipfile", "zlib",
)
# Each EL0 CPU's translation buffer (Unicorn's default takes 1 GiB of address space).
TCG_BUFFER = 32 << 20
PROT_READ, PROT_WRITE = mmap.PROT_READ, mmap.PROT_WRITE
MAP_SHARED, MAP_FIXED = mmap.MAP_SHARED, ch.MAP_FIXED

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
MAP_FAILED = ctypes.c_void_p(-1).value
SIGNALLED = PENDING_IRQ | PENDING_FIQ


class ChannelClosed(Exception):
    """The engine in the monitor's process is gone: this process ends."""


class WindowAccessor:
    """Guest memory as this process has it mapped (addresses in the window)."""

    @staticmethod
    def read(addr: int, size: int) -> bytes:
        return ctypes.string_at(addr, size)

    @staticmethod
    def write(addr: int, data: bytes | bytearray | memoryview) -> None:
        buf = bytes(data)
        ctypes.memmove(addr, buf, len(buf))


WINDOW_ACCESSOR = WindowAccessor()


class ChildEngine(KernelCore):
    """The kernel's engine in the kernel process: traps and stage-2 misses are messages."""

    def __init__(self, sock: socket.socket, memfd: int, memfd_ro: int, cpu_model: str) -> None:
        super().__init__(0, (), cpu_model)
        self.sock = sock
        self.memfd = memfd
        self.memfd_ro = memfd_ro
        self.mapped: dict[int, bool] = {}  # IPA page -> writable
        self._pending_fault: GuestFault | None = None
        self.postable = False  # the last answer's LINE_POSTABLE
        self.mmio_postable = False  # its LINE_MMIO_POSTABLE
        self.device_pages: set[int] = set()  # IPA pages whose last access was emulated
        self.iar1: int | None = None  # what ICC_IAR1_EL1 returns, as that answer foresaw it

    # --- the channel --------------------------------------------------------------------
    def _send_trap(self, kind: ch.TrapKind, flags: int = 0, size: int = 0, ipa: int = 0, value: int = 0) -> None:
        self.sock.send(ch.TRAP.pack(ch.Msg.TRAP, kind, flags, size, self.pc, *self.regs, ipa, value))

    def _receive(self) -> bytes:
        """The next message that is not a REVOKE (those are carried out as they come)."""
        while True:
            data = self.sock.recv(ch.MAX_MESSAGE)
            if not data:
                raise ChannelClosed
            if data[0] == ch.Msg.REVOKE:
                _, ipa, size = ch.REVOKE.unpack(data)
                self._revoke(ipa, size)
                self.sock.send(ch.ACK.pack(ch.Msg.ACK))
                continue
            return data

    def _resumed(self, data: bytes) -> None:
        if data[0] != ch.Msg.RESUME:
            raise ChannelClosed
        _, fault, lines, iar1, self.pc, *regs, address, esr = ch.RESUME.unpack(data)
        self.regs[:] = regs
        HOST_IRQ.pending = bool(lines & ch.LINE_HOST_IRQ)
        self._answered(lines, iar1)
        if fault == ch.Fault.SEA:
            self._pending_fault = GuestFault("synchronous external abort", address)
        elif fault == ch.Fault.UNDEF:
            self._pending_fault = GuestFault("undefined instruction", address)
        elif fault == ch.Fault.EXCEPTION:
            self._pending_fault = GuestFault(f"exception (ESR {esr:#x})", address)

    def wait_first_resume(self) -> None:
        self._resumed(self._receive())

    def trap_and_wait(self, trap: Trap) -> None:
        if isinstance(trap, SmcTrap):
            self._send_trap(ch.TrapKind.SMC)
        elif isinstance(trap, HvcTrap):
            self._send_trap(ch.TrapKind.HVC)
        elif isinstance(trap, WfxTrap):
            self._send_trap(ch.TrapKind.WFI)
        elif isinstance(trap, IrqTrap):
            self._send_trap(ch.TrapKind.IRQ)
        elif isinstance(trap, DataAbortTrap):
            self._send_trap(ch.TrapKind.DATA_ABORT, self._abort_flags(trap), trap.size, trap.ipa, trap.value)
        else:  # pragma: no cover - the kernel makes no other trap
            raise TypeError(f"no channel encoding for {trap!r}")
        self._resumed(self._receive())
        if self._pending_fault is not None:
            fault, self._pending_fault = self._pending_fault, None
            raise fault

    def _answered(self, lines: int, iar1: int) -> None:
        """What an answer says the PE's inputs signal, and what it may post until the next."""
        self.signalled = (lines >> ch.LINES_SHIFT) & SIGNALLED
        self.postable = bool(lines & ch.LINE_POSTABLE)
        self.mmio_postable = bool(lines & ch.LINE_MMIO_POSTABLE)
        self.iar1 = iar1 if self.postable and iar1 != ch.NO_IAR1 else None

    def sysreg(self, key: int, value: int | None) -> int | None:
        """A SYSREG trap, served by the engine's interrupt lines without leaving run(); or,
        while the last answer allows it (kernel_channel LINE_POSTABLE), completed here and
        posted: an MSR of POSTED_WRITES, the one MRS of ICC_IAR1_EL1 that answer foresaw."""
        if self.postable:
            if value is not None and key in ch.POSTED_WRITES:
                self.sock.send(ch.POSTED.pack(ch.Msg.POSTED, ch.TRAP_WRITE, key, value))
                self.iar1 = None  # the CPU interface or a timer changed: no longer foreseen
                return 0
            if value is None and key == IccSysreg.IAR1 and self.iar1 is not None:
                intid, self.iar1 = self.iar1, None
                if intid not in SPECIAL_INTIDS:  # 1023 acknowledges nothing
                    self.sock.send(ch.POSTED.pack(ch.Msg.POSTED, 0, key, intid))
                    # Active now, it holds the running priority: nothing else of group 1
                    # preempts it (the engine had chosen it as the highest that would).
                    self.signalled &= ~PENDING_IRQ
                return intid
        flags = ch.TRAP_WRITE if value is not None else 0
        self._send_trap(ch.TrapKind.SYSREG, flags, 8, key, value or 0)
        data = self._receive()
        if data[0] != ch.Msg.SYSREG_DONE:
            raise ChannelClosed
        _, served, lines, iar1, result = ch.SYSREG_DONE.unpack(data)
        self._answered(lines, iar1)
        if lines & ch.LINE_EXIT:  # the owner must look now: its run() ends here
            self.trap_and_wait(IrqTrap(self.pc))
        return result if served else None

    @staticmethod
    def _abort_flags(trap: DataAbortTrap) -> int:
        flags = ch.TRAP_WRITE if trap.is_write else 0
        if trap.syndrome is not None and trap.syndrome.sixty_four:
            flags |= ch.TRAP_SIXTY_FOUR
        return flags

    # --- stage 2 ----------------------------------------------------------------------------
    def _ask(self, page: int, write: bool, flags: int, size: int = 8, value: int = 0) -> bytes | None:
        """A stage-2 question about `page`: a GRANT or DENY answer, or None when it became a
        trap (the kernel has then been resumed)."""
        if not 0 <= page < WINDOW_SIZE:
            return ch.DENY.pack(ch.Msg.DENY, ch.Deny.GPF)
        flags |= ch.TRAP_WRITE if write else 0
        flags |= ch.TRAP_SIXTY_FOUR if size == 8 else 0
        self._send_trap(ch.TrapKind.DATA_ABORT, flags, size, page, value)
        data = self._receive()
        if data[0] == ch.Msg.GRANT:
            _, writable, count, ipa, offset = ch.GRANT.unpack(data)
            self._map(ipa, count, offset, bool(writable))
            return data
        if data[0] == ch.Msg.DENY:
            return data
        self._resumed(data)
        if self._pending_fault is not None:
            fault, self._pending_fault = self._pending_fault, None
            raise fault
        return None

    def _map(self, ipa: int, count: int, offset: int, writable: bool) -> None:
        size = count * GRANULE_SIZE
        if not (ipa >= 0 and ipa + size <= WINDOW_SIZE):
            raise GuestFault("granule protection fault", ipa)
        prot = PROT_READ | (PROT_WRITE if writable else 0)
        fd = self.memfd if writable else self.memfd_ro
        got = _mmap(WINDOW + ipa, size, prot, MAP_SHARED | MAP_FIXED, fd, offset)
        if got == MAP_FAILED:
            raise GuestFault(f"mapping refused ({errno.errorcode.get(ctypes.get_errno(), '?')})", ipa)
        for i in range(count):
            self.mapped[ipa + i * GRANULE_SIZE] = writable

    def _revoke(self, ipa: int, size: int) -> None:
        start, end = ipa & ~GRANULE_MASK, ipa + size
        if (end - start) // GRANULE_SIZE <= len(self.mapped):
            pages = [p for p in range(start, end, GRANULE_SIZE) if p in self.mapped]
        else:
            pages = [p for p in self.mapped if start <= p < end]
        if not pages:
            return
        for space in self.cpu._spaces:  # the EL0 CPUs first: they map these pages by pointer
            space.drop_ipa(start, end - start)
        for page in pages:
            del self.mapped[page]
            _munmap(WINDOW + page, GRANULE_SIZE)

    def resolve(self, ipa: int, write: bool) -> tuple[Any, int]:
        page = ipa & ~GRANULE_MASK
        while True:
            writable = self.mapped.get(page)
            if writable is not None and (writable or not write):
                return WINDOW_ACCESSOR, WINDOW + ipa
            site = self.pc
            answer = self._ask(page, write, ch.TRAP_PROBE)
            if answer is not None and answer[0] == ch.Msg.DENY:
                raise GuestFault("granule protection fault", ipa)
            self.pc = site

    def probe(self, page: int) -> tuple[int, bool] | None:
        writable = self.mapped.get(page)
        if writable is None:
            answer = self._ask(page, False, ch.TRAP_QUERY)
            if answer is None or answer[0] != ch.Msg.GRANT:
                return None
            writable = self.mapped.get(page)
            if writable is None:
                return None
        return WINDOW + page, writable

    def peek(self, page: int) -> tuple[int, bool] | None:
        writable = self.mapped.get(page)  # what this process has been granted: no question asked
        return None if writable is None else (WINDOW + page, writable)

    def mmio(self, ipa: int, size: int, value: int | None) -> int:
        write = value is not None
        page = ipa & ~GRANULE_MASK
        if write and self.mmio_postable and page in self.device_pages:
            self.sock.send(ch.POSTED_MMIO.pack(ch.Msg.POSTED_MMIO, size, ipa, value or 0))
            self.iar1 = None  # the device may move its interrupt: no longer foreseen
            return 0
        while True:
            writable = self.mapped.get(page)
            if writable is not None and (writable or not write):  # memory, not emulated
                if write:
                    WINDOW_ACCESSOR.write(WINDOW + ipa, (value or 0).to_bytes(size, "little"))
                    return 0
                return int.from_bytes(WINDOW_ACCESSOR.read(WINDOW + ipa, size), "little")
            site = self.pc
            answer = self._ask(page | (ipa & GRANULE_MASK), write, ch.TRAP_PROBE, size, value or 0)
            if answer is not None:
                if answer[0] == ch.Msg.DENY:
                    raise GuestFault("granule protection fault", ipa)
                continue  # granted: memory
            if self.pc == site:  # not emulated: the host mapped something; try again
                self.device_pages.discard(page)
                continue
            self.device_pages.add(page)
            self.pc = site
            return 0 if write else self.regs[0] & ((1 << (8 * size)) - 1)


def _warm_up() -> None:
    """What Unicorn and its binding load on first use (the ARM64 binding module, the library's
    lazily bound symbols), done once while files can still be opened."""
    from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc

    uc: Any = Uc(UC_ARCH_ARM64, UC_MODE_ARM)  # the binding's stubs lack ctl_set_tcg_buffer_size
    uc.ctl_set_tcg_buffer_size(1 << 20)
    uc.mem_map(0, GRANULE_SIZE)
    uc.mem_write(0, b"\x1f\x20\x03\xd5")  # nop
    uc.emu_start(0, 4)
    uc.context_restore(uc.context_save())
    uc.mem_unmap(0, GRANULE_SIZE)
    del uc
    # found (with their scratch engines, the second through /proc/self/mem) before the limits are in
    no_exit_request_offset()
    register_file_offsets()


def _close_other_fds(keep: set[int], listing: str = "/proc/self/fd") -> None:
    """Close every descriptor `listing` names (this process's own, by default) but `keep`."""
    for name in os.listdir(listing):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _watch_interrupts(irq_fd: int) -> None:
    """The host's interrupt: the parent writes the eventfd; Unicorn stops (HOST_IRQ)."""
    while True:
        try:
            os.eventfd_read(irq_fd)
        except OSError:
            return
        HOST_IRQ.raise_()


def install_filter(chan: int, memfd: int, memfd_ro: int, irq_fd: int) -> int:
    """Install the seccomp filter of a kernel process; returns the user-notification listener."""
    listener = build_filter(chan, memfd, memfd_ro, irq_fd).load()
    assert listener is not None
    return listener


def build_filter(chan: int, memfd: int, memfd_ro: int, irq_fd: int) -> sc.Filter:
    """The seccomp filter of a kernel process (not loaded)."""
    f = sc.Filter(sc.scmp_act_errno(errno.EPERM))
    allow = sc.SCMP_ACT_ALLOW
    for name in ALLOWED:
        f.add(allow, name)
    eq = sc.SCMP_CMP_EQ
    # I/O only on the channel (and the interrupt eventfd, read by the watchdog thread)
    for name in ("read", "recvfrom", "recvmsg", "write", "sendto", "sendmsg"):
        f.add(allow, name, sc.Arg(0, eq, chan))
    f.add(allow, "read", sc.Arg(0, eq, irq_fd))
    f.add(allow, "tgkill", sc.Arg(0, eq, os.getpid()))  # raise(): signals to itself only
    # mmap: anonymous memory freely (fd -1); the memory file only with the parent's approval
    f.add(allow, "mmap", sc.Arg(4, eq, 0xFFFF_FFFF))
    f.add(allow, "mmap", sc.Arg(4, eq, 0xFFFF_FFFF_FFFF_FFFF))
    f.add(allow, "mmap", sc.Arg(3, sc.SCMP_CMP_MASKED_EQ, mmap.MAP_ANONYMOUS, mmap.MAP_ANONYMOUS))
    f.add(sc.SCMP_ACT_NOTIFY, "mmap", sc.Arg(4, eq, memfd))
    f.add(sc.SCMP_ACT_NOTIFY, "mmap", sc.Arg(4, eq, memfd_ro))
    # mremap cannot move or grow a mapping of the memory file (they all lie in the window)
    f.add(allow, "mremap", sc.Arg(0, sc.SCMP_CMP_LT, WINDOW))
    f.add(allow, "mremap", sc.Arg(0, sc.SCMP_CMP_GE, WINDOW + WINDOW_SIZE))
    # madvise, but not MADV_REMOVE (a hole punched into the memory file)
    f.add(allow, "madvise", sc.Arg(2, sc.SCMP_CMP_NE, 9))
    return f


# What an interpreter running the kernel and Unicorn needs (measured with strace over the
# e2e apps); everything else fails with EPERM. No open, no stat of a path (newfstatat, which
# glibc's fstat uses too), no socket, no clone, no exec, no pread/pwrite/ftruncate/fallocate
# (they reach the memory file other than by mapping).
ALLOWED = ("munmap", "mprotect", "brk", "futex", "clock_gettime", "clock_nanosleep", "gettimeofday",
           "getpid", "gettid", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "exit",
           "exit_group", "getrandom", "sched_yield", "membarrier", "close", "fstat", "lseek", "poll", "ppoll",
           "rseq", "set_robust_list", "restart_syscall")


def _receive_setup(sock: socket.socket) -> tuple[int, int, int, int, str] | None:
    """SETUP from the engine: (memory file, its read-only twin, interrupt eventfd, limit, CPU
    model); None when the engine went away first (an interpreter started and never used)."""
    try:
        msg, fds, _, _ = socket.recv_fds(sock, ch.MAX_MESSAGE, ch.SETUP_FDS)
    except OSError:
        return None
    if len(msg) != ch.SETUP.size or msg[0] != ch.Msg.SETUP or len(fds) != ch.SETUP_FDS:
        for fd in fds:
            os.close(fd)
        return None
    _, limit, model = ch.SETUP.unpack(msg)
    return fds[0], fds[1], fds[2], limit, model.rstrip(b"\0").decode("ascii", "replace")


def main(argv: list[str]) -> int:
    chan_fd = int(argv[0])
    os.environ.clear()  # started with none; the interpreter's own locale coercion (LC_CTYPE) goes too
    for name in PRELOAD:
        importlib.import_module(name)
    El0Space.tcg_buffer_size = TCG_BUFFER
    _warm_up()
    sock = socket.socket(fileno=chan_fd)
    setup = _receive_setup(sock)
    if setup is None:
        return 0
    memfd, memfd_ro, irq_fd, limit, cpu_model = setup
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # stdin/out/err stay open until the filter is in (a listener on fd 0 would look like
    # none to libseccomp), then go too
    _close_other_fds({0, 1, 2, chan_fd, memfd, memfd_ro, irq_fd})
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return 1
    threading.Thread(target=_watch_interrupts, args=(irq_fd,), daemon=True).start()
    listener = install_filter(chan_fd, memfd, memfd_ro, irq_fd)
    socket.send_fds(sock, [ch.HELLO.pack(ch.Msg.HELLO, memfd, memfd_ro)], [listener])
    for fd in (listener, 0, 1, 2):
        os.close(fd)
    serve(ChildEngine(sock, memfd, memfd_ro, cpu_model), limit)
    return 0


def serve(engine: ChildEngine, limit: int) -> None:
    """Boot the image at the first RESUME's PC and run it; when the kernel ends, say why
    (STOPPED) and wait, a halted core, for the end of the VM (the channel's close)."""
    try:
        engine.wait_first_resume()
        engine.image_base = engine.pc
        engine.boot_regs = list(engine.regs[:4])
        try:
            engine.boot_image()
            reason = "the kernel returned"
        except ChannelClosed:
            raise
        except MemoryError:
            reason = f"out of memory (address-space limit {limit >> 20} MiB)"
        except ModuleNotFoundError as exc:  # the image's kernel needs code its image lacks
            reason = (f"the kernel imports {exc.name!r}, which is not in its image: "
                      "the image was built by another unirealm; build it again with this one")
        except BaseException as exc:  # the guest crashed: its CPU stops
            reason = f"the kernel stopped: {type(exc).__name__}: {exc}"[:400]
        engine.sock.send(ch.STOPPED_HEADER.pack(ch.Msg.STOPPED) + reason.encode("utf-8", "replace"))
        while engine.sock.recv(ch.MAX_MESSAGE):
            pass
    except (ChannelClosed, OSError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
