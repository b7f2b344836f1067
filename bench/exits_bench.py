"""What an exit costs: a realm against the same image as a plain VM (httpreply, redis GET at
-c 1, 64 KiB of stdout through ttyS0), and the kernel process's trap round trip (one 1-byte
write(2) to ttyS0 in a plain VM: the MMIO traps of the 16550 driver, CPU time of the VMM and
its kernel process per byte, net of a run writing nothing).

With `--before SRC` (the `src` directory of a second worktree, e.g. one at the commit before a
change) every figure is also measured for that tree, alternately in the same run, so a change
shows as a ratio against its own baseline: `python bench/exits_bench.py --before /tmp/old/src`
(`--now SRC` measures another tree than this one in place of it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import net_bench
import sqlite_bench

REPO = Path(__file__).resolve().parents[1]
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]
ENVS = {"plain VM": ["--platform", "kvm"], "realm": ["--realm"]}
Row = tuple[str, float, float, str]
CONSOLE_BYTES = 64 << 10
TRAP_BYTES = 2000


@contextlib.contextmanager
def tree(src: Path) -> Iterator[None]:
    """Run `unirealm` from the source tree `src` (PYTHONPATH of the VMM processes started)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def compile_static(source: Path, out: Path) -> Path:
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(out), str(source)], check=True)
    return out


def build(elf: Path, data: str, src: Path) -> Path:
    """The image of `elf` with the unikernel of the tree `src` (every tree runs the same image)."""
    image = elf.with_suffix(".img")
    subprocess.run([*UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True,
                   env=dict(os.environ, UNIREALM_DATA_DIR=data, PYTHONPATH=str(src)))
    return image


def net_cpu(cmd: list[str], count: int, data: str, repeat: int) -> float:
    """CPU seconds of a run of `cmd` with the program's argument `count`, net of the same
    launch with 0 (the VMM and its kernel process: RUSAGE_CHILDREN)."""
    env = dict(os.environ, UNIREALM_DATA_DIR=data)
    busy = sqlite_bench.best([*cmd, "-p", f"-- {count}"], env=env, repeat=repeat)
    idle = sqlite_bench.best([*cmd, "-p", "-- 0"], env=env, repeat=repeat)
    return busy - idle


def measure(trees: dict[str, Path], tmp: str, redis: Path | None, repeat: int) -> dict[str, dict[str, float]]:
    """Each figure for each tree, the trees alternating within each figure."""
    src = trees["now"]
    httpreply = build(compile_static(REPO / "examples/httpreply/httpreply.c", Path(tmp) / "httpreply"), tmp, src)
    burst = build(compile_static(REPO / "tests/e2e/progs/console_burst.c", Path(tmp) / "burst"), tmp, src)
    putchar = build(compile_static(REPO / "examples/bench/putchar.c", Path(tmp) / "putchar"), tmp, src)
    out: dict[str, dict[str, float]] = {name: {} for name in trees}

    def each(key: str, fn: object) -> None:
        for name, src in trees.items():
            with tree(src):
                out[name][key] = fn()  # type: ignore[operator]
            print(f"  {name}: {key} = {out[name][key]:.6g}", file=sys.stderr, flush=True)

    for env in ("kvm", "realm"):
        each(f"httpreply {env}", lambda env=env: max(net_bench.httpreply_rate(httpreply, env, tmp)
                                                      for _ in range(repeat)))
    if redis is not None:
        for env in ("kvm", "realm"):
            each(f"redis GET {env}", lambda env=env: max(net_bench.redis_rates(redis, env, tmp)[1]
                                                          for _ in range(repeat)))
    for label, flags in ENVS.items():
        cmd = [*UNIREALM, "run", *flags, "--console", "serial", "-k", str(burst)]
        each(f"ttyS0 {label}", lambda cmd=cmd: net_cpu(cmd, CONSOLE_BYTES, tmp, 1))
    cmd = [*UNIREALM, "run", "--platform", "kvm", "-k", str(putchar)]
    each("trap", lambda: net_cpu(cmd, TRAP_BYTES, tmp, repeat) / TRAP_BYTES * 1e6)
    return out


def rows_of(results: dict[str, dict[str, float]]) -> list[Row]:
    rows: list[Row] = []
    names = list(results)
    for name in names:
        r = results[name]
        rows.append((f"httpreply req/s ({name}): realm vs plain VM", r["httpreply realm"], r["httpreply kvm"], "req/s"))
        if "redis GET realm" in r:
            rows.append((f"redis GET/s -c 1 ({name}): realm vs plain VM", r["redis GET realm"], r["redis GET kvm"],
                         "req/s"))
        rows.append((f"{CONSOLE_BYTES >> 10} KiB stdout via ttyS0 ({name}, CPU): realm vs plain VM",
                     r["ttyS0 realm"], r["ttyS0 plain VM"], "s"))
    if len(names) == 2:
        now, before = (results[n] for n in names)
        rows.append(("one 1-byte console write, plain VM (kernel process round trips, CPU): now vs before",
                     now["trap"], before["trap"], "µs"))
        for key, label in (("httpreply", "httpreply"), ("redis GET", "redis GET -c 1")):
            if f"{key} realm" in now:
                rows.append((f"{label} realm ÷ plain VM: now vs before", now[f"{key} realm"] / now[f"{key} kvm"],
                             before[f"{key} realm"] / before[f"{key} kvm"], "x"))
    else:
        rows.append(("one 1-byte console write, plain VM (CPU)", results[names[0]]["trap"], 1.0, "µs"))
    return rows


def run(before: Path | None = None, repeat: int = 1, redis: Path | None = None, now: Path | None = None) -> list[Row]:
    trees = {"now": now or REPO / "src"}
    if before is not None:
        trees["before"] = before
    redis = redis or REPO / "build" / "redis.img"
    with tempfile.TemporaryDirectory() as tmp:
        return rows_of(measure(trees, tmp, redis if redis.exists() and shutil.which("redis-benchmark") else None,
                               repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="the src directory of the tree to compare with")
    parser.add_argument("--redis", type=Path, help="redis image (default build/redis.img)")
    parser.add_argument("--now", type=Path, help="the src directory of the tree measured (default this one's)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for name, value, base, unit in run(args.before, args.repeat, args.redis, args.now):
        print(f"{name}: {value:.4g} {unit} vs {base:.4g} {unit} (ratio {value / base:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
