"""The unikernel's two console drivers against the VMM's device models, in process: the
ns16550 driver on the 16550 model (FIFO use: how many register accesses, each one an exit,
a burst costs) and the virtio-console driver (hvc0) on the virtio-console device over a
RAM view, including a device that breaks the rules in its used ring."""

from __future__ import annotations

import struct

import pytest
from tests.host.virtio_support import FlatMemory

from unirealm.arch.virtio import (
    VIRTIO_CONSOLE_RX_QUEUE,
    VIRTIO_CONSOLE_TX_QUEUE,
    VirtioDeviceId,
    used_ring_entry,
)
from unirealm.guest.console import Ns16550 as UartDriver
from unirealm.guest.hvc import RX_CHUNK, TX_CHUNK, TX_SLOTS, VirtioConsole
from unirealm.guest.mm import PageAllocator
from unirealm.guest.virtio import VirtioMmioTransport
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.ns16550 import Ns16550
from unirealm.host.devices.virtio_console import VirtioConsole as ConsoleBackend
from unirealm.host.devices.virtio_console import VirtioConsoleDevice
from unirealm.host.devices.virtio_mmio import RamView

UART, HVC = 0x1000_0000, 0x1100_0000
RAM_BASE, RAM_SIZE = 0x8000_0000, 4 << 20


class FakeCpu:
    """Guest RAM as a flat buffer and MMIO on the VMM's bus, every device access counted."""

    def __init__(self, bus: MmioBus, ram: FlatMemory) -> None:
        self.bus, self.ram = bus, ram
        self.accesses = 0
        self.wfis = 0
        self.on_wfi = lambda: None

    def mmio_read(self, addr: int, size: int) -> int:
        self.accesses += 1
        return self.bus.read(addr, size).value

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self.accesses += 1
        self.bus.write(addr, size, value)

    def read(self, addr: int, size: int) -> bytes:
        return self.ram.read(addr, size)

    def write(self, addr: int, data: bytes) -> None:
        self.ram.write(addr, bytes(data))

    def zero(self, addr: int, size: int) -> None:
        self.ram.write(addr, bytes(size))

    def wfi(self) -> None:
        self.wfis += 1
        self.on_wfi()


class FakeKernel:
    def __init__(self, cpu: FakeCpu) -> None:
        self.cpu = cpu
        self.realm = None
        self.pages = PageAllocator()
        self.pages.add(RAM_BASE, RAM_BASE + RAM_SIZE)
        self.logged: list[str] = []
        self.irq = None  # no GIC: drivers poll, and idling is one WFI (Kernel.wait)

    def log(self, text: str, error: bool = False, level: int | None = None) -> None:
        self.logged.append(text)

    def wait(self, deadline_ns: int | None = None) -> int:
        self.cpu.wfi()
        return 0


def uart_pair() -> tuple[UartDriver, Ns16550, FakeCpu, list[bytes]]:
    sent: list[bytes] = []
    model = Ns16550(output=sent.append)
    bus = MmioBus()
    bus.register(UART, 0x1000, model, "ttyS0")
    cpu = FakeCpu(bus, FlatMemory(RAM_BASE, 4096))
    return UartDriver(cpu, UART), model, cpu, sent


# --- ns16550: the FIFO used ------------------------------------------------------------------
def test_uart_burst_is_sixteen_bytes_per_thre_and_one_host_write_each() -> None:
    driver, _, cpu, sent = uart_pair()
    data = bytes(range(256)) * 4 + b"tail"
    cpu.accesses = 0
    driver.write(data)
    assert b"".join(sent) == data
    chunks = -(-len(data) // 16)
    # one LSR read per 16 bytes, one THR write per byte, one LSR read to drain at the end
    assert cpu.accesses == len(data) + chunks + 1
    assert len(sent) == chunks  # the transmit FIFO leaves as one host write per 16 bytes


def test_uart_input_burst_is_read_fourteen_bytes_per_iir() -> None:
    driver, model, cpu, _ = uart_pair()
    data = bytes((i * 7) & 0xFF for i in range(14 * 200 + 5))
    model.feed(data)
    cpu.accesses = 0
    got = b""
    while len(got) < len(data):
        got += driver.read(4096, block=False)
    assert got == data
    # per 14 bytes: one IIR read (RDI: the FIFO holds the trigger level) and 14 RBR reads,
    # against two accesses per byte (LSR, RBR) without the FIFO's trigger level
    assert cpu.accesses <= len(data) * 15 // 14 + 16
    model.set_eof()
    assert driver.input_state() == (False, True)
    assert driver.read(10) == b""


def test_uart_partial_fifo_is_read_through_the_timeout_indication() -> None:
    driver, model, _, _ = uart_pair()
    model.feed(b"abc")
    assert driver.input_state() == (True, False)
    assert model.iir & 0x0F == 0x0C  # below the trigger level of 14: character timeout
    assert driver.read(100, block=False) == b"abc"
    assert driver.read(100, block=False) == b""


def test_uart_model_without_fifo_sends_each_byte_at_once() -> None:
    sent: list[bytes] = []
    model = Ns16550(output=sent.append)
    model.write_reg(0, ord("a"))
    assert sent == [b"a"]
    model.write_reg(2, 0x01)  # FIFO on: bytes gather until a read or the FIFO is full
    for b in b"xyz":
        model.write_reg(0, b)
    assert sent == [b"a"]
    assert model.read_reg(5) & 0x60 == 0x60  # THRE and TEMT: by the time one looks, they left
    assert sent == [b"a", b"xyz"]
    model.write_reg(0, ord("q"))
    model.write_reg(2, 0x00)  # an FCR write: what was written has left first
    assert sent[-1] == b"q"
    model.write_reg(2, 0x01)
    model.write_reg(0, ord("z"))
    model.flush()  # the VMM's, at the end of a run
    assert sent[-1] == b"z"


# --- virtio-console ---------------------------------------------------------------------------
def hvc_pair(**kw: object) -> tuple[VirtioConsole, VirtioConsoleDevice, FakeCpu, FakeKernel, list[bytes]]:
    out: list[bytes] = []
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    device = VirtioConsoleDevice(ConsoleBackend(out.append), memory=RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE))
    bus = MmioBus()
    bus.register(HVC, 0x200, device, "virtio-console")
    cpu = FakeCpu(bus, ram)
    kernel = FakeKernel(cpu)
    transport = VirtioMmioTransport(cpu, HVC)
    assert transport.probe() == VirtioDeviceId.CONSOLE
    return VirtioConsole(kernel, transport), device, cpu, kernel, out


def test_hvc_config_and_queues_as_kvmtool() -> None:
    _, device, _, _, _ = hvc_pair()
    assert struct.unpack("<HHII", device.backend.config()) == (80, 24, 1, 0)
    assert device.device_features == 1 << 32 | 1 << 29  # VERSION_1, and EVENT_IDX (the transport's)
    assert [q.num_max for q in device.queues] == [128, 128]


def test_hvc_burst_is_a_few_exits_and_bytes_arrive_exactly() -> None:
    driver, device, cpu, _, out = hvc_pair()
    data = bytes((i * 31 + i // 251) & 0xFF for i in range(1 << 20))
    cpu.accesses = 0
    driver.write(data)
    assert b"".join(out) == data
    notifies = -(-len(data) // (TX_SLOTS * TX_CHUNK))
    assert cpu.accesses == notifies == driver.exits  # one QueueNotify per TX_SLOTS chunks, nothing else
    assert device.requests == -(-len(data) // TX_CHUNK)


def test_hvc_input_end_of_input_and_no_receive_notifications() -> None:
    driver, device, cpu, _, _ = hvc_pair()
    data = bytes((i * 13) & 0xFF for i in range(200_000))
    device.feed(data)
    device.set_eof()
    cpu.on_wfi = device.deliver  # the VMM delivers input at every WFI exit
    got = bytearray()
    cpu.accesses = 0
    while chunk := driver.read(65536):
        got += chunk
    assert bytes(got) == data
    assert driver.input_state() == (False, True)
    assert driver.exits == 0  # the device polls the ring (VIRTQ_USED_F_NO_NOTIFY): no notify
    assert cpu.accesses <= 2 * (len(data) // RX_CHUNK + 2)  # an InterruptStatus read (+ ack) per wait


def test_hvc_read_waits_for_input_that_comes_later() -> None:
    driver, device, cpu, _, _ = hvc_pair()
    pending = [b"late"]
    cpu.on_wfi = lambda: device.feed(pending.pop()) if pending else None
    assert driver.input_state() == (False, False)
    assert driver.read(10) == b"late"


def _tamper_used(device: VirtioConsoleDevice, ram_view: RamView, queue: int, uid: int | None, length: int | None) -> None:
    """Overwrite the newest used entry of `queue` (what a hostile VMM may do)."""
    q = device.queues[queue]
    slot = q.used + used_ring_entry((q.used_idx - 1) % q.num)
    old_id, old_len = struct.unpack("<II", ram_view.read(slot, 8))
    ram_view.write(slot, struct.pack("<II", old_id if uid is None else uid, old_len if length is None else length))


@pytest.mark.parametrize(("queue", "uid", "length", "message"), [
    (VIRTIO_CONSOLE_RX_QUEUE, None, RX_CHUNK + 1, "larger than the"),
    (VIRTIO_CONSOLE_RX_QUEUE, 77, None, "not a buffer in flight"),
    (VIRTIO_CONSOLE_TX_QUEUE, None, TX_CHUNK + 1, "larger than the"),
    (VIRTIO_CONSOLE_TX_QUEUE, 3, None, "not a buffer in flight"),
])
def test_hvc_hostile_used_entries_are_refused(queue: int, uid: int | None, length: int | None, message: str) -> None:
    driver, device, _, kernel, out = hvc_pair()
    view = device.memory
    assert isinstance(view, RamView)
    if queue == VIRTIO_CONSOLE_RX_QUEUE:
        device.feed(b"secret-sized input")
        device.deliver()
        _tamper_used(device, view, queue, uid, length)
        assert driver.read(4096, block=False) == b""  # nothing past the buffer, nothing from a bogus id
        assert driver.input_state() == (False, True)  # the console is disabled: input at its end
    else:
        orig_notify = device.notify

        def notify_then_tamper(index: int) -> None:
            orig_notify(index)
            if index == queue:
                _tamper_used(device, view, queue, uid, length)
        device.notify = notify_then_tamper  # type: ignore[method-assign]
        driver.write(b"x" * 100)
        driver.write(b"dropped")
        assert b"".join(out) == b"x" * 100  # the first chain was consumed; the console then stops
    assert driver.broken
    assert any(message in line and "console disabled" in line for line in kernel.logged)


def test_hvc_used_index_racing_ahead_is_refused() -> None:
    driver, device, _, kernel, _ = hvc_pair()
    q = device.queues[VIRTIO_CONSOLE_RX_QUEUE]
    view = device.memory
    assert isinstance(view, RamView)
    view.write(q.used + 2, struct.pack("<H", 40))  # 40 buffers used, 4 posted
    assert driver.input_state() == (False, True)
    assert any("used index moved by 40" in line for line in kernel.logged)


def test_device_refuses_a_receive_chain_the_driver_made_readable() -> None:
    _, device, _, _, _ = hvc_pair()
    q = device.queues[VIRTIO_CONSOLE_RX_QUEUE]
    view = device.memory
    assert isinstance(view, RamView)
    desc = q.desc + 16 * 0
    view.write(desc + 12, struct.pack("<H", 0))  # descriptor 0 loses VIRTQ_DESC_F_WRITE
    device.feed(b"abc")
    device.deliver()
    assert device.status & 0x40  # DEVICE_NEEDS_RESET
    assert device.errors and "device-readable" in device.errors[0]
