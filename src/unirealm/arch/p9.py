"""9P2000.L, the Linux dialect of the Plan 9 file protocol.

Sources: the Linux kernel's Documentation/filesystems/9p.rst and the 9P2000.L protocol
description of the v9fs project (diod's protocol.md, "9P2000.L"), with message numbers as
in Linux include/net/9p/9p.h (enum p9_msg_t).

Every message is size[4] type[1] tag[2] then its fields, all little-endian; a string is
len[2] followed by that many UTF-8 bytes (no NUL); a qid is type[1] version[4] path[8]
(13 bytes). Errors come back as Rlerror ecode[4], a Linux errno.

`encode(type, tag, **fields)` and `decode(message)` cover the messages below, each listed
once with its fields; `decode` raises P9ProtocolError on anything malformed.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, NamedTuple

VERSION_9P2000_L = "9P2000.L"
NOTAG = 0xFFFF
NOFID = 0xFFFF_FFFF
HEADER_SIZE = 7  # size[4] type[1] tag[2]
IOHDRSZ = 24  # Linux P9_IOHDRSZ: the header room around read/write payloads


class P9(IntEnum):
    TLERROR = 6
    RLERROR = 7
    TSTATFS = 8
    RSTATFS = 9
    TLOPEN = 12
    RLOPEN = 13
    TLCREATE = 14
    RLCREATE = 15
    TREADLINK = 22
    RREADLINK = 23
    TGETATTR = 24
    RGETATTR = 25
    TSETATTR = 26
    RSETATTR = 27
    TREADDIR = 40
    RREADDIR = 41
    TFSYNC = 50
    RFSYNC = 51
    TMKDIR = 72
    RMKDIR = 73
    TRENAMEAT = 74
    RRENAMEAT = 75
    TUNLINKAT = 76
    RUNLINKAT = 77
    TVERSION = 100
    RVERSION = 101
    TATTACH = 104
    RATTACH = 105
    TWALK = 110
    RWALK = 111
    TREAD = 116
    RREAD = 117
    TWRITE = 118
    RWRITE = 119
    TCLUNK = 120
    RCLUNK = 121


class QidType(IntEnum):
    DIR = 0x80
    APPEND = 0x40
    EXCL = 0x20
    SYMLINK = 0x02
    FILE = 0x00


class Qid(NamedTuple):
    type: int
    version: int
    path: int

    def pack(self) -> bytes:
        return struct.pack("<BIQ", self.type, self.version, self.path)


QID_SIZE = 13

# Tgetattr request_mask / Rgetattr valid (Linux P9_STATS_*).
GETATTR_BASIC = 0x0000_07FF
GETATTR_ALL = 0x0000_3FFF
# Tsetattr valid (Linux P9_ATTR_*).
SETATTR_MODE, SETATTR_UID, SETATTR_GID, SETATTR_SIZE = 0x1, 0x2, 0x4, 0x8
SETATTR_ATIME, SETATTR_MTIME, SETATTR_CTIME, SETATTR_ATIME_SET, SETATTR_MTIME_SET = 0x10, 0x20, 0x40, 0x80, 0x100
# Tlopen/Tlcreate flags (Linux P9_DOTL_*; same values as the generic Linux O_* except
# DIRECTORY/NOFOLLOW/LARGEFILE/DIRECT, which differ on arm64).
DOTL_RDONLY, DOTL_WRONLY, DOTL_RDWR = 0, 1, 2
DOTL_ACCMODE = 3
DOTL_CREATE, DOTL_EXCL, DOTL_NOCTTY, DOTL_TRUNC, DOTL_APPEND, DOTL_NONBLOCK = 0o100, 0o200, 0o400, 0o1000, 0o2000, 0o4000
DOTL_DSYNC, DOTL_DIRECTORY, DOTL_NOFOLLOW, DOTL_SYNC = 0o10000, 0o200000, 0o400000, 0o4000000
AT_REMOVEDIR = 0x200  # Tunlinkat flags

# Field kinds: b u8, h u16, d u32, q u64, s string, Q qid, S string list (nwname[2] *),
# W qid list (nwqid[2] *), D data (count[4] *). Each message's fields, in wire order.
FIELDS: dict[P9, tuple[tuple[str, str], ...]] = {
    P9.RLERROR: (("ecode", "d"),),
    P9.TSTATFS: (("fid", "d"),),
    P9.RSTATFS: (("type", "d"), ("bsize", "d"), ("blocks", "q"), ("bfree", "q"), ("bavail", "q"),
                 ("files", "q"), ("ffree", "q"), ("fsid", "q"), ("namelen", "d")),
    P9.TLOPEN: (("fid", "d"), ("flags", "d")),
    P9.RLOPEN: (("qid", "Q"), ("iounit", "d")),
    P9.TLCREATE: (("fid", "d"), ("name", "s"), ("flags", "d"), ("mode", "d"), ("gid", "d")),
    P9.RLCREATE: (("qid", "Q"), ("iounit", "d")),
    P9.TREADLINK: (("fid", "d"),),
    P9.RREADLINK: (("target", "s"),),
    P9.TGETATTR: (("fid", "d"), ("request_mask", "q")),
    P9.RGETATTR: (("valid", "q"), ("qid", "Q"), ("mode", "d"), ("uid", "d"), ("gid", "d"), ("nlink", "q"),
                  ("rdev", "q"), ("size", "q"), ("blksize", "q"), ("blocks", "q"),
                  ("atime_sec", "q"), ("atime_nsec", "q"), ("mtime_sec", "q"), ("mtime_nsec", "q"),
                  ("ctime_sec", "q"), ("ctime_nsec", "q"), ("btime_sec", "q"), ("btime_nsec", "q"),
                  ("gen", "q"), ("data_version", "q")),
    P9.TSETATTR: (("fid", "d"), ("valid", "d"), ("mode", "d"), ("uid", "d"), ("gid", "d"), ("size", "q"),
                  ("atime_sec", "q"), ("atime_nsec", "q"), ("mtime_sec", "q"), ("mtime_nsec", "q")),
    P9.RSETATTR: (),
    P9.TREADDIR: (("fid", "d"), ("offset", "q"), ("count", "d")),
    P9.RREADDIR: (("data", "D"),),
    P9.TFSYNC: (("fid", "d"), ("datasync", "d")),
    P9.RFSYNC: (),
    P9.TMKDIR: (("dfid", "d"), ("name", "s"), ("mode", "d"), ("gid", "d")),
    P9.RMKDIR: (("qid", "Q"),),
    P9.TRENAMEAT: (("olddirfid", "d"), ("oldname", "s"), ("newdirfid", "d"), ("newname", "s")),
    P9.RRENAMEAT: (),
    P9.TUNLINKAT: (("dirfid", "d"), ("name", "s"), ("flags", "d")),
    P9.RUNLINKAT: (),
    P9.TVERSION: (("msize", "d"), ("version", "s")),
    P9.RVERSION: (("msize", "d"), ("version", "s")),
    P9.TATTACH: (("fid", "d"), ("afid", "d"), ("uname", "s"), ("aname", "s"), ("n_uname", "d")),
    P9.RATTACH: (("qid", "Q"),),
    P9.TWALK: (("fid", "d"), ("newfid", "d"), ("wnames", "S")),
    P9.RWALK: (("qids", "W"),),
    P9.TREAD: (("fid", "d"), ("offset", "q"), ("count", "d")),
    P9.RREAD: (("data", "D"),),
    P9.TWRITE: (("fid", "d"), ("offset", "q"), ("data", "D")),
    P9.RWRITE: (("count", "d"),),
    P9.TCLUNK: (("fid", "d"),),
    P9.RCLUNK: (),
}
# Older clients send Tfsync without datasync (the v9fs document's form): accepted as 0.
OPTIONAL_TRAILING = {P9.TFSYNC: "datasync"}
MAXWELEM = 16  # at most 16 names per Twalk
_SCALARS = {"b": "<B", "h": "<H", "d": "<I", "q": "<Q"}


class P9ProtocolError(ValueError):
    """A message that does not parse (the server answers EPROTO/EINVAL)."""


def _pack_string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise P9ProtocolError("string longer than 65535 bytes")
    return struct.pack("<H", len(raw)) + raw


def encode(mtype: P9, tag: int, **values: Any) -> bytes:
    out = bytearray()
    for name, kind in FIELDS[mtype]:
        v = values[name]
        if kind in _SCALARS:
            out += struct.pack(_SCALARS[kind], v)
        elif kind == "s":
            out += _pack_string(v)
        elif kind == "Q":
            out += Qid(*v).pack()
        elif kind == "S":
            out += struct.pack("<H", len(v)) + b"".join(_pack_string(n) for n in v)
        elif kind == "W":
            out += struct.pack("<H", len(v)) + b"".join(Qid(*q).pack() for q in v)
        elif kind == "D":
            out += struct.pack("<I", len(v)) + bytes(v)
    return struct.pack("<IBH", HEADER_SIZE + len(out), mtype, tag) + bytes(out)


def rlerror(tag: int, ecode: int) -> bytes:
    return encode(P9.RLERROR, tag, ecode=ecode)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise P9ProtocolError("message ends inside a field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, kind: str) -> int:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar("h"))
        return raw.decode("utf-8", "surrogateescape")

    def qid(self) -> Qid:
        return Qid(*struct.unpack("<BIQ", self.take(QID_SIZE)))


def header(message: bytes) -> tuple[int, int, int]:
    """(size, type, tag) of a message, checked against its length."""
    if len(message) < HEADER_SIZE:
        raise P9ProtocolError("message shorter than its header")
    size, mtype, tag = struct.unpack_from("<IBH", message)
    if size < HEADER_SIZE or size > len(message):
        raise P9ProtocolError(f"message size {size} does not match its {len(message)} bytes")
    return size, mtype, tag


def decode(message: bytes) -> tuple[P9, int, dict[str, Any]]:
    """(type, tag, fields) of one message; P9ProtocolError if malformed or unknown."""
    size, raw_type, tag = header(message)
    try:
        mtype = P9(raw_type)
    except ValueError:
        raise P9ProtocolError(f"unknown message type {raw_type}") from None
    r = _Reader(bytes(message[HEADER_SIZE:size]))
    out: dict[str, Any] = {}
    for name, kind in FIELDS.get(mtype, ()):
        if r.pos == len(r.data) and OPTIONAL_TRAILING.get(mtype) == name:
            out[name] = 0
            continue
        if kind in _SCALARS:
            out[name] = r.scalar(kind)
        elif kind == "s":
            out[name] = r.string()
        elif kind == "Q":
            out[name] = r.qid()
        elif kind == "S":
            n = r.scalar("h")
            if n > MAXWELEM:
                raise P9ProtocolError(f"Twalk with {n} names (at most {MAXWELEM})")
            out[name] = [r.string() for _ in range(n)]
        elif kind == "W":
            n = r.scalar("h")
            if n > MAXWELEM:
                raise P9ProtocolError(f"Rwalk with {n} qids")
            out[name] = [r.qid() for _ in range(n)]
        elif kind == "D":
            out[name] = r.take(r.scalar("d"))
    if r.pos != len(r.data):
        raise P9ProtocolError(f"{mtype.name}: {len(r.data) - r.pos} bytes left over")
    return mtype, tag, out


class Dirent(NamedTuple):
    qid: Qid
    offset: int
    type: int
    name: str


def pack_dirent(qid: Qid, offset: int, dtype: int, name: str) -> bytes:
    """One Rreaddir entry: qid[13] offset[8] type[1] name[s]."""
    return qid.pack() + struct.pack("<QB", offset, dtype) + _pack_string(name)


def unpack_dirents(data: bytes) -> list[Dirent]:
    r = _Reader(data)
    out = []
    while r.pos < len(data):
        qid = r.qid()
        offset, dtype = r.scalar("q"), r.scalar("b")
        out.append(Dirent(qid, offset, dtype, r.string()))
    return out
