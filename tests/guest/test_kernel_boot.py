"""The unikernel's boot flow (guest/kernel.py) and root file system (guest/rootfs.py) outside a
realm, on the VMM's own pieces: the device tree kvmtool's layout gives (host/fdt.py
KvmtoolFdt), its 16550 UARTs and MC146818 RTC on the VMM's MMIO bus, an initrd packed by
arch/cpio.py, image files as the image builder names them. The conduit answers RSI_VERSION
with NOT_SUPPORTED (a plain VM); PSCI SYSTEM_OFF ends the run with the status in x1.
In a realm on the real RMM: the attestation token the `attest=` option prints."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from tests.host.virtio_support import FlatMemory

from unirealm.arch.cpio import Entry, pack_archive
from unirealm.arch.rsi import RsiFid
from unirealm.arch.smccc import SMCCC_NOT_SUPPORTED, PsciFid
from unirealm.guest import kernel as kmod
from unirealm.guest.kernel import BootInfo, Device, Kernel, boot, parse_fdt
from unirealm.guest.loglevel import CONSOLE_LOGLEVEL_DEFAULT
from unirealm.guest.pagecache import Store
from unirealm.guest.rootfs import build_vfs, run_app
from unirealm.guest.vfs import FsError
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.ns16550 import Ns16550
from unirealm.host.devices.rtc import Mc146818
from unirealm.host.fdt import FdtWriter, KvmtoolFdt
from unirealm.host.memmap import ARM_RTC_MMIO_BASE, serial_iobase
from unirealm.machine.el0space import El0Space

from .realm_support import run_in_realm

RAM, RAM_SIZE = 0x8000_0000, 16 << 20
IMAGE, IMAGE_SIZE = RAM + 0x8_0000, 0x4_0000
DTB = RAM + 0x20_0000
INITRD = RAM + 0x30_0000
EPOCH = 1_700_000_000  # the RTC's time


class PoweredOff(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class BootCpu:
    """RAM, the VMM's MMIO bus, an SMC/HVC conduit of a plain VM, the image's files."""

    cntfrq = 1_000_000_000

    def __init__(self, dtb: bytes, files: dict[str, bytes], initrd: bytes = b"", realm_off: bool = True) -> None:
        self.ram = FlatMemory(RAM, RAM_SIZE)
        self.ram.write(DTB, dtb)
        self.ram.write(IMAGE + kmod.ARM64_IMAGE_SIZE_OFFSET, IMAGE_SIZE.to_bytes(8, "little"))
        self.ram.write(INITRD, initrd)
        self.bus = MmioBus()
        self.out: dict[int, list[bytes]] = {}
        for port in range(4):
            sink: list[bytes] = []
            self.out[port] = sink
            self.bus.register(serial_iobase(port), 8, Ns16550(output=sink.append, name=f"ttyS{port}"))
        self.bus.register(ARM_RTC_MMIO_BASE, 2, Mc146818(clock=lambda: EPOCH))
        self.files = files
        self.conduit: list[tuple[str, int]] = []
        self.t = 0
        self.boot_registers = [DTB, 0, 0, 0]
        self.boot_pc = IMAGE
        self._spaces: list[El0Space] = []  # what El0Space registers itself in

    def text(self, port: int) -> str:
        return b"".join(self.out[port]).decode()

    # the conduit
    def _call(self, how: str, fid: int, *args: int) -> list[int]:
        self.conduit.append((how, fid))
        if fid == PsciFid.SYSTEM_OFF:
            raise PoweredOff(args[0] if args else 0)
        return [SMCCC_NOT_SUPPORTED, 0, 0, 0]

    def smc(self, *regs: int) -> list[int]:
        return self._call("smc", *regs)

    def hvc(self, *regs: int) -> list[int]:
        return self._call("hvc", *regs)

    # memory and devices
    def read(self, ipa: int, size: int) -> bytes:
        return self.ram.read(ipa, size)

    def write(self, ipa: int, data: bytes | bytearray | memoryview) -> None:
        self.ram.write(ipa, bytes(data))

    def zero(self, ipa: int, size: int) -> None:
        self.ram.write(ipa, bytes(size))

    def mmio_read(self, ipa: int, size: int) -> int:
        return self.bus.read(ipa, size).value

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        self.bus.write(ipa, size, value)

    def cntvct(self) -> int:
        self.t += 1000
        return self.t

    def wfi(self) -> None:
        pass

    def el0_space(self) -> El0Space:
        return El0Space(self, "a72")  # type: ignore[arg-type]

    def read_sysreg(self, key: int) -> int:
        raise RuntimeError("no GIC CPU interface here")

    # the image
    def image_files(self) -> list[str]:
        return list(self.files)

    def read_image_file(self, name: str) -> bytes:
        return self.files[name]


def blob(bootargs: str, initrd: tuple[int, int] | None = None) -> bytes:
    return KvmtoolFdt(nrcpus=1, mem_base=RAM, mem_size=RAM_SIZE, bootargs=bootargs, realm=False,
                      initrd=initrd).dtb()


@pytest.fixture(autouse=True)
def no_store() -> Any:
    yield
    Store.current = None


def boot_status(cpu: BootCpu) -> int:
    with pytest.raises(PoweredOff) as off:
        boot(cpu)  # type: ignore[arg-type]
    assert cpu.conduit[-1] == ("hvc", PsciFid.SYSTEM_OFF)  # the device tree's psci method
    return off.value.status


# --- the boot flow ------------------------------------------------------------------------------
def test_plain_vm_boot_without_an_app() -> None:
    cpu = BootCpu(blob("loglevel=7 nonet -- ignored"), {})
    assert boot_status(cpu) == 0
    assert cpu.conduit[0] == ("smc", RsiFid.VERSION)  # RSI probed first: NOT_SUPPORTED, not a realm
    log = cpu.text(1)  # kernel messages on ttyS1, the UART after the console
    assert "unirealm: RSI: NOT_SUPPORTED -> not a realm\n" in log
    assert "; devices are polled\n" in log  # a GIC in the device tree, no model behind it
    assert "unirealm: no application in the image\n" in log
    assert f"unirealm: memory: {(RAM_SIZE - IMAGE_SIZE - 0x1_0000) >> 20} MiB free of 16 MiB\n" in log
    assert cpu.text(0) == ""  # the console: the app's alone


def test_quiet_leaves_only_errors() -> None:
    cpu = BootCpu(blob("quiet"), {"app/hello": b"not an ELF"})
    assert boot_status(cpu) == 126  # the app cannot be executed
    # the errors only: the GIC no device model answers for (the kernel polls), the app
    assert cpu.text(1) == ("unirealm: GICv3 /intc: no GICv3 redistributor at 0x3ffd0000 (PIDR2.ArchRev 0); "
                           "devices are polled\nunirealm: /hello: not an ELF file\n")


def test_the_app_is_found_and_its_argv_parsed() -> None:
    cpu = BootCpu(blob('nonet -- /hello "two words" x'), {"app/hello": b"#!", "app/": b""})
    k = Kernel(cpu)  # type: ignore[arg-type]
    with pytest.raises(PoweredOff):
        k.power_off(k.boot())
    assert k.options == {"nonet": ""}
    assert k.argv == ["/hello", '"two', 'words"', "x"]
    assert "cannot execute" not in cpu.text(1) and "/hello: not an ELF file" in cpu.text(1)
    assert k.realtime_ns() // 1_000_000_000 == EPOCH  # the RTC set the wall clock
    assert k.monotonic_ns() == cpu.t * 1_000_000_000 // cpu.cntfrq


def test_root_file_system_from_the_image_and_the_initrd() -> None:
    meta = {"modes": {"/etc/motd": 0o600}, "links": {"/bin/sh": "/hello"}, "app": "/hello"}
    files = {"rootfs.json": json.dumps(meta).encode(), "rootfs/etc/motd": b"hi\n", "rootfs/etc/": b"",
             "app/hello": b"app bytes", "other/x": b"not in the tree"}
    initrd = pack_archive([Entry("./data", 0o40755), Entry("data/f", 0o100644, b"from the initrd"),
                           Entry("etc/motd", 0o100644, b"initrd wins\n")])
    cpu = BootCpu(blob("nonet", (INITRD, INITRD + len(initrd))), files, initrd)
    k = Kernel(cpu)  # type: ignore[arg-type]
    k.console_loglevel = CONSOLE_LOGLEVEL_DEFAULT  # the info lines too
    k.info = parse_fdt(cpu.read(DTB, 0x1_0000))
    k.pages.add(RAM + 0x40_0000, RAM + RAM_SIZE)  # file contents live in RAM
    vfs, app = build_vfs(k)
    assert app == "/hello"
    assert vfs.read_file("/hello") == b"app bytes"
    assert vfs.read_file("/data/f") == b"from the initrd"
    assert vfs.read_file("/etc/motd") == b"initrd wins\n"  # the initrd over the image
    assert vfs.walk("/bin/sh", follow=False)[0].target == "/hello"  # type: ignore[attr-defined]
    assert vfs.walk("/hello")[0].mode & 0o777 == 0o755  # app files are executable
    with pytest.raises(FsError):
        vfs.walk("/other/x")
    assert any("initrd: 3 entries unpacked" in line for line in k._early_log)


def test_the_image_mode_table_and_default_modes() -> None:
    files = {"rootfs.json": json.dumps({"modes": {"/etc/secret": 0o400}}).encode(),
             "rootfs/etc/secret": b"s", "rootfs/etc/plain": b"p", "app/first": b"a", "app/second": b"b"}
    cpu = BootCpu(blob("nonet"), files)
    k = Kernel(cpu)  # type: ignore[arg-type]
    vfs, app = build_vfs(k)
    assert app == "/first"  # without rootfs.json's `app`: the first app/ file
    assert vfs.walk("/etc/secret")[0].mode & 0o777 == 0o400
    assert vfs.walk("/etc/plain")[0].mode & 0o777 == 0o644


def test_a_broken_initrd_ends_the_boot_with_status_1() -> None:
    bad = b"070701" + b"Z" * 200
    cpu = BootCpu(blob("nonet", (INITRD, INITRD + len(bad))), {"app/hello": b"x"}, bad)
    assert boot_status(cpu) == 1
    assert "unirealm: initrd: " in cpu.text(1)


def test_no_device_tree_is_a_panic_on_the_emergency_console() -> None:
    cpu = BootCpu(b"\0" * 64, {})
    assert boot_status(cpu) == 125
    # no device tree: no UART is known, so the panic has nowhere to go but is not a crash
    assert all(cpu.text(i) == "" for i in range(4))


def test_a_panic_after_the_console_is_reported_there(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = BootCpu(blob("nonet"), {})

    def broken(self: Kernel) -> int:
        raise ValueError("the app table is corrupt")

    monkeypatch.setattr(Kernel, "run_app", broken)
    assert boot_status(cpu) == 125
    assert "unirealm: panic: ValueError: the app table is corrupt\n" in cpu.text(1)


def test_attest_outside_a_realm_is_refused() -> None:
    cpu = BootCpu(blob("nonet attest=00"), {})
    assert boot_status(cpu) == 0
    assert "unirealm: attest: not a realm, no attestation token\n" in cpu.text(1)


def test_stdout_path_and_console_option_pick_the_uarts() -> None:
    k = Kernel(BootCpu(blob(""), {}))  # type: ignore[arg-type]
    k.console_loglevel = CONSOLE_LOGLEVEL_DEFAULT  # the info lines too
    uarts = [Device(f"/U{i}", "ns16550a", serial_iobase(i), 8, address=serial_iobase(i)) for i in range(3)]
    k.info = BootInfo(devices=uarts, stdout_path="/U1:115200n8")
    k.log("early")
    k.start_console()
    cpu = k.cpu
    k.write_console(b"app\n")
    k.log("later")
    assert cpu.text(1) == "app\n" and cpu.text(2) == "unirealm: early\nunirealm: later\n"  # type: ignore[attr-defined]
    k2 = Kernel(BootCpu(blob(""), {}))  # type: ignore[arg-type]
    k2.console_loglevel = CONSOLE_LOGLEVEL_DEFAULT
    k2.info = BootInfo(devices=uarts[:1])
    k2.start_console()
    k2.write_console(b"a")
    k2.log("b")
    assert k2.cpu.text(0) == "aunirealm: b\n"  # type: ignore[attr-defined]  # one UART: both share it


# --- the device tree ------------------------------------------------------------------------------
def test_parse_fdt_reads_kvmtools_tree() -> None:
    info = parse_fdt(KvmtoolFdt(nrcpus=2, mem_base=RAM, mem_size=RAM_SIZE, bootargs="a b -- c",
                                initrd=(INITRD, INITRD + 10)).dtb())
    assert info.ram == [(RAM, RAM_SIZE)]
    assert info.bootargs == "a b -- c" and info.initrd == (INITRD, INITRD + 10)
    assert info.psci_method in ("hvc", "smc")
    assert info.timer_irq == 27  # the virtual timer: PPI 11 (arm,armv8-timer's third entry)
    uarts = [d for d in info.devices if d.compatible.startswith("ns16550")]
    assert [d.base for d in uarts] == [serial_iobase(i) for i in range(4)]
    assert all(d.irq is not None and d.irq >= 32 for d in uarts)  # SPIs
    rtc = next(d for d in info.devices if d.compatible == "motorola,mc146818")
    assert rtc.base == ARM_RTC_MMIO_BASE
    assert not any(d.path == "/cpus" for d in info.devices)


def test_interrupt_and_reg_cells() -> None:
    spi = struct.pack(">III", 0, 5, 4)
    ppi = struct.pack(">III", 1, 11, 4)
    assert kmod._intids(spi + ppi) == [37, 27]
    assert kmod._intids(struct.pack(">III", 7, 1, 0)) == []  # neither SPI nor PPI
    assert kmod._intids(spi[:8]) == [] and kmod._intids(None) == [] and kmod._intids(b"") == []
    reg = struct.pack(">IIII", 1, 0x1000, 0, 0x200) + struct.pack(">IIII", 0, 0x8000, 2, 0)
    assert kmod._reg_pairs(reg) == [(0x1_0000_1000, 0x200), (0x8000, 0x2_0000_0000)]
    assert kmod._reg_pairs(reg[:12]) == []  # an incomplete entry
    assert kmod._reg_pairs(struct.pack(">II", 0x10, 0x20), 1, 1) == [(0x10, 0x20)]
    assert kmod._cells(struct.pack(">III", 1, 2, 3), 2) == [1, 2] and kmod._cells(b"", 2) == []


def test_odd_nodes_of_a_hand_written_tree() -> None:
    f = FdtWriter()
    f.begin("")
    f.begin("timer")
    f.u32("interrupts", 1, 13, 4, 1, 14, 4)  # two PPIs: no virtual timer entry
    f.end()
    f.begin("psci")
    f.string("method", "smc")
    f.end()
    f.begin("dev@9000")
    f.u32("reg", 0, 0x9000, 0, 0x100, 0, 0xA000, 0, 0x100)  # two windows, no compatible, no interrupts
    f.end()
    f.begin("chosen")
    f.u64("linux,initrd-start", INITRD)  # an initrd start without an end: none
    f.end()
    f.end()
    info = parse_fdt(f.finish())
    assert info.timer_irq is None and info.psci_method == "smc" and info.initrd is None
    assert [(d.path, d.compatible, d.base, d.size, d.irq) for d in info.devices] == [
        ("/dev@9000", "", 0x9000, 0x100, None), ("/dev@9000", "", 0xA000, 0x100, None)]
    assert BootInfo().timer_irq is None


def test_kernel_options_and_the_apps_argv() -> None:
    k = Kernel(BootCpu(blob(""), {}))  # type: ignore[arg-type]
    k.parse_cmdline("a=1 b= c -- x y")
    assert k.options == {"a": "1", "b": "", "c": ""} and k.argv == ["x", "y"]
    k.parse_cmdline("d")
    assert k.options["d"] == "" and k.argv == []


# --- in a realm -------------------------------------------------------------------------------------
class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def test_attestation_token_printed_in_a_realm(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> tuple[bytes, list[str]]:
        sink = Sink()
        kernel.log_device = sink  # type: ignore[assignment]
        free = kernel.pages.free_bytes
        kernel.print_token("zz")
        kernel.print_token("00" * 65)
        kernel.print_token("ab" * 64)
        assert kernel.pages.free_bytes == free  # the token's buffer is given back
        return sink.data, []

    run = run_in_realm(tmp_path, body)
    text, _ = run.result
    lines = text.decode().splitlines()
    assert lines[0] == "unirealm: attest: the challenge is not hexadecimal"
    assert lines[1] == "unirealm: attest: the challenge is longer than 64 bytes"
    assert lines[2].startswith("unirealm: attestation token (") and lines[-1] == "unirealm: end of attestation token"
    body_lines = lines[3:-1]
    assert all(len(line) <= 76 for line in body_lines) and all(len(line) == 76 for line in body_lines[:-1])
    token = base64.b64decode("".join(body_lines))
    assert lines[2] == f"unirealm: attestation token ({len(token)} bytes, base64):"
    assert bytes.fromhex("ab" * 64) in token  # the challenge is bound into the realm token


def test_run_app_reports_what_cannot_execute() -> None:
    cpu = BootCpu(blob("nonet"), {"app/hello": b"\x7fELF" + bytes(3)})
    k = Kernel(cpu)  # type: ignore[arg-type]
    logged: list[str] = []
    k.log = lambda text, error=False: logged.append(text)  # type: ignore[method-assign]
    assert run_app(k) == 126
    assert logged and logged[0].startswith("/hello: ")
