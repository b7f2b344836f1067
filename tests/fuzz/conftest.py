"""Fuzzing with invariants: short runs in `make test` (derandomized under CI=true, so a
failure is reproducible), long ones in `make fuzz` (UNIREALM_FUZZ=long). Every target also
runs the checked-in corpus of malformed inputs (tests/fuzz/corpus, written by
make_corpus.py). Each test adds what it ran to REPORT; the session prints the totals."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

LONG = os.environ.get("UNIREALM_FUZZ") == "long"
CORPUS = Path(__file__).resolve().parent / "corpus"
REPORT: Counter[str] = Counter()


def budget(short: int, long: int) -> int:
    return long if LONG else short


def fuzz_settings(short: int, long: int, **extra: object) -> settings:
    return settings(
        max_examples=budget(short, long),
        deadline=None,
        derandomize=os.environ.get("CI") == "true",
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        **extra,  # type: ignore[arg-type]
    )


def corpus(kind: str) -> list[bytes]:
    files = sorted((CORPUS / kind).glob("*.bin"))
    assert files, f"no corpus for {kind}: run tests/fuzz/make_corpus.py"
    return [f.read_bytes() for f in files]


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    if not REPORT:
        return
    line = ", ".join(f"{k}: {v}" for k, v in sorted(REPORT.items()))
    print(f"\nfuzz: {line}")
    if LONG:
        out = Path(__file__).resolve().parents[2] / "build" / "fuzz-report.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(dict(REPORT), indent=2) + "\n")
