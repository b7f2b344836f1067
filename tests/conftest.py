"""Suite-wide rules.

- Under `CI=true` a test may not pass by skipping: a skip at run time or through `skipif`
  (a missing tool, vector or package) fails the test instead. Only an unconditional
  `@pytest.mark.skip(reason=...)` — a decision recorded in the code, such as a feature the
  model does not have yet — stays a skip.
- Hypothesis runs derandomised (a fixed seed, no example database) under `CI=true`, and
  randomised locally; `HYPOTHESIS_PROFILE` picks a profile by name.
- Tests under tests/e2e carry the `e2e` marker (`make test-fast` leaves them out).
- Tests marked `huge` (minutes each, beyond the suite's CI budget) are deselected unless the
  `-m` expression names them: `make test-huge` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
E2E = Path(__file__).parent / "e2e"

settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
    if "huge" not in (config.getoption("markexpr", "") or ""):
        huge = [item for item in items if item.get_closest_marker("huge") is not None]
        if huge:
            config.hook.pytest_deselected(items=huge)
            items[:] = [item for item in items if item.get_closest_marker("huge") is None]


def _decided_skip(item: pytest.Item) -> bool:
    return item.get_closest_marker("skip") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail") and not _decided_skip(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test may not skip for a missing input: {reason}"
