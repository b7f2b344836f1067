"""Build a bare-metal guest from tests/baremetal/*.S with the cross binutils, at test time:
a raw binary (what `-k` loads at RAM + 0x80000) and its symbol table."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CROSS = "aarch64-linux-gnu-"
LOAD_ADDRESS = 0x8008_0000  # kvmtool's RAM base (2 GiB) + the default text offset


@dataclass(frozen=True)
class Guest:
    image: Path
    symbols: dict[str, int]


def require_toolchain() -> None:
    for tool in ("as", "ld", "objcopy", "nm"):
        if shutil.which(CROSS + tool) is None:
            message = f"{CROSS}{tool} not installed (binutils-aarch64-linux-gnu; make setup installs it)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)


def build(name: str, workdir: Path, defsyms: dict[str, int] | None = None) -> Guest:
    """Assemble tests/baremetal/<name>.S (with `--defsym NAME=value` for each of `defsyms`)."""
    require_toolchain()
    source = HERE / f"{name}.S"
    obj, elf, image = (workdir / f"{name}.{ext}" for ext in ("o", "elf", "bin"))
    defines = [f"--defsym={k}={v:#x}" for k, v in (defsyms or {}).items()]
    for cmd in (
        [CROSS + "as", "-I", str(HERE), *defines, str(source), "-o", str(obj)],
        [CROSS + "ld", f"-Ttext={LOAD_ADDRESS:#x}", "-e", f"{LOAD_ADDRESS:#x}", str(obj), "-o", str(elf)],
        [CROSS + "objcopy", "-O", "binary", str(elf), str(image)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    nm = subprocess.run([CROSS + "nm", str(elf)], check=True, capture_output=True, text=True).stdout
    symbols = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16)
    return Guest(image, symbols)
