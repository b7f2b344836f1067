"""Realm launch -> app main, and DATA_CREATE throughput, each against a baseline measured in
the same process: launch time as a ratio to the same image booted as a plain VM, and
DATA_CREATE (measured) as a ratio to hashlib SHA-256 over the same bytes."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
import time
from pathlib import Path

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.kvm import HostPages, RealmConfig, RealmVm
from unirealm.host.vmm import Vmm
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm

REPO = Path(__file__).resolve().parents[1]
MARK = b"Hello from unirealm"


class Stamp(io.BytesIO):
    """Console output that notes when the app's first line appears."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = super().write(data)
        if self.at is None and MARK in self.getvalue():
            self.at = time.perf_counter()
        return n


def launch_to_main(image: Path, env: list[str]) -> float:
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-k", str(image)]))
    out = Stamp()
    start = time.perf_counter()
    Vmm(cfg, out, None, log_output=io.BytesIO()).run()
    assert out.at is not None, out.getvalue()
    return out.at - start


def realm_build_seconds(image: Path, mem: str) -> float:
    """REALM_CREATE .. REALM_ACTIVATE of `run --realm -m MEM` (RIPAS RAM over all of RAM,
    then the images): it must not grow with RAM (RTT_INIT_RIPAS per block, not per granule)."""
    vmm = Vmm(RunConfig.from_args(run_parser().parse_args(["--realm", "-k", str(image), "-m", mem])), io.BytesIO(),
              None)
    machine = Machine(dram_size=vmm.cfg.ram_size + (128 << 20), rme=True)
    Rmm(machine.monitor)
    vm = vmm.realm_vm(machine)
    start = time.perf_counter()
    vmm.build_realm(vm)
    elapsed = time.perf_counter() - start
    vm.destroy()
    return elapsed


def data_create_seconds(size: int) -> tuple[float, float]:
    machine = Machine(dram_size=size * 3 + (64 << 20))
    Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    content = os.urandom(size)
    start = time.perf_counter()
    vm.populate(0x8000_0000, content, measured=True)
    rmi = time.perf_counter() - start
    start = time.perf_counter()
    for off in range(0, size, 4096):
        hashlib.sha256(content[off : off + 4096]).digest()
    sha = time.perf_counter() - start
    vm.destroy()
    return rmi, sha


def run(repeat: int = 3) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("UNIREALM_DATA_DIR", tmp)
        elf = Path(tmp) / "hello"
        subprocess.run(
            ["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf), str(REPO / "examples/helloworld/hello.c")],
            check=True,
        )
        image = Path(tmp) / "hello.img"
        image.write_bytes(build_image(elf.read_bytes(), "helloworld"))
        vm = min(launch_to_main(image, ["--platform", "kvm"]) for _ in range(repeat))
        realm = min(launch_to_main(image, ["--realm"]) for _ in range(repeat))
        rows.append(("launch -> app main: realm vs plain VM", realm, vm, "s"))
        small = min(realm_build_seconds(image, "64M") for _ in range(repeat))
        large = min(realm_build_seconds(image, "2G") for _ in range(repeat))
        rows.append(("realm build (CREATE..ACTIVATE): -m 2G vs -m 64M", large, small, "s"))
        size = 8 << 20
        rmi, sha = min(data_create_seconds(size) for _ in range(repeat))
        rows.append((f"DATA_CREATE {size >> 20} MiB measured vs hashlib SHA-256", rmi, sha, "s"))
    return rows
