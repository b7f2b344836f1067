"""What the kernel process costs: each figure with the Python kernel in its own process (the
default) against the same run with the kernel as a greenlet of the VMM's interpreter
(UNIREALM_IN_PROCESS_KERNEL=1, the baseline), measured back to back in this run.

Boot: `unirealm run` of helloworld to its exit, wall time (plain VM and realm). Syscall: a
getpid loop, CPU time per call (kernel process and VMM together) minus the same launch doing
none. sqlite3: the recursive CTE of sqlite_bench, CPU time. httpreply and redis: requests per
second through the user-mode network (net_bench's servers). A channel round trip: one MMIO
store to the console of a realm, the hardware's cheapest exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import net_bench
import sqlite_bench

from unirealm.machine.cpu import IN_PROCESS_ENV

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]
ENVS = {"plain VM": ["--platform", "kvm"], "realm": ["--realm"]}
Row = tuple[str, float, float, str]
BYTES = 5000


@contextlib.contextmanager
def in_process(on: bool) -> Iterator[None]:
    old = os.environ.get(IN_PROCESS_ENV)
    if on:
        os.environ[IN_PROCESS_ENV] = "1"
    else:
        os.environ.pop(IN_PROCESS_ENV, None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(IN_PROCESS_ENV, None)
        else:
            os.environ[IN_PROCESS_ENV] = old


def both(measure: Callable[[], float]) -> tuple[float, float]:
    """(kernel process, in-process) figures of `measure`, run alternately."""
    with in_process(False):
        isolated = measure()
    with in_process(True):
        baseline = measure()
    return isolated, baseline


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=dict(os.environ, **env), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed: {proc.stderr.decode()[-300:]}")
    return time.perf_counter() - start


def compile_static(source: Path, out: Path) -> Path:
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(out), str(source)], check=True)
    return out


def build(elf: Path, env: dict[str, str]) -> Path:
    image = elf.with_suffix(".img")
    subprocess.run([*UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True,
                   env=dict(os.environ, **env))
    return image


class Rows(list[Row]):
    """The rows so far; each is printed as it is measured (a long run shows progress)."""

    def append(self, row: Row) -> None:
        super().append(row)
        if self.echo:
            print(describe(row), flush=True)

    echo = False


def describe(row: Row) -> str:
    name, measured, baseline, unit = row
    ratio = measured / baseline if baseline else float("nan")
    return f"{name}: {measured:.4g} {unit} vs {baseline:.4g} {unit} (ratio {ratio:.2f})"


def run(repeat: int = 3, echo: bool = False) -> list[Row]:
    rows = Rows()
    rows.echo = echo
    with tempfile.TemporaryDirectory() as tmp:
        data = {"UNIREALM_DATA_DIR": tmp}
        hello = build(compile_static(REPO / "examples/helloworld/hello.c", Path(tmp) / "hello"), data)
        for name, flags in ENVS.items():
            cmd = [*UNIREALM, "run", *flags, "-k", str(hello)]
            iso, base = both(lambda cmd=cmd: min(wall(cmd, data) for _ in range(repeat)))
            rows.append((f"boot to exit, helloworld ({name}): kernel process vs in-process", iso, base, "s"))

        getpid = build(compile_static(REPO / "examples/bench/getpid.c", Path(tmp) / "getpid"), data)
        calls = sqlite_bench.SYSCALLS
        env = dict(os.environ, **data)
        for name, flags in ENVS.items():
            base_cmd = [*UNIREALM, "run", *flags, "-k", str(getpid)]

            def per_call(base_cmd: list[str] = base_cmd) -> float:
                env = dict(os.environ, **data)
                busy = sqlite_bench.best([*base_cmd, "-p", f"-- {calls}"], env=env, repeat=repeat)
                idle = sqlite_bench.best([*base_cmd, "-p", "-- 0"], env=env, repeat=repeat)
                return (busy - idle) / calls * 1e6

            iso, base = both(per_call)
            rows.append((f"one getpid syscall ({name}, CPU time): kernel process vs in-process", iso, base, "µs"))
        del env

        # One trap round trip: a byte to the console is two MMIO accesses (LSR read, THR write).
        putchar = build(compile_static(REPO / "examples/bench/putchar.c", Path(tmp) / "putchar"), data)
        for name, flags in ENVS.items():
            base_cmd = [*UNIREALM, "run", *flags, "-k", str(putchar)]

            def per_exit(base_cmd: list[str] = base_cmd) -> float:
                env = dict(os.environ, **data)
                busy = sqlite_bench.best([*base_cmd, "-p", f"-- {BYTES}"], env=env, repeat=repeat)
                idle = sqlite_bench.best([*base_cmd, "-p", "-- 0"], env=env, repeat=repeat)
                return (busy - idle) / (2 * BYTES) * 1e6

            iso, base = both(per_exit)
            rows.append((f"one console MMIO access ({name}, CPU time): kernel process vs in-process", iso, base, "µs"))

        image = BUILD / "sqlite3.img"
        if image.exists():
            work = sqlite_bench.SQL_WORK.format(n=100000).encode()
            idle = sqlite_bench.SQL_IDLE.encode()
            for name, flags in ENVS.items():
                cmd = [*UNIREALM, "run", *flags, "-k", str(image), "-p", "-- :memory:"]

                def sql(cmd: list[str] = cmd) -> float:
                    env = dict(os.environ, **data)
                    return sqlite_bench.best(cmd, work, repeat, env) - sqlite_bench.best(cmd, idle, repeat, env)

                iso, base = both(sql)
                rows.append((f"sqlite3 recursive CTE, 100000 rows ({name}, CPU time): kernel process vs in-process",
                             iso, base, "s"))

        httpreply = build(compile_static(REPO / "examples/httpreply/httpreply.c", Path(tmp) / "httpreply"), data)
        for env_name in ("kvm", "realm"):
            iso, base = both(lambda e=env_name: net_bench.httpreply_rate(httpreply, e, tmp))
            rows.append((f"httpreply req/s ({env_name}): kernel process vs in-process", iso, base, "req/s"))
        redis = BUILD / "redis.img"
        if redis.exists() and shutil.which("redis-benchmark"):
            for env_name in ("kvm", "realm"):
                (iso_set, iso_get), (base_set, base_get) = both(lambda e=env_name: net_bench.redis_rates(redis, e, tmp))
                rows.append((f"redis SET/s ({env_name}): kernel process vs in-process", iso_set, base_set, "req/s"))
                rows.append((f"redis GET/s ({env_name}): kernel process vs in-process", iso_get, base_get, "req/s"))
    return rows


def main() -> int:
    run(echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
