"""The RMI/RSI command stream of tests/rmm/test_state_machine.py, run longer: the same rules
and invariants (a delegated granule never readable from NS, RIM frozen after ACTIVATE, REMs
changed only by MEASUREMENT_EXTEND, no exception past the SMC boundary), with every call
counted. `make fuzz` runs at least 10^5 calls; `make test` a few thousand."""

from __future__ import annotations

from hypothesis import settings

from rmm.test_state_machine import RmmMachine  # tests/rmm, whose rules and invariants this reuses

from .conftest import REPORT, budget, fuzz_settings


class CountingRmm(RmmMachine):
    def smc(self, fid: int, *args: int):  # type: ignore[no-untyped-def]
        REPORT["RMI calls"] += 1
        return super().smc(fid, *args)


CountingRmm.TestCase.settings = settings(fuzz_settings(3, 200), stateful_step_count=budget(40, 50))
TestRmiStream = CountingRmm.TestCase
