"""What the end-to-end tests share: how to run `unirealm run` as a user would, the three
environments, and kernel images built from Debian's arm64 packages (downloads cached under
build/debian; the images themselves go to the test's temporary directory)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from unirealm.host.image import build_image

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]
PLATFORMS = {"realm": ["--realm"], "kvm": ["--platform", "kvm"], "rme": ["--platform", "rme"]}


def unirealm_run(
    image: Path, *extra: str, params: str = "--", stdin: bytes = b"", tmp: Path, timeout: int = 300
) -> subprocess.CompletedProcess[bytes]:
    """`unirealm run -k IMAGE EXTRA... --params=PARAMS` in a subprocess, with its own platform data."""
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp / "data"))
    cmd = [*UNIREALM, "run", "-k", str(image), *extra, f"--params={params}"]
    return subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=timeout, check=False)


def debian_image(tmp_path_factory: pytest.TempPathFactory, packages: list[str], app: str) -> Path:
    from unirealm.host import debian

    try:
        files = debian.image_files(packages, app, BUILD / "debian")
    except debian.DebianError as exc:
        pytest.skip(f"Debian arm64 packages unavailable: {exc}")
    out = tmp_path_factory.mktemp("image") / f"{app.rsplit('/', 1)[-1]}.img"
    out.write_bytes(build_image(None, extra=files))
    return out


@pytest.fixture(scope="session")
def sqlite_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_image(tmp_path_factory, ["sqlite3"], "/usr/bin/sqlite3")


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_image(tmp_path_factory, ["busybox-static"], "/bin/busybox")


def static_program(tmp_path_factory: pytest.TempPathFactory, source: Path, *cflags: str) -> Path:
    """`source` built as a static aarch64 program with the cross compiler."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    elf = tmp_path_factory.mktemp(source.stem) / source.stem
    subprocess.run([cc, "-static", "-O2", *cflags, "-o", str(elf), str(source)], check=True)
    return elf


def qemu_stdout(program: Path, *args: str) -> bytes:
    """The program's output under qemu-aarch64-static (Linux's answers, emulated); it must exit 0."""
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        pytest.skip("qemu-aarch64-static is not installed")
    res = subprocess.run([qemu, str(program), *args], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackgroundRun:
    """`unirealm run` of a server in the background, reachable on a loopback port forwarded
    to `guest_port` (`-n mode=user,hostfwd=...`); its output goes to files."""

    def __init__(self, image: Path, platform: str, tmp: Path, guest_port: int, params: str = "--",
                 net: str | None = None, wrap: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        """`net` replaces the -n argument; `wrap` goes before the command (e.g. `ip netns exec NS`);
        `extra` are more `unirealm run` options."""
        self.port = free_port()
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp / "data"))
        cmd = [*wrap, *UNIREALM, "run", "-k", str(image), *PLATFORMS[platform],
               "-n", net or f"mode=user,hostfwd=tcp:127.0.0.1:{self.port}-:{guest_port}", *extra,
               f"--params={params}"]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)

    def log(self) -> str:
        return (self.out.read_bytes() + self.err.read_bytes()).decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def hello_elf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """examples/helloworld built with Debian's cross compiler (static)."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("hello") / "hello"
    subprocess.run([cc, "-static", "-O2", "-o", str(out), str(ROOT / "examples/helloworld/hello.c")], check=True)
    return out.read_bytes()
