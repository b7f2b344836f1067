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


def run(rows: int = 100000) -> list[tuple[str, float, float, str]]:
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise RuntimeError("qemu-aarch64-static is missing: apt-get install qemu-user-static (make bench does)")
    image, rootfs = BUILD / "sqlite3.img", BUILD / "debian" / "rootfs"
    if not image.exists() or not rootfs.exists():
        raise RuntimeError("build/sqlite3.img is missing: make build/sqlite3.img")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, UNIREALM_DATA_DIR=tmp)
        work, idle = SQL_WORK.format(n=rows).encode(), SQL_IDLE.encode()
        ur = [*UNIREALM, "run", "--platform", "kvm", "-k", str(image), "-p", "-- :memory:"]
        qe = [qemu, "-L", str(rootfs), str(rootfs / "usr/bin/sqlite3"), ":memory:"]
        qe_sql = best(qe, work) - best(qe, idle)
        realm = [*UNIREALM, "run", "--realm", "-k", str(image), "-p", "-- :memory:"]
        for name, launch in (("plain VM", ur), ("realm", realm)):
            ur_sql = best(launch, work, env=env) - best(launch, idle, env=env)
            results.append((f"sqlite3 recursive CTE, {rows} rows ({name}, CPU time): unirealm vs qemu-user",
                            ur_sql, qe_sql, "s"))

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
