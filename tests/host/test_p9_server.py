"""9P2000.L: message bytes against hand-computed encodings (layouts from the v9fs
9P2000.L description and Linux Documentation/filesystems/9p.rst), and the host server's
confinement to its directory and its answers to malformed requests."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from unirealm.arch import p9
from unirealm.arch.p9 import P9, Qid
from unirealm.host.devices.virtio_9p import P9Server

# --- encodings ------------------------------------------------------------------------------


def test_tversion_bytes():
    # size[4]=21 type[1]=100 tag[2]=NOTAG msize[4]=8192 version[s]="9P2000.L"
    want = bytes.fromhex("15000000" "64" "ffff" "00200000" "0800") + b"9P2000.L"
    assert p9.encode(P9.TVERSION, p9.NOTAG, msize=8192, version="9P2000.L") == want
    assert p9.decode(want) == (P9.TVERSION, p9.NOTAG, {"msize": 8192, "version": "9P2000.L"})


def test_rlerror_bytes():
    want = bytes.fromhex("0b000000" "07" "0100" "02000000")
    assert p9.rlerror(1, errno.ENOENT) == want
    assert p9.decode(want) == (P9.RLERROR, 1, {"ecode": errno.ENOENT})


def test_twalk_bytes():
    # fid[4] newfid[4] nwname[2] wname[s]*: "a", "bc"
    want = bytes.fromhex("18000000" "6e" "0300" "01000000" "02000000" "0200" "0100" "61" "0200" "6263")
    assert p9.encode(P9.TWALK, 3, fid=1, newfid=2, wnames=["a", "bc"]) == want
    assert p9.decode(want)[2] == {"fid": 1, "newfid": 2, "wnames": ["a", "bc"]}


def test_rattach_qid_bytes():
    # qid[13] = type[1] version[4] path[8]
    want = bytes.fromhex("14000000" "69" "0000" "80" "00000000" "0500000000000000")
    assert p9.encode(P9.RATTACH, 0, qid=Qid(0x80, 0, 5)) == want
    assert p9.decode(want)[2]["qid"] == Qid(0x80, 0, 5)


def test_tread_rread_bytes():
    want = bytes.fromhex("17000000" "74" "0400" "07000000" "0010000000000000" "00020000")
    assert p9.encode(P9.TREAD, 4, fid=7, offset=0x1000, count=512) == want
    rread = p9.encode(P9.RREAD, 4, data=b"xyz")
    assert rread == bytes.fromhex("0e000000" "75" "0400" "03000000") + b"xyz"


def test_tfsync_without_datasync_is_accepted():
    short = struct.pack("<IBHI", 11, P9.TFSYNC, 9, 5)
    assert p9.decode(short)[2] == {"fid": 5, "datasync": 0}


@pytest.mark.parametrize("raw", [
    b"",
    b"\x07\x00\x00",
    struct.pack("<IBH", 100, P9.TCLUNK, 1) + b"\0\0\0\0",  # size larger than the message
    struct.pack("<IBH", 9, P9.TCLUNK, 1) + b"\0\0",  # field cut short
    struct.pack("<IBH", 13, P9.TCLUNK, 1) + b"\0" * 6,  # bytes left over
    struct.pack("<IBH", 7, 250, 1),  # unknown type
    struct.pack("<IBHIIH", 17, P9.TWALK, 1, 0, 1, 40),  # more than 16 names
])
def test_decode_rejects_malformed(raw: bytes):
    with pytest.raises(p9.P9ProtocolError):
        p9.decode(raw)


# --- the server -----------------------------------------------------------------------------
class Client:
    def __init__(self, root: Path) -> None:
        self.server = P9Server(str(root))
        self.tag = 0
        r = self.rpc(P9.TVERSION, msize=65536, version="9P2000.L")
        assert r["msize"] == 65536
        self.rpc(P9.TATTACH, fid=0, afid=p9.NOFID, uname="root", aname="", n_uname=0)

    def raw(self, mtype: P9, **fields) -> tuple[P9, dict]:
        self.tag += 1
        reply = self.server.handle(p9.encode(mtype, self.tag, **fields))
        rtype, tag, out = p9.decode(reply)
        assert tag == self.tag
        return rtype, out

    def rpc(self, mtype: P9, **fields) -> dict:
        rtype, out = self.raw(mtype, **fields)
        assert rtype == mtype + 1, f"{mtype.name} -> Rlerror {errno.errorcode.get(out.get('ecode'))}"
        return out

    def error(self, mtype: P9, **fields) -> int:
        rtype, out = self.raw(mtype, **fields)
        assert rtype == P9.RLERROR, f"{mtype.name} unexpectedly succeeded"
        return out["ecode"]


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (tmp_path / "secret.txt").write_bytes(b"outside\n")
    return root


def test_walk_dotdot_at_root_stays_at_root(share: Path):
    c = Client(share)
    qids = c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["..", "..", "hello.txt"])["qids"]
    assert qids[0].path == qids[1].path == share.stat().st_ino
    assert qids[2].path == (share / "hello.txt").stat().st_ino
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    assert c.rpc(P9.TREAD, fid=1, offset=0, count=100)["data"] == b"hello, world\n"
    # `..` from a subdirectory goes up one level, and no further than the root
    qids = c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["sub", "..", ".."])["qids"]
    assert [q.path for q in qids] == [(share / "sub").stat().st_ino, share.stat().st_ino, share.stat().st_ino]
    assert c.error(P9.TWALK, fid=0, newfid=3, wnames=["../secret.txt"]) == errno.EINVAL


def test_symlink_escape_refused(share: Path, tmp_path: Path):
    os.symlink(str(tmp_path), share / "out")
    os.symlink(str(tmp_path / "secret.txt"), share / "secret")
    os.symlink("../secret.txt", share / "rel")
    c = Client(share)
    # stepping through a symlink is refused; the link itself can be walked to and read
    rtype, out = c.raw(P9.TWALK, fid=0, newfid=1, wnames=["out", "secret.txt"])
    assert rtype == P9.RWALK and len(out["qids"]) == 1  # partial: stopped at the link
    assert 1 not in c.server.fids
    assert c.error(P9.TWALK, fid=0, newfid=1, wnames=["secret.txt"]) == errno.ENOENT  # not in the share
    for link in ("secret", "rel", "out"):
        c.rpc(P9.TWALK, fid=0, newfid=5, wnames=[link])
        assert c.error(P9.TLOPEN, fid=5, flags=p9.DOTL_RDONLY) == errno.ELOOP
        assert c.error(P9.TWALK, fid=5, newfid=6, wnames=["x"]) == errno.ELOOP
        assert c.rpc(P9.TREADLINK, fid=5)["target"] == os.readlink(share / link)
        c.rpc(P9.TCLUNK, fid=5)
    # creating through a link, or truncating one, does not touch the target
    c.rpc(P9.TWALK, fid=0, newfid=7, wnames=["secret"])
    assert c.error(P9.TSETATTR, fid=7, valid=p9.SETATTR_SIZE, mode=0, uid=0, gid=0, size=0, atime_sec=0,
                   atime_nsec=0, mtime_sec=0, mtime_nsec=0) == errno.EINVAL
    assert c.error(P9.TLCREATE, fid=7, name="x", flags=p9.DOTL_RDWR, mode=0o644, gid=0) == errno.ENOTDIR
    assert (tmp_path / "secret.txt").read_bytes() == b"outside\n"


def test_create_write_read_rename_unlink(share: Path):
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["sub"])
    created = c.rpc(P9.TLCREATE, fid=1, name="db", flags=p9.DOTL_RDWR, mode=0o644, gid=0)
    assert created["qid"].path == (share / "sub/db").stat().st_ino
    assert created["iounit"] == 65536 - p9.IOHDRSZ
    assert c.rpc(P9.TWRITE, fid=1, offset=4, data=b"data")["count"] == 4
    assert c.rpc(P9.TREAD, fid=1, offset=0, count=100)["data"] == b"\0\0\0\0data"
    c.rpc(P9.TFSYNC, fid=1, datasync=0)
    attr = c.rpc(P9.TGETATTR, fid=1, request_mask=p9.GETATTR_BASIC)
    assert attr["size"] == 8 and attr["mode"] & 0o777 == 0o644
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_SIZE, mode=0, uid=0, gid=0, size=2, atime_sec=0, atime_nsec=0,
          mtime_sec=0, mtime_nsec=0)
    assert (share / "sub/db").read_bytes() == b"\0\0"
    c.rpc(P9.TCLUNK, fid=1)
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["sub"])
    c.rpc(P9.TWALK, fid=0, newfid=3, wnames=["sub", "db"])
    c.rpc(P9.TRENAMEAT, olddirfid=2, oldname="db", newdirfid=0, newname="moved")
    assert (share / "moved").exists() and not (share / "sub/db").exists()
    c.rpc(P9.TLOPEN, fid=3, flags=p9.DOTL_RDONLY)  # the fid follows the file
    assert c.rpc(P9.TREAD, fid=3, offset=0, count=100)["data"] == b"\0\0"
    c.rpc(P9.TCLUNK, fid=3)
    c.rpc(P9.TMKDIR, dfid=0, name="d", mode=0o755, gid=0)
    assert c.error(P9.TUNLINKAT, dirfid=0, name="d", flags=0) == errno.EISDIR
    c.rpc(P9.TUNLINKAT, dirfid=0, name="d", flags=p9.AT_REMOVEDIR)
    c.rpc(P9.TUNLINKAT, dirfid=0, name="moved", flags=0)
    assert sorted(os.listdir(share)) == ["hello.txt", "sub"]
    for bad in ("..", ".", "", "a/b"):
        assert c.error(P9.TMKDIR, dfid=0, name=bad, mode=0o755, gid=0) == errno.EINVAL
        assert c.error(P9.TUNLINKAT, dirfid=0, name=bad, flags=0) == errno.EINVAL


def test_readdir(share: Path):
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=[])
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    names, offset = [], 0
    while True:
        data = c.rpc(P9.TREADDIR, fid=1, offset=offset, count=40)["data"]
        if not data:
            break
        ents = p9.unpack_dirents(data)
        names += [e.name for e in ents]
        offset = ents[-1].offset
    assert names == [".", "..", "hello.txt", "sub"]
    st = c.rpc(P9.TSTATFS, fid=0)
    assert st["bsize"] > 0


def test_hostile_requests_get_rlerror(share: Path):
    c = Client(share)
    s = c.server
    assert p9.decode(s.handle(b"\x01\x02"))[2]["ecode"] == errno.EPROTO
    assert p9.decode(s.handle(struct.pack("<IBH", 7, 250, 9)))[2]["ecode"] == errno.EPROTO
    assert p9.decode(s.handle(struct.pack("<IBHI", 11, P9.TCLUNK, 9, 77)))[2]["ecode"] == errno.EBADF
    assert p9.decode(s.handle(p9.encode(P9.RCLUNK, 3)))[2]["ecode"] == errno.EOPNOTSUPP
    assert c.error(P9.TREAD, fid=0, offset=0, count=10) == errno.EBADF  # not open
    assert c.error(P9.TATTACH, fid=0, afid=p9.NOFID, uname="", aname="", n_uname=0) == errno.EEXIST
    assert c.error(P9.TWALK, fid=0, newfid=p9.NOFID, wnames=[]) == errno.EBADF
    assert c.error(P9.TWALK, fid=0, newfid=1, wnames=["nope"]) == errno.ENOENT
    assert c.error(P9.TLOPEN, fid=0, flags=p9.DOTL_RDWR) == errno.EISDIR
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["hello.txt"])
    assert c.error(P9.TLOPEN, fid=1, flags=3) == errno.EINVAL
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    assert c.error(P9.TWRITE, fid=1, offset=0, data=b"x") == errno.EBADF
    assert c.error(P9.TREAD, fid=1, offset=1 << 63, count=10) in (errno.EINVAL, errno.EOVERFLOW)
    assert c.error(P9.TVERSION, msize=100, version="9P2000.L") == errno.EINVAL
    # a fresh Tversion drops every fid
    assert c.rpc(P9.TVERSION, msize=1 << 30, version="9P2000.L")["msize"] == 512 * 1024
    assert s.fids == {}
    assert (share / "hello.txt").read_bytes() == b"hello, world\n"


def test_not_a_directory(tmp_path: Path):
    with pytest.raises(ValueError):
        P9Server(str(tmp_path / "missing"))


# --- confinement by handles: attacks that a server keeping name paths falls to ---------------
SETATTR0 = dict(mode=0, uid=0, gid=0, size=0, atime_sec=0, atime_nsec=0, mtime_sec=0, mtime_nsec=0)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host tree outside the share, shaped like the one the guest walks inside it."""
    out = tmp_path / "host"
    (out / "etc").mkdir(parents=True)
    (out / "etc" / "passwd").write_bytes(b"root:x:0:0\n")
    return out


def _swap_dir_for_link(c: Client, share: Path, outside: Path) -> None:
    """Inside the share: remove `d` (the guest's own dir) and rename a link to `outside` to `d`."""
    os.symlink(str(outside), share / "link")
    c.rpc(P9.TWALK, fid=0, newfid=90, wnames=["d", "etc"])
    c.rpc(P9.TUNLINKAT, dirfid=90, name="passwd", flags=0)
    c.rpc(P9.TWALK, fid=0, newfid=91, wnames=["d"])
    c.rpc(P9.TUNLINKAT, dirfid=91, name="etc", flags=p9.AT_REMOVEDIR)
    c.rpc(P9.TUNLINKAT, dirfid=0, name="d", flags=p9.AT_REMOVEDIR)
    c.rpc(P9.TRENAMEAT, olddirfid=0, oldname="link", newdirfid=0, newname="d")
    assert (share / "d" / "etc" / "passwd").read_bytes() == b"root:x:0:0\n"  # by name, d/ is now outside


def test_stale_fid_after_directory_swapped_for_symlink(share: Path, outside: Path):
    (share / "d" / "etc").mkdir(parents=True)
    (share / "d" / "etc" / "passwd").write_bytes(b"inside\n")
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["d", "etc", "passwd"])  # file fid
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["d", "etc"])  # directory fid
    c.rpc(P9.TWALK, fid=0, newfid=3, wnames=["d", "etc", "passwd"])
    _swap_dir_for_link(c, share, outside)
    # the file fid still names the (removed) file it was walked to, never the host's
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDWR)
    assert c.rpc(P9.TREAD, fid=1, offset=0, count=100)["data"] == b"inside\n"
    c.rpc(P9.TWRITE, fid=1, offset=0, data=b"OVERWRITTEN")
    c.rpc(P9.TSETATTR, fid=3, valid=p9.SETATTR_SIZE | p9.SETATTR_MODE, **{**SETATTR0, "mode": 0o4755})
    assert c.rpc(P9.TGETATTR, fid=3, request_mask=p9.GETATTR_BASIC)["size"] == 0
    # the directory fid creates, lists, makes and removes only in the removed directory
    rtype, _ = c.raw(P9.TLCREATE, fid=2, name="new", flags=p9.DOTL_RDWR, mode=0o4755, gid=0)
    assert rtype == P9.RLERROR  # a removed directory takes no new names
    assert c.error(P9.TMKDIR, dfid=2, name="dir", mode=0o755, gid=0) == errno.ENOENT
    assert c.error(P9.TUNLINKAT, dirfid=2, name="passwd", flags=0) == errno.ENOENT
    c.rpc(P9.TWALK, fid=2, newfid=4, wnames=[])
    c.rpc(P9.TLOPEN, fid=4, flags=p9.DOTL_RDONLY)
    names = [e.name for e in p9.unpack_dirents(c.rpc(P9.TREADDIR, fid=4, offset=0, count=4000)["data"])]
    assert "passwd" not in names
    assert c.error(P9.TWALK, fid=2, newfid=5, wnames=["passwd"]) == errno.ENOENT
    # the host tree is untouched
    assert (outside / "etc" / "passwd").read_bytes() == b"root:x:0:0\n"
    assert (outside / "etc" / "passwd").stat().st_mode & 0o7777 == 0o644
    assert sorted(os.listdir(outside / "etc")) == ["passwd"]


def test_walk_through_swapped_link_refused(share: Path, outside: Path):
    (share / "d" / "etc").mkdir(parents=True)
    (share / "d" / "etc" / "passwd").write_bytes(b"inside\n")
    c = Client(share)
    _swap_dir_for_link(c, share, outside)
    rtype, out = c.raw(P9.TWALK, fid=0, newfid=1, wnames=["d", "etc", "passwd"])
    assert rtype == P9.RWALK and len(out["qids"]) == 1  # stopped at the link
    assert 1 not in c.server.fids


def test_create_open_through_symlink_refused(share: Path, tmp_path: Path):
    target = tmp_path / "secret.txt"
    os.symlink(str(target), share / "planted")
    os.symlink(str(tmp_path / "created-outside"), share / "dangling")
    c = Client(share)
    for name in ("planted", "dangling"):
        c.rpc(P9.TWALK, fid=0, newfid=1, wnames=[])
        assert c.error(P9.TLCREATE, fid=1, name=name, flags=p9.DOTL_RDWR | p9.DOTL_TRUNC, mode=0o644,
                       gid=0) == errno.ELOOP
        c.rpc(P9.TCLUNK, fid=1)
    assert target.read_bytes() == b"outside\n"
    assert not (tmp_path / "created-outside").exists()


def test_dotdot_of_directory_moved_out_of_the_share(share: Path, tmp_path: Path):
    (share / "sub" / "deeper").mkdir()
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["sub", "deeper"])
    os.rename(share / "sub", tmp_path / "gone")  # the host moves the directory out
    assert c.error(P9.TWALK, fid=1, newfid=2, wnames=["..", "..", "secret.txt"]) == errno.ENOENT
    assert 2 not in c.server.fids


def test_fifos_and_devices_are_never_opened(share: Path):
    os.mkfifo(share / "fifo")
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["fifo"])
    assert c.error(P9.TLOPEN, fid=1, flags=p9.DOTL_WRONLY) == errno.EPERM
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=[])
    # no reader: a blocking open would stall the VMM; this one answers at once
    assert c.error(P9.TLCREATE, fid=2, name="fifo", flags=p9.DOTL_WRONLY, mode=0o644, gid=0) in (
        errno.EPERM, errno.ENXIO)
    assert c.error(P9.TWALK, fid=0, newfid=3, wnames=["/dev"]) == errno.EINVAL


def _share_fds(share: Path) -> list[str]:
    """This process's descriptors open on the share (others come and go with other tests'
    leftovers: only these are the server's)."""
    root = str(share.resolve())
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor among them)
        if target == root or target.startswith(root + "/"):
            out.append(target)
    return out


def test_fids_are_bounded_and_never_leak(share: Path):
    from unirealm.host.devices import virtio_9p

    before = _share_fds(share)
    c = Client(share)
    for n in range(1, virtio_9p.MAX_FIDS):
        c.rpc(P9.TWALK, fid=0, newfid=n, wnames=["hello.txt"] if n % 2 else ["sub", ".."])
    assert c.error(P9.TWALK, fid=0, newfid=virtio_9p.MAX_FIDS, wnames=[]) == errno.EMFILE
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    for n in range(1, virtio_9p.MAX_FIDS):
        c.rpc(P9.TCLUNK, fid=n)
    assert c.error(P9.TWALK, fid=0, newfid=1, wnames=["nope"]) == errno.ENOENT  # a failed walk leaves nothing
    assert len(c.raw(P9.TWALK, fid=0, newfid=1, wnames=["sub", "nope", "x"])[1]["qids"]) == 1  # nor a partial one
    c.rpc(P9.TVERSION, msize=65536, version="9P2000.L")
    assert len(_share_fds(share)) > len(before)  # the open file and its walked fids hold descriptors
    c.server.close()
    assert _share_fds(share) == before


def test_symlink_times_through_its_directory(share: Path, tmp_path: Path):
    os.symlink(str(tmp_path / "secret.txt"), share / "l")
    c = Client(share)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["l"])
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_MTIME | p9.SETATTR_MTIME_SET,
          **{**SETATTR0, "mtime_sec": 1_000_000})
    assert os.lstat(share / "l").st_mtime == 1_000_000
    assert (tmp_path / "secret.txt").stat().st_mtime != 1_000_000
