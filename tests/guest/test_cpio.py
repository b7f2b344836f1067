"""newc cpio: the shared layout, the host writer, the guest reader, against GNU cpio's bytes."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.arch.cpio import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, CpioError, Entry, iter_archive, pack_archive
from unirealm.guest.cpio import load_cpio, read_initrd
from unirealm.guest.vfs import DirInode, LinkInode, Vfs
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


class _Ram:
    """A CPU's view of guest RAM, enough for read_initrd."""

    def __init__(self, base: int, data: bytes) -> None:
        self.base, self.data = base, data

    def read(self, addr: int, size: int) -> bytes:
        assert size >= 0
        return self.data[addr - self.base : addr - self.base + size]


def test_read_initrd_takes_start_to_end() -> None:
    ram = _Ram(0x1000, bytes(range(64)))
    assert read_initrd(ram, 0x1004, 0x1008) == bytes([4, 5, 6, 7])  # type: ignore[arg-type]
    assert read_initrd(ram, 0x1004, 0x1004) == b""  # type: ignore[arg-type]
    assert read_initrd(ram, 0x1008, 0x1004) == b""  # type: ignore[arg-type]


def test_guest_keeps_each_members_owner_mode_and_mtime() -> None:
    """initramfs (init/initramfs.c) chowns, chmods and sets the mtime of every member, a
    directory made earlier for a child included; "." names the root and is skipped; a
    symlink's target is bytes, kept as they are."""
    members = [
        Entry(".", S_IFDIR | 0o700, uid=7, gid=7, mtime=5),
        Entry("./boX/fX", S_IFREG | 0o640, b"data", uid=1000, gid=100, mtime=1_700_000_000),
        Entry("./boX/", S_IFDIR | 0o750, uid=33, gid=44, mtime=1_600_000_000),
        Entry("boX/ln", S_IFLNK | 0o777, b"t\xff", uid=5, gid=6, mtime=3),
        Entry("./", S_IFDIR | 0o700),
        Entry("last", S_IFREG | 0o600, b"z", uid=2, gid=3, mtime=9),
    ]
    vfs = Vfs()
    assert load_cpio(vfs, pack_archive(members)) == 6
    d, _ = vfs.walk("/boX")
    f, _ = vfs.walk("/boX/fX")
    ln, _ = vfs.walk("/boX/ln", follow=False)
    last, _ = vfs.walk("/last")
    assert (d.mode & 0o7777, d.uid, d.gid, d.mtime_ns) == (0o750, 33, 44, 1_600_000_000 * 10**9)
    assert (f.mode & 0o7777, f.uid, f.gid, f.mtime_ns) == (0o640, 1000, 100, 1_700_000_000 * 10**9)
    assert isinstance(d.mtime_ns, int) and isinstance(f.mtime_ns, int)
    assert vfs.read_file("/boX/fX") == b"data"
    assert isinstance(ln, LinkInode) and ln.target == "t\udcff" and (ln.uid, ln.gid) == (5, 6)
    assert vfs.read_file("/last") == b"z" and (last.uid, last.gid) == (2, 3)
    root, _ = vfs.walk("/")
    assert isinstance(root, DirInode) and "" not in root.children and "." not in root.children  # "." and "./" skipped
