"""Pages a realm converts to EMPTY are mapped unprotected by the host in the RIPAS change
exit: touching them costs no REC exit each (tests/baremetal/shared.S, 1024 pages)."""

from __future__ import annotations

import io

import pytest

from unirealm.host import kvm
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.vmm import Vmm
from unirealm.machine.board import Machine

from .guest_build import build

PAGES = 1024


@pytest.mark.parametrize("ahead", [True, False], ids=["mapped-ahead", "on-first-touch"])
def test_shared_pages_are_mapped_in_the_ripas_change(
    tmp_path: object, ahead: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest = build("shared", tmp_path)  # type: ignore[arg-type]
    realm_vm = Vmm.realm_vm

    def configured(self: Vmm, machine: Machine) -> kvm.RealmVm:
        vm = realm_vm(self, machine)
        vm.map_shared_ahead = ahead
        return vm

    monkeypatch.setattr(Vmm, "realm_vm", configured)
    cfg = RunConfig.from_args(run_parser().parse_args(["--realm", "-k", str(guest.image)]))
    vmm = Vmm(cfg, io.BytesIO(), None, log_output=io.BytesIO())
    result = vmm.run()
    assert result.status == 0  # every shared page read back what was written
    if ahead:
        assert result.exits < 50
    else:
        assert result.exits >= PAGES  # one SYNC exit per page's first touch
