"""A realm against a plain VM on the network benchmarks, for this tree and a tree before a
change, in the same run: httpreply (sequential requests, a new connection each) and redis
GET at -c 1, each tree with its own images (the unikernel is in the image: a guest-side
change such as VIRTIO_F_EVENT_IDX counts only with its own driver).

For each tree, environment and server: CPU µs per request of the VMM and its kernel process
(min of ROUNDS alternating runs), requests per second (max of the same runs), and exits per
request: the VMM runs in a fresh interpreter of the tree measured, the requests are made from
a thread of that interpreter, and `Vmm.exits` (every trap or REC exit the VMM handled) is
read before and after them.

`python bench/realmnet_bench.py --before OLD/src` (OLD: e.g. `git worktree add OLD <rev>`).
Rows: realm ÷ plain VM CPU per request now vs before, realm vs plain VM rate, exits per
request now vs before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import exits_bench
import net_bench

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 2
Row = tuple[str, float, float, str]
ENVS = {"kvm": "plain VM", "realm": "realm"}

# Run with the tree measured on PYTHONPATH: argv image env what n data; prints exits per request.
EXITS = r"""
import io, os, signal, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[6])
import net_bench
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.vmm import Vmm
image, env, what, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
port = net_bench.free_port()
guest_port, params = (8123, "--") if what == "httpreply" else (6379, net_bench.REDIS_PARAMS)
argv = ["-k", image, *net_bench.ENVS[env], "-n", f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:{guest_port}",
        f"--params={params}"]
vmm = Vmm(RunConfig.from_args(run_parser().parse_args(argv)), io.BytesIO(), io.BytesIO(), log_output=io.BytesIO())
counted = []
def client():
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if what == "httpreply":
                    net_bench.http_get(port)
                else:
                    ok = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, timeout=3)
                    if ok.stdout.strip() != b"PONG":
                        raise OSError
                break
            except (OSError, subprocess.TimeoutExpired):
                time.sleep(0.3)
        before = vmm.exits
        if what == "httpreply":
            for _ in range(n):
                net_bench.http_get(port)
        else:
            subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-c", "1", "-t", "get", "-q"],
                           capture_output=True, timeout=600, check=True)
        counted.append((vmm.exits - before) / n)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=client, daemon=True).start()
vmm.run()
print(counted[0] if counted else "nan")
"""


def exits_per_request(image: Path, env: str, what: str, n: int, data: str) -> float:
    out = subprocess.run([sys.executable, "-c", EXITS, str(image), env, what, str(n), data,
                          str(Path(__file__).parent)], env=dict(os.environ, UNIREALM_DATA_DIR=data),
                         capture_output=True, text=True, timeout=900, check=True).stdout.split()
    return float(out[-1])


def images(src: Path, tmp: Path, name: str, redis: bool) -> dict[str, Path]:
    """httpreply and (with `redis`) redis-server images built by the tree `src`."""
    elf = tmp / "httpreply"
    if not elf.exists():
        exits_bench.compile_static(REPO / "examples/httpreply/httpreply.c", elf)
    out = {"httpreply": tmp / f"httpreply-{name}.img"}
    env = dict(os.environ, PYTHONPATH=str(src), UNIREALM_DATA_DIR=str(tmp))
    subprocess.run([*exits_bench.UNIREALM, "build", str(elf), "-o", str(out["httpreply"])], check=True,
                   capture_output=True, env=env)
    if redis:
        out["redis GET"] = tmp / f"redis-{name}.img"
        subprocess.run([*exits_bench.UNIREALM, "build", "--debian", "redis-server", "--app", "/usr/bin/redis-server",
                        "--cache", str(REPO / "build" / "debian"), "-o", str(out["redis GET"])], check=True,
                       capture_output=True, env=env)
    return out


def measure(trees: dict[str, Path], tmp: Path, redis: bool) -> dict[str, dict[str, float]]:
    imgs = {name: images(src, tmp, name, redis) for name, src in trees.items()}
    data = str(tmp)
    out: dict[str, dict[str, float]] = {name: {} for name in trees}
    for what in imgs[next(iter(trees))]:
        for env in ENVS:
            for _ in range(ROUNDS):
                for name, src in trees.items():
                    image = imgs[name][what]
                    with exits_bench.tree(src):
                        if what == "httpreply":
                            cpu: list[float] = []
                            rate = net_bench.httpreply_rate(image, env, data, cpu=cpu)
                            used = cpu[0] * 1e6
                        else:
                            used = exits_bench.redis_get_cpu(image, env, data, n=1000)
                            rate = float("nan")
                    r = out[name]
                    r[f"{what} {env} cpu"] = min(r.get(f"{what} {env} cpu", float("inf")), used)
                    if rate == rate:
                        r[f"{what} {env} rate"] = max(r.get(f"{what} {env} rate", 0.0), rate)
                    print(f"  {name}: {what} {env}: {used:.0f} µs/request, {rate:.1f} req/s", file=sys.stderr,
                          flush=True)
            for name, src in trees.items():
                with exits_bench.tree(src):
                    n = 100 if what == "httpreply" else 1000
                    out[name][f"{what} {env} exits"] = exits_per_request(imgs[name][what], env, what.split()[0], n, data)
                print(f"  {name}: {what} {env}: {out[name][f'{what} {env} exits']:.2f} exits/request", file=sys.stderr,
                      flush=True)
    return out


def rows_of(results: dict[str, dict[str, float]]) -> list[Row]:
    rows: list[Row] = []
    names = list(results)
    whats = sorted({key.split(" kvm")[0].split(" realm")[0] for key in results[names[0]]})
    for what in whats:
        for name in names:
            r = results[name]
            rows.append((f"{what}, CPU per request ({name}): realm vs plain VM", r[f"{what} realm cpu"],
                         r[f"{what} kvm cpu"], "µs"))
            if f"{what} realm rate" in r:
                rows.append((f"{what} req/s ({name}): realm vs plain VM", r[f"{what} realm rate"],
                             r[f"{what} kvm rate"], "req/s"))
            rows.append((f"{what}, exits per request ({name}): realm vs plain VM", r[f"{what} realm exits"],
                         r[f"{what} kvm exits"], "exits"))
        if len(names) == 2:
            now, before = (results[n] for n in names)
            rows.append((f"{what}, realm ÷ plain VM CPU per request: now vs before",
                         now[f"{what} realm cpu"] / now[f"{what} kvm cpu"],
                         before[f"{what} realm cpu"] / before[f"{what} kvm cpu"], "x"))
            for env, label in ENVS.items():
                rows.append((f"{what}, exits per request, {label}: now vs before", now[f"{what} {env} exits"],
                             before[f"{what} {env} exits"], "exits"))
                rows.append((f"{what}, CPU per request, {label}: now vs before", now[f"{what} {env} cpu"],
                             before[f"{what} {env} cpu"], "µs"))
    return rows


def run(before: Path | None = None) -> list[Row]:
    trees = {"now": REPO / "src"}
    if before is not None:
        trees["before"] = before
    redis = shutil.which("redis-benchmark") is not None and (REPO / "build" / "debian").exists()
    with tempfile.TemporaryDirectory() as tmp:
        return rows_of(measure(trees, Path(tmp), redis))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="the src directory of the tree to compare with")
    args = parser.parse_args()
    for name, value, base, unit in run(args.before):
        print(f"{name}: {value:.2f} vs {base:.2f} {unit} = {value / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
