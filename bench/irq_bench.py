"""The plain VM's network hot path with interrupts on (this tree: virtio SPIs pulsed on every
used-ring update, the vCPU scheduler and its interrupt lines in every exit) against the same
server on the tree before them (BASELINE: the VMM that only polled), measured back to back
in one run: httpreply sequential req/s and, when build/redis.img exists, redis GET/s. The
realm's httpreply row does the same for a realm (list registers filled and read back, the
REC's interrupt lines and timer state in every REC_ENTER and exit).

`python bench/irq_bench.py [BASELINE]` (a git revision; default the last commit without
interrupt lines). Rates are higher-is-better: the ratio is interrupts ÷ polling.

`python bench/irq_bench.py --unikernel [BASELINE]` compares the unikernel that takes
interrupts (GIC driver, timer-armed WFI, NIC SPI: this tree) with the polling unikernel of
UNIKERNEL_BASELINE on the same interrupt-capable VMM generation: each tree builds its own
images (the kernel is in the image), httpreply req/s and redis GET/s with one client, plain
VM and realm, best of ROUNDS alternating runs, and realm ÷ plain VM for both."""

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
UNIKERNEL_BASELINE = "a019002"  # README: conformance figures: the last tree whose unikernel polled

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


def build(src: Path, out: Path, *argv: str) -> Path:
    """`unirealm build ... -o out` with the CLI and guest of the tree `src`."""
    under(src, subprocess.run, [*net_bench.UNIREALM, "build", *argv, "-o", str(out)], check=True, capture_output=True)
    return out


def run_unikernel(rev: str = UNIKERNEL_BASELINE) -> list[tuple[str, float, float, str]]:
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old_src, new_src = baseline_tree(rev, Path(tmp)), REPO / "src"
        trees = {"interrupts": new_src, "polling": old_src}
        elf = Path(tmp) / "httpreply"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/httpreply/httpreply.c")], check=True)
        cases: list[tuple[str, dict[str, Path], Callable[[Path, str], float]]] = [
            ("httpreply req/s", {k: build(src, Path(tmp) / f"httpreply-{k}.img", str(elf)) for k, src in trees.items()},
             lambda image, env: net_bench.httpreply_rate(image, env, tmp)),
        ]
        if shutil.which("redis-benchmark"):
            cache = ["--cache", str(REPO / "build" / "debian")]
            images = {k: build(src, Path(tmp) / f"redis-{k}.img", "--debian", "redis-server", "--app",
                               "/usr/bin/redis-server", *cache) for k, src in trees.items()}
            cases.append(("redis GET/s (1 client)", images,
                          lambda image, env: net_bench.redis_rates(image, env, tmp, n=1000)[1]))
        for what, images, rate in cases:
            best_of: dict[tuple[str, str], float] = {}
            for env in ("kvm", "realm"):
                runs: dict[str, list[float]] = {"interrupts": [], "polling": []}
                for _ in range(ROUNDS):
                    for kind in ("polling", "interrupts"):
                        runs[kind].append(under(trees[kind], rate, images[kind], env))
                for kind in runs:
                    best_of[(env, kind)] = max(runs[kind])
                label = "plain VM" if env == "kvm" else "realm"
                rows.append((f"{what}, {label}: unikernel with interrupts vs polling", best_of[(env, "interrupts")],
                             best_of[(env, "polling")], "req/s"))
            for kind in ("interrupts", "polling"):
                rows.append((f"{what}, {kind}: realm vs plain VM", best_of[("realm", kind)], best_of[("kvm", kind)],
                             "req/s"))
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--unikernel"]:
        table = run_unikernel(*args[1:2])
    else:
        table = run(*args[:1])
    for name, value, base, unit in table:
        print(f"{name}: {value:.1f} vs {base:.1f} {unit} = {value / base:.2f}x")
