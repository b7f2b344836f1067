"""Assemble a small AArch64 snippet (a tests/asm/*.S file or a source string) into a flat
binary with the cross binutils, in a temporary directory the test owns."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ASM_DIR = Path(__file__).resolve().parents[1] / "asm"
CROSS = "aarch64-linux-gnu-"


def toolchain_or_skip() -> None:
    for tool in ("as", "ld", "objcopy"):
        if shutil.which(CROSS + tool) is None:
            pytest.skip(f"{CROSS}{tool} not installed (binutils-aarch64-linux-gnu)")


def assemble(source: str | Path, link_address: int, workdir: Path, name: str = "snippet") -> bytes:
    """The flat binary of `source` (a path to a .S file, or assembly text) linked at
    `link_address`, entry `_start` (or the first instruction)."""
    toolchain_or_skip()
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        src = source
    else:
        src = workdir / f"{name}.S"
        src.write_text(source if source.endswith("\n") else source + "\n")
    obj, elf, binary = (workdir / f"{name}.{ext}" for ext in ("o", "elf", "bin"))
    for cmd in (
        [CROSS + "as", str(src), "-o", str(obj)],
        [CROSS + "ld", f"-Ttext={link_address:#x}", "-e", f"{link_address:#x}", str(obj), "-o", str(elf)],
        [CROSS + "objcopy", "-O", "binary", str(elf), str(binary)],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stderr.strip()}")
    return binary.read_bytes()


def asm_file(name: str) -> Path:
    return ASM_DIR / name
