"""newc cpio: the shared layout, the host writer, the guest reader, against GNU cpio's bytes."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.arch.cpio import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, CpioError, Entry, iter_archive, pack_archive
from unirealm.guest.cpio import load_cpio
from unirealm.guest.vfs import Vfs
from unirealm.host.cpio import write_initrd

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed (apt-get install cpio)")


def make_tree(root: Path) -> None:
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.txt").write_bytes(b"hello\n")
    (root / "data" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3 + b"x")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("data/a.txt")


def by_name(data: bytes) -> dict[str, Entry]:
    return {e.name.removeprefix("./"): e for e in iter_archive(data)}


@needs_cpio
def test_reader_parses_gnu_cpio_output(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    out = subprocess.run("find . | cpio -o -H newc --quiet", shell=True, cwd=tmp_path / "t", capture_output=True,
                         check=True).stdout
    entries = by_name(out)
    assert entries["data/a.txt"].data == b"hello\n"
    assert entries["data/sub/b.bin"].data == bytes(range(256)) * 3 + b"x"
    assert entries["empty"].data == b""
    assert entries["link"].mode & S_IFMT == S_IFLNK and entries["link"].data == b"data/a.txt"
    assert entries["data"].mode & S_IFMT == S_IFDIR
    assert entries["data/a.txt"].mode & S_IFMT == S_IFREG


@needs_cpio
def test_gnu_cpio_extracts_the_writer_output(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    archive = write_initrd(tmp_path / "t")
    assert len(archive) % 512 == 0
    (tmp_path / "x").mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=tmp_path / "x", check=True)
    assert (tmp_path / "x" / "data" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 3 + b"x"
    assert (tmp_path / "x" / "link").is_symlink()
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True).stdout
    assert sorted(listing.decode().split()) == ["data", "data/a.txt", "data/sub", "data/sub/b.bin", "empty", "link"]


def test_writer_reader_round_trip_and_gzip(tmp_path: Path) -> None:
    make_tree(tmp_path)
    plain = write_initrd(tmp_path)
    packed = write_initrd(tmp_path, compress=True)
    assert gzip.decompress(packed) == plain
    assert {n: e.data for n, e in by_name(packed).items()} == {n: e.data for n, e in by_name(plain).items()}
    # concatenated archives (as the kernel accepts): later members are added
    extra = pack_archive([Entry("more.txt", S_IFREG | 0o644, b"more")])
    assert by_name(plain + extra)["more.txt"].data == b"more"


def test_header_fields_match_the_spec() -> None:
    raw = pack_archive([Entry("f", S_IFREG | 0o600, b"abc", ino=5, mtime=0x1234)])
    assert raw[:6] == b"070701"
    assert raw[6:14] == b"00000005" and raw[14:22] == b"00008180"
    assert raw[54:62] == b"00000003"  # filesize
    assert raw[94:102] == b"00000002"  # namesize incl. NUL
    assert raw[110:112] == b"f\0" and raw[112:115] == b"abc"  # 110 + 2 is 4-aligned


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"070701" + b"0" * 20, "truncated cpio header"),
        (b"070707" + b"0" * 200, "bad cpio magic"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (pack_archive([Entry("f", S_IFREG | 0o644, b"x" * 100)])[:150], "truncated cpio data"),
        (b"070701" + b"zz" * 52 + b"\0" * 20, "corrupt cpio header"),
    ],
)
def test_corrupt_archives_raise_one_clear_error(blob: bytes, message: str) -> None:
    with pytest.raises(CpioError, match=message):
        list(iter_archive(blob))


def test_guest_loads_initrd_into_vfs(tmp_path: Path) -> None:
    make_tree(tmp_path)
    vfs = Vfs()
    assert load_cpio(vfs, write_initrd(tmp_path)) == 6
    assert vfs.read_file("/link") == b"hello\n"
    assert vfs.read_file("/data/sub/../a.txt") == b"hello\n"
