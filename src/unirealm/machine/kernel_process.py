"""The engine of a vCPU whose Python kernel runs in a kernel process of its own.

`KernelProcess` has PyKernelEngine's API (run() -> Trap, registers, completions, TLBI), so
the RMM's REC_ENTER and the host's KVM loop drive it unchanged. It keeps the vCPU's register
file and PC here, as a hypervisor sees them between runs, and starts the kernel in a fresh
interpreter (kernel_child.py: empty environment, only its channel, the memory file and an
interrupt eventfd; address-space limit; seccomp) at the first run. The channel carries the
register file in and out with each trap and resume, and stage-2 questions: the child asks
for the granule behind an IPA, and this side answers with the translate callback (the RMM's
stage 2 and the GPT for a realm, the VM's RAM for a normal VM) — a GRANT of memory-file
offsets the child may map, or the trap the access makes. The child's mmap of the memory file
is a seccomp user notification answered here: only granted offsets, at their IPA in the
window, with the granted writability. A stage-2 change or a PAS change of a granted granule
revokes it at once (REVOKE, then /proc/PID/maps shows the offsets gone, or the process is
killed) — as a TLBI or a GPT invalidation completes before the change is relied on.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable

from unirealm.arch.esr import AccessSyndrome
from unirealm.arch.gic import IccSysreg
from unirealm.arch.memory import GRANULE_MASK, GRANULE_SIZE

from . import kernel_channel as ch
from . import seccomp as sc
from .interrupt import HOST_IRQ
from .irq import PENDING_IRQ, InterruptLines
from .kernel_channel import MAP_FIXED, WINDOW, WINDOW_SIZE
from .kernel_spawn import Spawn, take
from .memory import GranuleProtectionFault, PhysicalMemory
from .regfile import RegisterFile
from .vcpu import DataAbortTrap, HvcTrap, IrqTrap, Mapping, SmcTrap, Translate, Trap, WfxTrap

log = logging.getLogger("unirealm.machine.kernel_process")

# The fixed part of a kernel process's address-space limit, measured: the interpreter with
# Unicorn and cbor2 loaded is ~60 MiB of address space, the kernel's own
# heap stays below 100 MiB in the e2e apps, and each EL0 CPU reserves a 32 MiB translation
# buffer (kernel_child.TCG_BUFFER); 512 MiB holds a dozen live processes.
OVERHEAD = 512 << 20
GRANT_RUN = 64  # granules granted at once: the faulting one and its mapped, contiguous neighbours
START_TIMEOUT = 60.0  # seconds for the child to be ready (a loaded machine)
REVOKE_TIMEOUT = 10.0
NR_MMAP = sc.syscall_number("mmap")
MEMFD_NAME = "/memfd:unirealm-dram"
# The trap decoder's constants, as plain ints and prebuilt syndromes (an immutable
# AccessSyndrome per direction, size and SF): decoded at every trap.
_TRAP_UNPACK = ch.TRAP.unpack
_SMC, _DATA_ABORT = int(ch.TrapKind.SMC), int(ch.TrapKind.DATA_ABORT)
_PROBE_OR_QUERY = ch.TRAP_PROBE | ch.TRAP_QUERY
_SIZES = (1, 2, 4, 8)
_SYNDROMES = {(w, n, sf): AccessSyndrome(w, n, 0, sixty_four=sf)
              for w in (False, True) for n in _SIZES for sf in (False, True)}
_RESUME_PACK, _RESUME, _TRAP = ch.RESUME.pack, int(ch.Msg.RESUME), int(ch.Msg.TRAP)
_POSTED, _POSTED_MMIO = int(ch.Msg.POSTED), int(ch.Msg.POSTED_MMIO)
# How long the channel may be quiet before the engine looks at the seccomp listener
# unasked (SO_RCVTIMEO of its end of the channel).
LISTENER_CHECK = 0.02


class KernelProcessStopped(Exception):
    """The kernel process ended: its kernel returned or crashed, or it was killed."""


# Kernel processes started ahead of their vCPU, by machine (at most one each).
_SPARES: dict[int, Spawn] = {}


def prestart(memory: PhysicalMemory, ram_size: int | None, cpu_model: str = "max") -> None:
    """Give `memory`'s first Python-kernel vCPU its kernel process now, while the VMM still
    builds the VM: the interpreter `kernel_spawn.start_early` started, else a new one, which
    starts on another core. The first KernelProcess of this memory with the same limit and
    CPU model takes it; `discard_spare` ends an unused one."""
    if id(memory) not in _SPARES:
        limit = (ram_size if ram_size is not None else memory.size) + OVERHEAD
        _SPARES[id(memory)] = take().bind(memory.fd, limit, cpu_model)


def discard_spare(memory: PhysicalMemory) -> None:
    spare = _SPARES.pop(id(memory), None)
    if spare is not None:
        spare.discard()


class KernelProcess(RegisterFile):
    """An ExecutionEngine (see rmm.realm) running the unirealm kernel at PC in a child process."""

    def __init__(self, memory: PhysicalMemory, translate: Translate, pc: int, gprs: list[int] | tuple[int, ...],
                 cpu_model: str, ram_size: int | None = None) -> None:
        self.memory = memory
        self.translate = translate
        self.cpu_model = cpu_model
        self.limit = (ram_size if ram_size is not None else memory.size) + OVERHEAD
        self.pc = pc
        self.regs = [0] * 31
        for i, v in enumerate(gprs):
            self.regs[i] = v
        self._fault = (ch.Fault.NONE, 0, 0)
        self._grants: dict[int, tuple[int, bool]] = {}  # IPA page -> (PA, writable)
        self._by_pa: dict[int, set[int]] = {}  # PA -> the IPA pages granted on it
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._listener = -1
        self._granted = False  # a GRANT was sent: the child's mmap (a seccomp notification) comes next
        self._memfd_ro = -1
        self._child_memfd = self._child_memfd_ro = -1  # their numbers in the child (its HELLO)
        self._irq = -1
        self.stopped: str | None = None
        self.counts = {"traps": 0, "grants": 0, "mmaps": 0, "revokes": 0, "sysregs": 0, "posted": 0}
        self._told = 0  # what the last answer showed the PE's inputs signalling
        # The PE's interrupt inputs, as the owner wires them (machine.irq; None: none): the
        # kernel's SYSREG traps are served by them, and RESUME carries what they signal.
        self.interrupts: InterruptLines | None = None
        # The owner's emulation of an MMIO write (IPA, size, value; False: it aborts), when the
        # child may post those (kernel_channel LINE_MMIO_POSTABLE); None: each one is a trap.
        self.posted_mmio: Callable[[int, int, int], bool] | None = None
        memory.on_pas_change(self._on_pas_change)

    # --- the child -----------------------------------------------------------------------
    def _start(self) -> None:
        spare = _SPARES.pop(id(self.memory), None)
        if spare is not None and (spare.limit, spare.cpu_model) != (self.limit, self.cpu_model):
            spare.discard()
            spare = None
        spare = spare or take().bind(self.memory.fd, self.limit, self.cpu_model)
        self._proc, self._memfd_ro, self._irq = spare.proc, spare.memfd_ro, spare.irq
        parent = spare.sock
        self._sock = parent
        ready, _, _ = select.select([parent], [], [], START_TIMEOUT)
        if not ready:
            self._kill()
            raise KernelProcessStopped("the kernel process did not start")
        try:
            msg, fds_in, _, _ = socket.recv_fds(parent, ch.MAX_MESSAGE, 1)
        except OSError:
            msg, fds_in = b"", []
        if len(msg) != ch.HELLO.size or msg[0] != ch.Msg.HELLO or len(fds_in) != 1:
            self._kill()
            raise KernelProcessStopped("the kernel process failed to start (seccomp or resource limits refused)")
        self._listener = fds_in[0]
        _, self._child_memfd, self._child_memfd_ro = ch.HELLO.unpack(msg)
        self._poller = select.poll()
        self._poller.register(parent, select.POLLIN)
        self._poller.register(self._listener, select.POLLIN)
        usec = int(LISTENER_CHECK * 1e6)
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", usec // 1_000_000, usec % 1_000_000))
        log.debug("kernel process %d started (limit %d MiB)", self._proc.pid, self.limit >> 20)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._grants.clear()
        self._by_pa.clear()

    def _died(self) -> KernelProcessStopped:
        assert self._proc is not None
        self._proc.kill()
        code = self._proc.wait()
        self._grants.clear()
        self._by_pa.clear()
        if self.stopped is None:
            if code == -signal.SIGSYS:
                self.stopped = "killed by its seccomp filter"
            else:
                self.stopped = f"the kernel process ended (status {code})"
        return KernelProcessStopped(self.stopped)

    def close(self) -> None:
        self.memory.remove_pas_listener(self._on_pas_change)
        self._kill()
        for fd in (self._listener, self._memfd_ro, self._irq):
            if fd >= 0:
                os.close(fd)
        self._listener = self._memfd_ro = self._irq = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- HOST_IRQ's view: a running CPU it can stop ---------------------------------------
    def emu_stop(self) -> None:
        if self._irq >= 0:
            os.eventfd_write(self._irq, 1)

    # --- the ExecutionEngine protocol -------------------------------------------------------
    def run(self) -> Trap:
        """Resume the kernel and serve it until its next trap. The kernel stops its own EL0
        code for its timer (machine/el0space.py El0Space.run); only the host's signal stops
        it from here (HOST_IRQ, the eventfd)."""
        if self.stopped is not None:
            raise KernelProcessStopped(self.stopped)
        if self._proc is None:
            self._start()
        assert self._sock is not None
        fault, address, esr_value = self._fault
        self._fault = (ch.Fault.NONE, 0, 0)
        try:
            lines, iar1 = self._lines(HOST_IRQ.pending)
            self._sock.send(_RESUME_PACK(_RESUME, fault, lines, iar1, self.pc, *self.regs, address, esr_value))
        except OSError:
            raise self._died() from None
        with HOST_IRQ.running(self):
            return self._serve()

    def _lines(self, host_irq: bool) -> tuple[int, int]:
        """An answer's line byte (the host's interrupt, what the PE's inputs signal now,
        whether it may post) and its `iar1` (kernel_channel LINE_POSTABLE)."""
        lines = self.interrupts
        signalled, iar1 = 0, ch.NO_IAR1
        if lines is not None:
            lines.next_deadline()  # first: a deadline passing now shows in pending()
            pending = lines.pending()
            self._told = pending
            signalled = pending << ch.LINES_SHIFT
            now = lines.iar1_now()
            if now is not None:
                signalled |= ch.LINE_POSTABLE
                iar1 = now
        if self.posted_mmio is not None:
            signalled |= ch.LINE_MMIO_POSTABLE
        return signalled | (ch.LINE_HOST_IRQ if host_irq else 0), iar1

    def _sysreg(self, key: int, value: int | None) -> bytes:
        """SYSREG_DONE for the kernel's MRS (value None) or MSR of `key`, served by the
        interrupt lines as a machine-code vCPU's UC_HOOK_INSN serves it; an access they do
        not serve is UNDEFINED."""
        self.counts["sysregs"] += 1
        lines = self.interrupts
        result, served = 0, False
        if lines is not None:
            if value is None:
                read = lines.read_sysreg(key)
                served = read is not None
                result = read or 0
            else:
                served = lines.write_sysreg(key, value)
        deadline = lines.next_deadline() if lines is not None else None
        # The lines last: nothing may move between what they show and the IAR1 they foresee.
        flags, iar1 = self._lines(False)
        if deadline is not None and deadline <= time.monotonic():
            flags = (flags | ch.LINE_EXIT) & ~ch.LINE_POSTABLE
        return ch.SYSREG_DONE.pack(ch.Msg.SYSREG_DONE, served, flags, iar1, result & 0xFFFF_FFFF_FFFF_FFFF)

    def _posted_mmio(self, data: bytes) -> None:
        """An MMIO write the PE posted (kernel_channel LINE_MMIO_POSTABLE), emulated now;
        the host's interrupt stops the PE's run when the device signalled something new."""
        _, size, ipa, value = ch.POSTED_MMIO.unpack(data)
        if self.posted_mmio is None or size not in _SIZES or not self.posted_mmio(ipa, size, value):
            self.stopped = f"the kernel process posted an MMIO write the owner refuses ({ipa:#x})"
            raise self._died()
        self.counts["posted"] += 1
        self._look_now()

    def _look_now(self) -> None:
        """After a posted access: the host's interrupt when a deadline has passed or the PE's
        inputs signal what its last answer did not show."""
        lines = self.interrupts
        if lines is None:
            return
        deadline = lines.next_deadline()
        if (deadline is not None and deadline <= time.monotonic()) or lines.pending() & ~self._told:
            self.emu_stop()

    def _posted(self, data: bytes) -> None:
        """An access the PE completed itself (kernel_channel LINE_POSTABLE), applied now: a
        read of ICC_IAR1_EL1 acknowledges the INTID it returned (the one the answer foresaw,
        though a timer may have raised another since), a write is written. When the
        PE must look now (a deadline passed, or an interrupt is signalled that its last
        answer did not show), the host's interrupt stops its run."""
        _, flags, key, value = ch.POSTED.unpack(data)
        lines = self.interrupts
        if lines is None:
            self.stopped = "the kernel process posted an access without interrupt lines"
            raise self._died()
        self.counts["posted"] += 1
        if flags & ch.TRAP_WRITE:
            ok = key in ch.POSTED_WRITES and lines.write_sysreg(key, value)
        else:
            ok = key == IccSysreg.IAR1 and lines.acknowledge_foreseen(value)
            self._told &= ~PENDING_IRQ  # as the PE now has it (kernel_child ChildEngine.sysreg)
        if not ok:
            self.stopped = f"the kernel process posted an access the interrupt lines refuse ({key:#x})"
            raise self._died()
        self._look_now()

    def _serve(self) -> Trap:
        """Answer the child until it traps. The channel is read with a blocking recv, one
        system call per message: the seccomp listener needs looking at only after a GRANT
        (the child maps it next) or when the child has sent nothing for LISTENER_CHECK
        seconds (a kernel that maps the memory file unasked waits that long for its EPERM)."""
        assert self._sock is not None
        sock = self._sock
        while True:
            if self._granted:
                self._granted = False
                data = self._next_with_listener()
            else:
                try:
                    data = sock.recv(ch.MAX_MESSAGE)
                except BlockingIOError:  # SO_RCVTIMEO: quiet for LISTENER_CHECK seconds
                    self._judge_pending()
                    continue
            if not data:
                raise self._died()
            if data[0] != _TRAP or len(data) != ch.TRAP.size:
                if data[0] == _POSTED and len(data) == ch.POSTED.size:
                    self._posted(data)
                    continue
                if data[0] == _POSTED_MMIO and len(data) == ch.POSTED_MMIO.size:
                    self._posted_mmio(data)
                    continue
                if data[0] == ch.Msg.STOPPED:
                    self.stopped = data[1:].decode("utf-8", "replace")
                    self._kill()
                    raise KernelProcessStopped(self.stopped)
                self.stopped = "the kernel process broke the channel protocol"
                raise self._died()
            trap = self._trap(data)
            if trap is not None:
                self.counts["traps"] += 1
                return trap

    def _next_with_listener(self) -> bytes:
        """The child's next message, judging its seccomp notifications meanwhile."""
        assert self._sock is not None
        sock_fd = self._sock.fileno()
        while True:
            for fd, _ in self._poller.poll():
                if fd == self._listener:
                    if not self._judge() and self._listener_gone():  # the channel tells how it ended
                        try:
                            return self._sock.recv(ch.MAX_MESSAGE)
                        except BlockingIOError:
                            return b""
                elif fd == sock_fd:
                    return self._sock.recv(ch.MAX_MESSAGE)
                else:
                    return b""

    def _judge_pending(self) -> None:
        """Judge the notifications waiting on the listener, if any, without blocking. A
        listener whose process is gone stays readable with nothing to receive: that ends it."""
        while select.select([self._listener], [], [], 0)[0] and self._judge():
            pass

    def _listener_gone(self) -> bool:
        """Whether the process the listener's filter belongs to has ended (POLLHUP)."""
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        return any(events & select.POLLHUP for _, events in poller.poll(0))

    def _trap(self, data: bytes) -> Trap | None:
        t = _TRAP_UNPACK(data)  # msg, kind, flags, size, pc, x0..x30, ipa, value
        kind, flags, pc = t[1], t[2], t[4]
        self.pc = pc
        self.regs[:] = t[5:36]
        if kind == _SMC:
            return SmcTrap(pc, self.regs[:18])
        if kind == _DATA_ABORT and flags & _PROBE_OR_QUERY == 0 and t[3] in _SIZES:  # MMIO: the common trap
            write = bool(flags & ch.TRAP_WRITE)
            return DataAbortTrap(pc, t[36], write, t[3], _SYNDROMES[write, t[3], bool(flags & ch.TRAP_SIXTY_FOUR)],
                                 t[37] if write else 0)
        if kind == ch.TrapKind.HVC:
            return HvcTrap(pc, self.regs[:18])
        if kind == ch.TrapKind.WFI:
            return WfxTrap(pc, False)
        if kind == ch.TrapKind.IRQ:
            return IrqTrap(pc)
        size, ipa, value = t[3], t[36], t[37]
        if kind == ch.TrapKind.SYSREG:
            assert self._sock is not None
            self._sock.send(self._sysreg(ipa, value if flags & ch.TRAP_WRITE else None))
            return None
        if kind != _DATA_ABORT or size not in _SIZES:
            self.stopped = "the kernel process broke the channel protocol"
            raise self._died()
        write = bool(flags & ch.TRAP_WRITE)
        answer = self._grant(ipa & ~GRANULE_MASK, write)
        if answer is not None:
            assert self._sock is not None
            self._granted = answer[0] == ch.Msg.GRANT  # the child's mmap comes next
            self._sock.send(answer)
            return None
        if flags & ch.TRAP_QUERY:
            assert self._sock is not None
            self._sock.send(ch.DENY.pack(ch.Msg.DENY, ch.Deny.UNMAPPED))
            return None
        syndrome = _SYNDROMES[write, size, bool(flags & ch.TRAP_SIXTY_FOUR)]
        return DataAbortTrap(pc, ipa, write, size, syndrome, value if write else 0)

    def inject_sea(self, far: int, is_fetch: bool = False) -> None:
        self._fault = (ch.Fault.SEA, far, 0)

    def inject_undef(self) -> None:
        self._fault = (ch.Fault.UNDEF, self.pc, 0)

    def take_exception(self, esr_value: int, far: int = 0, preferred_return: int | None = None) -> None:
        self._fault = (ch.Fault.EXCEPTION, far, esr_value)

    def invalidate(self, ipa: int, size: int) -> None:
        self._revoke(ipa, size)

    # --- stage 2 ----------------------------------------------------------------------------
    def _lookup(self, page: int, write: bool) -> Mapping | None:
        """The mapping the child may have for this access (GranuleProtectionFault if the GPT
        refuses it), or None: the access traps. Write-only pages cannot be mapped."""
        mapping = self.translate(page, write, False)
        if mapping is None or not mapping.readable or (write and not mapping.writable):
            return None
        self.memory.check(mapping.world, mapping.pa, GRANULE_SIZE)
        return mapping

    def _grant(self, page: int, write: bool) -> bytes | None:
        """GRANT (or DENY for the GPT) for an access to `page`, with up to GRANT_RUN - 1 of
        the following pages of the same block that stage 2 maps on contiguous granules."""
        if not 0 <= page < WINDOW_SIZE:
            return ch.DENY.pack(ch.Msg.DENY, ch.Deny.GPF)
        try:
            first = self._lookup(page, write)
        except GranuleProtectionFault:
            return ch.DENY.pack(ch.Msg.DENY, ch.Deny.GPF)
        if first is None:
            return None
        count = 1
        block_end = (page | (GRANT_RUN * GRANULE_SIZE - 1)) + 1
        while page + count * GRANULE_SIZE < block_end:
            nxt = page + count * GRANULE_SIZE
            if nxt in self._grants:
                break
            try:
                m = self._lookup(nxt, False)
            except GranuleProtectionFault:
                break
            if m is None or m.world != first.world or m.writable != first.writable or \
                    m.pa != first.pa + count * GRANULE_SIZE:
                break
            count += 1
        for i in range(count):
            ipa, pa = page + i * GRANULE_SIZE, first.pa + i * GRANULE_SIZE
            old = self._grants.get(ipa)
            if old is not None:
                self._ungrant(ipa)
            self._grants[ipa] = (pa, first.writable)
            self._by_pa.setdefault(pa, set()).add(ipa)
        self.counts["grants"] += 1
        return ch.GRANT.pack(ch.Msg.GRANT, first.writable, count, page, self.memory.offset(first.pa))

    def _ungrant(self, ipa: int) -> int | None:
        """Forget a grant; the PA if no other IPA holds it any more."""
        pa, _ = self._grants.pop(ipa)
        holders = self._by_pa[pa]
        holders.discard(ipa)
        if holders:
            return None
        del self._by_pa[pa]
        return pa

    def _judge(self) -> bool:
        """A seccomp notification: the child's mmap of the memory file. False when there was
        none to receive: its call was interrupted, or its caller died (the listener of a
        process that has ended reads as ready for ever, `_listener_gone`)."""
        try:
            note = sc.receive(self._listener)
        except OSError:
            return False
        error = errno.EPERM
        if note.nr == NR_MMAP:
            addr, length, prot, flags, fd, offset = note.args
            error = self._judge_mmap(addr, length, prot, flags, fd & 0xFFFF_FFFF, offset)
        sc.respond(self._listener, note, error)
        return True

    def _judge_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        self.counts["mmaps"] += 1
        writable = bool(prot & mmap.PROT_WRITE)
        if fd not in (self._child_memfd, self._child_memfd_ro) or (writable and fd != self._child_memfd):
            return errno.EPERM
        if prot & ~(mmap.PROT_READ | mmap.PROT_WRITE) or not flags & mmap.MAP_SHARED or not flags & MAP_FIXED:
            return errno.EPERM  # MAP_FIXED, shared, no PROT_EXEC
        if length <= 0 or length & GRANULE_MASK or addr & GRANULE_MASK or offset & GRANULE_MASK:
            return errno.EINVAL
        if not (addr >= WINDOW and addr + length <= WINDOW + WINDOW_SIZE):
            return errno.EPERM
        for off in range(0, length, GRANULE_SIZE):
            grant = self._grants.get(addr - WINDOW + off)
            if grant is None or grant[0] != self.memory.base + offset + off or (writable and not grant[1]):
                return errno.EACCES
        return 0

    def _on_pas_change(self, pa: int) -> None:
        ipas = self._by_pa.get(pa)
        if ipas:
            for ipa in sorted(ipas):
                self._revoke(ipa, GRANULE_SIZE)

    def _revoke(self, ipa: int, size: int) -> None:
        """TLBI: the child unmaps [ipa, ipa+size) before this returns (or is killed)."""
        if not self._grants or self._proc is None or self._proc.poll() is not None:
            return
        start, end = ipa & ~GRANULE_MASK, ipa + size
        if (end - start) // GRANULE_SIZE <= len(self._grants):
            pages = [p for p in range(start, end, GRANULE_SIZE) if p in self._grants]
        else:
            pages = [p for p in self._grants if start <= p < end]
        if not pages:
            return
        gone = {pa for pa in (self._ungrant(p) for p in pages) if pa is not None}
        self.counts["revokes"] += 1
        assert self._sock is not None
        deadline = time.monotonic() + REVOKE_TIMEOUT
        try:
            self._sock.send(ch.REVOKE.pack(ch.Msg.REVOKE, start, end - start))
            while True:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._sock.fileno(), self._listener], [], [], max(0.0, left))
                if not ready:
                    raise TimeoutError
                if self._listener in ready:
                    if not self._judge() and self._listener_gone():  # the child is gone
                        raise ConnectionError
                    continue
                data = self._sock.recv(ch.MAX_MESSAGE)
                if data[:1] == bytes([ch.Msg.ACK]):
                    break
                raise ConnectionError
        except (OSError, TimeoutError, ConnectionError):
            self.stopped = "the kernel process did not complete a TLB invalidation"
            self._kill()
            return
        if gone and self._still_mapped(gone):
            self.stopped = "the kernel process kept a revoked mapping"
            self._kill()

    def _still_mapped(self, pas: set[int]) -> bool:
        """Whether any mapping of the child's covers one of these PAs (its /proc maps)."""
        assert self._proc is not None
        offsets = sorted(pa - self.memory.base for pa in pas)
        with open(f"/proc/{self._proc.pid}/maps") as maps:
            for line in maps:
                if MEMFD_NAME not in line:
                    continue
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                base = int(fields[2], 16)
                if any(base <= off < base + hi - lo for off in offsets):
                    return True
        return False
