"""The plain VM's network hot path with interrupts on (this tree: virtio SPIs pulsed on every
used-ring update, the vCPU scheduler and its interrupt lines in every exit) against the same
server on the tree before them (BASELINE: the VMM that only polled), measured back to back
in one run: httpreply sequential req/s and, when build/redis.img exists, redis GET/s. The
realm's httpreply row does the same for a realm (list registers filled and read back, the
REC's interrupt lines and timer state in every REC_ENTER and exit).

`python bench/irq_bench.py [BASELINE]` (a git revision; default the last commit without
interrupt lines). Rates are higher-is-better: the ratio is interrupts ÷ polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).parent))

import net_bench

REPO = Path(__file__).resolve().parents[1]
BASELINE = "e5b93bd"  # arch: one system-register key encoding: the VMM before interrupt lines
ROUNDS = 3  # best of, alternating the two trees

T = TypeVar("T")


def under(src: Path, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run `fn` with `unirealm` imported from the source tree `src` in the VMMs it starts."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        return fn(*args, **kwargs)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise RuntimeError(f"no baseline tree at {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def best(fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(ROUNDS))


def run(rev: str = BASELINE) -> list[tuple[str, float, float, str]]:
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old_src, new_src = baseline_tree(rev, Path(tmp)), REPO / "src"
        elf, image = Path(tmp) / "httpreply", Path(tmp) / "httpreply.img"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/httpreply/httpreply.c")], check=True)
        under(new_src, subprocess.run, [*net_bench.UNIREALM, "build", str(elf), "-o", str(image)],
              check=True, capture_output=True)
        for env, label in (("kvm", "plain VM"), ("realm", "realm")):
            rates: dict[Path, list[float]] = {old_src: [], new_src: []}
            for _ in range(ROUNDS):
                for src in (old_src, new_src):
                    rates[src].append(under(src, net_bench.httpreply_rate, image, env, tmp))
            rows.append((f"httpreply req/s, {label}: interrupts vs polling", max(rates[new_src]),
                         max(rates[old_src]), "req/s"))
        redis = REPO / "build" / "redis.img"
        if redis.exists() and shutil.which("redis-benchmark"):
            gets: dict[Path, list[float]] = {old_src: [], new_src: []}
            for _ in range(ROUNDS):
                for src in (old_src, new_src):
                    gets[src].append(under(src, net_bench.redis_rates, redis, "kvm", tmp)[1])
            rows.append(("redis GET/s (1 client), plain VM: interrupts vs polling", max(gets[new_src]), max(gets[old_src]), "req/s"))
    return rows


if __name__ == "__main__":
    for name, value, base, unit in run(*sys.argv[1:2]):
        print(f"{name}: {value:.1f} vs {base:.1f} {unit} = {value / base:.2f}x")
