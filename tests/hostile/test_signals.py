"""Ctrl-C and SIGTERM stop `unirealm run` within seconds whatever the guest does: a tight
EL0 loop that never traps, a loop of syscalls, a guest sleeping, with and without a
user-mode network and hostfwd."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT, UNIREALM, c_image

SPIN_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
int main(int argc, char **argv) {
    printf("ready\n"); fflush(stdout);
    volatile unsigned long n = 0;
    if (argc > 1 && !strcmp(argv[1], "spin")) for (;;) n++;
    if (argc > 1 && !strcmp(argv[1], "sys")) for (;;) n += getpid();
    struct timespec ts = {1, 0};
    for (;;) nanosleep(&ts, 0);
}
"""


@pytest.fixture(scope="module")
def spin_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_image(tmp_path_factory, "spin", SPIN_C)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(image: Path, tmp: Path, mode: str, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp / "data"))
    cmd = [*UNIREALM, "run", "-k", str(image), *extra, f"--params=-- {mode}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the guest is running its loop once it has said so
    assert line == b"ready\n", (line, proc.stderr.read() if proc.poll() is not None else b"")
    time.sleep(0.3)
    return proc


def stop_within(proc: subprocess.Popen[bytes], sig: int, seconds: float) -> tuple[int, str]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"unirealm run did not stop within {seconds} s of {signal.Signals(sig).name}")
    assert time.monotonic() - t0 < seconds
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.parametrize(
    ("mode", "platform", "sig"),
    [
        ("spin", "--realm", signal.SIGINT),
        ("spin", "--platform=kvm", signal.SIGTERM),
        ("sys", "--realm", signal.SIGINT),
        ("sys", "--platform=rme", signal.SIGTERM),
        ("sleep", "--realm", signal.SIGINT),
    ],
)
def test_signal_stops_the_run(spin_image: Path, tmp_path: Path, mode: str, platform: str, sig: int) -> None:
    proc = start(spin_image, tmp_path, mode, platform)
    status, err = stop_within(proc, sig, 5)
    assert status == 128 + sig, err
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(sig).name}" in err


@pytest.mark.parametrize("mode", ["spin", "sys"])
def test_signal_stops_a_run_with_a_network_and_hostfwd(spin_image: Path, tmp_path: Path, mode: str) -> None:
    port = free_port()
    proc = start(spin_image, tmp_path, mode, "--realm", "-n", f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:80")
    status, err = stop_within(proc, signal.SIGINT, 5)
    assert status == 130 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def httpreply_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_image(tmp_path_factory, "httpreply", (ROOT / "examples/httpreply/httpreply.c").read_text())


def http_get(port: int, timeout: float = 20) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def test_hostfwd_clients_cannot_crash_or_wedge_the_vmm(httpreply_image: Path, tmp_path: Path) -> None:
    """Connect/disconnect storms, RSTs, half-open connections and garbage from host clients of
    a forwarded port: the server in the realm still answers, and SIGTERM still stops it."""
    import socket
    import struct

    port = free_port()
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp_path / "data"))
    cmd = [*UNIREALM, "run", "-k", str(httpreply_image), "--realm", "-n",
           f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:8123", "--params=--"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert b"Hello, World!" in http_get(port, 5)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        held = []
        for i in range(300):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            if i % 3 == 0:  # RST at once
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            elif i % 3 == 1:  # garbage, then half-close and keep it open
                s.sendall(os.urandom(1500) + b"\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                held.append(s)
            else:  # connect and disconnect
                s.close()
        for s in held[:50]:  # RST the half-open ones while the guest may be answering them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        assert b"Hello, World!" in http_get(port)
        for s in held[50:]:
            s.close()
        assert b"Hello, World!" in http_get(port)
        assert proc.poll() is None
        status, err = stop_within(proc, signal.SIGTERM, 5)  # type: ignore[arg-type]
        assert status == 128 + signal.SIGTERM and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
