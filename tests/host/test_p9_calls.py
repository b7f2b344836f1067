"""The 9P2000.L server call by call, each answer checked against the host's own view of the
files (os.stat, os.statvfs) and the protocol's rules (the v9fs 9P2000.L description, Linux
fs/9p and the open(2)/pwrite(2)/rename(2) man pages): version and msize, attach, walks in
place, qid types, open flags, the read size bound, attributes, directory entries and their
d_type, and the virtio-9p device type's config space and reply bound (virtio 1.2 §5.11)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
from pathlib import Path

import pytest

from unirealm.arch import p9
from unirealm.arch.p9 import P9
from unirealm.host.devices.virtio_9p import P9Server, Virtio9p

from .test_p9_server import Client

QID_DIR, QID_SYMLINK, QID_FILE = 0x80, 0x02, 0x00
DT_FIFO, DT_DIR, DT_REG, DT_LNK = 1, 4, 8, 10  # <dirent.h>
V9FS_MAGIC = 0x01021997
SETATTR0 = dict(mode=0, uid=0, gid=0, size=0, atime_sec=0, atime_nsec=0, mtime_sec=0, mtime_nsec=0)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "f").write_bytes(b"0123456789")
    os.symlink("f", root / "l")
    return root


def test_version_msize_and_name(tree: Path):
    c = Client(tree)
    assert c.rpc(P9.TVERSION, msize=4096, version="9P2000.L") == {"msize": 4096, "version": "9P2000.L"}
    assert c.error(P9.TVERSION, msize=4095, version="9P2000.L") == errno.EINVAL
    assert c.rpc(P9.TVERSION, msize=70000, version="9P2000.L.x")["version"] == "9P2000.L"
    assert c.rpc(P9.TVERSION, msize=70000, version="9P2000.u")["version"] == "unknown"  # only .L is spoken
    assert c.server.msize == 70000
    assert c.rpc(P9.TVERSION, msize=512 * 1024 + 1, version="9P2000.L")["msize"] == 512 * 1024


def test_attach(tree: Path):
    c = Client(tree)
    assert c.error(P9.TATTACH, fid=5, afid=3, uname="", aname="", n_uname=0) == errno.EINVAL  # no auth
    assert 5 not in c.server.fids
    qid = c.rpc(P9.TATTACH, fid=5, afid=p9.NOFID, uname="", aname="", n_uname=0)["qid"]
    assert qid == (QID_DIR, 0, tree.stat().st_ino)


def test_walk_qid_types_and_in_place(tree: Path):
    c = Client(tree)
    qids = c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["a", "b", "c"])["qids"]
    assert [q.type for q in qids] == [QID_DIR] * 3
    assert [q.path for q in qids] == [(tree / p).stat().st_ino for p in ("a", "a/b", "a/b/c")]
    # `..` climbs one level each time, from a deep directory
    qids = c.rpc(P9.TWALK, fid=1, newfid=1, wnames=["..", ".."])["qids"]  # newfid == fid: in place
    assert [q.path for q in qids] == [(tree / "a/b").stat().st_ino, (tree / "a").stat().st_ino]
    assert c.rpc(P9.TWALK, fid=1, newfid=2, wnames=["."])["qids"][0].path == (tree / "a").stat().st_ino
    assert c.rpc(P9.TWALK, fid=0, newfid=3, wnames=["f"])["qids"] == [(QID_FILE, 0, (tree / "f").stat().st_ino)]
    assert c.rpc(P9.TWALK, fid=0, newfid=4, wnames=["l"])["qids"][0].type == QID_SYMLINK
    assert c.error(P9.TWALK, fid=0, newfid=3, wnames=[]) == errno.EEXIST
    assert c.error(P9.TWALK, fid=3, newfid=5, wnames=["x"]) == errno.ENOTDIR  # a file has no names
    assert c.rpc(P9.TWALK, fid=0, newfid=5, wnames=["f", "x"])["qids"] == [(QID_FILE, 0, (tree / "f").stat().st_ino)]
    assert 5 not in c.server.fids  # a partial walk makes no fid
    assert c.error(P9.TWALK, fid=0, newfid=5, wnames=["a\0"]) == errno.EINVAL
    c.rpc(P9.TLOPEN, fid=3, flags=p9.DOTL_RDONLY)
    assert c.error(P9.TWALK, fid=3, newfid=6, wnames=[]) == errno.EBADF  # an open fid is not walked
    assert c.error(P9.TWALK, fid=77, newfid=6, wnames=[]) == errno.EBADF


def test_clunk(tree: Path):
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["f"])
    c.rpc(P9.TCLUNK, fid=1)
    assert 1 not in c.server.fids
    assert c.error(P9.TCLUNK, fid=1) == errno.EBADF


def test_open_flags_reach_the_host_open(tree: Path):
    c = Client(tree)
    c.rpc(P9.TVERSION, msize=8192, version="9P2000.L")
    c.rpc(P9.TATTACH, fid=0, afid=p9.NOFID, uname="", aname="", n_uname=0)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["f"])
    opened = c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_WRONLY | p9.DOTL_APPEND | p9.DOTL_SYNC)
    assert opened == {"qid": (QID_FILE, 0, (tree / "f").stat().st_ino), "iounit": 8192 - 24}
    assert c.error(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY) == errno.EBADF  # already open
    assert c.error(P9.TREAD, fid=1, offset=0, count=4) == errno.EBADF  # write-only
    assert c.rpc(P9.TWRITE, fid=1, offset=0, data=b"ab")["count"] == 2
    assert (tree / "f").read_bytes() == b"0123456789ab"  # pwrite(2) on O_APPEND appends
    fl = fcntl.fcntl(c.server.fids[1].io, fcntl.F_GETFL)
    assert fl & os.O_SYNC == os.O_SYNC
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["f"])
    c.rpc(P9.TLOPEN, fid=2, flags=p9.DOTL_RDWR | p9.DOTL_TRUNC | p9.DOTL_DSYNC | p9.DOTL_CREATE | p9.DOTL_EXCL)
    assert (tree / "f").read_bytes() == b""  # O_TRUNC; CREATE/EXCL mean nothing to an existing file
    fl = fcntl.fcntl(c.server.fids[2].io, fcntl.F_GETFL)
    assert fl & os.O_DSYNC and fl & os.O_SYNC != os.O_SYNC and not fl & os.O_APPEND
    c.rpc(P9.TWRITE, fid=2, offset=3, data=b"x")
    assert c.rpc(P9.TREAD, fid=2, offset=0, count=10)["data"] == b"\0\0\0x"
    c.rpc(P9.TFSYNC, fid=2, datasync=1)
    assert c.error(P9.TFSYNC, fid=0, datasync=0) == errno.EBADF  # not open


def test_create(tree: Path):
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["a"])
    made = c.rpc(P9.TLCREATE, fid=1, name="new", flags=p9.DOTL_WRONLY, mode=0o600, gid=0)
    st = (tree / "a/new").stat()
    assert made == {"qid": (QID_FILE, 0, st.st_ino), "iounit": 65536 - 24}
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert c.rpc(P9.TGETATTR, fid=1, request_mask=p9.GETATTR_BASIC)["qid"].path == st.st_ino  # fid is the file
    assert c.error(P9.TREAD, fid=1, offset=0, count=1) == errno.EBADF
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["a"])
    assert c.error(P9.TLCREATE, fid=2, name="new", flags=p9.DOTL_RDWR | p9.DOTL_EXCL, mode=0o600,
                   gid=0) == errno.EEXIST
    assert c.error(P9.TLCREATE, fid=2, name="x/y", flags=p9.DOTL_RDWR, mode=0o600, gid=0) == errno.EINVAL
    assert c.error(P9.TLCREATE, fid=1, name="z", flags=p9.DOTL_RDWR, mode=0o600, gid=0) == errno.ENOTDIR
    c.rpc(P9.TLOPEN, fid=2, flags=p9.DOTL_RDONLY)
    assert c.error(P9.TLCREATE, fid=2, name="z", flags=p9.DOTL_RDWR, mode=0o600, gid=0) == errno.EBADF
    assert not (tree / "a/z").exists()


def test_read_is_bounded_by_msize_and_by_the_buffer(tree: Path):
    (tree / "big").write_bytes(bytes(range(256)) * 40)
    c = Client(tree)
    c.rpc(P9.TVERSION, msize=4096, version="9P2000.L")
    c.rpc(P9.TATTACH, fid=0, afid=p9.NOFID, uname="", aname="", n_uname=0)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["big"])
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    assert len(c.rpc(P9.TREAD, fid=1, offset=0, count=10000)["data"]) == 4096 - 24
    assert c.rpc(P9.TREAD, fid=1, offset=100, count=5)["data"] == bytes(range(100, 105))

    def read(capacity: int) -> bytes:
        reply = c.server.handle(p9.encode(P9.TREAD, 9, fid=1, offset=0, count=10000), capacity)
        assert len(reply) <= max(capacity, 11)
        return p9.decode(reply)[2]["data"]

    assert len(read(1000)) == 1000 - 24  # the posted buffer, less the I/O header room
    assert read(20) == b""


def test_getattr_is_the_host_stat(tree: Path):
    os.utime(tree / "f", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["f"])
    st = os.stat(tree / "f")
    got = c.rpc(P9.TGETATTR, fid=1, request_mask=p9.GETATTR_ALL)
    want = {"valid": p9.GETATTR_BASIC, "qid": (QID_FILE, 0, st.st_ino), "mode": st.st_mode, "uid": st.st_uid,
            "gid": st.st_gid, "nlink": 1, "rdev": 0, "size": 10, "blksize": st.st_blksize,
            "blocks": st.st_blocks, "atime_sec": 1_600_000_000, "atime_nsec": 123_456_789,
            "mtime_sec": 1_500_000_000, "mtime_nsec": 987_654_321, "ctime_sec": st.st_ctime_ns // 10**9,
            "ctime_nsec": st.st_ctime_ns % 10**9, "btime_sec": 0, "btime_nsec": 0, "gen": 0, "data_version": 0}
    assert got == want
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_WRONLY)
    c.rpc(P9.TWRITE, fid=1, offset=10, data=b"+")
    assert c.rpc(P9.TGETATTR, fid=1, request_mask=p9.GETATTR_BASIC)["size"] == 11
    assert c.rpc(P9.TGETATTR, fid=0, request_mask=p9.GETATTR_BASIC)["mode"] == tree.stat().st_mode


def test_setattr_mode_size_and_times(tree: Path):
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["f"])
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_MODE, **{**SETATTR0, "mode": 0o100640})
    assert stat.S_IMODE((tree / "f").stat().st_mode) == 0o640
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_SIZE, **{**SETATTR0, "size": 4})  # not open: by handle
    assert (tree / "f").read_bytes() == b"0123"
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_SIZE, **{**SETATTR0, "size": 2})  # open read-only: by handle
    assert (tree / "f").read_bytes() == b"01"
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["f"])
    c.rpc(P9.TLOPEN, fid=2, flags=p9.DOTL_RDWR)
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_SIZE, **{**SETATTR0, "size": 6})
    assert (tree / "f").read_bytes() == b"01\0\0\0\0"
    assert c.error(P9.TSETATTR, fid=0, valid=p9.SETATTR_SIZE, **SETATTR0) == errno.EINVAL  # a directory
    # times: _SET takes the given value; without it, the current time; an absent one is kept
    os.utime(tree / "f", ns=(10**18, 2 * 10**18))
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_ATIME | p9.SETATTR_ATIME_SET,
          **{**SETATTR0, "atime_sec": 5, "atime_nsec": 7, "mtime_sec": 9})
    st = os.stat(tree / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5 * 10**9 + 7, 2 * 10**18)
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_MTIME | p9.SETATTR_MTIME_SET,
          **{**SETATTR0, "mtime_sec": 8, "mtime_nsec": 3, "atime_sec": 1})
    st = os.stat(tree / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5 * 10**9 + 7, 8 * 10**9 + 3)
    before = time.time_ns()
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_MTIME, **{**SETATTR0, "mtime_sec": 8})
    st = os.stat(tree / "f")
    assert st.st_atime_ns == 5 * 10**9 + 7 and st.st_mtime_ns >= before - 10**9
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_ATIME | p9.SETATTR_MTIME | p9.SETATTR_MTIME_SET,
          **{**SETATTR0, "mtime_sec": 4})
    st = os.stat(tree / "f")
    assert st.st_atime_ns >= before - 10**9 and st.st_mtime_ns == 4 * 10**9


def test_setattr_on_a_symlink(tree: Path):
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["l"])
    mode = (tree / "f").stat().st_mode
    c.rpc(P9.TSETATTR, fid=1, valid=p9.SETATTR_MODE, **{**SETATTR0, "mode": 0o777})  # a link has no mode
    assert (tree / "f").stat().st_mode == mode
    c.rpc(P9.TWALK, fid=1, newfid=2, wnames=[])  # a clone keeps the link's directory
    c.rpc(P9.TSETATTR, fid=2, valid=p9.SETATTR_ATIME | p9.SETATTR_ATIME_SET, **{**SETATTR0, "atime_sec": 77})
    assert os.lstat(tree / "l").st_atime == 77
    os.unlink(tree / "l")
    os.symlink("a", tree / "l")  # another link under the name
    assert c.error(P9.TSETATTR, fid=1, valid=p9.SETATTR_MTIME | p9.SETATTR_MTIME_SET, **SETATTR0) == errno.ESTALE
    assert c.error(P9.TREADLINK, fid=0) == errno.EINVAL


def test_statfs_is_the_host_statvfs(tree: Path):
    c = Client(tree)
    got = c.rpc(P9.TSTATFS, fid=0)
    s = os.statvfs(tree)
    assert got["type"] == V9FS_MAGIC and got["fsid"] == 0
    assert (got["bsize"], got["blocks"], got["files"], got["namelen"]) == (s.f_bsize, s.f_blocks, s.f_files,
                                                                          s.f_namemax)
    assert got["bfree"] >= got["bavail"]


def readdir_all(c: Client, fid: int, count: int = 4000) -> list[p9.Dirent]:
    out, offset = [], 0
    while data := c.rpc(P9.TREADDIR, fid=fid, offset=offset, count=count)["data"]:
        out += p9.unpack_dirents(data)
        offset = out[-1].offset
    return out


def test_readdir_entries(tree: Path):
    os.mkfifo(tree / "p")
    c = Client(tree)
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=[])
    c.rpc(P9.TLOPEN, fid=1, flags=p9.DOTL_RDONLY)
    ents = readdir_all(c, 1)
    assert [(e.name, e.type, e.offset) for e in ents] == [
        (".", DT_DIR, 1), ("..", DT_DIR, 2), ("a", DT_DIR, 3), ("f", DT_REG, 4), ("l", DT_LNK, 5), ("p", DT_FIFO, 6)]
    assert ents[0].qid == ents[1].qid == (QID_DIR, 0, tree.stat().st_ino)  # the root's `..` is the root
    assert ents[4].qid.type == QID_SYMLINK and ents[3].qid.path == (tree / "f").stat().st_ino
    # an entry is 13 + 8 + 1 + 2 + len(name) bytes: a count below that returns nothing
    assert c.rpc(P9.TREADDIR, fid=1, offset=0, count=24)["data"] == b""
    assert len(p9.unpack_dirents(c.rpc(P9.TREADDIR, fid=1, offset=0, count=25)["data"])) == 1
    (tree / "g").write_bytes(b"")
    assert "g" in [e.name for e in readdir_all(c, 1)]  # offset 0 reads the directory afresh
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["a"])
    c.rpc(P9.TLOPEN, fid=2, flags=p9.DOTL_RDONLY)
    assert readdir_all(c, 2)[1].qid.path == tree.stat().st_ino  # `..` of a/ is the root
    c.rpc(P9.TWALK, fid=0, newfid=3, wnames=["f"])
    c.rpc(P9.TLOPEN, fid=3, flags=p9.DOTL_RDONLY)
    assert c.error(P9.TREADDIR, fid=3, offset=0, count=100) == errno.ENOTDIR


def test_mkdir_unlink_rename(tree: Path):
    c = Client(tree)
    qid = c.rpc(P9.TMKDIR, dfid=0, name="d", mode=0o700, gid=0)["qid"]
    assert qid == (QID_DIR, 0, (tree / "d").stat().st_ino)
    assert stat.S_IMODE((tree / "d").stat().st_mode) == 0o700
    assert c.error(P9.TMKDIR, dfid=0, name="d", mode=0o700, gid=0) == errno.EEXIST
    c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["f"])
    assert c.error(P9.TMKDIR, dfid=1, name="x", mode=0o700, gid=0) == errno.ENOTDIR
    assert c.error(P9.TUNLINKAT, dirfid=1, name="x", flags=0) == errno.ENOTDIR
    assert c.error(P9.TUNLINKAT, dirfid=0, name="a", flags=p9.AT_REMOVEDIR) == errno.ENOTEMPTY
    assert c.error(P9.TUNLINKAT, dirfid=0, name="f", flags=p9.AT_REMOVEDIR) == errno.ENOTDIR
    c.rpc(P9.TUNLINKAT, dirfid=0, name="l", flags=0)  # the link, not its target
    assert not os.path.lexists(tree / "l") and (tree / "f").exists()
    c.rpc(P9.TWALK, fid=0, newfid=2, wnames=["a"])
    assert c.error(P9.TRENAMEAT, olddirfid=0, oldname="a", newdirfid=2, newname="in") == errno.EINVAL
    assert c.error(P9.TRENAMEAT, olddirfid=0, oldname="f", newdirfid=0, newname="..") == errno.EINVAL
    assert c.error(P9.TRENAMEAT, olddirfid=0, oldname="f", newdirfid=1, newname="g") == errno.ENOTDIR
    c.rpc(P9.TRENAMEAT, olddirfid=0, oldname="f", newdirfid=2, newname="g")
    assert (tree / "a/g").read_bytes() == b"0123456789"


def test_errors_carry_the_request_tag(tree: Path):
    s = P9Server(str(tree))
    bad_body = struct.pack("<IBH", 9, P9.TCLUNK, 0x1234) + b"\0\0"  # header fine, fid cut short
    assert p9.decode(s.handle(bad_body)) == (P9.RLERROR, 0x1234, {"ecode": errno.EPROTO})
    assert p9.decode(s.handle(b"\x00"))[1] == p9.NOTAG
    assert p9.decode(s.handle(p9.encode(P9.TCLUNK, 0x4321, fid=9)))[1:] == (0x4321, {"ecode": errno.EBADF})
    s.close()
    assert s.root_fd == -1
    s.close()  # twice: nothing left to close


def test_a_share_must_be_a_directory(tree: Path):
    with pytest.raises(ValueError, match="not a directory"):
        P9Server(str(tree / "f"))


def test_device_type_config_and_reply_bound(tree: Path):
    dev = Virtio9p(P9Server(str(tree)), "hostshare")
    assert (dev.device_id, dev.features, dev.num_queues, dev.queue_num_max) == (9, 1, 1, 128)  # MOUNT_TAG
    assert dev.config() == b"\x09\x00hostshare"  # §5.11.4: le16 tag_len, the tag without a NUL
    assert dev.tag == "hostshare"
    version = p9.encode(P9.TVERSION, 0x77, msize=8192, version="9P2000.L")
    assert p9.decode(dev.handle(0, version, 21))[0] == P9.RVERSION  # the reply is exactly 21 bytes
    assert p9.decode(dev.handle(0, version, 20)) == (P9.RLERROR, 0x77, {"ecode": errno.ENOBUFS})


def test_no_descriptor_outlives_its_fid(tree: Path):
    """A symlink's fid also holds its directory; a walk in place replaces the fid's handle.
    Clunked (or replaced), nothing stays open."""
    c = Client(tree)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        c.rpc(P9.TWALK, fid=0, newfid=1, wnames=["l"])
        c.rpc(P9.TWALK, fid=1, newfid=2, wnames=[])
        c.rpc(P9.TCLUNK, fid=1)
        c.rpc(P9.TCLUNK, fid=2)
    assert len(os.listdir("/proc/self/fd")) == before
    c.rpc(P9.TWALK, fid=0, newfid=3, wnames=[])
    for _ in range(3):
        c.rpc(P9.TWALK, fid=3, newfid=3, wnames=["a"])
        c.rpc(P9.TWALK, fid=3, newfid=3, wnames=[".."])
    assert len(os.listdir("/proc/self/fd")) == before + 1  # fid 3's one handle


def test_create_over_a_fifo_read_only_is_refused(tree: Path):
    os.mkfifo(tree / "p")
    c = Client(tree)
    assert c.error(P9.TLCREATE, fid=0, name="p", flags=p9.DOTL_RDONLY, mode=0o600, gid=0) == errno.EPERM
    assert stat.S_ISFIFO(os.lstat(tree / "p").st_mode)


def test_unlink_of_a_link_to_a_directory_removes_the_link(tree: Path):
    os.symlink("a", tree / "dl")
    c = Client(tree)
    c.rpc(P9.TUNLINKAT, dirfid=0, name="dl", flags=0)  # unlink(2): the link itself, never EISDIR
    assert not os.path.lexists(tree / "dl") and (tree / "a").is_dir()
