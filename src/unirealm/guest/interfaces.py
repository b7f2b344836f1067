"""The interfaces the unikernel's parts meet at, as `typing.Protocol`s (mypy checks them;
nothing here runs).

- `Cpu`, `El0Space`, `CpuContext`: the machine as the kernel sees it — what
  `machine/pykernel.py`'s GuestCpu and El0Space offer (tests/guest/test_interfaces.py checks
  the real classes against these).
- `Kernel`: what processes, the scheduler, the file systems and the drivers use of the
  kernel (`guest/kernel.py` Kernel), with the boot facts they read (`BootFacts`).
- `Task`, `SyscallEntry`: what the scheduler uses of a process and of its syscall layer, so
  `sched.py` needs nothing from `process.py`.
- `Console`: the app's stdio device (the ns16550 driver or hvc0); `UserMemory`: a
  process's memory as an ioctl reads and writes it.

The guest imports this module for its names only; the protocols have no run-time part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .irq import Interrupts
    from .mm import PageAllocator
    from .sched import SigQueue, Thread
    from .ukrsi import RealmConfig, Rsi


class CpuContext(Protocol):
    """A saved EL0 register context (Unicorn's UcContext)."""

    def reg_read(self, reg: int, /) -> int: ...

    def reg_write(self, reg: int, value: int, /) -> None: ...


class Registers(Protocol):
    """The EL0 CPU's register file (an El0Space's `uc`)."""

    def reg_read(self, reg: int, /) -> int: ...

    def reg_write(self, reg: int, value: int, /) -> None: ...

    def reg_read_batch(self, regs: Sequence[int], /) -> Sequence[int]: ...


class El0Space(Protocol):
    """One EL0 address space: VA pages mapped to IPAs, its registers, and running it."""

    @property
    def uc(self) -> Registers: ...

    pages: dict[int, tuple[int, int]]  # va page -> (ipa page, prot)
    on_fault: Callable[[int], bool] | None
    on_svc: Callable[[int, int, int, int, int, int, int], bool] | None

    def map(self, va: int, ipa: int, size: int, prot: int) -> None: ...

    def unmap(self, va: int, size: int) -> None: ...

    def protect(self, va: int, size: int, prot: int) -> None: ...

    def flush_code(self, va: int, size: int) -> None: ...

    def reg(self, name: str) -> int: ...

    def set_reg(self, name: str, value: int) -> None: ...

    def set_x0(self, value: int) -> None: ...

    def set_gpr(self, n: int, value: int) -> None: ...

    def save_context(self, ctx: CpuContext | None = None) -> CpuContext: ...

    def restore_context(self, ctx: CpuContext) -> None: ...

    def run(self, pc: int, count: int = 0) -> tuple[str, int, int]: ...

    def close(self) -> None: ...


class Cpu(Protocol):
    """The vCPU the kernel runs on: conduits, memory at IPAs, the counter, the image."""

    @property
    def cntfrq(self) -> int: ...

    def smc(self, *regs: int) -> list[int]: ...

    def hvc(self, *regs: int) -> list[int]: ...

    def wfi(self) -> None: ...

    def read_sysreg(self, key: int) -> int: ...

    def write_sysreg(self, key: int, value: int) -> None: ...

    def irq_signalled(self) -> bool: ...

    def read(self, ipa: int, size: int) -> bytes: ...

    def write(self, ipa: int, data: bytes | bytearray | memoryview) -> None: ...

    def zero(self, ipa: int, size: int) -> None: ...

    def read_u64(self, ipa: int) -> int: ...

    def write_u64(self, ipa: int, value: int) -> None: ...

    def mmio_read(self, ipa: int, size: int) -> int: ...

    def mmio_write(self, ipa: int, size: int, value: int) -> None: ...

    def el0_space(self) -> El0Space: ...

    def rndr(self) -> int: ...

    def cntvct(self) -> int: ...

    @property
    def boot_registers(self) -> list[int]: ...

    @property
    def boot_pc(self) -> int: ...

    def read_image_file(self, member: str) -> bytes: ...

    def image_files(self) -> list[str]: ...


class DeviceFacts(Protocol):
    """A device region the device tree names."""

    @property
    def path(self) -> str: ...

    @property
    def compatible(self) -> str: ...

    @property
    def base(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def address(self) -> int: ...

    @property
    def irq(self) -> int | None: ...


class BootFacts(Protocol):
    """What the device tree told the kernel."""

    @property
    def bootargs(self) -> str: ...

    @property
    def initrd(self) -> tuple[int, int] | None: ...

    @property
    def devices(self) -> Sequence[DeviceFacts]: ...


class Console(Protocol):
    """A console driver: guest/console.py Ns16550 or guest/hvc.py VirtioConsole."""

    def write(self, data: bytes) -> None: ...

    def read(self, limit: int, block: bool = True) -> bytes: ...

    def input_state(self) -> tuple[bool, bool]: ...  # (input ready, at its end)

    def touch(self) -> None: ...


class UserMemory(Protocol):
    """A process's virtual memory as a syscall handler reads and writes it."""

    def read(self, va: int, size: int) -> bytes: ...

    def write(self, va: int, data: bytes) -> None: ...


class Kernel(Protocol):
    """The kernel as its subsystems use it."""

    @property
    def cpu(self) -> Cpu: ...

    @property
    def pages(self) -> PageAllocator: ...

    @property
    def info(self) -> BootFacts: ...

    @property
    def options(self) -> dict[str, str]: ...

    @property
    def argv(self) -> list[str]: ...

    @property
    def rsi(self) -> Rsi: ...

    @property
    def realm(self) -> RealmConfig | None: ...

    @property
    def console(self) -> Console | None: ...

    @property
    def realtime_offset_ns(self) -> int: ...

    @property
    def irq(self) -> Interrupts | None: ...

    def wait(self, deadline_ns: int | None = None) -> int: ...

    def log(self, text: str, error: bool = False, level: int | None = None) -> None: ...

    def write_console(self, data: bytes) -> None: ...

    def monotonic_ns(self) -> int: ...

    def realtime_ns(self) -> int: ...


class SyscallEntry(Protocol):
    """A process's syscall layer as the run loop calls it."""

    @property
    def slow_path(self) -> frozenset[int]: ...

    def handle(self, nr: int, args: list[int]) -> int | None: ...

    def dispatch(self) -> None: ...

    def do_signal(self) -> bool: ...

    def fault_signal(self, sig: int, code: int, addr: int) -> bool: ...


class Task(Protocol):
    """A process as the scheduler sees it."""

    threads: list[Thread]
    shared_pending: SigQueue

    @property
    def pid(self) -> int: ...

    @property
    def released(self) -> bool: ...

    @property
    def space(self) -> El0Space: ...

    @property
    def syscalls(self) -> SyscallEntry: ...

    @property
    def argv(self) -> list[str]: ...

    def fault(self, reason: str, pc: int, detail: int) -> None: ...

    def exit(self, status: int) -> None: ...

    def release(self) -> None: ...
