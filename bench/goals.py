"""The speed goals, each measured against its baseline in the same run, with its target and
whether this machine met it: the table README.md's Benchmarks section opens with.

    python bench/goals.py [--readme] [--rounds N]

Each figure comes from the benchmark module that owns its method (sqlite_bench, redisget_bench,
net_bench, launch, console_bench); this module only picks the figures, states the targets and
renders them. `--readme` rewrites the table between the GOALS markers in README.md, with the
date, the machine and its load average at the start and the end of the run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import console_bench
import launch
import net_bench
import redisget_bench
import sqlite_bench

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- GOALS:BEGIN (bench/goals.py --readme) -->", "<!-- GOALS:END -->"


@dataclass(frozen=True)
class Goal:
    """One goal: `measured` against `baseline` (both in `unit`), met when `check(ratio or
    value)` holds. `absolute` goals judge the measured value itself (a time), the others
    the ratio measured / baseline."""

    name: str
    measured: float
    baseline: float
    unit: str
    target: str
    check: Callable[[float], bool] | None  # None: a figure reported beside the goals, with no target
    absolute: bool = False

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline

    @property
    def met(self) -> bool | None:
        if self.check is None:
            return None
        return self.check(self.measured if self.absolute else self.ratio)

    @property
    def verdict(self) -> str:
        return {None: "-", True: "yes", False: "**no**"}[self.met]


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda x: x <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda x: x >= limit


def sqlite_goals(rows: int = 30000) -> list[Goal]:
    got = sqlite_bench.run(rows, repeat=3, queries=5)
    out = []
    for name, value, base, unit in got:
        if name.startswith("sqlite3"):
            env = "realm" if "(realm" in name else "plain VM"
            out.append(Goal(f"sqlite3 recursive CTE of {rows:,} rows, {env}: CPU per query (5 in one launch, net of "
                            "an idle launch) vs qemu-aarch64-static", value, base, unit, "≤ 1.3x", at_most(1.3)))
    return out


def redis_goals(rounds: int) -> list[Goal]:
    """redis-benchmark against Debian's redis-server: plain VM and realm vs the same binary under
    qemu-user on host sockets (rate: higher is better, so qemu-user's is the baseline)."""
    best = redisget_bench.measure(("kvm", "realm"), rounds)
    rate = {(load, env): best[key][load][0] for key, env in (("qemu-user", "qemu"), ("kvm now", "kvm"),
                                                              ("realm now", "realm")) for load in best[key]}
    out = []
    for load in redisget_bench.LOADS:
        value, base = rate[(load, "kvm")], rate[(load, "qemu")]
        target, check = ("≥ 0.2x", at_least(0.2)) if load.endswith("-c 1") else ("reported", None)
        out.append(Goal(f"redis {load}, plain VM vs qemu-aarch64-static on host sockets", value, base, "req/s",
                        target, check))
    for load in ("GET -c 1", "SET -c 1"):
        realm, vm = rate[(load, "realm")], rate[(load, "kvm")]
        out.append(Goal(f"redis {load}: realm vs plain VM rate (same run)", realm, vm, "req/s", "≥ 0.9x",
                        at_least(0.9)))
    return out


def httpreply_goals(rounds: int) -> list[Goal]:
    with tempfile.TemporaryDirectory() as tmp:
        elf, image = Path(tmp) / "httpreply", Path(tmp) / "httpreply.img"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/httpreply/httpreply.c")], check=True)
        subprocess.run([*net_bench.UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True,
                       env=dict(os.environ, UNIREALM_DATA_DIR=tmp))
        rates: dict[str, float] = {"kvm": 0.0, "realm": 0.0}
        cpu: dict[str, list[float]] = {"kvm": [], "realm": []}
        for _ in range(rounds):  # alternating: a loaded machine slows both alike
            for env in rates:
                rates[env] = max(rates[env], net_bench.httpreply_rate(image, env, tmp, 200, cpu[env]))
    return [
        Goal("httpreply, a new connection per request: realm vs plain VM rate (max of the rounds)",
             rates["realm"], rates["kvm"], "req/s", "≥ 0.9x", at_least(0.9)),
        Goal("httpreply: realm vs plain VM CPU per request of the VMM (min of the rounds)",
             min(cpu["realm"]) * 1e6, min(cpu["kvm"]) * 1e6, "µs", "≤ 1.1x", at_most(1.1)),
    ]


def launch_goals(repeat: int = 3) -> list[Goal]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "hello"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/helloworld/hello.c")], check=True)
        image = Path(tmp) / "hello.img"
        image.write_bytes(launch.build_image(elf.read_bytes(), "helloworld"))
        vms, realms = [], []
        for _ in range(repeat):
            vms.append(launch.launch_to_main(image, ["--platform", "kvm"]))
            realms.append(launch.launch_to_main(image, ["--realm"]))
        rmi, _populate, sha = launch.data_create_seconds(16 << 20)
    return [
        Goal("realm launch -> app main, wall from Vmm.run() (the plain VM's as the baseline)",
             min(r.wall for r in realms), min(v.wall for v in vms), "s", "< 0.3 s", lambda x: x < 0.3, absolute=True),
        Goal("RMI_DATA_CREATE (measured) of 128 granules vs hashlib SHA-256 of the same bytes, CPU",
             rmi * 1e3, sha * 1e3, "ms", "≤ 3x", at_most(3.0)),
    ]


def console_goals(repeat: int = 2) -> list[Goal]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "burst"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(console_bench.PROG)],
                       check=True)
        image = Path(tmp) / "burst.img"
        image.write_bytes(console_bench.build_image(elf.read_bytes(), "console_burst"))
        flags = ["--console", "virtio"]
        vm = min(console_bench.transfer(image, ["--platform", "kvm", *flags], 1 << 20, b"")[0] for _ in range(repeat))
        realm = min(console_bench.transfer(image, ["--realm", *flags], 1 << 20, b"")[0] for _ in range(repeat))
    return [Goal("1 MiB of stdout from a realm through hvc0, CPU time of the burst (the plain VM's as the baseline)",
                 realm, vm, "s", "≤ 2 s", at_most(2.0), absolute=True)]


def measure(rounds: int) -> list[Goal]:
    goals: list[Goal] = []
    for part in (lambda: sqlite_goals(), lambda: redis_goals(rounds), lambda: httpreply_goals(rounds),
                 lambda: launch_goals(), lambda: console_goals()):
        got = part()
        for g in got:
            print(f"  {g.name}: {g.measured:.4g} vs {g.baseline:.4g} {g.unit} ({g.ratio:.3f}x; {g.target}: "
                  f"{g.verdict.strip('*')})", file=sys.stderr, flush=True)
        goals += got
    return goals


def figure(value: float, unit: str) -> str:
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 3
    return f"{value:,.{digits}f} {unit}"


def markdown(goals: list[Goal], header: str) -> str:
    lines = [header, "", "| goal | measured | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for g in goals:
        lines.append(f"| {g.name} | {figure(g.measured, g.unit)} | {figure(g.baseline, g.unit)} | {g.ratio:.3f}x | "
                     f"{g.target} | {g.verdict} |")
    return "\n".join(lines)


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def header(start_load: str) -> str:
    import unicorn

    today = datetime.date.today().isoformat()
    return (f"Measured by `make bench-goals` on {today}: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, Unicorn {unicorn.__version__}; load average (1/5/15 min) "
            f"{start_load} at the start, {load()} at the end.")


def write_readme(text: str, readme: Path = README) -> None:
    """Replace what is between the GOALS markers (which must be there, once each)."""
    old = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if len(pattern.findall(old)) != 1:
        raise SystemExit(f"{readme}: the goals markers are missing or not unique")
    readme.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{text}\n{END}", old))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite the goals table in README.md")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the network figures")
    args = parser.parse_args()
    start = load()
    goals = measure(args.rounds)
    text = markdown(goals, header(start))
    print(text)
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
