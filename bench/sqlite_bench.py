"""Debian's sqlite3 and a raw-syscall loop under unirealm and under qemu-aarch64-static,
run back to back on the same binaries: the ratio, and the time per trivial syscall.

qemu-user is the baseline measured in the same run. The unirealm figures are whole
`unirealm run --platform kvm` launches minus the same launch doing no work, so VMM and
kernel start-up cancel out.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]
SQL_WORK = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
    "SELECT count(*), sum(x), sum(x * x) % 1000003 FROM c;\n"
)
SQL_IDLE = "SELECT 1;\n"
SYSCALLS = 20000


def timed(cmd: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> float:
    """CPU time (user + system) of one run: what a loaded machine disturbs least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed: {proc.stderr.decode()[-300:]}")
    return elapsed


def best(cmd: list[str], stdin: bytes = b"", repeat: int = 3, env: dict[str, str] | None = None) -> float:
    return min(timed(cmd, stdin, env) for _ in range(repeat))


def run(rows: int = 100000, repeat: int = 3, queries: int = 1) -> list[tuple[str, float, float, str]]:
    """The CTE of `rows` rows `queries` times in one launch (CPU per query: more queries make the
    launch's own noise a smaller part of the figure), under unirealm and qemu-user; the getpid loop."""
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise RuntimeError("qemu-aarch64-static is missing: apt-get install qemu-user-static (make bench does)")
    image, rootfs = BUILD / "sqlite3.img", BUILD / "debian" / "rootfs"
    if not image.exists() or not rootfs.exists():
        raise RuntimeError("build/sqlite3.img is missing: make build/sqlite3.img")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, UNIREALM_DATA_DIR=tmp)
        work, idle = (SQL_WORK.format(n=rows) * queries).encode(), SQL_IDLE.encode()
        ur = [*UNIREALM, "run", "--platform", "kvm", "-k", str(image), "-p", "-- :memory:"]
        qe = [qemu, "-L", str(rootfs), str(rootfs / "usr/bin/sqlite3"), ":memory:"]
        realm = [*UNIREALM, "run", "--realm", "-k", str(image), "-p", "-- :memory:"]
        # Rounds interleave the three launchers and each one's work and idle runs, so a change in the
        # machine's load falls on all of them alike; each figure is min(work) - min(idle).
        runs: dict[tuple[str, bytes], list[float]] = {}
        for _ in range(repeat):
            for name, cmd, cmd_env in (("qemu-user", qe, None), ("plain VM", ur, env), ("realm", realm, env)):
                for sql in (work, idle):
                    runs.setdefault((name, sql), []).append(timed(cmd, sql, cmd_env))
        net = {name: (min(runs[(name, work)]) - min(runs[(name, idle)])) / queries
               for name in ("qemu-user", "plain VM", "realm")}
        for name in ("plain VM", "realm"):
            each = f", per query of {queries} in one launch" if queries > 1 else ""
            results.append((f"sqlite3 recursive CTE, {rows} rows ({name}, CPU time{each}): unirealm vs qemu-user",
                            net[name], net["qemu-user"], "s"))

        elf = Path(tmp) / "getpid"
        subprocess.run(
            ["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(REPO / "examples/bench/getpid.c")],
            check=True,
        )
        img = Path(tmp) / "getpid.img"
        subprocess.run([*UNIREALM, "build", str(elf), "-o", str(img)], check=True, capture_output=True, env=env)
        base = [*UNIREALM, "run", "--platform", "kvm", "-k", str(img)]
        ur_call = (best([*base, "-p", f"-- {SYSCALLS}"], env=env) - best([*base, "-p", "-- 0"], env=env)) / SYSCALLS
        qe_call = (best([qemu, str(elf), str(SYSCALLS)]) - best([qemu, str(elf), "0"])) / SYSCALLS
        results.append(("one trivial syscall (getpid): unirealm vs qemu-user", ur_call * 1e6, qe_call * 1e6, "µs"))
    return results


def engine_before_after(before: Path, rows: int = 30000, calls: int = 500_000,
                        repeat: int = 3) -> list[tuple[str, float, float, str]]:
    """This tree's EL0 engine against another tree's (`before`: its src/), plain VM, in the
    same run with the runs alternating: sqlite3's CTE of `rows` and a raw getpid loop, CPU
    net of an idle run (min of `repeat`), with qemu-user's figures measured alongside."""
    qemu = shutil.which("qemu-aarch64-static")
    image, rootfs = BUILD / "sqlite3.img", BUILD / "debian" / "rootfs"
    if qemu is None or not image.exists() or not rootfs.exists():
        raise RuntimeError("needs qemu-aarch64-static and build/sqlite3.img (make build/sqlite3.img)")
    work, idle = SQL_WORK.format(n=rows).encode(), SQL_IDLE.encode()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"now": str(REPO / "src"), "before": str(before)}
        envs = {name: dict(os.environ, UNIREALM_DATA_DIR=tmp, PYTHONPATH=src) for name, src in trees.items()}
        elf = Path(tmp) / "getpid"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/bench/getpid.c")], check=True)
        img = Path(tmp) / "getpid.img"
        subprocess.run([*UNIREALM, "build", str(elf), "-o", str(img)], check=True, capture_output=True,
                       env=envs["now"])  # the same image for both trees: only the engine differs
        sql = [*UNIREALM, "run", "--platform", "kvm", "-k", str(image), "-p", "-- :memory:"]
        loop = [*UNIREALM, "run", "--platform", "kvm", "-k", str(img), "-p"]
        samples: dict[str, list[list[float]]] = {k: [[], [], [], []] for k in (*trees, "qemu")}
        for _ in range(repeat):
            for name in (*trees, "qemu"):
                if name == "qemu":
                    runs = [([qemu, "-L", str(rootfs), str(rootfs / "usr/bin/sqlite3"), ":memory:"], work),
                            ([qemu, "-L", str(rootfs), str(rootfs / "usr/bin/sqlite3"), ":memory:"], idle),
                            ([qemu, str(elf), str(calls)], b""), ([qemu, str(elf), "0"], b"")]
                    env = None
                else:
                    runs = [(sql, work), (sql, idle), ([*loop, f"-- {calls}"], b""), ([*loop, "-- 0"], b"")]
                    env = envs[name]
                for i, (cmd, stdin) in enumerate(runs):
                    samples[name][i].append(timed(cmd, stdin, env))
    net = {k: (min(v[0]) - min(v[1]), (min(v[2]) - min(v[3])) / calls * 1e6) for k, v in samples.items()}
    return [
        (f"sqlite3 CTE {rows} rows, plain VM, CPU: now vs before (qemu-user {net['qemu'][0]:.3f} s: "
         f"now {net['now'][0] / net['qemu'][0]:.2f}x, before {net['before'][0] / net['qemu'][0]:.2f}x)",
         net["now"][0], net["before"][0], "s"),
        (f"getpid, plain VM, CPU per call: now vs before (qemu-user {net['qemu'][1]:.2f} µs: "
         f"now {net['now'][1] / net['qemu'][1]:.1f}x, before {net['before'][1] / net['qemu'][1]:.1f}x)",
         net["now"][1], net["before"][1], "µs"),
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another tree's src/: this engine against that one")
    parser.add_argument("--rows", type=int, default=30000)
    args = parser.parse_args()
    rows_out = engine_before_after(args.before, args.rows) if args.before else run(args.rows)
    for name, value, base, unit in rows_out:
        print(f"{name}: {value:.3f} {unit} vs {base:.3f} {unit} ({value / base:.2f}x)", flush=True)
