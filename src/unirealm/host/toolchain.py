"""Building guest machine code from the assembly sources shipped in unirealm.guest.asm.

Sources are assembled with Debian's cross binutils (aarch64-linux-gnu-as / -ld / -objcopy)
on first use and cached by source hash under build/ (or $UNIREALM_CACHE), so no binary is
ever committed and a changed source always rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import unirealm

ASM_DIR = Path(unirealm.__file__).parent / "guest" / "asm"
CROSS = "aarch64-linux-gnu-"


class ToolchainError(RuntimeError):
    pass


def cache_dir() -> Path:
    explicit = os.environ.get("UNIREALM_CACHE")
    if explicit:
        return Path(explicit)
    repo_build = Path(unirealm.__file__).resolve().parents[2] / "build"
    if repo_build.parent.joinpath("pyproject.toml").exists():
        return repo_build / "guest"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unirealm"


def _tool(name: str) -> str:
    path = shutil.which(CROSS + name)
    if path is None:
        raise ToolchainError(f"{CROSS}{name} not found: install binutils-aarch64-linux-gnu (make setup does)")
    return path


def vdso() -> bytes:
    """guest/asm/vdso.S linked as the shared object `linux-vdso.so.1` (4 KiB pages)."""
    source, script, layout = ASM_DIR / "vdso.S", ASM_DIR / "vdso.lds", ASM_DIR / "vdso.ld"
    key = hashlib.sha256(source.read_bytes() + script.read_bytes() + layout.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"vdso-{key}.so"
    if out.exists():
        return out.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        obj, so = Path(tmp) / "vdso.o", Path(tmp) / "vdso.so"
        _run([_tool("as"), str(source), "-o", str(obj)])
        _run([
            _tool("ld"), "-shared", "-nostdlib", "-soname=linux-vdso.so.1", f"--version-script={script}", "-T", str(layout),
            "--hash-style=both", "-z", "max-page-size=4096", "-z", "common-page-size=4096", "--build-id=none",
            str(obj), "-o", str(so),
        ])
        _run([_tool("strip"), "--strip-unneeded", str(so)])
        data = so.read_bytes()
    _store(out, data)
    return data


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()}")


def _store(out: Path, data: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(f".tmp{os.getpid()}")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)


def assemble(name: str, link_address: int) -> bytes:
    """The flat binary of guest/asm/<name>.S linked at `link_address`."""
    source = ASM_DIR / f"{name}.S"
    text = source.read_bytes()
    key = hashlib.sha256(text + link_address.to_bytes(8, "little")).hexdigest()[:16]
    out = cache_dir() / f"{name}-{key}.bin"
    if out.exists():
        return out.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        obj, elf, binary = (Path(tmp) / f"{name}.{ext}" for ext in ("o", "elf", "bin"))
        steps = [
            [_tool("as"), str(source), "-o", str(obj)],
            [_tool("ld"), f"-Ttext={link_address:#x}", "-e", "_start", str(obj), "-o", str(elf)],
            [_tool("objcopy"), "-O", "binary", str(elf), str(binary)],
        ]
        for cmd in steps:
            _run(cmd)
        data = binary.read_bytes()
    _store(out, data)
    return data
