"""An ns16550A UART: the register model Linux's 8250 driver and Unikraft's ns16550 driver expect.

Registers and bits are those of the National Semiconductor PC16550D datasheet, named as in
Linux include/uapi/linux/serial_reg.h. kvmtool exposes the UART with byte-wide registers at
consecutive offsets (reg-shift 0, reg-io-width 1), DT `reg` size 8.

Timing is not modelled: a byte written to THR is sent at once, and a byte the VMM feeds in
arrives in the receive FIFO as soon as there is room. With FIFOs enabled, transmitted bytes
gather in the 16-byte transmit FIFO and leave in one `output` call when it is full, before
any register read or other register write takes effect, and at `flush()` (the VMM's, at the end of a
run): THRE and TEMT therefore always read as set, and a driver may write up to 16 bytes per
THRE it sees (the datasheet's rule for FIFO mode) with the host writing them as one burst. With FIFOs enabled,
received data below the trigger level reports the character-timeout interrupt straight away,
since "no activity for four character times" is always true in a model without time.

Host side. Transmitted bytes go to the `output` callback. The VMM passes stdin bytes to `feed()`;
they wait in an unbounded host buffer (like kvmtool's terminal buffer) and move into the
16-byte receive FIFO as the guest drains it. A 16550 has no notion of end of input, so the
register model has none either: the VMM calls `set_eof()` when stdin is exhausted, and
`at_eof()` turns true once the guest has also read every byte fed before that. Forwarding that
to the guest (e.g. through a host call) is the VMM's business. `irq_level` is the state of the
interrupt output; `on_irq` is called whenever it changes. Like kvmtool, the line is not gated
by MCR.OUT2 (that gating is a PC-board convention, not part of the UART).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

# Register offsets (reg-shift 0). Offsets 0 and 1 are DLL/DLM while LCR.DLAB is set.
UART_RX = 0  # in: receive buffer
UART_TX = 0  # out: transmit holding register
UART_DLL = 0  # divisor latch, low byte (DLAB = 1)
UART_IER = 1  # interrupt enable
UART_DLM = 1  # divisor latch, high byte (DLAB = 1)
UART_IIR = 2  # in: interrupt identification
UART_FCR = 2  # out: FIFO control
UART_LCR = 3  # line control
UART_MCR = 4  # modem control
UART_LSR = 5  # line status
UART_MSR = 6  # modem status
UART_SCR = 7  # scratch

UART_IER_RDI = 0x01  # received data available
UART_IER_THRI = 0x02  # transmit holding register empty
UART_IER_RLSI = 0x04  # receiver line status
UART_IER_MSI = 0x08  # modem status
UART_IER_MASK = 0x0F  # bits 4-7 read as zero on a 16550A (Linux probes bit 6 for XScale UARTs)

UART_IIR_NO_INT = 0x01
UART_IIR_ID = 0x0E
UART_IIR_MSI = 0x00
UART_IIR_THRI = 0x02
UART_IIR_RDI = 0x04
UART_IIR_RLSI = 0x06
UART_IIR_RX_TIMEOUT = 0x0C
UART_IIR_FIFO_ENABLED_16550A = 0xC0  # both bits set: working FIFOs (a 16550A)

UART_FCR_ENABLE_FIFO = 0x01
UART_FCR_CLEAR_RCVR = 0x02
UART_FCR_CLEAR_XMIT = 0x04
UART_FCR_DMA_SELECT = 0x08
UART_FCR_TRIGGER_MASK = 0xC0
UART_FCR_TRIGGER_SHIFT = 6
FCR_TRIGGER_LEVELS = (1, 4, 8, 14)

UART_LCR_WLEN_MASK = 0x03
UART_LCR_STOP = 0x04
UART_LCR_PARITY = 0x08
UART_LCR_SBC = 0x40
UART_LCR_DLAB = 0x80

UART_MCR_DTR = 0x01
UART_MCR_RTS = 0x02
UART_MCR_OUT1 = 0x04
UART_MCR_OUT2 = 0x08
UART_MCR_LOOP = 0x10
UART_MCR_MASK = 0x1F

UART_LSR_DR = 0x01
UART_LSR_OE = 0x02
UART_LSR_PE = 0x04
UART_LSR_FE = 0x08
UART_LSR_BI = 0x10
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_LSR_FIFOE = 0x80
UART_LSR_BRK_ERROR_BITS = UART_LSR_OE | UART_LSR_PE | UART_LSR_FE | UART_LSR_BI

UART_MSR_DCTS = 0x01
UART_MSR_DDSR = 0x02
UART_MSR_TERI = 0x04
UART_MSR_DDCD = 0x08
UART_MSR_ANY_DELTA = 0x0F
UART_MSR_CTS = 0x10
UART_MSR_DSR = 0x20
UART_MSR_RI = 0x40
UART_MSR_DCD = 0x80

UART_FIFO_SIZE = 16  # the 16550A's receive and transmit FIFO depth
UART_CLOCK_FREQUENCY = 1_843_200  # the DT clock-frequency kvmtool advertises

# The host end of the line is always "connected": carrier, data set ready, clear to send.
_HOST_MODEM_LINES = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS

ByteSink = Callable[[bytes], object]
IrqSink = Callable[[bool], object]


class Ns16550:
    """One ns16550A port. Implements the MmioDevice protocol (`mmio_read` / `mmio_write`)."""

    def __init__(
        self,
        output: ByteSink | None = None,
        on_irq: IrqSink | None = None,
        clock_frequency: int = UART_CLOCK_FREQUENCY,
        name: str = "ttyS0",
    ) -> None:
        self.output = output
        self.on_irq = on_irq
        self.clock_frequency = clock_frequency
        self.name = name
        self._host_input: deque[int] = deque()
        self._eof = False
        self.reset()

    # --- state ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Master reset: the datasheet's reset values. Host-side input and EOF are kept."""
        if getattr(self, "_tx", None):
            self.flush()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.fcr = 0
        self.scr = 0
        self.dll = 0
        self.dlm = 0
        self._rx: deque[int] = deque()
        self._tx = bytearray()  # the transmit FIFO (FIFO mode only): bytes not yet handed on
        self._lsr_errors = 0
        self._msr_delta = 0
        self._msr_lines = self._modem_inputs()
        self._thr_ipending = False
        self._irq_level = False
        self._receive()
        self._update_irq()

    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & UART_FCR_ENABLE_FIFO)

    @property
    def rx_trigger_level(self) -> int:
        return FCR_TRIGGER_LEVELS[(self.fcr & UART_FCR_TRIGGER_MASK) >> UART_FCR_TRIGGER_SHIFT]

    @property
    def loopback(self) -> bool:
        return bool(self.mcr & UART_MCR_LOOP)

    @property
    def divisor(self) -> int:
        return (self.dlm << 8) | self.dll

    @property
    def baud(self) -> int | None:
        """Programmed line rate, None while the divisor latch is zero."""
        return self.clock_frequency // (16 * self.divisor) if self.divisor else None

    @property
    def lsr(self) -> int:
        """LSR as the guest would read it (without the read's side effects)."""
        value = UART_LSR_THRE | UART_LSR_TEMT | self._lsr_errors
        if self._rx:
            value |= UART_LSR_DR
        return value

    @property
    def msr(self) -> int:
        return self._msr_lines | self._msr_delta

    @property
    def iir(self) -> int:
        """IIR as the guest would read it (without clearing a THRE interrupt)."""
        return self._interrupt_id() | (UART_IIR_FIFO_ENABLED_16550A if self.fifo_enabled else 0)

    @property
    def irq_level(self) -> bool:
        """The interrupt output: high while any enabled interrupt is pending."""
        return self._irq_level

    # --- host side ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes arriving from the host terminal (stdin); never blocks, never drops."""
        if self._eof and data:
            raise ValueError(f"{self.name}: input after end of input")
        self._host_input.extend(data)
        self._receive()
        self._update_irq()

    def set_eof(self) -> None:
        """The host input has ended; nothing more will be fed."""
        self._eof = True
        self._update_modem_lines()

    def at_eof(self) -> bool:
        """True once input has ended and the guest has read every byte of it."""
        return self._eof and not self._host_input and not self._rx

    @property
    def pending_input(self) -> int:
        """Bytes fed but not yet read by the guest (host buffer plus receive FIFO)."""
        return len(self._host_input) + len(self._rx)

    # --- guest side: MmioDevice -----------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        # Registers are byte-wide; a wider access returns the register zero-extended.
        # Offsets past the eight registers inside the 4 KiB window read as zero.
        return self.read_reg(offset) if offset < 8 else 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset < 8:
            self.write_reg(offset, value & 0xFF)

    def flush(self) -> None:
        """Hand the transmit FIFO's bytes to `output` (they have left the UART)."""
        if self._tx:
            data, self._tx = bytes(self._tx), bytearray()
            if self.output is not None:
                self.output(data)

    def read_reg(self, offset: int) -> int:
        self.flush()  # by the time the guest looks, the FIFO's bytes have gone out
        dlab = bool(self.lcr & UART_LCR_DLAB)
        if offset == UART_RX:
            value = self.dll if dlab else self._read_rbr()
        elif offset == UART_IER:
            value = self.dlm if dlab else self.ier
        elif offset == UART_IIR:
            value = self.iir
            # Reading IIR while THRE is the reported source acknowledges it.
            if value & UART_IIR_ID == UART_IIR_THRI and not value & UART_IIR_NO_INT:
                self._thr_ipending = False
        elif offset == UART_LCR:
            value = self.lcr
        elif offset == UART_MCR:
            value = self.mcr
        elif offset == UART_LSR:
            value = self.lsr
            self._lsr_errors = 0  # error bits clear on read
        elif offset == UART_MSR:
            value = self.msr
            self._msr_delta = 0  # delta bits clear on read
        elif offset == UART_SCR:
            value = self.scr
        else:
            raise ValueError(f"{self.name}: no register at offset {offset}")
        self._update_irq()
        return value

    def write_reg(self, offset: int, value: int) -> None:
        value &= 0xFF
        dlab = bool(self.lcr & UART_LCR_DLAB)
        if offset != UART_TX or dlab:
            self.flush()  # only THR writes gather in the transmit FIFO
        if offset == UART_TX:
            if dlab:
                self.dll = value
            else:
                self._write_thr(value)
        elif offset == UART_IER:
            if dlab:
                self.dlm = value
            else:
                enabling_thri = value & UART_IER_THRI and not self.ier & UART_IER_THRI
                self.ier = value & UART_IER_MASK
                if enabling_thri:
                    # Enabling the THRE interrupt while THR is empty raises it at once.
                    self._thr_ipending = True
        elif offset == UART_FCR:
            self._write_fcr(value)
        elif offset == UART_LCR:
            self.lcr = value
        elif offset == UART_MCR:
            self._write_mcr(value)
        elif offset in (UART_LSR, UART_MSR):
            pass  # read-only (factory test on real parts)
        elif offset == UART_SCR:
            self.scr = value
        else:
            raise ValueError(f"{self.name}: no register at offset {offset}")
        self._update_irq()

    # --- internals ------------------------------------------------------------------------

    def _rx_capacity(self) -> int:
        return UART_FIFO_SIZE if self.fifo_enabled else 1

    def _receive(self) -> None:
        # In loopback the receiver is disconnected from the line; only THR feeds it.
        if self.loopback:
            return
        while self._host_input and len(self._rx) < self._rx_capacity():
            self._rx.append(self._host_input.popleft())

    def _read_rbr(self) -> int:
        if not self._rx:
            return 0
        value = self._rx.popleft()
        self._receive()
        if self._eof:
            self._update_modem_lines()
        return value

    def _write_thr(self, value: int) -> None:
        self._thr_ipending = False
        if self.loopback:
            if len(self._rx) < self._rx_capacity():
                self._rx.append(value)
            else:
                self._lsr_errors |= UART_LSR_OE
                if not self.fifo_enabled:
                    self._rx[-1] = value  # the holding register is overwritten
        elif self.fifo_enabled:
            self._tx.append(value)
            if len(self._tx) >= UART_FIFO_SIZE:
                self.flush()
        elif self.output is not None:
            self.output(bytes((value,)))
        # The byte left at once, so THR is empty again: that is a new THRE event.
        self._thr_ipending = True

    def _write_fcr(self, value: int) -> None:
        if not value & UART_FCR_ENABLE_FIFO:
            # FCR0 = 0 disables the FIFOs; the other bits are not programmed.
            if self.fifo_enabled:
                self._rx.clear()
            self.fcr = 0
        else:
            if not self.fifo_enabled or value & UART_FCR_CLEAR_RCVR:
                self._rx.clear()  # toggling the FIFO mode resets both FIFOs
            self.fcr = value & (UART_FCR_ENABLE_FIFO | UART_FCR_DMA_SELECT | UART_FCR_TRIGGER_MASK)
            # CLEAR_XMIT has nothing to do: the transmit FIFO was just flushed.
        self._receive()

    def _write_mcr(self, value: int) -> None:
        was_loopback = self.loopback
        self.mcr = value & UART_MCR_MASK
        self._update_modem_lines()
        if was_loopback and not self.loopback:
            self._receive()

    def _modem_inputs(self) -> int:
        if not self.loopback:
            # The line hangs up (carrier lost) once input has ended and been read: that is how
            # a guest learns that its stdin reached end of file.
            return _HOST_MODEM_LINES & ~UART_MSR_DCD if self.at_eof() else _HOST_MODEM_LINES
        # Loopback ties the modem outputs to the inputs: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
        lines = 0
        if self.mcr & UART_MCR_RTS:
            lines |= UART_MSR_CTS
        if self.mcr & UART_MCR_DTR:
            lines |= UART_MSR_DSR
        if self.mcr & UART_MCR_OUT1:
            lines |= UART_MSR_RI
        if self.mcr & UART_MCR_OUT2:
            lines |= UART_MSR_DCD
        return lines

    def _update_modem_lines(self) -> None:
        new = self._modem_inputs()
        changed = new ^ self._msr_lines
        if changed & UART_MSR_CTS:
            self._msr_delta |= UART_MSR_DCTS
        if changed & UART_MSR_DSR:
            self._msr_delta |= UART_MSR_DDSR
        if changed & UART_MSR_DCD:
            self._msr_delta |= UART_MSR_DDCD
        if self._msr_lines & UART_MSR_RI and not new & UART_MSR_RI:
            self._msr_delta |= UART_MSR_TERI  # trailing edge of ring indicator only
        self._msr_lines = new

    def _interrupt_id(self) -> int:
        """IIR bits 3:0 by the datasheet's priority: line status, receive, THRE, modem status."""
        if self.ier & UART_IER_RLSI and self._lsr_errors:
            return UART_IIR_RLSI
        if self.ier & UART_IER_RDI and self._rx:
            if self.fifo_enabled and len(self._rx) < self.rx_trigger_level:
                return UART_IIR_RX_TIMEOUT
            return UART_IIR_RDI
        if self.ier & UART_IER_THRI and self._thr_ipending:
            return UART_IIR_THRI
        if self.ier & UART_IER_MSI and self._msr_delta:
            return UART_IIR_MSI
        return UART_IIR_NO_INT

    def _update_irq(self) -> None:
        level = not self._interrupt_id() & UART_IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            if self.on_irq is not None:
                self.on_irq(level)
