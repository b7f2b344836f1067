"""Realm launch -> app main, and DATA_CREATE throughput, each against a baseline measured in
the same process: launch time as a ratio to the same image booted as a plain VM (from
Vmm.run() in this process, and for the whole `unirealm run` command from its start), and
DATA_CREATE (measured) as a ratio to hashlib SHA-256 over the same bytes, in CPU time."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL
from unirealm.arch.rmi import RmiDataFlags, RmiFid
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.kvm import RealmConfig, RealmVm
from unirealm.host.rmi_client import HostPages
from unirealm.host.vmm import Vmm
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm

REPO = Path(__file__).resolve().parents[1]
MARK = b"Hello from unirealm"


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's live children: the kernel process."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for task in os.listdir("/proc/self/task"):
        for pid in Path(f"/proc/self/task/{task}/children").read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Stamp(io.BytesIO):
    """Console output that notes when the app's first line appears: the wall time, the
    VMM's CPU time and its kernel process's, and the VMM's exits so far."""

    def __init__(self) -> None:
        super().__init__()
        self.at: tuple[float, float, float] | None = None
        self.vmm: Vmm | None = None
        self.exits = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = super().write(data)
        if self.at is None and MARK in self.getvalue():
            self.at = (time.perf_counter(), time.process_time(), children_cpu())
            self.exits = self.vmm.exits if self.vmm is not None else 0
        return n


@dataclass
class Launch:
    wall: float  # seconds from Vmm.run() to the app's first line
    cpu: float  # CPU seconds meanwhile: the VMM's and its kernel process's
    exits: int  # the VMM's exits (REC exits for a realm) before it


def launch_to_main(image: Path, env: list[str]) -> Launch:
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-k", str(image)]))
    out = Stamp()
    start, cpu = time.perf_counter(), time.process_time()
    out.vmm = Vmm(cfg, out, None, log_output=io.BytesIO())
    out.vmm.run()
    assert out.at is not None, out.getvalue()
    wall, vmm_cpu, child_cpu = out.at
    return Launch(wall - start, vmm_cpu - cpu + child_cpu, out.exits)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its live children (its kernel process)."""
    tick, total, pids = os.sysconf("SC_CLK_TCK"), 0.0, [str(pid)]
    for task in os.listdir(f"/proc/{pid}/task"):
        pids += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def command_to_main(image: Path, env: list[str], src: Path = REPO / "src", cache: Path | None = None) -> Launch:
    """`unirealm run ENV -k IMAGE` as a user runs it, from its process's start to the app's
    first line on stdout: the wall time and the CPU time of the command and its kernel
    process by then (exits: 0, not seen from outside). Python's bytecode caches go to
    `cache` (an installed package has them; PYTHONDONTWRITEBYTECODE would compile every
    module of the VMM at every launch)."""
    environ = dict(os.environ, PYTHONPATH=str(src))
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if cache is not None:
        environ["PYTHONPYCACHEPREFIX"] = str(cache)
    argv = [sys.executable, "-m", "unirealm", "run", *env, "-k", str(image)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=environ)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    wall, cpu = time.perf_counter() - start, process_cpu(proc.pid)
    proc.stdout.read()
    proc.wait()
    assert MARK in line, line
    return Launch(wall, cpu, 0)


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


def data_create_seconds(size: int, batch: int = 128) -> tuple[float, float, float]:
    """CPU seconds per `batch` granules, min over the batches of `size` bytes: (RMI_DATA_CREATE
    alone, on granules delegated and RTTs made beforehand; the host's populate, which also
    delegates and copies each granule; hashlib SHA-256 over the same 4 KiB granules). The
    three alternate batch by batch, so a loaded machine slows each alike."""
    machine = Machine(dram_size=size * 4 + (64 << 20))
    Rmm(machine.monitor)
    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    n = size // GRANULE_SIZE
    content = os.urandom(size)
    view = memoryview(content)  # a batch's slice for populate without a copy (a fresh 512 KiB buffer per batch,
    # its pages first touched inside the timed call, was most of what the row used to add)
    srcs = vm.pages.alloc_contiguous(n)
    vm.pages.mem.write(srcs, content)
    base, populated = 0x8000_0000, 0x8000_0000 + size
    for off in range(0, 2 * size, 2 << 20):
        vm.ensure_rtt(base + off, RTT_PAGE_LEVEL)
    datas = [vm.delegated() for _ in range(n)]
    best = [float("inf")] * 3
    call, fid, rd, flags = vm.rmi.call, RmiFid.DATA_CREATE, vm.rd, RmiDataFlags.MEASURED
    for first in range(0, n, batch):
        span = range(first, min(first + batch, n))
        start = time.process_time()
        for i in span:
            call(fid, rd, datas[i], base + i * GRANULE_SIZE, srcs + i * GRANULE_SIZE, flags)
        rmi = time.process_time() - start
        vm.data.update((base + i * GRANULE_SIZE, datas[i]) for i in span)
        chunk = view[first * GRANULE_SIZE : span.stop * GRANULE_SIZE]  # the image's bytes, as a loader holds them
        start = time.process_time()
        vm.populate(populated + first * GRANULE_SIZE, chunk)
        populate = time.process_time() - start
        start = time.process_time()
        for i in span:
            hashlib.sha256(content[i * GRANULE_SIZE : (i + 1) * GRANULE_SIZE]).digest()
        sha = time.process_time() - start
        best = [min(b, t) for b, t in zip(best, (rmi, populate, sha), strict=True)]
    return best[0], best[1], best[2]  # the machine goes with the realm in it


def run(repeat: int = 3) -> list[tuple[str, float, float, str]]:
    """The rows `make bench` prints: (benchmark, measured, baseline, unit)."""
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
        vms, realms = [], []
        for _ in range(repeat):  # alternating, so a loaded machine slows both alike
            vms.append(launch_to_main(image, ["--platform", "kvm"]))
            realms.append(launch_to_main(image, ["--realm"]))
        rows.append(("launch -> app main (wall): realm vs plain VM", min(r.wall for r in realms),
                     min(v.wall for v in vms), "s"))
        rows.append(("launch -> app main (CPU: VMM + kernel process): realm vs plain VM",
                     min(r.cpu for r in realms), min(v.cpu for v in vms), "s"))
        rows.append(("exits before app main: realm (REC exits) vs plain VM", realms[0].exits, vms[0].exits, "exits"))
        cache = Path(tmp) / "pycache"
        command_to_main(image, ["--realm"], cache=cache)  # writes the bytecode caches
        vm_cmds, realm_cmds = [], []
        for _ in range(repeat):
            vm_cmds.append(command_to_main(image, ["--platform", "kvm"], cache=cache))
            realm_cmds.append(command_to_main(image, ["--realm"], cache=cache))
        rows.append(("unirealm run: process start -> app main (wall): realm vs plain VM",
                     min(r.wall for r in realm_cmds), min(v.wall for v in vm_cmds), "s"))
        rows.append(("unirealm run: process start -> app main (CPU: VMM + kernel process): realm vs plain VM",
                     min(r.cpu for r in realm_cmds), min(v.cpu for v in vm_cmds), "s"))
        small = min(realm_build_seconds(image, "64M") for _ in range(repeat))
        large = min(realm_build_seconds(image, "2G") for _ in range(repeat))
        rows.append(("realm build (CREATE..ACTIVATE): -m 2G vs -m 64M", large, small, "s"))
        rmi, populate, sha = data_create_seconds(16 << 20)  # 32 batches: a steadier minimum on a loaded machine
        rows.append(("DATA_CREATE (measured) per 128 granules vs hashlib SHA-256 (CPU)", rmi, sha, "s"))
        rows.append(("populate (delegate, copy, DATA_CREATE) per 128 granules vs hashlib (CPU)", populate, sha, "s"))
    return rows


if __name__ == "__main__":
    for name, value, base, unit in run():
        print(f"{name}: {value:.4f} {unit} vs {base:.4f} {unit} = {value / base:.2f}x")
