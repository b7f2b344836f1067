"""Console I/O: a static program's 1 MiB burst to stdout and 200 KB read from stdin, through
hvc0 (`--console virtio`) and through ttyS0 (the ns16550), in a realm against the plain VM
in the same run. Each figure is the transfer itself, from the one-byte mark the program
writes first to the end of the burst (stdout) or to its last line (stdin, after a one-byte
burst), not the launch, in CPU time of the VMM process (all its threads): on a loaded
machine wall time measures the other processes. The serial figures use smaller sizes: one
exit per byte makes the full sizes take minutes in a realm."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm

REPO = Path(__file__).resolve().parents[1]
PROG = REPO / "tests/e2e/progs/console_burst.c"


class Clock(io.RawIOBase):
    """stdout that notes when its first byte, its `mark`-th byte and its last line arrive."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.count = 0
        self.first: float | None = None
        self.at_mark: float | None = None
        self.tail = b""
        self.last = 0.0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        now = time.process_time()  # CPU time: on a loaded machine wall time measures the others
        if self.first is None and data:
            self.first = now
        self.count += len(data)
        if self.at_mark is None and self.count >= self.mark:
            self.at_mark = now
        self.tail = (self.tail + bytes(data))[-64:]
        self.last = now
        return len(data)


def transfer(image: Path, env: list[str], out_bytes: int, stdin: bytes) -> tuple[float, float]:
    """(seconds for the stdout burst, seconds from its end to the program's last line)."""
    argv = [*env, "-k", str(image), f"--params=-- {out_bytes} mark"]
    cfg = RunConfig.from_args(run_parser().parse_args(argv))
    clock = Clock(1 + out_bytes)
    status = Vmm(cfg, clock, io.BytesIO(stdin), log_output=io.BytesIO()).run().status  # type: ignore[arg-type]
    assert status == 0 and b"in=%d " % len(stdin) in clock.tail, clock.tail
    assert clock.first is not None and clock.at_mark is not None
    return clock.at_mark - clock.first, clock.last - clock.at_mark


def run(repeat: int = 3) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "burst"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(PROG)], check=True)
        image = Path(tmp) / "burst.img"
        image.write_bytes(build_image(elf.read_bytes(), "console_burst"))
        rng = random.Random(13)
        for console, out_size, in_size, runs in (("virtio", 1 << 20, 200_000, repeat), ("serial", 64 << 10, 20_000, 1)):
            data = rng.randbytes(in_size)
            flags = ["--console", console]
            vm_out = min(transfer(image, ["--platform", "kvm", *flags], out_size, b"")[0] for _ in range(runs))
            realm_out = min(transfer(image, ["--realm", *flags], out_size, b"")[0] for _ in range(runs))
            vm_in = min(transfer(image, ["--platform", "kvm", *flags], 1, data)[1] for _ in range(runs))
            realm_in = min(transfer(image, ["--realm", *flags], 1, data)[1] for _ in range(runs))
            dev = "hvc0 (--console virtio)" if console == "virtio" else "ttyS0 (16550)"
            rows.append((f"{out_size >> 10} KiB stdout via {dev}: realm vs plain VM", realm_out, vm_out, "s"))
            rows.append((f"{in_size // 1000} KB stdin via {dev}: realm vs plain VM", realm_in, vm_in, "s"))
    return rows


if __name__ == "__main__":
    for name, value, base, unit in run():
        print(f"{name}: {value:.4f} {unit} vs {base:.4f} {unit} ({value / base:.2f}x)")
