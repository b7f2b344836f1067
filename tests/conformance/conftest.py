"""Fixtures for the conformance suite (tests named after the RMM ACS 1.0 tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .acs import AcsEnv


@pytest.fixture
def acs(tmp_path: Path) -> AcsEnv:
    return AcsEnv(tmp_path)
