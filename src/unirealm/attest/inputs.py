"""Reading the relying party's input files (tokens, keys, reference values, launch
descriptions) with bounds: a file larger than its limit, a device such as /dev/zero, JSON
nested past a fixed depth or holding an integer of more than a few hundred digits are refused
with one line (InputError), never read without end or turned into a traceback."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

TOKEN_LIMIT = 1 << 20  # a CCA token is a few KiB
KEY_LIMIT = 1 << 20
JSON_LIMIT = 16 << 20
DATA_LIMIT = 1 << 30  # a measured DATA file (kernel, initrd) of a launch description
JSON_MAX_DEPTH = 64
JSON_MAX_INT_DIGITS = 80  # 2^256 has 78 digits


class InputError(ValueError):
    """An input file that cannot be read within bounds; the message is one line."""


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file or a pipe of at most `limit` bytes."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise InputError(f"{what} {path} is not a regular file")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise InputError(f"{what} {path} is larger than {limit} bytes")
            data = f.read(min(limit, st.st_size) + 1 if stat.S_ISREG(st.st_mode) else limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes")
    return data


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > JSON_MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {JSON_MAX_INT_DIGITS})")
    return int(text)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth - 1


def loads_json(data: bytes | str) -> Any:
    """Parse JSON; ValueError (one line) for bad syntax, deep nesting or huge integers."""
    try:
        obj = json.loads(data, parse_int=_int, parse_constant=_constant)
    except RecursionError:
        raise ValueError(f"nested more than {JSON_MAX_DEPTH} deep") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if _depth(obj) > JSON_MAX_DEPTH:
        raise ValueError(f"nested more than {JSON_MAX_DEPTH} deep")
    return obj


def load_json(path: str | Path, what: str = "file") -> Any:
    """Read and parse a JSON file; InputError names the file and what is wrong."""
    data = read_bounded(path, JSON_LIMIT, what)
    try:
        return loads_json(data)
    except ValueError as exc:
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from None
