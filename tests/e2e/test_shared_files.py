"""File contents in the realm's own RAM and MAP_SHARED file mappings: a sparse ramfs file at
4 GiB under -m 64 leaves the VMM small, files stop at half of RAM with ENOSPC (tmpfs), shared
mappings are coherent with read/write over ramfs and 9p, and Debian's sqlite3 runs
`PRAGMA journal_mode=WAL` (its -shm file is a MAP_SHARED mapping) as the host's sqlite3 does."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import PLATFORMS, UNIREALM
from .conftest import unirealm_run as run
from .test_syscall_faults import progs  # noqa: F401 - the fixture building tests/e2e/progs

SHARED = b"""\
read sees the map: stored through the map
map sees pwrite: written by pwrite
parent sees the child: child
second map: stored through the map
after munmap: child
writable shared map of a read-only fd: refused
"""
LIMITS = b"""\
pwrite at 4 GiB: 1
size 4294967297, blocks 8
read in the hole: 1 0
SEEK_DATA from 0: 4294967296
pwrite at 2^63-1: -1 File too large
fill: No space left on device after 7 MiB
space back after unlink: 1048576
"""
WAL = b"""\
PRAGMA journal_mode=WAL;
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT);
INSERT INTO t(b) SELECT printf('row %d', value) FROM generate_series(1, 500);
BEGIN; UPDATE t SET b = b || '!' WHERE a % 7 = 0; DELETE FROM t WHERE a % 11 = 0; COMMIT;
SELECT count(*), sum(a), max(b) FROM t;
PRAGMA wal_checkpoint(TRUNCATE);
INSERT INTO t(b) VALUES ('after the checkpoint');
SELECT a, b FROM t ORDER BY a DESC LIMIT 3;
PRAGMA journal_mode;
"""


def test_sparse_file_stays_out_of_the_vmm(progs: dict, tmp_path: Path) -> None:  # noqa: F811
    """pwrite of 1 byte at 4 GiB into a ramfs file: one page of the realm's RAM, not 4 GiB
    of the VMM's heap; past half of RAM, ENOSPC."""
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp_path / "data"))
    cmd = [*UNIREALM, "run", "-k", str(progs["tmpfs_limits"][1]), "--platform", "kvm", "-m", "16", "--params=--"]
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        timer = threading.Timer(300, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # the VMM's own peak RSS
        timer.cancel()
    assert os.waitstatus_to_exitcode(status) == 0, err.read_text()
    assert out.read_bytes() == LIMITS
    assert usage.ru_maxrss < 1 << 20, f"VMM peak RSS {usage.ru_maxrss} KiB"  # a heap copy would take 4 GiB


@pytest.mark.parametrize("platform", ["realm", "kvm"])
def test_shared_file_mapping_over_ramfs(platform: str, progs: dict, tmp_path: Path) -> None:  # noqa: F811
    res = run(progs["shared_map"][1], *PLATFORMS[platform], params="-- /tmp", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == SHARED


def test_shared_file_mapping_over_9p(progs: dict, tmp_path: Path) -> None:  # noqa: F811
    share = tmp_path / "share"
    share.mkdir()
    res = run(progs["shared_map"][1], "--realm", "--9p", f"{share},kvm_9p", params="9p=kvm_9p:/data -- /data",
              tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == SHARED
    data = (share / "shared.dat").read_bytes()
    assert data[:5] == b"child" and data[100:117] == b"written by pwrite"
    assert data[4096:4118] == b"stored through the map" and len(data) == 8192


def host_sqlite(db: Path, sql: bytes) -> bytes:
    return subprocess.run(["sqlite3", str(db)], input=sql, capture_output=True, check=True).stdout


@pytest.fixture
def host_wal(tmp_path: Path) -> bytes:
    if shutil.which("sqlite3") is None:
        pytest.skip("the host has no sqlite3 to compare with (apt-get install sqlite3)")
    return host_sqlite(tmp_path / "reference.db", WAL)


@pytest.mark.parametrize("platform", ["realm", "kvm"])
def test_sqlite_wal_in_ramfs(platform: str, sqlite_image: Path, host_wal: bytes, tmp_path: Path) -> None:
    res = run(sqlite_image, *PLATFORMS[platform], params="-- /tmp/wal.db", stdin=WAL, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == host_wal
    assert b"wal\n" in res.stdout


def test_sqlite_wal_over_9p(sqlite_image: Path, host_wal: bytes, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    res = run(sqlite_image, "--realm", "--9p", f"{share},kvm_9p", params="9p=kvm_9p:/data -- /data/wal.db",
              stdin=WAL, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == host_wal
    # the host's sqlite3 reads what the realm committed
    rows = host_sqlite(share / "wal.db", b"SELECT count(*), sum(a) FROM t;\n")
    assert rows == host_sqlite(tmp_path / "reference.db", b"SELECT count(*), sum(a) FROM t;\n")
