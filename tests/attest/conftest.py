"""Fixtures for the relying-party tests: the shared token vectors and the in-process CLI."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _vectors_dir() -> Path:
    env = os.environ.get("UNIREALM_VECTORS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The `tokens/` folder of the shared vectors (UNIREALM_VECTORS, else <repo>/../shared/vectors)."""
    root = _vectors_dir()
    tokens = root / "tokens"
    if not tokens.is_dir():
        pytest.skip(f"token vectors not found at {tokens} (set UNIREALM_VECTORS to the vectors folder)")
    return tokens


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run `unirealm ARGS...` in-process: (exit status, stdout, stderr).

    Subcommand modules other engineers have not written yet are left out of the parser,
    so these tests depend only on `token` and `measure`."""
    from unirealm.cli import main as cli_main

    present = []
    for name in cli_main.SUBCOMMAND_MODULES:
        try:
            importlib.import_module(f"unirealm.cli.{name}")
        except ImportError:
            continue
        present.append(name)
    monkeypatch.setattr(cli_main, "SUBCOMMAND_MODULES", tuple(present))

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            status = cli_main.main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return run
