"""The guest's protocols (guest/interfaces.py) describe the real classes: mypy checks that
the machine's GuestCpu/El0Space, the kernel, a process and its syscall layer satisfy them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is in the test extras")

ROOT = Path(__file__).resolve().parents[2]

CONFORMANCE = """
from unirealm.guest import interfaces
from unirealm.guest.kernel import BootInfo, Device, Kernel
from unirealm.guest.process import Process
from unirealm.guest.syscalls import Syscalls
from unirealm.machine.el0space import El0Space
from unirealm.machine.pykernel import GuestCpu


def check(cpu: GuestCpu, space: El0Space, kernel: Kernel, process: Process, calls: Syscalls,
          info: BootInfo, device: Device) -> None:
    a: interfaces.Cpu = cpu
    b: interfaces.El0Space = space
    c: interfaces.Kernel = kernel
    d: interfaces.Task = process
    e: interfaces.SyscallEntry = calls
    f: interfaces.BootFacts = info
    g: interfaces.DeviceFacts = device
"""

BROKEN = """
from unirealm.guest import interfaces


class NotACpu:
    def read(self, ipa: int, size: int) -> bytes:
        return b""


def check(cpu: NotACpu) -> None:
    a: interfaces.Cpu = cpu
"""


def _mypy(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    monkeypatch.setenv("MYPYPATH", str(ROOT / "src"))  # this tree's sources, not an installed copy
    path = tmp_path / "conformance.py"
    path.write_text(textwrap.dedent(source))
    out, err, status = mypy_api.run([
        "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
        "--follow-imports", "silent", str(path)])
    return out + err, status


def test_real_classes_satisfy_the_protocols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, status = _mypy(tmp_path, CONFORMANCE, monkeypatch)
    assert status == 0, out


def test_a_class_missing_members_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, status = _mypy(tmp_path, BROKEN, monkeypatch)
    assert status == 1 and 'expression has type "NotACpu", variable has type "Cpu"' in out, out
