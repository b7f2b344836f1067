"""Debian's busybox-static applets on the unikernel, each output byte-equal to the host's
coreutils on the same files (put in an initrd): ls, cat, sha256sum, sort, wc, and `sh -c`
with pipelines (fork, execve of /proc/self/exe, wait4), plus bad input failing cleanly."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import PLATFORMS, UNIREALM, unirealm_run

HOST_ENV = dict(os.environ, LC_ALL="C")

WORDS = "pear\napple\nfig\nbanana\napple\ncherry\nkiwi\nfig\ndate\n"
NUMS = "10\n9\n100\n-3\n42\n7\n"

# (applet command line, the host's command line); paths are relative to / (guest) and the tree (host)
CASES = {
    "ls": ("ls -1 data", "ls -1 data"),
    "ls-sub": ("ls -1 data/sub", "ls -1 data/sub"),
    "cat": ("cat data/words.txt data/nums.txt", "cat data/words.txt data/nums.txt"),
    "sha256sum": ("sha256sum data/words.txt data/nums.txt data/sub/blob.bin",
                  "sha256sum data/words.txt data/nums.txt data/sub/blob.bin"),
    "sort": ("sort data/words.txt", "sort data/words.txt"),
    "sort-rn": ("sort -r -n data/nums.txt", "sort -r -n data/nums.txt"),
    "wc-l": ("wc -l data/words.txt", "wc -l data/words.txt"),
    "wc-w": ("wc -w data/words.txt", "wc -w data/words.txt"),
    "wc-c": ("wc -c data/sub/blob.bin", "wc -c data/sub/blob.bin"),
    "sh-builtins": ('sh -c "echo one; echo two three"', 'sh -c "echo one; echo two three"'),
    "sh-pipeline": ('sh -c "cat data/words.txt | sort | sha256sum"', 'sh -c "cat data/words.txt | sort | sha256sum"'),
    "sh-exec-status": ('sh -c "sort data/nums.txt | wc -l; cat data/none 2>/dev/null; echo status $?"',
                       'sh -c "sort data/nums.txt | wc -l; cat data/none 2>/dev/null; echo status $?"'),
}


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from unirealm.host.cpio import write_initrd

    root = tmp_path_factory.mktemp("bbroot")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "words.txt").write_text(WORDS)
    (data / "nums.txt").write_text(NUMS)
    (data / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 9)
    (data / "sub" / "empty").write_bytes(b"")
    bad = data / "broken"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(20))  # a truncated ELF, executable
    bad.chmod(0o755)
    initrd = root.parent / "busybox-data.cpio"
    initrd.write_bytes(write_initrd(root))
    return root, initrd


def run(image: Path, initrd: Path, platform: str, argv: str, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    return unirealm_run(image, *PLATFORMS[platform], "-i", str(initrd), params=f"quiet -- {argv}", tmp=tmp, timeout=120)


@pytest.mark.parametrize("platform", ["realm", "kvm"])
@pytest.mark.parametrize("case", list(CASES))
def test_applet_output_equals_host(case: str, platform: str, busybox_image: Path, tree: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    root, initrd = tree
    guest_cmd, host_cmd = CASES[case]
    if shutil.which(host_cmd.split()[0]) is None:
        pytest.skip(f"the host has no {host_cmd.split()[0]}")
    host = subprocess.run(shlex.split(host_cmd), cwd=root, capture_output=True, env=HOST_ENV, check=False)
    res = run(busybox_image, initrd, platform, guest_cmd, tmp_path)
    assert res.returncode == host.returncode, res.stderr.decode()
    assert res.stdout == host.stdout
    assert b"Traceback" not in res.stderr


def test_pipeline_on_rme(busybox_image: Path, tree: tuple[Path, Path], tmp_path: Path) -> None:
    res = run(busybox_image, tree[1], "rme", 'sh -c "sort -n data/nums.txt | cat | wc -l; exit 5"', tmp_path)
    assert res.returncode == 5 and res.stdout == b"6\n", res.stderr.decode()


@pytest.mark.parametrize("argv, status, message", [
    ("cat data/missing", 1, b"can't open 'data/missing': No such file or directory"),
    ("no-such-applet", 127, b"applet not found"),
    ('sh -c "data/broken"', 127, b"not found"),
    ('sh -c "sort data/words.txt | data/broken | wc -l"', 0, b""),
])
def test_bad_input_fails_cleanly(argv: str, status: int, message: bytes, busybox_image: Path,
                                 tree: tuple[Path, Path], tmp_path: Path) -> None:
    res = run(busybox_image, tree[1], "kvm", argv, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == status, out.decode()
    assert message in out
    assert b"Traceback" not in out and b"panic" not in out


def test_pipeline_without_the_svc_fast_path(busybox_image: Path, tree: tuple[Path, Path], tmp_path: Path) -> None:
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp_path / "data"))
    cmd = [*UNIREALM, "run", "-k", str(busybox_image), "--platform", "kvm", "-i", str(tree[1]),
           '--params=quiet nofastsvc -- sh -c "cat data/words.txt | sort | wc -l"']
    res = subprocess.run(cmd, capture_output=True, env=env, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout == b"9\n", res.stderr.decode()


@pytest.mark.parametrize("platform", ["realm", "kvm"])
def test_process_tools_see_procs_processes(platform: str, busybox_image: Path, tree: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    """ps, pidof and kill over /proc: a background sleep (forked, re-executed through /proc/self/exe,
    so named `exe` as Linux names it, then renamed `sleep` by busybox's PR_SET_NAME), found by pidof from
    its argv[0], killed, reaped with the shell reporting 128 + SIGTERM; stat -f of / and /proc through
    statfs(2)."""
    # ps waits for the child's new name: as on Linux, a ps that runs first sees the forked shell or the
    # `exe` between the exec and the rename, and which depends on the guest's preemption points.
    script = ("sleep 30 & until [ \"$(cat /proc/$!/comm)\" = sleep ]; do :; done; ps -o pid,ppid,comm,args; "
              "echo pidof $(pidof sleep) bg $!; kill $!; wait $!; "
              "echo status $?; stat -f -c %T / /proc; ls /proc/$$/task")
    res = run(busybox_image, tree[1], platform, f"sh -c '{script}'", tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("pidof "))
    table = [line.split(None, 3) for line in lines[1:end]]
    assert all(len(r) == 4 for r in table), lines[:end]
    shell = next(r for r in table if r[0] == "1")
    sleeper = next(r for r in table if r[3] == "sleep 30")  # ps would mark a comm unlike argv[0]: {exe}
    assert shell[1] == "0" and sleeper[1] == "1" and sleeper[2] == "sleep"
    assert f"pidof {sleeper[0]} bg {sleeper[0]}" in lines
    assert "status 143" in lines
    assert lines[-3:] == ["tmpfs", "proc", "1"]
    assert b"Traceback" not in res.stderr
