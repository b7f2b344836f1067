"""Translated code with stops only at block starts (machine/vcpu_stops.py) against the same
vCPU with Unicorn's look for a stop after every load and store left in (BASELINE: the flag
cleared on the engine before it translates anything), back to back in one run: a loop of
loads and stores over mapped RAM, run to its end with no stop. Rates are higher-is-better;
the ratio is block-start stops ÷ looks after each access.

`python bench/stops_bench.py` (needs aarch64-linux-gnu-as/ld/objcopy)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from unirealm.arch.memory import World  # noqa: E402
from unirealm.machine.memory import PhysicalMemory  # noqa: E402
from unirealm.machine.vcpu import Mapping, SmcTrap, VCpu  # noqa: E402
from unirealm.machine.vcpu_stops import no_exit_request_offset  # noqa: E402

CODE, DATA = 0x4000_0000, 0x4000_1000
ITERATIONS = 2_000_000
ROUNDS = 5
LOOP = f"""
    movz x10, #{ITERATIONS & 0xFFFF}
    movk x10, #{ITERATIONS >> 16}, lsl #16
    movz x2, #0x1000
    movk x2, #0x4000, lsl #16
1:  ldr x3, [x2]
    ldr x4, [x2, #8]
    add x3, x3, x4
    str x3, [x2, #16]
    ldp x5, x6, [x2]
    stp x6, x5, [x2, #32]
    subs x10, x10, #1
    b.ne 1b
    smc #0
"""
ACCESSES_PER_ITERATION = 5


def assemble(workdir: Path) -> bytes:
    src, obj, elf, binary = (workdir / f"loop.{ext}" for ext in ("S", "o", "elf", "bin"))
    src.write_text(LOOP)
    for cmd in (["aarch64-linux-gnu-as", str(src), "-o", str(obj)],
                ["aarch64-linux-gnu-ld", f"-Ttext={CODE:#x}", "-e", f"{CODE:#x}", str(obj), "-o", str(elf)],
                ["aarch64-linux-gnu-objcopy", "-O", "binary", str(elf), str(binary)]):
        subprocess.run(cmd, check=True, capture_output=True)
    return binary.read_bytes()


def one_run(code: bytes, looks_after_accesses: bool) -> float:
    memory = PhysicalMemory(1 << 20)
    memory.accessor(World.NON_SECURE).write(memory.base, code)
    pages = {CODE: memory.base, DATA: memory.base + 0x1000}
    cpu = VCpu(memory, lambda ipa, w, f: Mapping(pages[ipa], World.NON_SECURE) if ipa in pages else None)
    if looks_after_accesses:  # the baseline: before anything is translated
        address = ctypes.cast(cpu.uc._uch, ctypes.c_void_p).value or 0
        ctypes.c_bool.from_address(address + no_exit_request_offset()).value = False
    cpu.reset(CODE)
    start = time.perf_counter()
    trap = cpu.run()
    elapsed = time.perf_counter() - start
    assert isinstance(trap, SmcTrap), trap
    cpu.close()
    return ITERATIONS * ACCESSES_PER_ITERATION / elapsed


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        code = assemble(Path(tmp))
    best = {False: 0.0, True: 0.0}
    for _ in range(ROUNDS):  # alternating, best of
        for baseline in (True, False):
            best[baseline] = max(best[baseline], one_run(code, baseline))
    print(f"accesses/s, stops at block starts: {best[False] / 1e6:.1f} M")
    print(f"accesses/s, looks after each access (baseline): {best[True] / 1e6:.1f} M")
    print(f"ratio: {best[False] / best[True]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
