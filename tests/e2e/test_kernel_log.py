"""The kernel log at the unikernel's default console loglevel (Linux's `quiet`: errors
only) and with the full log asked for on the command line (`loglevel=7`, `debug`): the
default launch prints no boot chatter but still its errors and panics, and each byte it
leaves out is a REC exit saved."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm

from . import test_vmm
from .test_vmm import REPO, compile_c, needs_cc

# test_vmm's fixtures: the helloworld image, the platform's data directory
hello_image, data_dir = test_vmm.hello_image, test_vmm.data_dir

BOOT_LINES = ("RSI 1.0 detected: running as a realm", "RIPAS RAM set over", "mapped unprotected at IPA",
              "MiB free of", "helloworld exited with status 0")
SEGV_C = r"""
#include <stdio.h>
int main(void) { puts("before"); fflush(stdout); *(volatile int *)8 = 1; return 0; }
"""


def launch(image: Path, *argv: str) -> tuple[int, int, str, str]:
    """(status, the VMM's exits, the app's output, the kernel log)."""
    cfg = RunConfig.from_args(run_parser().parse_args(["-k", str(image), *argv]))
    out, log = io.BytesIO(), io.BytesIO()
    result = Vmm(cfg, out, None, log_output=log).run()
    return result.status, result.exits, out.getvalue().decode(), log.getvalue().decode()


@needs_cc
def test_the_default_log_is_quiet_and_the_full_log_costs_an_exit_a_byte(hello_image: Path) -> None:
    status, quiet_exits, out, log = launch(hello_image, "--realm", "-p", "-- x")
    assert (status, log) == (0, "")
    assert out.startswith("Hello from unirealm! argc=2")
    status, full_exits, full_out, full_log = launch(hello_image, "--realm", "-p", "loglevel=7 -- x")
    assert (status, full_out) == (0, out)
    for line in BOOT_LINES:
        assert line in full_log, full_log
    # Every byte on the 16550 is an MMIO exit (and a LSR read per 16): all of them saved.
    assert full_exits - quiet_exits >= len(full_log.encode()), (quiet_exits, full_exits)


@needs_cc
@pytest.mark.parametrize("params", ["debug -- x", "quiet loglevel=7 -- x", "loglevel=x debug -- x"])
def test_debug_and_loglevel_give_the_full_log(hello_image: Path, params: str) -> None:
    status, _, _, log = launch(hello_image, "--platform", "kvm", "-p", params)
    assert status == 0
    assert "RSI: NOT_SUPPORTED -> not a realm" in log and "helloworld exited with status 0" in log
    assert ("malformed option 'loglevel=x'" in log) == ("loglevel=x" in params)


@needs_cc
def test_quiet_after_loglevel_and_a_malformed_loglevel_stay_quiet_but_say_so(hello_image: Path) -> None:
    assert launch(hello_image, "--realm", "-p", "loglevel=7 quiet -- x")[3] == ""
    log = launch(hello_image, "--realm", "-p", "loglevel=7x -- x")[3]
    assert log == "unirealm: malformed option 'loglevel=7x' (0..15): ignored\n"


@needs_cc
def test_the_quiet_default_still_prints_a_crash(tmp_path: Path) -> None:
    image = tmp_path / "segv.img"
    image.write_bytes(build_image(compile_c(SEGV_C, tmp_path / "segv"), "segv"))
    status, _, out, log = launch(image, "--realm")
    assert (status, out) == (128 + 11, "before\n")
    assert "/segv: segmentation fault at " in log and "exited with status" not in log


@needs_cc
def test_the_quiet_default_still_prints_a_panic(hello_elf: bytes, tmp_path: Path) -> None:
    kernel_src = (REPO / "src" / "unirealm" / "guest" / "kernel.py").read_text()
    anchor = "        self.start_clock()\n"
    assert kernel_src.count(anchor) == 1
    panicking = kernel_src.replace(anchor, anchor + '        raise RuntimeError("the clock broke")\n')
    image = tmp_path / "panic.img"
    image.write_bytes(build_image(hello_elf, "helloworld", extra={"guest/kernel.py": panicking.encode()}))
    status, _, out, log = launch(image, "--realm")
    assert (status, out) == (125, "")
    assert log == "unirealm: panic: RuntimeError: the clock broke\n"


@needs_cc
def test_what_an_option_asks_for_shows_at_the_quiet_default(hello_image: Path) -> None:
    status, _, _, log = launch(hello_image, "--realm", "-p", f"attest={'00' * 32} ukrsi.selftest -- x")
    assert status == 0
    assert "ukrsi.selftest: RSI_VERSION(1.0) -> SUCCESS [ok]" in log
    assert "unirealm: attestation token (" in log and "unirealm: end of attestation token" in log
    assert "RIPAS RAM set over" not in log
