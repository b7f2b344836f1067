from __future__ import annotations

import pytest

from unirealm.host.devices.mmio import MmioBus, MmioDevice
from unirealm.host.devices.ns16550 import (
    UART_DLL,
    UART_DLM,
    UART_FCR,
    UART_IER,
    UART_IIR,
    UART_LCR,
    UART_LSR,
    UART_MCR,
    UART_MSR,
    UART_RX,
    UART_SCR,
    UART_TX,
    Ns16550,
)
from unirealm.host.memmap import SERIAL8250_MMIO_WINDOW, serial_iobase

# Raw register values spelled out, so the test does not lean on the module's own constants.
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
IIR_NONE, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_TIMEOUT, IIR_MSI = 0x01, 0x02, 0x04, 0x06, 0x0C, 0x00


class Port:
    """A UART plus what it sent and its interrupt line history."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.irqs: list[bool] = []
        self.uart = Ns16550(output=self.sent.extend, on_irq=self.irqs.append)

    def r(self, reg: int) -> int:
        return self.uart.read_reg(reg)

    def w(self, reg: int, value: int) -> None:
        self.uart.write_reg(reg, value)


@pytest.fixture
def port() -> Port:
    return Port()


def test_reset_values(port):
    assert port.r(UART_IER) == 0
    assert port.r(UART_IIR) == IIR_NONE
    assert port.r(UART_LCR) == 0
    assert port.r(UART_MCR) == 0
    assert port.r(UART_LSR) == LSR_THRE | LSR_TEMT
    assert port.r(UART_MSR) == 0xB0  # DCD | DSR | CTS from the host side
    assert not port.uart.irq_level


def test_is_an_mmio_device_on_the_bus(port):
    assert isinstance(port.uart, MmioDevice)
    bus = MmioBus()
    bus.register(serial_iobase(0), SERIAL8250_MMIO_WINDOW, port.uart, "ttyS0")
    assert bus.write(0x0100_0000, 1, ord("A")).handled
    assert port.sent == b"A"
    assert bus.read(0x0100_0005, 1).value == LSR_THRE | LSR_TEMT
    # beyond the eight registers, inside the window: reads zero, writes ignored
    assert bus.read(0x0100_0008, 1).value == 0
    assert bus.write(0x0100_0FFF, 1, 0x55).handled
    # a 32-bit access reaches the byte register zero-extended
    assert bus.read(0x0100_0005, 4).value == LSR_THRE | LSR_TEMT


def test_linux_8250_autoconfig_sequence(port):
    """The register dance of Linux's autoconfig() / autoconfig_16550a() for a 16550A."""
    # IER is a real register: bits 0-3 hold, bits 4-7 read zero
    saved = port.r(UART_IER)
    port.w(UART_IER, 0)
    assert port.r(UART_IER) & 0x0F == 0
    port.w(UART_IER, 0x0F)
    assert port.r(UART_IER) & 0x0F == 0x0F
    port.w(UART_IER, saved)
    # loopback test: MCR = LOOP | OUT2 | RTS must show DCD | CTS in MSR
    save_mcr, save_lcr = port.r(UART_MCR), port.r(UART_LCR)
    port.w(UART_MCR, 0x10 | 0x0A)
    assert port.r(UART_MSR) & 0xF0 == 0x90
    port.w(UART_MCR, save_mcr)
    # no EFR: LCR 0xBF, write "EFR" (offset 2, here FCR), back to LCR 0
    port.w(UART_LCR, 0xBF)
    port.w(2, 0)
    port.w(UART_LCR, 0)
    port.w(UART_FCR, 0x01)
    assert port.r(UART_IIR) >> 6 == 3  # a 16550A with working FIFOs
    # autoconfig_16550a: with DLAB set, "EFR" reads as IIR, which is not zero
    port.w(UART_LCR, 0x80)
    assert port.r(2) != 0
    port.w(UART_LCR, 0xBF)
    assert port.r(2) != 0
    # not a TI16750: the 64-byte FIFO bit (IIR bit 5) never sets
    port.w(UART_LCR, 0)
    port.w(UART_FCR, 0x21)
    status1 = port.r(UART_IIR) >> 5
    port.w(UART_FCR, 0x01)
    port.w(UART_LCR, 0x80)
    port.w(UART_FCR, 0x21)
    status2 = port.r(UART_IIR) >> 5
    port.w(UART_FCR, 0x01)
    port.w(UART_LCR, 0)
    assert (status1, status2) == (6, 6)
    # not an XScale: IER bit 6 (UUE) does not stick
    ier = port.r(UART_IER)
    port.w(UART_IER, ier | 0x40)
    assert not port.r(UART_IER) & 0x40
    port.w(UART_IER, ier)
    port.w(UART_LCR, save_lcr)
    assert port.sent == b""  # loopback and probing sent nothing to the host


def test_linux_startup_thre_test(port):
    """serial8250_do_startup: enabling THRI with THR empty must raise IIR THRI, twice."""
    port.w(UART_FCR, 0x01 | 0x02 | 0x04)  # clear FIFOs
    for reg in (UART_LSR, UART_RX, UART_IIR, UART_MSR):
        port.r(reg)
    port.w(UART_LCR, 0x03)  # 8N1
    port.w(UART_IER, 0x02)
    iir1 = port.r(UART_IIR)
    port.w(UART_IER, 0)
    port.w(UART_IER, 0x02)
    iir = port.r(UART_IIR)
    port.w(UART_IER, 0)
    assert iir1 & 0x0F == IIR_THRI
    assert iir & 0x0F == IIR_THRI
    assert port.r(UART_LSR) & LSR_TEMT


def test_dlab_switches_offsets_0_and_1(port):
    port.w(UART_IER, 0x05)
    port.w(UART_LCR, 0x83)  # DLAB | 8 bits
    port.w(UART_DLL, 0x01)
    port.w(UART_DLM, 0x00)
    assert port.r(UART_DLL) == 0x01 and port.r(UART_DLM) == 0x00
    assert port.uart.baud == 115200
    port.w(UART_DLL, 0x0C)
    assert port.uart.baud == 9600
    port.w(UART_LCR, 0x03)
    assert port.r(UART_IER) == 0x05  # IER untouched by the divisor writes
    port.w(UART_TX, ord("x"))
    assert port.sent == b"x"  # THR write went out, not to DLL
    port.w(UART_LCR, 0x83)
    assert port.r(UART_DLL) == 0x0C
    assert port.sent == b"x"


def test_baud_none_until_divisor_programmed(port):
    assert port.uart.baud is None


def test_transmit_and_lsr(port):
    for ch in b"hello\n":
        assert port.r(UART_LSR) & LSR_THRE
        port.w(UART_TX, ch)
        assert port.r(UART_LSR) & (LSR_THRE | LSR_TEMT) == LSR_THRE | LSR_TEMT
    assert port.sent == b"hello\n"


def test_receive_non_fifo_mode(port):
    port.uart.feed(b"ab")
    assert port.r(UART_LSR) & LSR_DR
    assert port.r(UART_RX) == ord("a")
    assert port.r(UART_LSR) & LSR_DR  # next byte moved into the holding register
    assert port.r(UART_RX) == ord("b")
    assert not port.r(UART_LSR) & LSR_DR
    assert port.r(UART_RX) == 0  # empty RBR


def test_rx_interrupt_levels_and_iir(port):
    port.w(UART_IER, 0x01)
    assert port.r(UART_IIR) == IIR_NONE
    port.uart.feed(b"z")
    assert port.uart.irq_level
    assert port.r(UART_IIR) == IIR_RDI
    assert port.r(UART_RX) == ord("z")
    assert port.r(UART_IIR) == IIR_NONE
    assert not port.uart.irq_level
    assert port.irqs == [True, False]


def test_fifo_mode_iir_and_trigger(port):
    port.w(UART_FCR, 0x01 | (2 << 6))  # enable, trigger at 8
    assert port.r(UART_IIR) == 0xC1
    port.w(UART_IER, 0x01)
    port.uart.feed(b"123")
    assert port.r(UART_IIR) == 0xC0 | IIR_TIMEOUT  # below the trigger level
    port.uart.feed(b"45678")
    assert port.r(UART_IIR) == 0xC0 | IIR_RDI
    port.uart.feed(b"x" * 20)
    assert port.uart.pending_input == 28
    got = bytearray()
    while port.r(UART_LSR) & LSR_DR:
        got.append(port.r(UART_RX))
    assert got == b"12345678" + b"x" * 20
    assert port.r(UART_IIR) == 0xC1
    port.w(UART_FCR, 0)
    assert port.r(UART_IIR) == IIR_NONE  # FIFO bits gone


def test_fifo_holds_sixteen(port):
    port.w(UART_FCR, 0x01)
    port.uart.feed(bytes(range(20)))
    assert port.uart.pending_input == 20
    port.w(UART_FCR, 0x01 | 0x02)  # clear RCVR drops what is in the FIFO only
    assert port.uart.pending_input == 4
    assert port.r(UART_RX) == 16


def test_thre_interrupt_ack_by_iir_read_and_rearm_by_write(port):
    port.w(UART_IER, 0x02)
    assert port.uart.irq_level
    assert port.r(UART_IIR) == IIR_THRI
    assert not port.uart.irq_level  # reading IIR acknowledged THRE
    assert port.r(UART_IIR) == IIR_NONE
    port.w(UART_TX, ord("q"))
    assert port.uart.irq_level  # THR empty again
    port.w(UART_IER, 0)
    assert not port.uart.irq_level


def test_interrupt_priority_rx_over_thre(port):
    port.w(UART_IER, 0x03)
    port.uart.feed(b"k")
    assert port.r(UART_IIR) == IIR_RDI
    port.r(UART_RX)
    assert port.r(UART_IIR) == IIR_THRI


def test_loopback_and_overrun(port):
    port.w(UART_IER, 0x05)
    port.w(UART_MCR, 0x10)
    port.uart.feed(b"host")  # the receiver is off the line in loopback
    port.w(UART_TX, ord("1"))
    port.w(UART_TX, ord("2"))  # holding register full: overrun, overwritten
    assert port.sent == b""
    assert port.r(UART_IIR) == IIR_RLSI
    lsr = port.r(UART_LSR)
    assert lsr & LSR_OE and lsr & LSR_DR
    assert not port.r(UART_LSR) & LSR_OE  # cleared by the read
    assert port.r(UART_RX) == ord("2")
    port.w(UART_MCR, 0)
    assert port.r(UART_RX) == ord("h")  # back on the line


def test_modem_status_deltas_and_interrupt(port):
    port.w(UART_MCR, 0x10)
    port.r(UART_MSR)  # clear deltas caused by entering loopback
    port.w(UART_IER, 0x08)
    port.w(UART_MCR, 0x10 | 0x02 | 0x04)  # RTS, OUT1
    assert port.r(UART_IIR) == IIR_MSI
    msr = port.r(UART_MSR)
    assert msr == 0x10 | 0x40 | 0x01  # CTS, RI, DCTS
    assert port.r(UART_IIR) == IIR_NONE
    port.w(UART_MCR, 0x10 | 0x02)  # RI falls: trailing edge
    assert port.r(UART_MSR) & 0x0F == 0x04


def test_scratch_and_read_only_registers(port):
    port.w(UART_SCR, 0x5A)
    assert port.r(UART_SCR) == 0x5A
    port.w(UART_LSR, 0)
    port.w(UART_MSR, 0)
    assert port.r(UART_LSR) == LSR_THRE | LSR_TEMT


def test_mcr_and_lcr_read_back(port):
    port.w(UART_MCR, 0xFF)
    assert port.r(UART_MCR) == 0x1F
    port.w(UART_MCR, 0x0B)
    port.w(UART_LCR, 0x1B)
    assert (port.r(UART_MCR), port.r(UART_LCR)) == (0x0B, 0x1B)


def test_eof_side_channel(port):
    port.uart.feed(b"ok")
    port.uart.set_eof()
    assert not port.uart.at_eof()
    port.r(UART_RX)
    assert not port.uart.at_eof()
    port.r(UART_RX)
    assert port.uart.at_eof()
    # the registers know nothing of it
    assert port.r(UART_LSR) == LSR_THRE | LSR_TEMT
    with pytest.raises(ValueError):
        port.uart.feed(b"late")


def test_eof_with_no_input(port):
    assert not port.uart.at_eof()
    port.uart.set_eof()
    assert port.uart.at_eof()


def test_unikraft_style_polled_console(port):
    """Unikraft's ns16550 driver: set 8N1, enable FIFOs, poll LSR for THRE/DR."""
    port.w(UART_LCR, 0x03)
    port.w(UART_FCR, 0x01)
    port.w(UART_IER, 0)
    for ch in b"Hello from the realm\n":
        while not port.r(UART_LSR) & LSR_THRE:
            pass
        port.w(UART_TX, ch)
    port.uart.feed(b"q")
    assert port.r(UART_LSR) & LSR_DR
    assert port.r(UART_RX) == ord("q")
    assert port.sent == b"Hello from the realm\n"
    assert port.irqs == []  # polling never raised the line


def test_reset_keeps_host_input(port):
    port.uart.feed(b"abc")
    port.w(UART_SCR, 1)
    port.uart.reset()
    assert port.r(UART_SCR) == 0
    # the byte already in the receive holding register is lost; the host buffer is not
    assert port.r(UART_RX) == ord("b")


def test_input_after_eof_names_the_port(port):
    assert port.uart.at_eof() is False
    port.uart.set_eof()
    assert port.uart.at_eof() is True
    with pytest.raises(ValueError, match=r"^ttyS0: input after end of input$"):
        port.uart.feed(b"x")


def test_master_reset_sends_what_the_fifo_holds(port):
    port.w(UART_FCR, 0x01)
    for ch in b"abc":
        port.w(UART_TX, ch)
    port.uart.reset()
    assert port.sent == b"abc"


def test_fcr_rewrite_without_clear_rcvr_keeps_the_receive_fifo(port):
    port.w(UART_FCR, 0x01)
    port.uart.feed(b"xyz")
    port.w(UART_FCR, 0x01 | 0xC0)  # trigger level 14, FCR1 = 0: the FIFO stays
    assert port.r(UART_LSR) & LSR_DR
    assert bytes(port.r(UART_RX) for _ in range(3)) == b"xyz"
    port.uart.feed(b"q")
    port.w(UART_FCR, 0x01 | 0x02)  # FCR1 = 1 clears it
    assert not port.r(UART_LSR) & LSR_DR


def test_loopback_out2_sets_dcd_and_its_delta(port):
    port.w(UART_MCR, 0x10)
    port.r(UART_MSR)  # clears the deltas of entering loopback
    port.w(UART_MCR, 0x10 | 0x02)  # RTS -> CTS
    port.w(UART_MCR, 0x10 | 0x02 | 0x08)  # OUT2 -> DCD
    assert port.r(UART_MSR) == 0x80 | 0x10 | 0x08 | 0x01  # DCD CTS, DDCD DCTS


def test_line_status_interrupt_needs_ier_rlsi(port):
    port.w(UART_MCR, 0x10)
    port.w(UART_TX, 1)
    port.w(UART_TX, 2)  # overrun: the holding register was full
    assert port.r(UART_IIR) == IIR_NONE and not port.uart.irq_level
    port.w(UART_IER, 0x04)
    assert port.r(UART_IIR) & 0x0F == IIR_RLSI
    assert port.r(UART_LSR) & LSR_OE
