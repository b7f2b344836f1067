"""Images from Debian arm64 packages: download with apt, unpack with dpkg-deb into a private
tree (nothing is installed into the host system), and pick the files an app needs — the
program, its ELF interpreter (PT_INTERP) and the DT_NEEDED libraries, recursively, plus
every symlink met on the way — for the image payload's rootfs/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

DEFAULT_CACHE = Path(os.environ.get("UNIREALM_DEBIAN_CACHE", "build/debian"))
LIB_DIRS = ("/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib", "/usr/lib")
ARCH = "arm64"
SETUP_HINT = "run `make toolchain` (it does `dpkg --add-architecture arm64 && apt-get update`)"


class DebianError(Exception):
    """apt/dpkg could not provide the packages, or the app is not in them."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DebianError(f"{cmd[0]} not found: building from Debian packages needs apt and dpkg") from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise DebianError(f"{' '.join(cmd[:3])}...: {msg[-1] if msg else 'failed'}")
    return res.stdout


def check_arm64() -> None:
    archs = _run(["dpkg", "--print-foreign-architectures"]).split()
    if ARCH not in archs and _run(["dpkg", "--print-architecture"]).strip() != ARCH:
        raise DebianError(f"dpkg has no {ARCH} architecture: {SETUP_HINT}")
    out = _run(["apt-cache", "policy", f"libc6:{ARCH}"])
    if "Candidate:" not in out or "Candidate: (none)" in out:
        raise DebianError(f"apt has no {ARCH} package lists: {SETUP_HINT}")


def _deps(deb: Path) -> list[str]:
    out = []
    for field in ("Pre-Depends", "Depends"):
        text = _run(["dpkg-deb", "-f", str(deb), field]).strip()
        for alt in filter(None, (p.strip() for p in text.split(","))):
            name = re.split(r"[\s(|]", alt.split("|")[0].strip())[0].split(":")[0]
            if name:
                out.append(name)
    return out


def download(packages: list[str], cache: Path = DEFAULT_CACHE) -> list[Path]:
    """The .deb files of `packages` and their dependencies (Depends, Pre-Depends), cached."""
    debs_dir = cache / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    todo = list(packages)
    debs: list[Path] = []
    first = set(packages)
    checked = False
    while todo:
        pkg = todo.pop(0)
        if pkg in seen:
            continue
        seen.add(pkg)
        found = sorted(debs_dir.glob(f"{pkg}_*_{ARCH}.deb")) + sorted(debs_dir.glob(f"{pkg}_*_all.deb"))
        if not found:
            if not checked:
                check_arm64()
                checked = True
            try:
                _run(["apt-get", "download", "-q", f"{pkg}:{ARCH}"], cwd=debs_dir)
            except DebianError as exc:
                if pkg in first:
                    raise DebianError(f"apt cannot download {pkg}:{ARCH} ({exc}); {SETUP_HINT}") from None
                continue  # a virtual or architecture-independent dependency: not needed for ELF files
            found = sorted(debs_dir.glob(f"{pkg}_*_{ARCH}.deb")) + sorted(debs_dir.glob(f"{pkg}_*_all.deb"))
        if not found:
            continue
        debs.append(found[-1])
        todo.extend(d for d in _deps(found[-1]) if d not in seen)
    return debs


def extract(debs: list[Path], cache: Path = DEFAULT_CACHE) -> Path:
    root = cache / "rootfs"
    stamp = root / ".unirealm-debs"
    want = "\n".join(sorted(d.name for d in debs))
    have = stamp.read_text() if stamp.exists() else ""
    missing = [d for d in debs if d.name not in have.splitlines()]
    root.mkdir(parents=True, exist_ok=True)
    for deb in missing:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    stamp.write_text("\n".join(sorted(set(have.splitlines()) | set(want.splitlines()))))
    return root


class Tree:
    """Paths inside an unpacked tree, following its symlinks (absolute targets re-rooted)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.links: dict[str, str] = {}

    def resolve(self, path: str, depth: int = 0) -> str | None:
        if depth > 40:
            return None
        parts = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        for i, part in enumerate(parts):
            if part == "..":
                if done:
                    done.pop()
                continue
            cur = "/" + "/".join([*done, part])
            host = self.root / cur.lstrip("/")
            if host.is_symlink():
                target = os.readlink(host)
                self.links[cur] = target
                base = target if target.startswith("/") else "/" + "/".join([*done, target])
                return self.resolve(base + "/" + "/".join(parts[i + 1 :]), depth + 1)
            if not host.exists():
                return None
            done.append(part)
        return "/" + "/".join(done)

    def read(self, path: str) -> bytes:
        return (self.root / path.lstrip("/")).read_bytes()


def _elf_needs(data: bytes) -> tuple[str | None, list[str], list[str]]:
    """(PT_INTERP, DT_NEEDED, DT_RUNPATH dirs) of an ELF; nothing for other files."""
    import io

    try:
        elf = ELFFile(io.BytesIO(data))
        interp = None
        needed: list[str] = []
        runpath: list[str] = []
        for seg in elf.iter_segments():
            if isinstance(seg, InterpSegment):
                interp = seg.get_interp_name()
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                for tag in sec.iter_tags():
                    kind = tag.entry.d_tag
                    if kind not in ("DT_NEEDED", "DT_RUNPATH", "DT_RPATH"):
                        continue
                    value = str(getattr(tag, kind[3:].lower()))  # pyelftools: DT_NEEDED -> .needed
                    if kind == "DT_NEEDED":
                        needed.append(value)
                    else:
                        runpath += [d for d in value.split(":") if d]
        return interp, needed, runpath
    except (ELFError, ValueError, KeyError):
        return None, [], []


def collect(root: Path, app: str, extra: list[str] | None = None) -> tuple[dict[str, bytes], dict]:
    """The payload files (rootfs/<path>) and rootfs.json for `app` inside `root`."""
    tree = Tree(root)
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    todo = [app, *(extra or [])]
    real_app = tree.resolve(app)
    if real_app is None:
        raise DebianError(f"{app} is not in the packages")
    while todo:
        path = todo.pop()
        real = tree.resolve(path)
        if real is None:
            raise DebianError(f"{path} is not in the packages (needed by {app})")
        if real in files:
            continue
        data = tree.read(real)
        files[real] = data
        modes[real] = (root / real.lstrip("/")).stat().st_mode & 0o7777
        interp, needed, runpath = _elf_needs(data)
        if interp:
            todo.append(interp)
        for lib in needed:
            for d in [*runpath, *LIB_DIRS]:
                if tree.resolve(f"{d}/{lib}") is not None:
                    todo.append(f"{d}/{lib}")
                    break
            else:
                raise DebianError(f"library {lib} (needed by {real}) is not in the packages")
    payload = {"rootfs/" + p.lstrip("/"): d for p, d in files.items()}
    meta = {"app": app, "links": dict(sorted(tree.links.items())), "modes": dict(sorted(modes.items()))}
    return payload, meta


def image_files(packages: list[str], app: str, cache: Path = DEFAULT_CACHE) -> dict[str, bytes]:
    """Everything `build_image(extra=...)` needs for `app` from `packages`."""
    root = extract(download(packages, cache), cache)
    payload, meta = collect(root, app)
    payload["rootfs.json"] = json.dumps(meta, indent=1, sort_keys=True).encode()
    return payload
