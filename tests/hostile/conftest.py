"""What the hostile-host and bad-input tests share: a helloworld image, the CLI in a
subprocess, and the helpers that look for a clean one-line refusal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unirealm.host.image import build_image

ROOT = Path(__file__).resolve().parents[2]
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]


def require_tool(name: str) -> str:
    """The tool's path; a missing tool skips the test, except under CI=true where it fails."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make setup installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def compile_c(source: str, out: Path, *flags: str) -> bytes:
    src = out.with_suffix(".c")
    src.write_text(source)
    cc = require_tool("aarch64-linux-gnu-gcc")
    subprocess.run([cc, "-static", "-O2", *flags, "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def c_image(tmp_path_factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    """A kernel image around the static C program `source`."""
    tmp = tmp_path_factory.mktemp(name)
    image = tmp / f"{name}.img"
    image.write_bytes(build_image(compile_c(source, tmp / name), name))
    return image


@pytest.fixture(scope="session")
def hello_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hello")
    cc = require_tool("aarch64-linux-gnu-gcc")
    elf = tmp / "hello"
    subprocess.run([cc, "-static", "-O2", "-o", str(elf), str(ROOT / "examples/helloworld/hello.c")], check=True)
    image = tmp / "hello.img"
    image.write_bytes(build_image(elf.read_bytes(), "hello"))
    return image


def cli(*argv: str, cwd: Path | None = None, timeout: float = 60, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("UNIREALM_DATA_DIR", str(Path(cwd or ".").resolve() / "platform-data"))
    proc = subprocess.run([*UNIREALM, *argv], capture_output=True, input=stdin, timeout=timeout, cwd=cwd, env=env,
                          check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def assert_one_line_refusal(proc: subprocess.CompletedProcess[str], status: int, fragment: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0], lines[0]
