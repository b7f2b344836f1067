"""What an application at EL0 may touch of the system registers (tests/e2e/progs/el0_sysregs.c):
the virtual counter, CTR_EL0, DCZID_EL0, TPIDR_EL0 and DC ZVA work, an EL1 register read or
write and a DAIF write are UNDEFINED and end in a SIGILL its handler catches. The unikernel's
output must be the same binary's under qemu-aarch64-static, line for line: the application
runs at EL0 with EL1's controls set as Linux sets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, qemu_stdout, static_program, unirealm_run

SOURCE = ROOT / "tests/e2e/progs/el0_sysregs.c"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return static_program(tmp_path_factory, SOURCE)


@pytest.fixture(scope="module")
def under_qemu(program: Path) -> bytes:
    return qemu_stdout(program)


@pytest.mark.parametrize("platform", ["kvm", "realm"])
def test_el0_system_register_access_matches_linux(platform: str, program: Path, under_qemu: bytes,
                                                  tmp_path: Path) -> None:
    image = tmp_path / "el0.img"
    image.write_bytes(build_image(program.read_bytes(), "el0_sysregs"))
    res = unirealm_run(image, *PLATFORMS[platform], params="--", tmp=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().splitlines() == under_qemu.decode().splitlines()
    assert b"CurrentEL: SIGILL" in res.stdout and b"dc zva: its block zeroed 1, the rest kept 1" in res.stdout
