"""virtio-9p (device id 9) and a 9P2000.L server over one host directory, as kvmtool's
`--9p DIR[,TAG]` (virtio/9p.c).

The server is confined to its directory:

- a fid is a path of names below the root, never an absolute host path;
- names from the guest may not be empty or contain '/' or NUL; `..` at the root stays at
  the root (Twalk), and `.`/`..` cannot be created, removed or renamed;
- a symlink is never followed: Twalk does not step through one (ELOOP), Tlopen opens with
  O_NOFOLLOW (ELOOP), and every other call works on the link itself; the guest's client
  resolves links with Treadlink inside its own namespace.

qids are the host inode numbers (type from the file type, version 0). Every malformed or
hostile message gets Rlerror (EPROTO for a message that does not parse, EINVAL for a bad
argument, the host's errno for a failing host call), never an exception.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from unirealm.arch import p9
from unirealm.arch.p9 import P9, Qid, QidType
from unirealm.arch.virtio import VIRTIO_9P_MOUNT_TAG, VirtioDeviceId, feature, ninep_config

log = logging.getLogger("unirealm.9p")
MAX_MSIZE = 512 * 1024
QUEUE_NUM_MAX = 128  # kvmtool's VIRTQUEUE_NUM
# host dirent d_type values for Rreaddir
_DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFCHR: 2, stat.S_IFBLK: 6,
       stat.S_IFIFO: 1, stat.S_IFSOCK: 12}


class P9Error(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(errno.errorcode.get(code, str(code)))
        self.errno = code


@dataclass
class Fid:
    path: tuple[str, ...]
    fd: int | None = None
    flags: int = 0
    listing: list[tuple[str, os.stat_result]] | None = field(default=None, repr=False)


def qid_of(st: os.stat_result) -> Qid:
    if stat.S_ISDIR(st.st_mode):
        qtype = QidType.DIR
    elif stat.S_ISLNK(st.st_mode):
        qtype = QidType.SYMLINK
    else:
        qtype = QidType.FILE
    return Qid(int(qtype), 0, st.st_ino)


def _name(name: str) -> str:
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise P9Error(errno.EINVAL)
    return name


class P9Server:
    """9P2000.L over `root`. `handle(message, capacity)` answers one T-message."""

    def __init__(self, root: str) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ValueError(f"9p share {root!r} is not a directory")
        self.root = real
        self.msize = 8192
        self.fids: dict[int, Fid] = {}

    # --- paths ----------------------------------------------------------------------------
    def host_path(self, path: tuple[str, ...]) -> str:
        return os.path.join(self.root, *path)

    def fid(self, n: int) -> Fid:
        f = self.fids.get(n)
        if f is None:
            raise P9Error(errno.EBADF)
        return f

    def new_fid(self, n: int) -> None:
        if n == p9.NOFID or n in self.fids:
            raise P9Error(errno.EBADF if n == p9.NOFID else errno.EEXIST)

    def lstat(self, path: tuple[str, ...]) -> os.stat_result:
        try:
            return os.lstat(self.host_path(path))
        except OSError as exc:
            raise P9Error(exc.errno or errno.EIO) from None

    def dir_fid(self, n: int) -> Fid:
        f = self.fid(n)
        if not stat.S_ISDIR(self.lstat(f.path).st_mode):
            raise P9Error(errno.ENOTDIR)
        return f

    # --- dispatch -------------------------------------------------------------------------
    def handle(self, message: bytes, capacity: int | None = None) -> bytes:
        tag = p9.NOTAG
        try:
            _, _, tag = p9.header(message)
            mtype, tag, fields = p9.decode(message)
            handler = getattr(self, f"t_{mtype.name[1:].lower()}", None)
            if handler is None or not mtype.name.startswith("T"):
                raise P9Error(errno.EOPNOTSUPP)
            limit = self.msize if capacity is None else min(self.msize, capacity)
            rtype, out = handler(fields, limit)
            return p9.encode(rtype, tag, **out)
        except P9Error as exc:
            return p9.rlerror(tag, exc.errno)
        except p9.P9ProtocolError as exc:
            log.info("9p: malformed message: %s", exc)
            return p9.rlerror(tag, errno.EPROTO)
        except OSError as exc:
            return p9.rlerror(tag, exc.errno or errno.EIO)
        except (ValueError, OverflowError, UnicodeError, KeyError, TypeError) as exc:
            log.info("9p: bad argument: %s", exc)
            return p9.rlerror(tag, errno.EINVAL)

    # --- session --------------------------------------------------------------------------
    def t_version(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        if m["msize"] < 4096:
            raise P9Error(errno.EINVAL)
        self.close_all()
        self.msize = min(m["msize"], MAX_MSIZE)
        version = p9.VERSION_9P2000_L if m["version"].startswith(p9.VERSION_9P2000_L) else "unknown"
        return P9.RVERSION, {"msize": self.msize, "version": version}

    def close_all(self) -> None:
        for f in self.fids.values():
            if f.fd is not None:
                os.close(f.fd)
        self.fids.clear()

    def t_attach(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        self.new_fid(m["fid"])
        if m["afid"] != p9.NOFID:
            raise P9Error(errno.EINVAL)  # no authentication
        self.fids[m["fid"]] = Fid(())
        return P9.RATTACH, {"qid": qid_of(self.lstat(()))}

    def t_walk(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if m["newfid"] != m["fid"]:
            self.new_fid(m["newfid"])
        if f.fd is not None:
            raise P9Error(errno.EBADF)  # an open fid may not be walked (9P)
        path = f.path
        qids: list[Qid] = []
        for i, name in enumerate(m["wnames"]):
            try:
                if not name or "/" in name or "\0" in name:
                    raise P9Error(errno.EINVAL)
                here = self.lstat(path)
                if stat.S_ISLNK(here.st_mode):
                    raise P9Error(errno.ELOOP)  # never step through a symlink
                if not stat.S_ISDIR(here.st_mode):
                    raise P9Error(errno.ENOTDIR)
                if name == "..":
                    path = path[:-1]  # the root's parent is the root
                elif name != ".":
                    path = (*path, name)
                qids.append(qid_of(self.lstat(path)))
            except P9Error:
                if i == 0:
                    raise
                return P9.RWALK, {"qids": qids}  # partial walk: newfid is not created
        self.fids[m["newfid"]] = Fid(path)
        return P9.RWALK, {"qids": qids}

    def t_clunk(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        del self.fids[m["fid"]]
        if f.fd is not None:
            os.close(f.fd)
        return P9.RCLUNK, {}

    # --- files ----------------------------------------------------------------------------
    @staticmethod
    def host_flags(dotl: int) -> int:
        flags = dotl & p9.DOTL_ACCMODE
        if flags == 3:
            raise P9Error(errno.EINVAL)
        for bit, host in ((p9.DOTL_TRUNC, os.O_TRUNC), (p9.DOTL_APPEND, os.O_APPEND), (p9.DOTL_EXCL, os.O_EXCL),
                          (p9.DOTL_DSYNC, os.O_DSYNC), (p9.DOTL_SYNC, os.O_SYNC)):
            if dotl & bit:
                flags |= host
        return flags | os.O_NOFOLLOW | os.O_CLOEXEC

    def t_lopen(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if f.fd is not None:
            raise P9Error(errno.EBADF)
        st = self.lstat(f.path)
        if stat.S_ISLNK(st.st_mode):
            raise P9Error(errno.ELOOP)
        flags = self.host_flags(m["flags"] & ~(p9.DOTL_CREATE | p9.DOTL_EXCL))
        if stat.S_ISDIR(st.st_mode):
            if flags & 3 != os.O_RDONLY:
                raise P9Error(errno.EISDIR)
            flags |= os.O_DIRECTORY
        elif not stat.S_ISREG(st.st_mode):
            raise P9Error(errno.EPERM)  # no host devices, fifos or sockets through the share
        f.fd = os.open(self.host_path(f.path), flags)
        f.flags = flags
        return P9.RLOPEN, {"qid": qid_of(os.fstat(f.fd)), "iounit": self.msize - p9.IOHDRSZ}

    def t_lcreate(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        d = self.dir_fid(m["fid"])
        if d.fd is not None:
            raise P9Error(errno.EBADF)
        path = (*d.path, _name(m["name"]))
        flags = self.host_flags(m["flags"]) | os.O_CREAT
        fd = os.open(self.host_path(path), flags, m["mode"] & 0o7777)
        d.path, d.fd, d.flags = path, fd, flags  # the fid is now the new, open file
        return P9.RLCREATE, {"qid": qid_of(os.fstat(fd)), "iounit": self.msize - p9.IOHDRSZ}

    def open_fd(self, n: int) -> Fid:
        f = self.fid(n)
        if f.fd is None:
            raise P9Error(errno.EBADF)
        return f

    def t_read(self, m: dict[str, Any], limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if f.flags & 3 == os.O_WRONLY:
            raise P9Error(errno.EBADF)
        count = min(m["count"], max(limit - p9.IOHDRSZ, 0))
        return P9.RREAD, {"data": os.pread(f.fd, count, m["offset"])}  # type: ignore[arg-type]

    def t_write(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if f.flags & 3 == os.O_RDONLY:
            raise P9Error(errno.EBADF)
        return P9.RWRITE, {"count": os.pwrite(f.fd, m["data"], m["offset"])}  # type: ignore[arg-type]

    def t_fsync(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        (os.fdatasync if m["datasync"] else os.fsync)(f.fd)  # type: ignore[arg-type]
        return P9.RFSYNC, {}

    def t_readlink(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if not stat.S_ISLNK(self.lstat(f.path).st_mode):
            raise P9Error(errno.EINVAL)
        return P9.RREADLINK, {"target": os.readlink(self.host_path(f.path))}

    # --- attributes -----------------------------------------------------------------------
    def t_getattr(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        st = os.fstat(f.fd) if f.fd is not None else self.lstat(f.path)
        return P9.RGETATTR, {
            "valid": p9.GETATTR_BASIC, "qid": qid_of(st), "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
            "nlink": st.st_nlink, "rdev": st.st_rdev, "size": st.st_size, "blksize": st.st_blksize,
            "blocks": st.st_blocks,
            "atime_sec": st.st_atime_ns // 10**9, "atime_nsec": st.st_atime_ns % 10**9,
            "mtime_sec": st.st_mtime_ns // 10**9, "mtime_nsec": st.st_mtime_ns % 10**9,
            "ctime_sec": st.st_ctime_ns // 10**9, "ctime_nsec": st.st_ctime_ns % 10**9,
            "btime_sec": 0, "btime_nsec": 0, "gen": 0, "data_version": 0,
        }

    def t_setattr(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        path = self.host_path(f.path)
        st = self.lstat(f.path)
        link = stat.S_ISLNK(st.st_mode)
        valid = m["valid"]
        if valid & p9.SETATTR_MODE and not link:
            os.chmod(path, m["mode"] & 0o7777)
        if valid & p9.SETATTR_SIZE:
            if not stat.S_ISREG(st.st_mode):
                raise P9Error(errno.EINVAL)
            if f.fd is not None and f.flags & 3 != os.O_RDONLY:
                os.ftruncate(f.fd, m["size"])
            else:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, m["size"])
                finally:
                    os.close(fd)
        if valid & (p9.SETATTR_ATIME | p9.SETATTR_MTIME):
            atime = m["atime_sec"] * 10**9 + m["atime_nsec"] if valid & p9.SETATTR_ATIME_SET else None
            mtime = m["mtime_sec"] * 10**9 + m["mtime_nsec"] if valid & p9.SETATTR_MTIME_SET else None
            if not valid & p9.SETATTR_ATIME:
                atime = st.st_atime_ns
            if not valid & p9.SETATTR_MTIME:
                mtime = st.st_mtime_ns
            if atime is None or mtime is None:  # ATIME/MTIME without _SET: the current time
                now = time.time_ns()
                atime = now if atime is None else atime
                mtime = now if mtime is None else mtime
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        return P9.RSETATTR, {}

    def t_statfs(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        self.fid(m["fid"])
        s = os.statvfs(self.root)
        return P9.RSTATFS, {"type": 0x01021997, "bsize": s.f_bsize, "blocks": s.f_blocks, "bfree": s.f_bfree,
                            "bavail": s.f_bavail, "files": s.f_files, "ffree": s.f_ffree, "fsid": 0,
                            "namelen": s.f_namemax}

    # --- directories ----------------------------------------------------------------------
    def t_readdir(self, m: dict[str, Any], limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if not f.flags & os.O_DIRECTORY:
            raise P9Error(errno.ENOTDIR)
        if f.listing is None or m["offset"] == 0:
            here = self.lstat(f.path)
            up = self.lstat(f.path[:-1])
            names = sorted(os.listdir(self.host_path(f.path)))
            f.listing = [(".", here), ("..", up)]
            for n in names:
                try:
                    f.listing.append((n, self.lstat((*f.path, n))))
                except P9Error:
                    continue  # removed meanwhile
        count = min(m["count"], max(limit - p9.IOHDRSZ, 0))
        out = bytearray()
        for i in range(m["offset"], len(f.listing)):
            n, st = f.listing[i]
            entry = p9.pack_dirent(qid_of(st), i + 1, _DT.get(stat.S_IFMT(st.st_mode), 0), n)
            if len(out) + len(entry) > count:
                break
            out += entry
        return P9.RREADDIR, {"data": bytes(out)}

    def t_mkdir(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        d = self.dir_fid(m["dfid"])
        path = (*d.path, _name(m["name"]))
        os.mkdir(self.host_path(path), m["mode"] & 0o7777)
        return P9.RMKDIR, {"qid": qid_of(self.lstat(path))}

    def t_unlinkat(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        d = self.dir_fid(m["dirfid"])
        path = self.host_path((*d.path, _name(m["name"])))
        if m["flags"] & p9.AT_REMOVEDIR:
            os.rmdir(path)
        else:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise P9Error(errno.EISDIR)
            os.unlink(path)
        return P9.RUNLINKAT, {}

    def t_renameat(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        old_dir, new_dir = self.dir_fid(m["olddirfid"]), self.dir_fid(m["newdirfid"])
        old = (*old_dir.path, _name(m["oldname"]))
        new = (*new_dir.path, _name(m["newname"]))
        if new[: len(old)] == old and len(new) > len(old):
            raise P9Error(errno.EINVAL)  # a directory into itself
        os.rename(self.host_path(old), self.host_path(new))
        for f in self.fids.values():  # fids follow the file, as the host's dentries do
            if f.path[: len(old)] == old:
                f.path = new + f.path[len(old) :]
        return P9.RRENAMEAT, {}


class Virtio9p:
    """The virtio-9p device type: one request queue, the mount tag in config space."""

    device_id = VirtioDeviceId.NINEP
    features = feature(VIRTIO_9P_MOUNT_TAG)
    num_queues = 1
    queue_num_max = QUEUE_NUM_MAX

    def __init__(self, server: P9Server, tag: str) -> None:
        self.server = server
        self.tag = tag
        self._config = ninep_config(tag)

    def config(self) -> bytes:
        return self._config

    def handle(self, queue: int, request: bytes, capacity: int) -> bytes:
        reply = self.server.handle(request, capacity)
        if len(reply) > capacity:
            _, _, tag = p9.header(reply)
            return p9.rlerror(tag, errno.ENOBUFS)
        return reply
