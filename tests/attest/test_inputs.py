"""attest/inputs.py: bounded reads of the relying party's files and bounded JSON, with the
messages json itself gives for bad syntax (line and column as json.JSONDecodeError counts
them)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from unirealm.attest.inputs import (
    JSON_MAX_DEPTH,
    JSON_MAX_INT_DIGITS,
    InputError,
    load_json,
    loads_json,
    read_bounded,
)


def _message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_regular_files_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "token.cbor"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10) == b"x" * 10
    assert read_bounded(path, 11) == b"x" * 10
    with pytest.raises(InputError) as exc:
        read_bounded(path, 9)
    assert _message(exc) == f"file {path} is larger than 9 bytes"
    with pytest.raises(InputError) as exc:
        read_bounded(path, 9, "token")
    assert _message(exc) == f"token {path} is larger than 9 bytes"
    path.write_bytes(b"")
    assert read_bounded(path, 0) == b""


def test_devices_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_bounded("/dev/zero", 1 << 20)
    assert _message(exc) == "file /dev/zero is not a regular file"
    with pytest.raises(InputError) as exc:
        read_bounded(tmp_path, 10, "key")
    assert _message(exc).startswith(f"cannot read key {tmp_path}: ")
    missing = tmp_path / "missing"
    with pytest.raises(InputError) as exc:
        read_bounded(missing, 10, "key")
    assert _message(exc) == f"cannot read key {missing}: {os.strerror(2)}"


def _pipe(tmp_path: Path, data: bytes) -> tuple[Path, threading.Thread, threading.Event, list[str]]:
    """A FIFO whose writer writes `data` and keeps its end open until `done` is set (or 10 s)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    order: list[str] = []

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(data)
            f.flush()
            done.wait(10)
            order.append("writer closed")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return fifo, thread, done, order


def test_a_pipe_is_read_only_to_one_byte_past_the_limit(tmp_path: Path) -> None:
    """A pipe that goes on (here: its writer keeps it open) is refused once it has given more
    than the limit, without waiting for its end."""
    fifo, thread, done, order = _pipe(tmp_path, b"y" * 4096)
    try:
        with pytest.raises(InputError) as exc:
            read_bounded(fifo, 100, "token")
        order.append("refused")
    finally:
        done.set()
        thread.join()
    assert _message(exc) == f"token {fifo} is larger than 100 bytes"
    assert order == ["refused", "writer closed"]


def test_a_pipe_within_the_limit(tmp_path: Path) -> None:
    fifo, thread, done, _ = _pipe(tmp_path, b"z" * 50)
    done.set()
    try:
        assert read_bounded(fifo, 100) == b"z" * 50
    finally:
        thread.join()


def test_json_nesting_bound() -> None:
    """The depth is that of the deepest value: 1 inside 64 containers is accepted, inside 65
    refused (an empty innermost container holds no value)."""
    n = JSON_MAX_DEPTH
    for text in ("[" * n + "1" + "]" * n, '{"a": ' * (n - 1) + "[1]" + "}" * (n - 1),
                 "[" * (n + 1) + "]" * (n + 1)):
        assert loads_json(text) == json.loads(text)
    for text in ("[" * (n + 1) + "1" + "]" * (n + 1), '{"a": ' * n + "[1]" + "}" * n,
                 "[" * n + "[[]], [[]], [1]" + "]" * n):
        with pytest.raises(ValueError) as exc:
            loads_json(text)
        assert _message(exc) == f"nested more than {n} deep"
    with pytest.raises(ValueError, match=f"nested more than {n} deep"):
        loads_json("[" * 100_000 + "]" * 100_000)  # past the interpreter's recursion limit
    assert loads_json("1") == 1 and loads_json("{}") == {}


def test_json_integer_bound() -> None:
    assert loads_json("9" * JSON_MAX_INT_DIGITS) == int("9" * JSON_MAX_INT_DIGITS)
    assert loads_json("-" + "9" * JSON_MAX_INT_DIGITS) == -int("9" * JSON_MAX_INT_DIGITS)
    with pytest.raises(ValueError) as exc:
        loads_json("[" + "1" * (JSON_MAX_INT_DIGITS + 1) + "]")
    assert _message(exc) == f"an integer of {JSON_MAX_INT_DIGITS + 1} digits (at most {JSON_MAX_INT_DIGITS})"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_are_not_numbers(constant: str) -> None:
    with pytest.raises(ValueError) as exc:
        loads_json(f'{{"rim": {constant}}}')
    assert _message(exc) == f"{constant} is not a JSON number"


@pytest.mark.parametrize("text", ['{"a": 1,}', '{\n  "a": [1,\n  2 3]}', "", '"open'])
def test_json_syntax_errors_say_where(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(ValueError) as exc:
        loads_json(text)
    assert _message(exc) == f"{want.value.msg} at line {want.value.lineno} column {want.value.colno}"


def test_json_that_is_not_utf8() -> None:
    with pytest.raises(ValueError) as exc:
        loads_json(b'{"a": "\xff\xfe\xfd"}')
    assert _message(exc) == "not UTF-8 text"


def test_load_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "launch.json"
    path.write_text('{"realm": {}}')
    assert load_json(path) == {"realm": {}}
    path.write_text('{"realm": }')
    with pytest.raises(InputError) as exc:
        load_json(path)
    assert _message(exc) == f"file {path} is not valid JSON: Expecting value at line 1 column 11"
    with pytest.raises(InputError) as exc:
        load_json(path, "launch description")
    assert _message(exc).startswith(f"launch description {path} is not valid JSON: ")
    with pytest.raises(InputError) as exc:
        load_json("/dev/null", "reference values")
    assert _message(exc) == "reference values /dev/null is not a regular file"
    with pytest.raises(InputError) as exc:
        load_json("/dev/null")
    assert _message(exc) == "file /dev/null is not a regular file"
