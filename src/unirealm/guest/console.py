"""ns16550a console driver: byte-wide registers, reg-shift 0, as kvmtool's 8250 exposes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .interfaces import Cpu

RBR_THR = 0
IER = 1
FCR_IIR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
IER_RDI = 0x01  # received data available: reported in IIR (the line is never enabled at the GIC)
IIR_ID = 0x0F
IIR_RDI = 0x04  # the receive FIFO holds at least the trigger level
IIR_RX_TIMEOUT = 0x0C  # data below the trigger level: at least one byte
FCR_FIFO_TRIGGER_14 = 0xC1  # FIFOs on, receive trigger level 14
RX_TRIGGER = 14
LSR_DR = 0x01
LSR_THRE = 0x20
MSR_DCD = 0x80
IIR_FIFO_16550A = 0xC0  # IIR bits 7:6 with FIFOs enabled: a 16550A (Linux 8250 autoconfig)
FIFO_SIZE = 16
THRE_POLLS = 100_000  # LSR reads a byte may wait for the transmitter before the UART counts as dead


class ConsoleError(Exception):
    """The UART does not behave as an ns16550a (missing, or memory where registers should be)."""


class Ns16550:
    def __init__(self, cpu: Cpu, base: int) -> None:
        self.cpu = cpu
        self.base = base
        self._out(IER, 0)  # polled: no interrupts
        self._out(LCR, 0x03)  # 8N1
        self._out(FCR_IIR, 0x01)  # FIFOs on (no reset: keep input that already arrived)
        self._out(MCR, 0x03)  # DTR, RTS
        # FCR and IIR share an offset: memory (a host page mapped where the registers should
        # be) reads back what was written, a 16550A reports its FIFOs in IIR[7:6].
        iir = self._in(FCR_IIR)
        if iir & IIR_FIFO_16550A != IIR_FIFO_16550A:
            raise ConsoleError(f"UART at {base:#x} is not an ns16550a (IIR {iir:#04x} with FIFOs enabled)")
        # Still polled, but IIR now tells how much input waits: RDI once the receive FIFO
        # reaches 14 bytes, so a burst is read 14 bytes per IIR instead of LSR per byte.
        self._out(FCR_IIR, FCR_FIFO_TRIGGER_14)
        self._out(IER, IER_RDI)
        self.dead = False

    def _out(self, reg: int, value: int) -> None:
        self.cpu.mmio_write(self.base + reg, 1, value)

    def _in(self, reg: int) -> int:
        return self.cpu.mmio_read(self.base + reg, 1)

    def write(self, data: bytes) -> None:
        """Transmit `data`; a transmitter that never empties makes the UART dead (output is
        then dropped) rather than a kernel that spins."""
        for i in range(0, len(data), FIFO_SIZE):
            if self.dead:
                return
            for _ in range(THRE_POLLS):
                if self._in(LSR) & LSR_THRE:
                    break
            else:
                self.dead = True
                return
            for byte in data[i : i + FIFO_SIZE]:
                self._out(RBR_THR, byte)
        if data and not self.dead:
            self._in(LSR)  # as Linux's console write ends: the transmitter drains

    def input_state(self) -> tuple[bool, bool]:
        """(bytes ready, at end of input): LSR.DR, then MSR.DCD (the line hung up)."""
        if self._in(LSR) & LSR_DR:
            return True, False
        return False, not self._in(MSR) & MSR_DCD

    def touch(self) -> None:
        """Device activity while idle: the VMM sees the guest polling the line."""
        self._in(LSR)

    def read(self, limit: int, block: bool = True) -> bytes:
        """Up to `limit` bytes; empty only at end of input (carrier lost) or when not blocking."""
        out = bytearray()
        while len(out) < limit:
            iid = self._in(FCR_IIR) & IIR_ID
            if iid == IIR_RDI:  # the FIFO holds at least the trigger level: no LSR per byte
                out += bytes(self._in(RBR_THR) for _ in range(min(RX_TRIGGER, limit - len(out))))
                continue
            if iid == IIR_RX_TIMEOUT or (iid != 1 and self._in(LSR) & LSR_DR):
                out.append(self._in(RBR_THR))
                continue
            if out or not block:
                break
            if not self._in(MSR) & MSR_DCD:  # the line hung up: end of input
                break
            self.cpu.wfi()
        return bytes(out)
