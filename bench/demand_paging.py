"""Demand paging: an app touching 4/8/16/32 MiB of fresh anonymous memory one page at a time,
as a realm (the first touch of each 64 KiB window a REC exit, then DATA_CREATE_UNKNOWN and a
PAS change for each granule of the window: the host's fault-around) against the same image
as a plain VM in the same run.

    python bench/demand_paging.py [MIB...]
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def touch_seconds(image: Path, env: list[str], mib: int) -> float:
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-m", str(max(256, 2 * mib + 64)), "-k", str(image),
                                                       f"--params=-- {mib}"]))
    out = Marks()
    Vmm(cfg, out, None, log_output=io.BytesIO()).run()
    assert len(out.at) == 2, out.getvalue()
    return out.at[b"touch done"] - out.at[b"touch start"]


def run(sizes: tuple[int, ...] = (4, 8)) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "touch"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(HERE / "touch.c")], check=True)
        image = Path(tmp) / "touch.img"
        image.write_bytes(build_image(elf.read_bytes(), "touch"))
        for mib in sizes:
            vm = touch_seconds(image, ["--platform", "kvm"], mib)
            realm = touch_seconds(image, ["--realm"], mib)
            rows.append((f"touch {mib} MiB page by page: realm vs plain VM", realm, vm, "s"))
    return rows


if __name__ == "__main__":
    for name, value, base, unit in run(tuple(int(a) for a in sys.argv[1:]) or (4, 8, 16, 32)):
        print(f"{name}: {value:.2f} {unit} vs {base:.2f} {unit} ({value / base:.2f}x)", flush=True)
