"""Fixtures the guest tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from unirealm.guest.pagecache import Store

from .fs_support import Fs
from .test_syscall_fuzz import make_process


@pytest.fixture
def fs() -> Iterator[Fs]:
    """A fresh process over the fake CPU, with its file calls (tests/guest/fs_support.py)."""
    try:
        yield Fs(make_process())
    finally:
        Store.current = None
