"""sqlite over 9pfs: Debian's sqlite3 in the unikernel opens its database on a host
directory shared with `--9p DIR,TAG` and mounted with the kernel option `9p=TAG:/PATH`, in
all three environments; in a realm every ring and buffer lives in pages the realm shared.
Output is compared byte for byte with the host's sqlite3, and writes are checked on the host
file with the host's sqlite3 afterwards."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import PLATFORMS, ROOT
from .conftest import unirealm_run as run

MOUNT = "9p=kvm_9p:/data"


@pytest.fixture
def share(tmp_path: Path) -> Path:
    if shutil.which("sqlite3") is None:
        pytest.skip("the host has no sqlite3 to compare with (apt-get install sqlite3)")
    root = tmp_path / "sqlite-root"
    (root / "data").mkdir(parents=True)
    schema = (ROOT / "examples/sqlite/schema.sql").read_bytes()
    subprocess.run(["sqlite3", str(root / "data/test.db")], input=schema, check=True)
    return root


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_sqlite_over_9p_equals_host(platform: str, sqlite_image: Path, share: Path,
                                    tmp_path: Path) -> None:
    script = (ROOT / "examples/sqlite/script.sql").read_bytes()
    reference = tmp_path / "reference.db"
    shutil.copy(share / "data/test.db", reference)
    host = subprocess.run(["sqlite3", str(reference)], input=script, capture_output=True, check=True).stdout
    res = run(sqlite_image, *PLATFORMS[platform], "--9p", f"{share},kvm_9p",
              params=f"{MOUNT} loglevel=7 -- /data/data/test.db", stdin=script, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == host
    log = res.stderr.decode()
    assert "mounted at /data" in log
    if platform == "realm":
        assert "buffers in shared pages" in log


@pytest.mark.parametrize("platform", ["kvm", "rme"])
def test_sqlite_over_9p_with_two_vcpus(platform: str, sqlite_image: Path, share: Path, tmp_path: Path) -> None:
    """-c 2: the unikernel runs on the boot CPU and never starts the second (the DT and GIC
    have two CPUs, PSCI keeps CPU 1 OFF), and the app's output is unchanged."""
    script = (ROOT / "examples/sqlite/script.sql").read_bytes()
    reference = tmp_path / "reference.db"
    shutil.copy(share / "data/test.db", reference)
    host = subprocess.run(["sqlite3", str(reference)], input=script, capture_output=True, check=True).stdout
    res = run(sqlite_image, *PLATFORMS[platform], "-c", "2", "--9p", f"{share},kvm_9p",
              params=f"{MOUNT} -- /data/data/test.db", stdin=script, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == host


@pytest.mark.parametrize("platform", ["realm", "kvm"])
def test_sqlite_writes_through_9p(platform: str, sqlite_image: Path, share: Path,
                                  tmp_path: Path) -> None:
    sql = (b"INSERT INTO realms(name, ipa_bits) VALUES ('over-9p', 40), ('second', 41);\n"
           b"UPDATE realms SET ipa_bits = ipa_bits + 8 WHERE name = 'over-9p';\n"
           b"CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);\n"
           b"INSERT INTO notes(body) SELECT printf('note %d', value) FROM generate_series(1, 300);\n"
           b"DELETE FROM notes WHERE id % 3 = 0;\n"
           b"SELECT count(*) FROM notes;\n")
    res = run(sqlite_image, *PLATFORMS[platform], "--9p", str(share),  # default tag kvm_9p
              params=f"{MOUNT} -- /data/data/test.db", stdin=sql, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"200\n"
    db = str(share / "data/test.db")
    check = subprocess.run(
        ["sqlite3", db, "SELECT name, ipa_bits FROM realms WHERE name IN ('over-9p', 'second') ORDER BY name;"
         " SELECT count(*), max(id) FROM notes; PRAGMA integrity_check;"],
        capture_output=True, check=True).stdout
    assert check == b"over-9p|48\nsecond|41\n200|299\nok\n"
    assert sorted(p.name for p in (share / "data").iterdir()) == ["test.db"]  # the journal is gone


def test_9p_mount_errors(sqlite_image: Path, tmp_path: Path) -> None:
    res = run(sqlite_image, "--platform", "kvm", "--9p", str(tmp_path / "missing"), params="--", tmp=tmp_path)
    assert res.returncode != 0
    assert b"is not a directory" in res.stderr and b"Traceback" not in res.stderr
    (tmp_path / "d").mkdir()
    res = run(sqlite_image, "--platform", "kvm", "--9p", f"{tmp_path / 'd'},other",
              params=f"{MOUNT} -- /data/x.db", stdin=b"SELECT 1;\n", tmp=tmp_path)
    assert b"no device with tag 'kvm_9p'" in res.stderr and b"Traceback" not in res.stderr
