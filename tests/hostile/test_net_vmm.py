"""`unirealm run --hostile net-garbage,net-rst-storm,net-bad-ack`: examples/httpreply behind
the user-mode network while the VMM forges malformed frames, wrong-sequence RSTs and SYNs
and wrong handshake ACKs around every real frame. Every request gets its exact answer, the
guest neither crashes nor resets a real connection, and the VMM reports what it forged."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import ROOT, UNIREALM, c_image
from .test_signals import free_port, http_get

ATTACKS = "net-garbage,net-rst-storm,net-bad-ack"
ANSWER = b"HTTP/1.0 200 OK"  # httpreply's status line; the body follows
BODY = b"Hello, World!\n"


@pytest.fixture(scope="module")
def httpreply_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return c_image(tmp_path_factory, "httpreply", (ROOT / "examples/httpreply/httpreply.c").read_text())


def body(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("platform", [["--platform", "kvm"], ["--realm"]], ids=["kvm", "realm"])
def test_httpreply_answers_through_forged_frames(platform: list[str], httpreply_image: Path, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp_path / "data"))
    cmd = [*UNIREALM, "run", "-k", str(httpreply_image), *platform, "--hostile", ATTACKS, "-n",
           f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:8123", "--params=--"]
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if body(http_get(port, 10)) == BODY:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.3)
        for _ in range(10):
            assert body(http_get(port)) == BODY
        replies: list[bytes] = []
        threads = [threading.Thread(target=lambda: replies.append(http_get(port, 60))) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert [body(r) for r in replies] == [BODY] * 5
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
    log = err_path.read_text(errors="replace")
    assert "Traceback" not in log and "panic" not in log, log
    forged = re.search(r"hostile: (\d+) frames forged", log)
    assert forged and int(forged.group(1)) > 100, log
