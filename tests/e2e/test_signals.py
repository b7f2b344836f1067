"""Signals delivered to handlers in the unikernel, against Linux's behaviour as
qemu-aarch64-static emulates it: tests/e2e/progs/signals.c (sigaction with SA_SIGINFO,
raise and kill, masks and pending signals, SA_RESETHAND and SA_NODEFER, nested handlers,
sigaltstack with SA_ONSTACK, setitimer/alarm with pause, sigsuspend and nanosleep, EINTR
and SA_RESTART on a pipe read, SIGPIPE, SIGSEGV with siglongjmp, BRK and UDF handlers that
step over the instruction, FP/SIMD registers and FPCR kept across a handler,
sigtimedwait, a signal to a forked child, SIGCHLD with its siginfo around an SA_RESTART
waitpid, a child killed by a signal's default action and by a fault (WIFSIGNALED, WTERMSIG,
no WCOREDUMP, CLD_KILLED) and one whose exit code is cut to 8 bits, and threads: pthread_kill interrupting a blocked read, sigwait in a thread
taking a process-directed signal, a handler in the middle of a condvar wait) prints one line per behaviour; the unikernel's
output must be qemu's, line for line. abort() ends the program with 128 + SIGABRT."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, qemu_stdout, static_program, unirealm_run

QEMU = shutil.which("qemu-aarch64-static")
SOURCE = ROOT / "tests/e2e/progs/signals.c"
SIGABRT = 6


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return static_program(tmp_path_factory, SOURCE)


@pytest.fixture(scope="module")
def image(program: Path) -> Path:
    img = program.with_suffix(".img")
    img.write_bytes(build_image(program.read_bytes(), "signals"))
    return img


@pytest.fixture(scope="module")
def under_qemu(program: Path) -> bytes:
    out = qemu_stdout(program)
    assert out.endswith(b"done\n")
    return out


@pytest.mark.parametrize("platform", ["kvm", "realm"])
def test_signal_behaviour_matches_linux(platform: str, image: Path, under_qemu: bytes, tmp_path: Path) -> None:
    res = unirealm_run(image, *PLATFORMS[platform], params="--", tmp=tmp_path, timeout=300)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0, err
    assert res.stdout.decode().splitlines() == under_qemu.decode().splitlines()
    assert "Traceback" not in err


def test_abort_ends_with_128_plus_sigabrt(image: Path, program: Path, tmp_path: Path) -> None:
    res = unirealm_run(image, *PLATFORMS["kvm"], params="-- abort", tmp=tmp_path, timeout=120)
    assert res.stdout == b"aborting\n"
    assert res.returncode == 128 + SIGABRT, res.stderr.decode()
    if QEMU is not None:  # the same program dies of SIGABRT under qemu
        ref = subprocess.run([QEMU, str(program), "abort"], capture_output=True, timeout=60, check=False)
        assert ref.returncode in (-SIGABRT, 128 + SIGABRT) and ref.stdout == b"aborting\n"
