"""An image carries each module's bytecode (arch/image.py, NAME.pyc): the kernel's loader
runs it instead of compiling the source when it is this interpreter's and of that very
source, and compiles the source otherwise."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from unirealm.arch.image import PYC_HEADER, PYC_MARSHAL_VERSION, compile_member
from unirealm.host.image import bytecode, payload_zip
from unirealm.machine import pykernel

SOURCE = b"VALUE = 6 * 7\n"
SRC = Path(__file__).resolve().parents[2] / "src"


def importer(members: dict[str, bytes]) -> pykernel._PayloadImporter:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return pykernel._PayloadImporter("img", zipfile.ZipFile(io.BytesIO(buf.getvalue())))


def load(imp: pykernel._PayloadImporter, name: str) -> object:
    spec = imp.find_spec(f"img.{name}")
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    imp.exec_module(module)
    return module


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The members the loader compiled from source."""
    seen: list[str] = []

    def counting(member: str, source: bytes):  # type: ignore[no-untyped-def]
        seen.append(member)
        return compile_member(member, source)

    monkeypatch.setattr(pykernel, "compile_member", counting)
    return seen


def test_every_module_of_an_image_has_its_bytecode() -> None:
    archive = zipfile.ZipFile(io.BytesIO(payload_zip(None)))
    sources = [n for n in archive.namelist() if n.endswith(".py")]
    assert "guest/kernel.py" in sources
    for name in sources:
        pyc = archive.read(name + "c")
        header = PYC_HEADER.unpack(pyc[: PYC_HEADER.size])
        assert header["magic"] == importlib.util.MAGIC_NUMBER
        assert header["source_hash"] == importlib.util.source_hash(archive.read(name))
        assert marshal.loads(pyc[PYC_HEADER.size :]).co_filename == f"image://{name}"


def test_bytecode_is_reproducible() -> None:
    source = b"KEYS = {'a', 'b', 'c', 'd'}\nNAMES = ('x', 'x', 'y')\n"
    assert bytecode("guest/m.py", source) == bytecode("guest/m.py", source)
    assert marshal.dumps(compile_member("guest/m.py", source), PYC_MARSHAL_VERSION) in bytecode("guest/m.py", source)


def test_the_payload_is_the_same_in_another_process() -> None:
    """String hashing differs per process (PYTHONHASHSEED): sets of constants and interned
    names must not change the image's bytes, and so its RIM."""
    script = "import hashlib, sys; from unirealm.host.image import payload_zip; " \
             "sys.stdout.write(hashlib.sha256(payload_zip(b'app', 'a')).hexdigest())"
    here = hashlib.sha256(payload_zip(b"app", "a")).hexdigest()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert out.stdout == here


def test_the_loader_runs_the_images_bytecode(compiles: list[str]) -> None:
    module = load(importer({"guest/m.py": SOURCE, "guest/m.pyc": bytecode("guest/m.py", SOURCE)}), "guest.m")
    assert module.VALUE == 42  # type: ignore[attr-defined]
    assert compiles == []


@pytest.mark.parametrize("case", ["other source", "other interpreter", "truncated", "none"])
def test_the_loader_compiles_the_source_otherwise(compiles: list[str], case: str) -> None:
    pyc = bytecode("guest/m.py", b"VALUE = 0\n")  # of another source: its hash does not match
    if case == "other interpreter":
        pyc = bytes(4) + bytecode("guest/m.py", SOURCE)[4:]
    elif case == "truncated":
        pyc = bytecode("guest/m.py", SOURCE)[: PYC_HEADER.size + 10]
    members = {"guest/m.py": SOURCE} | ({} if case == "none" else {"guest/m.pyc": pyc})
    module = load(importer(members), "guest.m")
    assert module.VALUE == 42  # type: ignore[attr-defined]  # the source's, never the other bytecode's
    assert compiles == ["guest/m.py"]
