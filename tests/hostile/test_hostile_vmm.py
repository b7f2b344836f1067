"""`unirealm run --hostile ATTACK`: the VMM misbehaves in a named way and the realm's
unikernel ends in a clean error or a clean stop -- never a hang, a traceback or silent
corruption. Each test also fails if the guest's guard against that attack is removed."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import UNIREALM, c_image

PROBE_C = r"""
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) { printf("hello\n"); return 0; }
    if (!strcmp(argv[1], "ls")) {
        DIR *d = opendir(argv[2]);
        if (!d) { printf("opendir: %s\n", strerror(errno)); return 3; }
        long n = 0; struct dirent *e;
        errno = 0;
        while ((e = readdir(d))) n++;
        if (errno) { printf("readdir: %s after %ld\n", strerror(errno), n); return 4; }
        printf("entries %ld\n", n); return 0;
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { printf("open: %s\n", strerror(errno)); return 5; }
    char buf[4096]; long total = 0; ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) { fwrite(buf, 1, r, stdout); total += r; }
    if (r < 0) { printf("read: %s after %ld\n", strerror(errno), total); return 6; }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_image(tmp_path_factory, "probe", PROBE_C)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "d").mkdir(parents=True)
    for i in range(5):
        (root / "d" / f"f{i}").write_text(f"file {i}\n")
    (root / "big").write_bytes(bytes(range(256)) * 64)
    return root


def run(image: Path, tmp: Path, *extra: str, params: str = "--", timeout: float = 120) -> tuple[int, str, str, float]:
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp / "data"))
    t0 = time.monotonic()
    proc = subprocess.run([*UNIREALM, "run", "-k", str(image), *extra, f"--params={params}"], capture_output=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False)
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err[-3000:]
    return proc.returncode, proc.stdout.decode(errors="replace"), err, time.monotonic() - t0


def test_honest_run_lists_and_reads_the_share(probe_image: Path, share: Path, tmp_path: Path) -> None:
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), params="-- ls /mnt/kvm_9p/d")
    assert (status, out) == (0, "entries 7\n"), err[-2000:]  # and . and ..


@pytest.mark.parametrize("platform", [["--realm"], ["--platform", "kvm"]])
def test_mmio_aborts_on_devices_panic_with_a_report(probe_image: Path, tmp_path: Path, platform: list[str]) -> None:
    status, _, err, _ = run(probe_image, tmp_path, *platform, "--hostile", "mmio-sea")
    assert status == 125, err[-2000:]
    assert "panic: GuestFault: synchronous external abort" in err


@pytest.mark.parametrize("platform", [["--realm"], ["--platform", "kvm"]])
def test_mmio_aborts_everywhere_stop_the_guest_cleanly(probe_image: Path, tmp_path: Path, platform: list[str]) -> None:
    """Even the panic path's console faults: the kernel still powers off with its panic
    status instead of dying silently (which left the VMM waiting)."""
    status, out, err, elapsed = run(probe_image, tmp_path, *platform, "--hostile", "mmio-sea-all", timeout=60)
    assert status == 125 and out == "", err[-2000:]
    assert elapsed < 30


def test_garbage_mmio_values_leave_the_app_running(probe_image: Path, tmp_path: Path) -> None:
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--hostile", "mmio-garbage", timeout=60)
    assert (status, out) == (0, "hello\n"), err[-2000:]
    # random registers: rarely two equal reads of the seconds around UIP clear, then a time that is none
    assert re.search(r"RTC: (no two reads of the RTC agree|the RTC reads an invalid time)", err), err[-2000:]


def test_uart_window_mapped_as_ram_is_not_a_console(probe_image: Path, tmp_path: Path) -> None:
    """The console's alias is host memory full of 0xff (data always ready): the kernel's
    ns16550a check refuses it, so there is no endless input and no spinning on output."""
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--hostile", "uart-ram", params="-- cat /dev/stdin",
                              timeout=60)
    assert status == 0 and out == "", err[-2000:]
    assert "is not an ns16550a (IIR 0x01 with FIFOs enabled); no console" in err


def test_endless_readdir_is_an_io_error(probe_image: Path, share: Path, tmp_path: Path) -> None:
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), "--hostile", "p9-readdir-loop",
                              params="-- ls /mnt/kvm_9p/d", timeout=300)
    assert status == 4 and out.startswith("readdir: Input/output error"), (out, err[-2000:])


def test_long_mount_tag_stays_inside_the_config_window(probe_image: Path, share: Path, tmp_path: Path) -> None:
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), "--hostile", "p9-tag-long",
                              params="-- ls /mnt/kvm_9p/d")
    assert status == 3 and out == "opendir: No such file or directory\n", (out, err[-2000:])
    assert "mount tag of 5000 bytes does not fit the 254 bytes of config space" in err


def test_bogus_used_entries_are_io_errors(probe_image: Path, share: Path, tmp_path: Path) -> None:
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), "--hostile", "used-bogus",
                              params="-- cat /mnt/kvm_9p/big")
    # The first request's used entry is wrong: the mount fails with EIO, nothing is mounted.
    assert (status, out) == (5, "open: No such file or directory\n"), (out, err[-2000:])
    assert "9p /virtio@3000000: EIO 9p transport" in err


def test_replies_rewritten_while_parsed_change_nothing(probe_image: Path, share: Path, tmp_path: Path) -> None:
    """TOCTOU: the host overwrites every reply at each later exit; the guest copies a reply
    out of shared memory before it parses it, so what the app reads is what was sent."""
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), "--hostile", "toctou",
                              params="-- cat /mnt/kvm_9p/d/f3")
    assert (status, out) == (0, "file 3\n"), err[-2000:]


def test_rejected_ripas_change_is_noticed(probe_image: Path, tmp_path: Path) -> None:
    """The host does one granule of the boot's RIPAS RAM change and REJECTs the rest: the
    kernel stops instead of carrying on over memory the host kept."""
    status, _, err, _ = run(probe_image, tmp_path, "--realm", "--hostile", "ripas-reject")
    assert status == 125 and "RSI_IPA_STATE_SET (host rejected the change)" in err, err[-2000:]


def test_refused_ripas_change_is_noticed(probe_image: Path, tmp_path: Path) -> None:
    status, _, err, _ = run(probe_image, tmp_path, "--realm", "--hostile", "ripas-refuse")
    assert status == 125 and "RSI_IPA_STATE_SET (no progress)" in err, err[-2000:]


def test_replayed_and_unrequested_ripas_changes_are_refused(probe_image: Path, share: Path, tmp_path: Path) -> None:
    """Around each RIPAS change (the boot's RAM change, the DMA pool going EMPTY) the host
    calls RTT_SET_RIPAS below the request, past its top, for the previous change and for the
    finished one: the RMM answers each with ERROR_INPUT, no RTT entry moves; the REJECT
    response it then sends over the completed change is not passed on (the kernel would
    stop on a REJECT), and the realm goes on reading its share correctly."""
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--9p", str(share), "--hostile", "ripas-replay",
                              params="-- cat /mnt/kvm_9p/d/f3")
    assert (status, out) == (0, "file 3\n"), err[-2000:]
    refused = [line for line in err.splitlines() if "hostile ripas-replay: RTT_SET_RIPAS" in line]
    kinds = {line.split("(", 1)[1].split(")", 1)[0] for line in refused}
    assert kinds == {"below the range asked for", "past the top asked for", "a replay of the previous change",
                     "a replay of this change, already done"}, err[-3000:]
    assert all("-> ERROR_INPUT, RTT entries unchanged" in line for line in refused), refused
    assert "REC_ENTER with RIPAS_RESPONSE (REJECT) over a completed change" in err
    assert "host rejected the change" not in err


def test_device_window_in_protected_ram_is_not_shared(probe_image: Path, tmp_path: Path) -> None:
    """The device tree puts the RTC inside the realm's RAM: the kernel keeps that memory
    protected (RIPAS RAM, not EMPTY) and reads a clock from it no more than it trusts it."""
    status, out, err, _ = run(probe_image, tmp_path, "--realm", "--hostile", "dtb-device-in-ram",
                              params="loglevel=7 --")
    assert (status, out) == (0, "hello\n"), err[-2000:]
    assert "RIPAS is not EMPTY; left protected" in err
    mapped = [line for line in err.splitlines() if "mapped unprotected at IPA |" in line]
    assert mapped and "mc146818" not in mapped[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hostile", "nope"], "unknown attack 'nope'"),
        (["--hostile", "uart-ram"], "--hostile uart-ram needs --realm"),
        (["--realm", "--hostile", "p9-readdir-loop"], "needs a --9p share"),
        (["--realm", "--hostile", "toctou"], "needs a virtio device (--9p, -n or --console virtio)"),
    ],
)
def test_attacks_that_cannot_act_are_refused(probe_image: Path, argv: list[str], message: str) -> None:
    proc = subprocess.run([*UNIREALM, "run", "-k", str(probe_image), *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
