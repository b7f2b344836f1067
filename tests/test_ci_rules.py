"""The suite's own rules (tests/conftest.py): under CI=true nothing passes by skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

RULES = (Path(__file__).parent / "conftest.py").read_text()
INNER = '''
import pytest, shutil

def test_runtime_skip():
    pytest.skip("vector missing")

@pytest.mark.skipif(shutil.which("sh") is not None, reason="tool missing")
def test_skipif():
    pass

@pytest.mark.skip(reason="not modelled: the GIC")
def test_decided():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

def test_plain():
    pass
'''


@pytest.mark.parametrize(("ci", "failed", "errors", "skipped"), [("true", 1, 1, 1), ("", 0, 0, 3)])
def test_ci_turns_skips_for_missing_inputs_into_failures(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                         ci: str, failed: int, errors: int, skipped: int) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(RULES.replace('pytest_plugins = ["pytester"]\n', ""))
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # a skipif fires in set-up, so it turns into an error there; a run-time skip into a failure
    result.assert_outcomes(passed=1, failed=failed, errors=errors, skipped=skipped, xfailed=1)
    if ci:
        result.stdout.fnmatch_lines(["*CI=true: a test may not skip for a missing input*vector missing*"])


def test_hypothesis_profile_is_derandomised_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(RULES.replace('pytest_plugins = ["pytester"]\n', ""))
    pytester.makepyfile(test_h='''
from hypothesis import settings
def test_profile():
    assert settings.default.derandomize and settings.default.database is None
''')
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
