"""`ukrsi.selftest` (guest/selftest.py) in a realm on the real RMM: every line ok, the
measurement and host call it makes reach the RMM and the host, its pages go back; an RMM
answering wrongly is reported as FAIL with the status it gave and the one expected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from unirealm.arch.rsi import RsiStatus
from unirealm.guest.kernel import Kernel
from unirealm.guest.selftest import run_selftest

from .realm_support import run_in_realm

CHECKS = 21


def lines(kernel: Kernel) -> list[str]:
    return [line.removeprefix("unirealm: ").rstrip("\n") for line in kernel._early_log]


def test_every_check_passes_on_the_rmm(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> tuple[list[str], int, bytes]:
        free = kernel.pages.free_bytes
        run_selftest(kernel)
        return lines(kernel), free - kernel.pages.free_bytes, kernel.rsi.measurement_read(4)[1]

    run = run_in_realm(tmp_path, body)
    out, leak, rem3 = run.result
    assert len(out) == CHECKS + 1
    assert all(line.startswith("ukrsi.selftest: ") and line.endswith("[ok]") for line in out[:-1]), out
    assert out[-1] == f"ukrsi.selftest: {CHECKS} passed, 0 failed"
    assert "ukrsi.selftest: RSI_VERSION(2.0) -> ERROR_INPUT [ok]" in out
    assert "ukrsi.selftest: RSI_ATTESTATION_TOKEN_CONTINUE(after the end) -> ERROR_STATE [ok]" in out
    assert leak == 0
    assert rem3 != bytes(64)  # RSI_MEASUREMENT_EXTEND(REM3) reached the RMM
    assert len(run.host_calls) == 1  # the aligned RSI_HOST_CALL exits to the host, the unaligned one does not


def test_a_wrong_answer_is_a_fail_line(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> list[str]:
        real = kernel.rsi.version

        def version(requested: int = 0x10000) -> tuple[int, int, int]:
            status, lower, higher = real(requested)
            return (RsiStatus.SUCCESS, lower, higher) if requested >> 16 == 2 else (status, lower, higher)

        kernel.rsi.version = version  # type: ignore[method-assign]
        original = kernel.rsi.features
        kernel.rsi.features = lambda index: (0x1234, 0) if index == 0 else original(index)  # type: ignore[method-assign]
        run_selftest(kernel)
        return lines(kernel)

    out = run_in_realm(tmp_path, body).result
    assert "ukrsi.selftest: RSI_VERSION(2.0) -> SUCCESS [FAIL, expected ERROR_INPUT]" in out
    assert "ukrsi.selftest: RSI_FEATURES(0) -> 0x1234 [FAIL, expected SUCCESS]" in out
    assert out[-1] == f"ukrsi.selftest: {CHECKS - 2} passed, 2 failed"


def test_conversions_are_checked_not_assumed(tmp_path: Path) -> None:
    """A shared page that still reads its old protected contents back is a FAIL."""

    def body(kernel: Kernel) -> list[str]:
        real = kernel.rsi.set_memory_protected

        def keep_contents(base: int, size: int) -> None:
            real(base, size)
            kernel.cpu.write(base, b"protected data")  # as if the contents survived

        kernel.rsi.set_memory_protected = keep_contents  # type: ignore[method-assign]
        run_selftest(kernel)
        return lines(kernel)

    out = run_in_realm(tmp_path, body).result
    assert any(re.fullmatch(r"ukrsi.selftest: set_memory_protected: .* \[FAIL, expected SUCCESS\]", x) for x in out)
    assert out[-1] == f"ukrsi.selftest: {CHECKS - 1} passed, 1 failed"


class NotARealm:
    realm = None
    rsi: Any = None

    def __init__(self) -> None:
        self.logged: list[str] = []

    def log(self, text: str, error: bool = False, level: int | None = None) -> None:
        self.logged.append(text)


def test_outside_a_realm_it_is_skipped() -> None:
    kernel = NotARealm()
    run_selftest(kernel)  # type: ignore[arg-type]
    assert kernel.logged == ["ukrsi.selftest: not a realm, skipped"]
