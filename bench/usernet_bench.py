"""The user-mode network on libslirp against the hand-written gateway it replaced, in the same
run: the same image, the same VMM and guest, only host/net/usernet.py differs (the old one
is taken from the last git revision that had it and laid over a copy of today's sources).
Plain VM; httpreply req/s (a new connection per request) and redis GET/s with one client.

    python bench/usernet_bench.py [ROUNDS]
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
USERNET = "src/unirealm/host/net/usernet.py"
OLD_MARK = "class TcpConn"  # the hand-written gateway's TCP endpoint


def old_gateway_source() -> str | None:
    """usernet.py from the revision before the one that removed the hand-written gateway."""
    try:
        gone = subprocess.run(["git", "log", "-1", "--format=%H", f"-S{OLD_MARK}", "--", USERNET], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        if not gone:
            return None
        return subprocess.run(["git", "show", f"{gone}^:{USERNET}"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def tree_with_old_gateway(tmp: Path, source: str) -> Path:
    src = tmp / "old-src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "unirealm/host/net/usernet.py").write_text(source)
    return src


def with_src(src: Path) -> None:
    os.environ["PYTHONPATH"] = str(src)


def run(rounds: int = 3) -> list[tuple[str, float, float, str]]:
    source = old_gateway_source()
    if source is None:
        raise RuntimeError("no git revision with the hand-written gateway")
    rows: list[tuple[str, float, float, str]] = []
    saved = os.environ.get("PYTHONPATH")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_src, new_src = tree_with_old_gateway(tmp, source), REPO / "src"
        elf, image = tmp / "httpreply", tmp / "httpreply.img"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/httpreply/httpreply.c")], check=True)
        with_src(new_src)
        subprocess.run([*net_bench.UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True)
        redis = REPO / "build" / "redis.img"
        have_redis = redis.exists() and shutil.which("redis-benchmark") is not None
        http: dict[str, list[float]] = {"old": [], "new": []}
        get: dict[str, list[float]] = {"old": [], "new": []}
        try:
            for _ in range(rounds):  # interleaved, so load on the machine hits both alike
                for kind, src in (("old", old_src), ("new", new_src)):
                    with_src(src)
                    http[kind].append(net_bench.httpreply_rate(image, "kvm", tmp_name))
                    if have_redis:
                        get[kind].append(net_bench.redis_rates(redis, "kvm", tmp_name)[1])
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    rows.append(("httpreply req/s, plain VM: libslirp vs hand-written gateway", max(http["new"]), max(http["old"]),
                 "req/s"))
    if have_redis:
        rows.append(("redis GET/s -c 1, plain VM: libslirp vs hand-written gateway", max(get["new"]),
                     max(get["old"]), "req/s"))
    return rows


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for name, value, base, unit in run(rounds):
        print(f"{name}: {value:.1f} {unit} vs {base:.1f} {unit} = {value / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
