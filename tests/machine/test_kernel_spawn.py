"""A kernel process's interpreter started before its VM exists (machine/kernel_spawn.py):
it waits for SETUP, ends by itself when its engine goes away first, and the first VM that
needs a kernel process takes it."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm
from unirealm.machine import kernel_spawn
from unirealm.machine.kernel_spawn import Spawn

HELLO_C = Path(__file__).resolve().parents[2] / "examples" / "helloworld" / "hello.c"


def test_an_interpreter_whose_engine_goes_away_before_setup_ends_by_itself() -> None:
    spawn = Spawn()
    spawn.sock.close()  # no SETUP will ever come
    assert spawn.proc.wait(60) == 0


def test_an_unused_early_interpreter_is_discarded() -> None:
    kernel_spawn.discard_early()
    kernel_spawn.start_early()
    kernel_spawn.start_early()  # at most one
    assert len(kernel_spawn._EARLY) == 1
    proc = kernel_spawn._EARLY[0].proc
    kernel_spawn.discard_early()
    assert kernel_spawn._EARLY == [] and proc.returncode is not None


@pytest.mark.parametrize("env", [["--realm"], ["--platform", "kvm"]], ids=["realm", "kvm"])
def test_the_first_vm_takes_the_early_interpreter(env: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(tmp_path / "data"))
    elf = tmp_path / "hello"
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(HELLO_C)], check=True)
    image = tmp_path / "hello.img"
    image.write_bytes(build_image(elf.read_bytes(), "helloworld"))
    kernel_spawn.discard_early()
    kernel_spawn.start_early()
    early = kernel_spawn._EARLY[0].proc
    out = io.BytesIO()
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-k", str(image), "-p", "-- early"]))
    assert Vmm(cfg, out, None, log_output=io.BytesIO()).run().status == 0
    assert b"argv[1] = early" in out.getvalue()
    assert kernel_spawn._EARLY == []  # taken, and ended with its VM
    assert early.poll() is not None
