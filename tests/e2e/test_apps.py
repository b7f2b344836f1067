"""Apps on the unikernel through `unirealm run`: Debian's dynamic sqlite3 with its database
in an initrd (byte-equal to the host's sqlite3), and the loader's errors on bad input."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, UNIREALM
from .conftest import unirealm_run as run


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("sqlite3") is None:
        pytest.skip("the host has no sqlite3 to compare with (apt-get install sqlite3)")
    from unirealm.host.cpio import write_initrd

    root = tmp_path_factory.mktemp("dbroot")
    (root / "data").mkdir()
    schema = (ROOT / "examples/sqlite/schema.sql").read_bytes()
    subprocess.run(["sqlite3", str(root / "data/test.db")], input=schema, check=True)
    initrd = root.parent / "db.cpio"
    initrd.write_bytes(write_initrd(root))
    return root / "data/test.db", initrd


@pytest.mark.slow
@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_sqlite_output_equals_host(platform: str, sqlite_image: Path, sqlite_db: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    db, initrd = sqlite_db
    script = (ROOT / "examples/sqlite/script.sql").read_bytes()
    host = subprocess.run(["sqlite3", str(db)], input=script, capture_output=True, check=True).stdout
    res = run(sqlite_image, *PLATFORMS[platform], "-i", str(initrd), params="-- /data/test.db",
              stdin=script, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == host


def test_sqlite_writes_in_tmp(sqlite_image: Path, tmp_path: Path) -> None:
    sql = b"CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3); SELECT sum(x) FROM t;\n"
    res = run(sqlite_image, "--platform", "kvm", params="-- /tmp/w.db", stdin=sql, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"6\n"


def _elf_header(machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x400000, 64, 0, 0, 64, 56, 1, 64, 0, 0)


def _bad_images(tmp: Path, good: bytes) -> dict[str, tuple[Path, str]]:
    cases = {
        "x86-64": (_elf_header(62) + bytes(200), "not an AArch64 ELF"),
        "garbage": (b"#!/bin/sh\necho hi\n", "not an ELF file"),
        "corrupt": (_elf_header(183)[:40], "malformed ELF"),
    }
    cases["truncated"] = (good[: len(good) // 3], "malformed ELF")
    dyn = bytearray(_elf_header(183))
    # one PT_INTERP program header naming an interpreter the image does not carry
    struct.pack_into("<HH", dyn, 54, 56, 1)
    ph = struct.pack("<IIQQQQQQ", 3, 4, 120, 120, 120, 19, 19, 1)  # p_filesz: the path and its NUL
    cases["no-interpreter"] = (bytes(dyn) + ph + b"/lib/ld-missing.so\0", "interpreter /lib/ld-missing.so not found")
    out = {}
    for name, (data, msg) in cases.items():
        img = tmp / f"{name}.img"
        img.write_bytes(build_image(data, "app"))
        out[name] = (img, msg)
    return out


@pytest.mark.parametrize("case", ["x86-64", "garbage", "corrupt", "truncated", "no-interpreter"])
def test_bad_programs_fail_cleanly(case: str, tmp_path: Path, hello_elf: bytes) -> None:
    img, message = _bad_images(tmp_path, hello_elf)[case]
    res = run(img, "--platform", "kvm", tmp=tmp_path)
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode != 0
    assert message in out
    assert "Traceback" not in out and "panic" not in out


def test_corrupt_initrd_fails_cleanly(tmp_path: Path, hello_elf: bytes) -> None:
    img = tmp_path / "hello.img"
    img.write_bytes(build_image(hello_elf, "hello"))
    bad = tmp_path / "bad.cpio"
    bad.write_bytes(b"070701" + b"0" * 300)
    res = run(img, "--platform", "kvm", "-i", str(bad), tmp=tmp_path)
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode != 0 and "initrd:" in out and "Traceback" not in out


def test_initrd_cli(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    res = subprocess.run([*UNIREALM, "initrd", str(tmp_path / "d"), "-o", str(tmp_path / "o.cpio")],
                         capture_output=True, check=False)
    assert res.returncode == 0 and (tmp_path / "o.cpio").read_bytes()[:6] == b"070701"
    res = subprocess.run([*UNIREALM, "initrd", str(tmp_path / "nope"), "-o", str(tmp_path / "o.cpio")],
                         capture_output=True, check=False)
    assert res.returncode == 2 and b"not a directory" in res.stderr and b"Traceback" not in res.stderr
