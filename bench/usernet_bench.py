"""A network change measured against the revision before it, in the same run: the same
image, the same VMM and guest, only the named source files differ (the old ones are taken
from git history and laid over a copy of today's sources). Plain VM; httpreply req/s (a new
connection per request) and redis GET/s with one client (`redis-benchmark -c 1`).

- user-mode network: libslirp against the hand-written gateway it replaced
  (host/net/usernet.py);
- guest network path: RX notification suppression and lazy TX reclaim against the driver
  and device before them (guest/net/virtio_net.py, host/devices/virtio_net.py);
- the guest's delayed ACK against immediate ACKs (guest/net/tcp.py);
- libslirp's poll set kept between its calls against a full fill/poll round at every poll.

    python bench/usernet_bench.py [ROUNDS [WHAT]]   (WHAT: run only changes whose name has it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import net_bench

REPO = net_bench.REPO
# (what, marker, files): the baseline is the parent of the last commit that added or removed
# `marker` in the first file; every file is taken from that baseline.
CHANGES = (
    ("libslirp vs hand-written gateway", "class TcpConn", ("src/unirealm/host/net/usernet.py",)),
    ("RX notify suppression vs before", "def notify_wanted",
     ("src/unirealm/guest/net/virtio_net.py", "src/unirealm/host/devices/virtio_net.py")),
    ("delayed ACK vs immediate", "DELACK_NS", ("src/unirealm/guest/net/tcp.py",)),
    ("libslirp poll set kept vs filled at every poll", "SLIRP_HORIZON_MS", ("src/unirealm/host/net/usernet.py",)),
)


def baseline_sources(marker: str, files: tuple[str, ...]) -> dict[str, str] | None:
    try:
        change = subprocess.run(["git", "log", "-1", "--format=%H", f"-S{marker}", "--", files[0]], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        if not change:
            return None
        return {f: subprocess.run(["git", "show", f"{change}^:{f}"], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout for f in files}
    except (OSError, subprocess.CalledProcessError):
        return None


def overlay(tmp: Path, name: str, sources: dict[str, str]) -> Path:
    src = tmp / name
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in sources.items():
        dest = src / Path(path).relative_to("src")
        package = dest.with_suffix("")
        if dest.suffix == ".py" and (package / "__init__.py").exists():
            shutil.rmtree(package)  # the baseline had a module where the tree now has a package
        dest.write_text(text)
    return src


def measure(src: Path, elf: Path, with_redis: bool, tmp: str, cpu: dict[str, list[float]]
            ) -> tuple[float, float | None]:
    """httpreply req/s and redis GET/s (None without redis) with the sources in `src`; the
    images are built from that tree (the guest travels in the image). The VMM's CPU seconds
    per request go to cpu["http"] and cpu["redis"] (SET and GET together)."""
    os.environ["PYTHONPATH"] = str(src)
    image = Path(tmp) / f"{src.name}-httpreply.img"
    if not image.exists():
        subprocess.run([*net_bench.UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True)
    http = net_bench.httpreply_rate(image, "kvm", tmp, cpu=cpu["http"])
    if not with_redis:
        return http, None
    redis = Path(tmp) / f"{src.name}-redis.img"
    if not redis.exists():
        subprocess.run([*net_bench.UNIREALM, "build", "--debian", "redis-server", "--app", "/usr/bin/redis-server",
                        "-o", str(redis)], check=True, capture_output=True,
                       env=dict(os.environ, UNIREALM_DEBIAN_CACHE=str(REPO / "build" / "debian")))
    return http, net_bench.redis_rates(redis, "kvm", tmp, cpu=cpu["redis"])[1]


def run(rounds: int = 3, only: str = "") -> list[tuple[str, float, float, str]]:
    rows: list[tuple[str, float, float, str]] = []
    saved = os.environ.get("PYTHONPATH")
    have_redis = shutil.which("redis-benchmark") is not None
    try:
        for what, marker, files in CHANGES:
            if only not in what:
                continue
            old = baseline_sources(marker, files)
            if old is None:
                raise RuntimeError(f"{what}: no git revision before the change")
            with tempfile.TemporaryDirectory() as tmp_name:
                tmp = Path(tmp_name)
                elf = tmp / "httpreply"
                subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                                str(REPO / "examples/httpreply/httpreply.c")], check=True)
                trees = {"old": overlay(tmp, "old", old), "new": overlay(tmp, "new", {})}
                http: dict[str, list[float]] = {"old": [], "new": []}
                get: dict[str, list[float]] = {"old": [], "new": []}
                cpu: dict[str, dict[str, list[float]]] = {kind: {"http": [], "redis": []} for kind in trees}
                for _ in range(rounds):  # interleaved, so load on the machine hits both alike
                    for kind, src in trees.items():
                        h, g = measure(src, elf, have_redis, tmp_name, cpu[kind])
                        http[kind].append(h)
                        if g is not None:
                            get[kind].append(g)
            rows.append((f"httpreply req/s, plain VM: {what}", max(http["new"]), max(http["old"]), "req/s"))
            rows.append((f"httpreply VMM CPU per request, plain VM: {what}", min(cpu["new"]["http"]) * 1e6,
                         min(cpu["old"]["http"]) * 1e6, "us"))
            if get["new"]:
                rows.append((f"redis GET/s -c 1, plain VM: {what}", max(get["new"]), max(get["old"]), "req/s"))
                rows.append((f"redis SET+GET VMM CPU per request, plain VM: {what}",
                             min(cpu["new"]["redis"]) * 1e6, min(cpu["old"]["redis"]) * 1e6, "us"))
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return rows


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for name, value, base, unit in run(rounds, sys.argv[2] if len(sys.argv) > 2 else ""):
        print(f"{name}: {value:.1f} {unit} vs {base:.1f} {unit} = {value / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
