"""What an exit costs: a realm against the same image as a plain VM (CPU time per request of the
VMM and its kernel process, httpreply and redis GET at -c 1; CPU time of 64 KiB of stdout
through ttyS0), and the kernel process's trap round trip (one 1-byte
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


def family_cpu(pid: int) -> float:
    """CPU seconds so far of a VMM and the processes it started (its kernel processes)."""
    total = net_bench.cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                total += net_bench.cpu_seconds(int(child))
    return total


def httpreply_cpu(image: Path, env: str, data: str, n: int = 100) -> float:
    """CPU µs per sequential request (a new connection each) of the VMM and its kernel process."""
    server = net_bench.Server(image, env, 8123, "--", data)
    try:
        server.wait(lambda port: net_bench.http_get(port) == b"Hello, World!\n")
        used = family_cpu(server.proc.pid)
        for _ in range(n):
            net_bench.http_get(server.port)
        return (family_cpu(server.proc.pid) - used) / n * 1e6
    finally:
        server.stop()


def redis_get_cpu(image: Path, env: str, data: str, n: int = 2000) -> float:
    """CPU µs per GET of `redis-benchmark -c 1 -t get` of the VMM and its kernel process."""
    server = net_bench.Server(image, env, 6379, net_bench.REDIS_PARAMS, data)
    cli, bench = shutil.which("redis-cli"), shutil.which("redis-benchmark")
    assert cli and bench
    try:
        server.wait(lambda port: subprocess.run([cli, "-p", str(port), "ping"], capture_output=True,
                                                timeout=3).stdout.strip() == b"PONG")
        used = family_cpu(server.proc.pid)
        subprocess.run([bench, "-p", str(server.port), "-n", str(n), "-c", "1", "-t", "get", "-q"],
                       capture_output=True, timeout=600, check=True)
        return (family_cpu(server.proc.pid) - used) / n * 1e6
    finally:
        server.stop()


# Run in a fresh interpreter of the tree measured: the VMM in-process, so that RunResult.exits
# counts the exits; prints the CPU seconds of the VMM process, of its kernel processes, and
# the exit count of a run of `putchar N` minus those of `putchar 0`.
PER_EXIT = """
import io, resource, sys
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.vmm import Vmm
def one(n):
    cfg = RunConfig.from_args(run_parser().parse_args([*sys.argv[3:], "-k", sys.argv[1], f"--params=-- {n}"]))
    s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    exits = Vmm(cfg, io.BytesIO(), io.BytesIO(), log_output=io.BytesIO()).run().exits
    s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = lambda a, b: b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime
    return cpu(s0, s1), cpu(c0, c1), exits
busy, idle = one(int(sys.argv[2])), one(0)
print(*(b - i for b, i in zip(busy, idle)))
"""


def per_exit(image: Path, flags: list[str], data: str, repeat: int, in_process: bool) -> float:
    """CPU µs per exit (VMM and kernel process) of `putchar`, min over `repeat` runs; with
    `in_process` the kernel runs in the VMM's interpreter (only the exit path counts)."""
    env = dict(os.environ, UNIREALM_DATA_DIR=data)
    if in_process:
        env["UNIREALM_IN_PROCESS_KERNEL"] = "1"
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PER_EXIT, str(image), str(TRAP_BYTES), *flags], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        parent, child, exits = float(out[0]), float(out[1]), int(out[2])
        best = min(best, (parent + child) / exits * 1e6)
    return best


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
        each(f"httpreply {env}", lambda env=env: min(httpreply_cpu(httpreply, env, tmp) for _ in range(repeat)))
    if redis is not None:
        for env in ("kvm", "realm"):
            each(f"redis GET {env}", lambda env=env: min(redis_get_cpu(redis, env, tmp) for _ in range(repeat)))
    for label, flags in ENVS.items():
        cmd = [*UNIREALM, "run", *flags, "--console", "serial", "-k", str(burst)]
        each(f"ttyS0 {label}", lambda cmd=cmd: net_cpu(cmd, CONSOLE_BYTES, tmp, 1))
    cmd = [*UNIREALM, "run", "--platform", "kvm", "-k", str(putchar)]
    each("trap", lambda: net_cpu(cmd, TRAP_BYTES, tmp, repeat) / TRAP_BYTES * 1e6)
    for label, flags in ENVS.items():
        each(f"exit {label} in-process", lambda flags=flags: per_exit(putchar, flags, tmp, repeat, True))
        each(f"exit {label}", lambda flags=flags: per_exit(putchar, flags, tmp, repeat, False))
    return out


def rows_of(results: dict[str, dict[str, float]]) -> list[Row]:
    rows: list[Row] = []
    names = list(results)
    for name in names:
        r = results[name]
        rows.append((f"httpreply, CPU per request ({name}): realm vs plain VM", r["httpreply realm"],
                     r["httpreply kvm"], "µs"))
        if "redis GET realm" in r:
            rows.append((f"redis GET -c 1, CPU per request ({name}): realm vs plain VM", r["redis GET realm"],
                         r["redis GET kvm"], "µs"))
        rows.append((f"{CONSOLE_BYTES >> 10} KiB stdout via ttyS0 ({name}, CPU): realm vs plain VM",
                     r["ttyS0 realm"], r["ttyS0 plain VM"], "s"))
    if len(names) == 2:
        now, before = (results[n] for n in names)
        rows.append(("one 1-byte console write, plain VM (kernel process round trips, CPU): now vs before",
                     now["trap"], before["trap"], "µs"))
        for label in ENVS:
            rows.append((f"one exit, {label}, kernel in-process (CPU per exit): now vs before",
                         now[f"exit {label} in-process"], before[f"exit {label} in-process"], "µs"))
            rows.append((f"one exit, {label}, kernel process (CPU per exit, both processes): now vs before",
                         now[f"exit {label}"], before[f"exit {label}"], "µs"))
        for key, label in (("httpreply", "httpreply"), ("redis GET", "redis GET -c 1")):
            if f"{key} realm" in now:
                rows.append((f"{label} CPU per request, realm ÷ plain VM: now vs before", now[f"{key} realm"] / now[f"{key} kvm"],
                             before[f"{key} realm"] / before[f"{key} kvm"], "x"))
    else:
        r = results[names[0]]
        rows.append(("one 1-byte console write, plain VM (CPU)", r["trap"], 1.0, "µs"))
        rows.append(("one exit, realm vs plain VM, kernel in-process (CPU per exit)", r["exit realm in-process"],
                     r["exit plain VM in-process"], "µs"))
        rows.append(("one exit, realm vs plain VM, kernel process (CPU per exit)", r["exit realm"], r["exit plain VM"],
                     "µs"))
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
