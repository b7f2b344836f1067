"""What a syscall does with the app's bad pointers and arguments, against Linux: static C
programs (tests/e2e/progs) run on the unikernel, their output compared with Linux's
documented results and, where qemu-aarch64-static is installed, with what qemu-user gives."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS
from .conftest import unirealm_run as run

PROGS = Path(__file__).parent / "progs"
CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64-static")

FAULTS = b"""\
read into a read-only page: -1 Bad address
read into a PROT_NONE page: -1 Bad address
read into the program's code: -1 Bad address
write from a PROT_NONE page: -1 Bad address
read into an unmapped page: -1 Bad address
code intact: 1
offset after faults: 0
"""
# Linux (mm/filemap.c, shmem): copies stop at the first page that faults and the bytes
# before it count; qemu-user instead refuses the whole buffer, so only Linux is the reference.
PARTIAL = b"""\
write across PROT_NONE: 3996
size: 3996
read across read-only: 10
offset: 10
writev with a PROT_NONE iovec: 16
pread into read-only: -1 Bad address
"""
BAD_ARGS = b"""\
truncate(path, -1): -1 Invalid argument
ftruncate(fd, -1): -1 Invalid argument
mprotect(p, 0, PROT_READ): 0
mprotect(p + 1, 4096, PROT_READ): -1 Invalid argument
mprotect(p, -4096, PROT_READ): -1 Cannot allocate memory
mprotect(p, 4096, 0x40): -1 Invalid argument
mprotect over a hole: -1 Cannot allocate memory
mmap of 1 TiB, writable: -1 Cannot allocate memory
mmap of 1 TiB, PROT_NONE: 1
mmap of -4096 bytes: -1 Cannot allocate memory
lseek(fd, -1, SEEK_SET): -1 Invalid argument
pread(fd, buf, 1, -1): -1 Invalid argument
"""
# where qemu-user is not Linux (mm/mprotect.c: a zero length succeeds)
QEMU_DIFFERS = {b"mprotect(p, 0, PROT_READ): 0": b"mprotect(p, 0, PROT_READ): -1 Cannot allocate memory"}


@pytest.fixture(scope="session")
def progs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (static ELF, unirealm image)."""
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("progs")
    built = {}
    for src in sorted(PROGS.glob("*.c")):
        elf = out / src.stem
        subprocess.run([CC, "-static", "-O2", "-w", "-o", str(elf), str(src)], check=True)
        image = out / f"{src.stem}.img"
        image.write_bytes(build_image(elf.read_bytes()))
        built[src.stem] = (elf, image)
    return built


def qemu_output(elf: Path) -> bytes:
    if QEMU is None:
        pytest.skip("qemu-aarch64-static is not installed")
    return subprocess.run([QEMU, str(elf)], capture_output=True, timeout=60, check=True,
                          cwd=elf.parent).stdout


@pytest.mark.parametrize("platform", ["realm", "kvm"])
def test_copies_honour_page_protections(platform: str, progs: dict[str, tuple[Path, Path]],
                                        tmp_path: Path) -> None:
    res = run(progs["uaccess_faults"][1], *PLATFORMS[platform], tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == FAULTS


def test_faults_equal_qemu_user(progs: dict[str, tuple[Path, Path]]) -> None:
    assert qemu_output(progs["uaccess_faults"][0]) == FAULTS


def test_partial_transfers_as_linux(progs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    res = run(progs["uaccess_partial"][1], "--platform", "kvm", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == PARTIAL


def test_bad_arguments_get_linux_errnos(progs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    res = run(progs["bad_args"][1], "--platform", "kvm", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == BAD_ARGS
    if QEMU is not None:
        lines = [QEMU_DIFFERS.get(line, line) for line in BAD_ARGS.splitlines()]
        assert qemu_output(progs["bad_args"][0]).splitlines() == lines


def test_out_of_memory_is_an_oom_kill(progs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    res = run(progs["oom"][1], "--platform", "kvm", "-m", "8", tmp=tmp_path)
    err = res.stderr.decode()
    assert res.returncode == 128 + 9, err  # SIGKILL, as from Linux's OOM killer
    assert "Out of memory: killed process 1 (/app)" in err and "segmentation fault" not in err
