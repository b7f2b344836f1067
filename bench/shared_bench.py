"""Shared memory in a realm: a bare-metal realm (tests/baremetal/shared.S) converts 1024
pages to EMPTY and writes and reads each through its unprotected alias. Measured with the
host mapping the alias in the RIPAS change exit (the default) against the same run with
mapping on first touch (one SYNC exit per page), in the same process: REC exits and time."""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.baremetal.guest_build import build  # noqa: E402

from unirealm.host.cmdline import RunConfig, run_parser  # noqa: E402
from unirealm.host.kvm import RealmVm  # noqa: E402
from unirealm.host.vmm import Vmm  # noqa: E402
from unirealm.machine.board import Machine  # noqa: E402


def run(image: Path, ahead: bool) -> tuple[float, int]:
    cfg = RunConfig.from_args(run_parser().parse_args(["--realm", "-k", str(image)]))
    vmm = Vmm(cfg, io.BytesIO(), None, log_output=io.BytesIO())
    plain = vmm.realm_vm

    def configured(machine: Machine) -> RealmVm:
        vm = plain(machine)
        vm.map_shared_ahead = ahead
        return vm

    vmm.realm_vm = configured  # type: ignore[method-assign]
    start = time.perf_counter()
    result = vmm.run()
    elapsed = time.perf_counter() - start
    if result.status != 0:
        raise SystemExit("the shared-memory realm failed its check")
    return elapsed, result.exits


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = build("shared", Path(tmp)).image
        touch_s, touch_exits = run(image, ahead=False)
        ahead_s, ahead_exits = run(image, ahead=True)
    print(f"1024 shared pages, map on first touch: {touch_s:.2f} s, {touch_exits} REC exits")
    print(f"1024 shared pages, mapped in the RIPAS change: {ahead_s:.2f} s, {ahead_exits} REC exits")
    print(f"speed-up {touch_s / ahead_s:.2f}x, exits {touch_exits / ahead_exits:.0f}x fewer")


if __name__ == "__main__":
    main()
