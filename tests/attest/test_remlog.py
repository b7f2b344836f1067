"""The REM measurement log (arch/remlog.py): parsing, replay against the RMM's own extension
rule, and `token verify --rem-log` refusing logs that do not replay to the token's REMs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from unirealm.arch.remlog import RemLogEntry, RemLogError, parse_rem_log, replay
from unirealm.arch.rmi import RmiHashAlgorithm
from unirealm.rmm.measurement import rem_extend

Cli = Callable[..., tuple[int, str, str]]
GOOD = "veraison-ccatoken/testGoodCCAToken.cbor"
IAK = "veraison-ccatoken/testIAK.jwk.json"


@pytest.mark.parametrize(("name", "algo"), [("sha-256", RmiHashAlgorithm.SHA_256), ("sha-512", RmiHashAlgorithm.SHA_512)])
def test_replay_equals_the_rmm_extension(name: str, algo: RmiHashAlgorithm) -> None:
    values = [(0, b"a"), (2, bytes(64)), (0, b""), (3, b"\xff" * 7), (0, b"zz")]
    text = "".join(RemLogEntry(i, name, v).line() for i, v in values)
    rems = [bytes(64)] * 4  # the RMM keeps 64-byte registers
    for i, v in values:
        rems[i] = rem_extend(rems[i], algo, v).ljust(64, b"\0")
    size = 32 if name == "sha-256" else 64
    assert replay(parse_rem_log(text)) == [r[:size] for r in rems]
    assert replay(parse_rem_log(text), name)[1] == bytes(size)


@pytest.mark.parametrize(("text", "message"), [
    ("REM4 sha-256 00\n", "n 0..3"),
    ("PCR0 sha-256 00\n", "n 0..3"),
    ("REM0 sha-384 00\n", "unknown algorithm"),
    ("REM0 sha-256 0g\n", "not hex"),
    ("REM0 sha-256 " + "00" * 65 + "\n", "longer than 64"),
    ("REM0 sha-256 00\nREM1 sha-512 00\n", "mixes"),
])
def test_bad_logs_are_refused(text: str, message: str) -> None:
    with pytest.raises(RemLogError, match=message):
        parse_rem_log(text)


def test_replay_refuses_another_algorithm() -> None:
    with pytest.raises(RemLogError, match="the realm sha-512"):
        replay(parse_rem_log("REM0 sha-256 00\n"), "sha-512")


def test_verify_with_a_log_that_does_not_replay(cli: Cli, vectors: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("REM0 sha-256 00\n")
    status, out, _ = cli("token", "verify", vectors / GOOD, "--cpak", vectors / IAK, "--rem-log", log)
    assert status == 1
    assert "REM[0] does not match the reference" in out
    log.write_text("REM9 sha-256 00\n")
    status, _, err = cli("token", "verify", vectors / GOOD, "--cpak", vectors / IAK, "--rem-log", log)
    assert status == 2 and "--rem-log" in err and "line 1" in err
