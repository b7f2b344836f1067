"""The guest's ELF64 reader (guest/elf.py) against pyelftools (an independent reader) on
programs cross-compiled here, the arm64 dynamic loader and a host binary; on malformed
files (one check each); and fuzzed: any input gives headers or ElfError, and the loader's
parse_elf gives an ElfFile or ExecError."""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_TYPE, ENUM_E_VERSION, ENUM_P_TYPE_AARCH64, ENUM_P_TYPE_BASE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirealm.arch.elf import ELF64_EHDR, ELF64_PHDR, PType
from unirealm.guest.elf import ElfError, ElfFile, read_elf
from unirealm.guest.loader import ExecError, parse_elf

CC = shutil.which("aarch64-linux-gnu-gcc")
LD_SO = Path("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1")
P_TYPES = {**ENUM_P_TYPE_BASE, **ENUM_P_TYPE_AARCH64}
PROGRAM = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"


def cross(tmp: Path, name: str, *flags: str) -> bytes:
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    src = tmp / "p.c"
    src.write_text(PROGRAM)
    subprocess.run([CC, "-O2", *flags, "-o", str(tmp / name), str(src)], check=True)
    return (tmp / name).read_bytes()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("elf")
    progs = {"static": cross(tmp, "static", "-static"), "pie": cross(tmp, "pie", "-pie", "-fPIE"),
             "static-pie": cross(tmp, "spie", "-static-pie", "-fPIE")}
    if LD_SO.exists():
        progs["ld.so"] = LD_SO.read_bytes()
    progs["host"] = Path(sys.executable).resolve().read_bytes()  # an x86-64 (or other) host binary
    return progs


def pyelftools_view(data: bytes) -> tuple[dict[str, int], list[dict[str, int]], str | None]:
    elf = ELFFile(io.BytesIO(data))
    h = elf.header
    header = {k: h[k] for k in ("e_version", "e_entry", "e_phoff", "e_shoff", "e_flags", "e_ehsize",
                                "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx")}
    for key, names in (("e_type", ENUM_E_TYPE), ("e_version", ENUM_E_VERSION)):
        header[key] = names[h[key]] if isinstance(h[key], str) else h[key]
    header["e_machine"] = struct.unpack_from("<H", data, 18)[0]  # pyelftools gives the name; the raw half
    segments = []
    interp = None
    for seg in elf.iter_segments():
        s = {k: seg[k] for k in ("p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")}
        s["p_type"] = P_TYPES[seg["p_type"]] if isinstance(seg["p_type"], str) else seg["p_type"]
        segments.append(s)
        if s["p_type"] == PType.PT_INTERP:
            interp = seg.get_interp_name()
    return header, segments, interp


def reader_view(elf: ElfFile) -> tuple[dict[str, int], list[dict[str, int]], str | None]:
    header = {k: getattr(elf, k) for k in ("e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff",
                                           "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize",
                                           "e_shnum", "e_shstrndx")}
    segments = [vars(s).copy() for s in elf.segments]
    return header, segments, elf.interp


@pytest.mark.parametrize("name", ["static", "pie", "static-pie", "ld.so", "host"])
def test_headers_read_as_pyelftools_reads_them(programs: dict[str, bytes], name: str) -> None:
    if name not in programs:
        pytest.skip(f"{LD_SO} is not installed (gcc-aarch64-linux-gnu brings it)")
    data = programs[name]
    assert reader_view(read_elf(data)) == pyelftools_view(data)


def test_what_the_loader_uses(programs: dict[str, bytes]) -> None:
    static, pie = read_elf(programs["static"]), read_elf(programs["pie"])
    assert static.e_type == 2 and static.interp is None and static.of_type(PType.PT_LOAD)
    assert pie.e_type == 3 and pie.interp == "/lib/ld-linux-aarch64.so.1"
    assert pie.of_type(PType.PT_DYNAMIC) and pie.of_type(PType.PT_PHDR)
    assert parse_elf(programs["pie"], "pie") == pie
    with pytest.raises(ExecError, match="not an AArch64 ELF"):
        parse_elf(programs["host"], "host")


# --- malformed files ---------------------------------------------------------------------
def elf(phdrs: list[tuple[int, ...]] = (), tail: bytes = b"", e_type: int = 2, machine: int = 183,
        ident: bytes = b"\x7fELF\x02\x01\x01", phentsize: int = 56, phnum: int | None = None,
        phoff: int = 64) -> bytes:
    count = len(phdrs) if phnum is None else phnum
    head = ELF64_EHDR.pack(ident.ljust(16, b"\0"), e_type, machine, 1, 0x400000, phoff, 0, 0, 64,
                           phentsize, count, 64, 0, 0)
    return head + b"".join(ELF64_PHDR.pack(*p) for p in phdrs) + tail


LOAD = (1, 5, 0, 0x400000, 0x400000, 0x100, 0x100, 0x1000)


def interp_at(path: bytes, size: int | None = None, offset: int = 64 + 2 * 56) -> tuple[int, ...]:
    return (3, 4, offset, 0, 0, len(path) if size is None else size, len(path), 1)


def test_a_minimal_file_reads() -> None:
    path = b"/lib/ld.so\0"
    got = read_elf(elf([interp_at(path), LOAD], tail=path))
    assert got.interp == "/lib/ld.so" and [s.p_type for s in got.segments] == [3, 1]
    assert read_elf(elf([])).segments == ()


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "not an ELF file"),
    (b"\x7fEL", "not an ELF file"),
    (b"MZ" + bytes(100), "not an ELF file"),
    (elf()[:63], "truncated ELF header"),
    (elf(ident=b"\x7fELF\x01\x01\x01"), "not a 64-bit ELF"),
    (elf(ident=b"\x7fELF\x02\x02\x01"), "not a little-endian ELF"),
    (elf([LOAD], phentsize=32), "entries of 32 bytes"),
    (elf([LOAD] * 1200), "1200 program headers"),
    (elf([LOAD], phnum=2), "past the end of the file"),
    (elf([LOAD], phoff=65), "past the end of the file"),
    (elf([interp_at(b"/x\0", offset=64 + 56)], tail=b"/x"), "PT_INTERP extends past"),
    (elf([interp_at(b"/x", offset=64 + 56)], tail=b"/xy"), "not NUL-terminated"),
    (elf([interp_at(b"\0", offset=64 + 56)], tail=b"\0"), "PT_INTERP of 1 bytes"),
    (elf([interp_at(b"", size=4097, offset=64 + 56)], tail=bytes(4097)), "PT_INTERP of 4097 bytes"),
])
def test_malformed_files_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ElfError, match=reason):
        read_elf(data)


def test_the_program_header_bound_is_linuxs() -> None:
    assert len(read_elf(elf([LOAD] * 1170)).segments) == 1170  # 65520 bytes: within 64 KiB
    with pytest.raises(ElfError, match="1171 program headers"):
        read_elf(elf([LOAD] * 1171))  # 65576 bytes


@pytest.mark.parametrize(("data", "reason"), [
    (elf([LOAD], machine=62), "not an AArch64 ELF"),
    (elf([LOAD], ident=b"\x7fELF\x01\x01\x01"), "not an AArch64 ELF"),
    (elf([LOAD], e_type=1), r"not an executable \(ET_REL\)"),
    (elf([LOAD], e_type=0x1234), r"not an executable \(e_type 4660\)"),
    (elf([LOAD], phentsize=8), "malformed ELF"),
    (b"#!/bin/sh\n", "not an ELF file"),
])
def test_the_loader_refuses_what_it_cannot_run(data: bytes, reason: str) -> None:
    with pytest.raises(ExecError, match=reason):
        parse_elf(data, "prog")


# --- fuzzing -----------------------------------------------------------------------------
SEEDS = [elf([interp_at(b"/lib/ld.so\0"), LOAD], tail=b"/lib/ld.so\0"), elf([LOAD, LOAD])]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_files_give_headers_or_elferror(seed: bytes, data: st.DataObject) -> None:
    blob = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(blob) - 1)) if blob else 0
        kind = data.draw(st.sampled_from(["byte", "qword", "cut"]))
        if kind == "byte" and blob:
            blob[at] = data.draw(st.integers(0, 255))
        elif kind == "qword" and len(blob) >= 8:
            struct.pack_into("<Q", blob, min(at, len(blob) - 8), data.draw(st.sampled_from(
                [0, 1, 56, 64, len(blob), 1 << 32, 1 << 48, (1 << 64) - 1])))
        else:
            del blob[at:]
    raw = bytes(blob)
    try:
        got = read_elf(raw)
    except ElfError:
        got = None
    with contextlib.suppress(ExecError):
        parse_elf(raw, "fuzz")
    if got is None:
        return
    try:
        theirs = pyelftools_view(raw)
    except Exception:  # pyelftools refuses it (or its enum tables do not know a value)
        return
    assert reader_view(got) == theirs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_after_an_elf64_ident(raw: bytes) -> None:
    data = b"\x7fELF\x02\x01" + raw
    try:
        got = read_elf(data)
    except ElfError:
        return
    assert all(s.p_offset is not None for s in got.segments)
    assert got.e_phnum == len(got.segments)
