"""Demand paging: an app touching 4/8/16/32 MiB of fresh anonymous memory one page at a time,
as a realm (a first touch of a window is a REC exit and a DATA_CREATE_UNKNOWN per granule of
it, each a PAS change; windows grow from 64 KiB to 2 MiB along a run of faults) against the same image as a plain VM in the same run. The figure is CPU time (the VMM
and its kernel process) net of the same launch touching nothing, so a loaded machine
disturbs it little; the time per page shows whether the cost is linear.

    python bench/demand_paging.py [--no-windows] [MIB...]

It also compares the realm's fault-around policies at the largest size (64 KiB, 256 KiB and
2 MiB windows against the windows that grow along a run of faults); --no-windows leaves that out.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unirealm.host import kvm
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm

HERE = Path(__file__).resolve().parent


class Marks(io.BytesIO):
    """Console output that notes when the app prints its start and done marks."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[bytes, float] = {}

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = super().write(data)
        for mark in (b"touch start", b"touch done"):
            if mark not in self.at and mark in self.getvalue():
                self.at[mark] = time.perf_counter()
        return n


def touch(image: Path, env: list[str], mib: int) -> tuple[float, float]:
    """(wall seconds between the marks, CPU seconds of the whole run: VMM and kernel process)."""
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-m", str(max(256, 2 * mib + 64)), "-k", str(image),
                                                       f"--params=-- {mib}"]))
    out = Marks()
    before = cpu_now()
    Vmm(cfg, out, None, log_output=io.BytesIO()).run()
    cpu = cpu_now() - before
    assert len(out.at) == 2, out.getvalue()
    return out.at[b"touch done"] - out.at[b"touch start"], cpu


def cpu_now() -> float:
    """CPU time of this process and its reaped children (the kernel process ends with the run)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def touch_cpu(image: Path, env: list[str], mib: int, repeat: int = 2) -> float:
    """CPU seconds the touching costs: the best whole run net of the best 0 MiB run."""
    return min(touch(image, env, mib)[1] for _ in range(repeat)) - min(touch(image, env, 0)[1] for _ in range(repeat))


# The realm's fault-around windows compared (granules: the first window, the largest):
# fixed 64 KiB, 256 KiB and 2 MiB windows, and the runs that grow from 64 KiB to 2 MiB.
WINDOWS = {"64 KiB": (16, 16), "256 KiB": (64, 64), "2 MiB": (512, 512), "growing 64 KiB-2 MiB": (16, 512)}


def windows(image: Path, mib: int) -> list[tuple[str, float, float, str]]:
    """The realm's CPU per page with each fault-around policy, against the growing one (the
    VMM runs in this process: kvm's window constants are set around each launch)."""
    per_page = {}
    default = (kvm.FAULT_AROUND, kvm.FAULT_AROUND_MAX)
    try:
        for name, (first, largest) in WINDOWS.items():
            kvm.FAULT_AROUND, kvm.FAULT_AROUND_MAX = first, largest
            per_page[name] = touch_cpu(image, ["--realm"], mib) / (mib << 8) * 1e6
    finally:
        kvm.FAULT_AROUND, kvm.FAULT_AROUND_MAX = default
    base = per_page["growing 64 KiB-2 MiB"]
    return [(f"touch {mib} MiB in a realm, per page, fault-around {name} vs growing windows", value, base, "µs")
            for name, value in per_page.items() if name != "growing 64 KiB-2 MiB"]


def run(sizes: tuple[int, ...] = (4, 16), compare_windows: bool = True) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "touch"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(HERE / "touch.c")], check=True)
        image = Path(tmp) / "touch.img"
        image.write_bytes(build_image(elf.read_bytes(), "touch"))
        if compare_windows:
            rows += windows(image, max(sizes))
        for mib in sizes:
            vm = touch_cpu(image, ["--platform", "kvm"], mib)
            realm = touch_cpu(image, ["--realm"], mib)
            rows.append((f"touch {mib} MiB page by page (CPU, net of a 0 MiB run): realm vs plain VM", realm, vm, "s"))
            pages = mib << 8
            rows.append((f"touch {mib} MiB, per page (linear if flat across sizes): realm vs plain VM",
                         realm / pages * 1e6, vm / pages * 1e6, "µs"))
    return rows


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-windows"]
    for name, value, base, unit in run(tuple(int(a) for a in args) or (4, 8, 16, 32),
                                       compare_windows="--no-windows" not in sys.argv[1:]):
        print(f"{name}: {value:.3f} {unit} vs {base:.3f} {unit} ({value / base:.2f}x)", flush=True)
