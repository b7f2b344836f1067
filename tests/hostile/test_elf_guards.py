"""The kernel's ELF loader refuses segments past the end of the file and segments beyond
the 48-bit VA space (each check is one line in guest/loader.py check_segment; each has its test here)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import ROOT, cli, compile_c


@pytest.fixture(scope="module")
def hello_elf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("elf")
    return compile_c((ROOT / "examples/helloworld/hello.c").read_text(), tmp / "hello")


def patch_first_load(elf: bytes, field: str, value: int) -> bytes:
    """Set p_filesz or p_vaddr (and p_paddr) of the first PT_LOAD of a 64-bit ELF."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = bytearray(elf)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", out, at)[0] == 1:  # PT_LOAD
            offset = {"p_vaddr": 0x10, "p_filesz": 0x20}[field]
            struct.pack_into("<Q", out, at + offset, value)
            if field == "p_filesz":
                struct.pack_into("<Q", out, at + 0x28, max(value, struct.unpack_from("<Q", out, at + 0x28)[0]))
            return bytes(out)
    raise AssertionError("no PT_LOAD")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("p_filesz", 1 << 30, "malformed ELF: segment extends past the file"),
        ("p_vaddr", (1 << 48) - 0x1000, "malformed ELF: segment outside the address space"),
    ],
)
def test_malformed_segments_are_refused(hello_elf: bytes, tmp_path: Path, field: str, value: int, message: str) -> None:
    image = tmp_path / "bad.img"
    image.write_bytes(build_image(patch_first_load(hello_elf, field, value), "bad"))
    proc = cli("run", "-k", str(image), "--realm", cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode != 0 and "Hello" not in proc.stdout
