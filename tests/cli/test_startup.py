"""`unirealm COMMAND` registers only COMMAND's parser (cli/main.py build_parser): every
subcommand parses and prints its help as with the whole parser, `unirealm --help` and a
wrong command still list them all, and `unirealm run` imports neither the relying party
nor the devices it was not asked for."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from unirealm.cli.main import SUBCOMMAND_MODULES, build_parser, main

SRC = Path(__file__).resolve().parents[2] / "src"
# What a launch without 9p, NICs, a virtio console or --hostile irq-storm never imports (and
# the other subcommands' modules)
OPTIONAL = ("unirealm.attest", "unirealm.cli.", "unirealm.host.net.", "unirealm.host.devices.virtio_9p",
            "unirealm.host.devices.virtio_net", "unirealm.host.devices.virtio_console", "unirealm.host.hostile_irq")


def _help(parser_argv: list[str], command: str | None) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser(command).parse_args(parser_argv)
    return int(exit_.value.code or 0), out.getvalue()


@pytest.mark.parametrize("command", SUBCOMMAND_MODULES)
def test_each_command_alone_parses_as_the_whole_parser_does(command: str) -> None:
    assert _help([command, "--help"], command) == _help([command, "--help"], None)
    assert _help([command, "--help"], command)[1].startswith(f"usage: unirealm {command}")


def test_the_whole_help_and_a_wrong_command_list_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _help(["--help"], None)
    assert code == 0 and all(f"    {c} " in text for c in SUBCOMMAND_MODULES)
    with pytest.raises(SystemExit) as exit_:
        main(["bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and all(repr(c) in err for c in SUBCOMMAND_MODULES)


def test_run_with_bad_flags_still_answers_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-k", "/nonexistent", "--loglevel", "loud"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["unirealm run: error: Unknown loglevel: loud"]


def test_unirealm_run_loads_no_relying_party_and_no_unasked_device() -> None:
    """What `unirealm run` has imported once its VMM exists (a run that fails at once, on a
    missing kernel file, after parsing)."""
    probe = (
        f"OPTIONAL = {OPTIONAL!r}\n"
        "import sys\n"
        "from unirealm.cli.main import main\n"
        "try:\n"
        "    main(['run', '-k', '/nonexistent/kernel'])\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.startswith(OPTIONAL)))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert res.stdout.strip().splitlines()[-1] == "['unirealm.cli.main', 'unirealm.cli.run']", res.stdout + res.stderr
