"""virtio-9p (device id 9) and a 9P2000.L server over one host directory, as kvmtool's
`--9p DIR[,TAG]` (virtio/9p.c).

The server is confined to its directory by holding handles, never names:

- a fid holds an `O_PATH` descriptor of its file, opened one component at a time below the
  share's root with `O_NOFOLLOW` (`openat(dir, name, O_PATH | O_NOFOLLOW)`), so what a fid
  names can never change under it: removing, renaming or replacing a directory on its way
  (by the guest or the host) leaves the fid on the file it was walked to;
- names from the guest may not be empty or contain '/' or NUL, and `.`/`..` cannot be
  created, removed or renamed; a walk never steps through a symlink (ELOOP) and `..` at the
  root stays at the root; `..` elsewhere is opened from the fid's handle and must lead to
  the root or below it (checked by climbing to the root), else ENOENT;
- every other call works through a fid's handle (`*at()` calls with a single checked name,
  or a reopen of the handle through `/proc/self/fd`, which never resolves a name): Tlopen
  of a symlink is ELOOP, Tlcreate opens with `O_CREAT | O_NOFOLLOW`, and only regular files
  and directories are opened (no host devices, fifos or sockets). The guest's client
  resolves links with Treadlink inside its own namespace.

qids are the host inode numbers (type from the file type, version 0). Every malformed or
hostile message gets Rlerror (EPROTO for a message that does not parse, EINVAL for a bad
argument, EMFILE past MAX_FIDS fids, the host's errno for a failing host call), never an
exception.
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
MAX_FIDS = 4096  # each fid is a host descriptor: a guest may not exhaust the VMM's
MAX_DEPTH = 4096  # bound on the climb that checks a `..` stays below the root
QUEUE_NUM_MAX = 128  # kvmtool's VIRTQUEUE_NUM
_HANDLE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# host dirent d_type values for Rreaddir
_DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFCHR: 2, stat.S_IFBLK: 6,
       stat.S_IFIFO: 1, stat.S_IFSOCK: 12}


class P9Error(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(errno.errorcode.get(code, str(code)))
        self.errno = code


@dataclass
class Fid:
    fd: int  # O_PATH handle of the file itself (a symlink's handle is the link's)
    link: tuple[int, str] | None = None  # a symlink's directory handle and name (for its times)
    io: int | None = None  # the open file, after Tlopen/Tlcreate
    flags: int = 0
    listing: list[tuple[str, os.stat_result]] | None = field(default=None, repr=False)

    def close(self) -> None:
        for fd in (self.fd, self.io, self.link[0] if self.link else None):
            if fd is not None:
                os.close(fd)
        self.io = None
        self.link = None


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


def _magic(fd: int) -> str:
    """The handle's own file, reopened without resolving any name in the share."""
    return f"/proc/self/fd/{fd}"


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class P9Server:
    """9P2000.L over `root`. `handle(message, capacity)` answers one T-message."""

    def __init__(self, root: str) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ValueError(f"9p share {root!r} is not a directory")
        if not os.path.isdir("/proc/self/fd"):
            raise ValueError("the 9p server needs /proc mounted (it reopens handles through /proc/self/fd)")
        self.root = real
        self.root_fd = os.open(real, _HANDLE | os.O_DIRECTORY)
        self.root_st = os.fstat(self.root_fd)
        self.msize = 8192
        self.fids: dict[int, Fid] = {}

    def close(self) -> None:
        self.close_all()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # --- handles --------------------------------------------------------------------------
    def fid(self, n: int) -> Fid:
        f = self.fids.get(n)
        if f is None:
            raise P9Error(errno.EBADF)
        return f

    def new_fid(self, n: int) -> None:
        if n == p9.NOFID or n in self.fids:
            raise P9Error(errno.EBADF if n == p9.NOFID else errno.EEXIST)
        if len(self.fids) >= MAX_FIDS:
            raise P9Error(errno.EMFILE)

    def install(self, n: int, f: Fid) -> None:
        old = self.fids.pop(n, None)
        if old is not None:
            old.close()
        self.fids[n] = f

    def dir_fid(self, n: int) -> Fid:
        f = self.fid(n)
        if not stat.S_ISDIR(os.fstat(f.fd).st_mode):
            raise P9Error(errno.ENOTDIR)
        return f

    def parent(self, fd: int, st: os.stat_result) -> int:
        """A handle of the directory above `fd`: the root's parent is the root, and a parent
        that is not the root or below it (the host moved the directory out) is ENOENT."""
        if _same(st, self.root_st):
            return os.dup(self.root_fd)
        up = os.open("..", _HANDLE | os.O_DIRECTORY, dir_fd=fd)
        probe = os.dup(up)
        try:
            for _ in range(MAX_DEPTH):
                here = os.fstat(probe)
                if _same(here, self.root_st):
                    return up
                nxt = os.open("..", _HANDLE | os.O_DIRECTORY, dir_fd=probe)
                os.close(probe)
                probe = nxt
                if _same(os.fstat(probe), here):
                    break  # the host's own root: never passed the share's
        finally:
            os.close(probe)
        os.close(up)
        raise P9Error(errno.ENOENT)

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
            f.close()
        self.fids.clear()

    def t_attach(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        self.new_fid(m["fid"])
        if m["afid"] != p9.NOFID:
            raise P9Error(errno.EINVAL)  # no authentication
        self.fids[m["fid"]] = Fid(os.dup(self.root_fd))
        return P9.RATTACH, {"qid": qid_of(self.root_st)}

    def step(self, cur: int, name: str) -> int:
        """A handle of `name` in the directory `cur` (a walk's one step)."""
        if not name or "/" in name or "\0" in name:
            raise P9Error(errno.EINVAL)
        here = os.fstat(cur)
        if stat.S_ISLNK(here.st_mode):
            raise P9Error(errno.ELOOP)  # never step through a symlink
        if not stat.S_ISDIR(here.st_mode):
            raise P9Error(errno.ENOTDIR)
        if name == "..":
            return self.parent(cur, here)
        if name == ".":
            return os.dup(cur)
        return os.open(name, _HANDLE, dir_fd=cur)

    def t_walk(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if m["newfid"] != m["fid"]:
            self.new_fid(m["newfid"])
        if f.io is not None:
            raise P9Error(errno.EBADF)  # an open fid may not be walked (9P)
        names: list[str] = m["wnames"]
        cur = os.dup(f.fd)
        link = (os.dup(f.link[0]), f.link[1]) if f.link is not None and not names else None
        qids: list[Qid] = []
        try:
            for i, name in enumerate(names):
                try:
                    nxt = self.step(cur, name)
                except (P9Error, OSError):
                    if i == 0:
                        raise
                    break  # partial walk: newfid is not created
                st = os.fstat(nxt)
                if link is not None:
                    os.close(link[0])
                    link = None
                if stat.S_ISLNK(st.st_mode):
                    link = (cur, name)  # the link's directory, kept for its times
                else:
                    os.close(cur)
                cur = nxt
                qids.append(qid_of(st))
        except BaseException:
            Fid(cur, link).close()
            raise
        if len(qids) == len(names):
            self.install(m["newfid"], Fid(cur, link))
        else:
            Fid(cur, link).close()
        return P9.RWALK, {"qids": qids}

    def t_clunk(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        self.fid(m["fid"])
        self.fids.pop(m["fid"]).close()
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
        return flags | os.O_CLOEXEC

    def t_lopen(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if f.io is not None:
            raise P9Error(errno.EBADF)
        st = os.fstat(f.fd)
        if stat.S_ISLNK(st.st_mode):
            raise P9Error(errno.ELOOP)
        flags = self.host_flags(m["flags"] & ~(p9.DOTL_CREATE | p9.DOTL_EXCL))
        if stat.S_ISDIR(st.st_mode):
            if flags & 3 != os.O_RDONLY:
                raise P9Error(errno.EISDIR)
            flags |= os.O_DIRECTORY
        elif not stat.S_ISREG(st.st_mode):
            raise P9Error(errno.EPERM)  # no host devices, fifos or sockets through the share
        f.io = os.open(_magic(f.fd), flags)  # the handle's own inode: no name is resolved
        f.flags = flags
        return P9.RLOPEN, {"qid": qid_of(os.fstat(f.io)), "iounit": self.msize - p9.IOHDRSZ}

    def t_lcreate(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        d = self.dir_fid(m["fid"])
        if d.io is not None:
            raise P9Error(errno.EBADF)
        name = _name(m["name"])
        # O_NOFOLLOW: a symlink at `name` is ELOOP, never created through; O_NONBLOCK: a fifo
        # planted at `name` cannot stall the VMM before the regular-file check below
        flags = self.host_flags(m["flags"]) | os.O_CREAT | os.O_NOFOLLOW
        io = os.open(name, flags | os.O_NONBLOCK, m["mode"] & 0o7777, dir_fd=d.fd)
        try:
            if not stat.S_ISREG(os.fstat(io).st_mode):
                raise P9Error(errno.EPERM)
            os.set_blocking(io, True)
            handle = os.open(_magic(io), os.O_PATH | os.O_CLOEXEC)
        except BaseException:
            os.close(io)
            raise
        os.close(d.fd)
        d.fd, d.io, d.flags = handle, io, flags  # the fid is now the new, open file
        return P9.RLCREATE, {"qid": qid_of(os.fstat(io)), "iounit": self.msize - p9.IOHDRSZ}

    def open_fd(self, n: int) -> Fid:
        f = self.fid(n)
        if f.io is None:
            raise P9Error(errno.EBADF)
        return f

    def t_read(self, m: dict[str, Any], limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if f.flags & 3 == os.O_WRONLY:
            raise P9Error(errno.EBADF)
        count = min(m["count"], max(limit - p9.IOHDRSZ, 0))
        return P9.RREAD, {"data": os.pread(f.io, count, m["offset"])}  # type: ignore[arg-type]

    def t_write(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if f.flags & 3 == os.O_RDONLY:
            raise P9Error(errno.EBADF)
        return P9.RWRITE, {"count": os.pwrite(f.io, m["data"], m["offset"])}  # type: ignore[arg-type]

    def t_fsync(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        (os.fdatasync if m["datasync"] else os.fsync)(f.io)  # type: ignore[arg-type]
        return P9.RFSYNC, {}

    def t_readlink(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        if not stat.S_ISLNK(os.fstat(f.fd).st_mode):
            raise P9Error(errno.EINVAL)
        return P9.RREADLINK, {"target": os.readlink("", dir_fd=f.fd)}  # readlinkat(fd, ""): the link itself

    # --- attributes -----------------------------------------------------------------------
    def t_getattr(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        st = os.fstat(f.io if f.io is not None else f.fd)
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
        st = os.fstat(f.fd)
        link = stat.S_ISLNK(st.st_mode)
        valid = m["valid"]
        if valid & p9.SETATTR_MODE and not link:
            os.chmod(_magic(f.fd), m["mode"] & 0o7777)
        if valid & p9.SETATTR_SIZE:
            if not stat.S_ISREG(st.st_mode):
                raise P9Error(errno.EINVAL)
            if f.io is not None and f.flags & 3 != os.O_RDONLY:
                os.ftruncate(f.io, m["size"])
            else:  # truncate(2) by handle: the host checks write permission on the open
                fd = os.open(_magic(f.fd), os.O_WRONLY | os.O_CLOEXEC)
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
            if not link:
                os.utime(_magic(f.fd), ns=(atime, mtime))
            else:  # a link's times through its directory, if the name still names this link
                if f.link is None:
                    raise P9Error(errno.EOPNOTSUPP)
                dfd, name = f.link
                if not _same(os.stat(name, dir_fd=dfd, follow_symlinks=False), st):
                    raise P9Error(errno.ESTALE)
                os.utime(name, dir_fd=dfd, ns=(atime, mtime), follow_symlinks=False)
        return P9.RSETATTR, {}

    def t_statfs(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.fid(m["fid"])
        s = os.statvfs(f.fd)
        return P9.RSTATFS, {"type": 0x01021997, "bsize": s.f_bsize, "blocks": s.f_blocks, "bfree": s.f_bfree,
                            "bavail": s.f_bavail, "files": s.f_files, "ffree": s.f_ffree, "fsid": 0,
                            "namelen": s.f_namemax}

    # --- directories ----------------------------------------------------------------------
    def t_readdir(self, m: dict[str, Any], limit: int) -> tuple[P9, dict[str, Any]]:
        f = self.open_fd(m["fid"])
        if not f.flags & os.O_DIRECTORY:
            raise P9Error(errno.ENOTDIR)
        io: int = f.io  # type: ignore[assignment]
        if f.listing is None or m["offset"] == 0:
            here = os.fstat(io)
            up = here if _same(here, self.root_st) else os.stat("..", dir_fd=io, follow_symlinks=False)
            f.listing = [(".", here), ("..", up)]
            for n in sorted(os.listdir(io)):
                try:
                    f.listing.append((n, os.stat(n, dir_fd=io, follow_symlinks=False)))
                except OSError:
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
        name = _name(m["name"])
        os.mkdir(name, m["mode"] & 0o7777, dir_fd=d.fd)
        return P9.RMKDIR, {"qid": qid_of(os.stat(name, dir_fd=d.fd, follow_symlinks=False))}

    def t_unlinkat(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        d = self.dir_fid(m["dirfid"])
        name = _name(m["name"])
        if m["flags"] & p9.AT_REMOVEDIR:
            os.rmdir(name, dir_fd=d.fd)
        else:
            if stat.S_ISDIR(os.stat(name, dir_fd=d.fd, follow_symlinks=False).st_mode):
                raise P9Error(errno.EISDIR)
            os.unlink(name, dir_fd=d.fd)
        return P9.RUNLINKAT, {}

    def t_renameat(self, m: dict[str, Any], _limit: int) -> tuple[P9, dict[str, Any]]:
        old_dir, new_dir = self.dir_fid(m["olddirfid"]), self.dir_fid(m["newdirfid"])
        # renameat(2) refuses a directory into itself (EINVAL); fids hold handles, so they
        # follow the file with no bookkeeping here
        os.rename(_name(m["oldname"]), _name(m["newname"]), src_dir_fd=old_dir.fd, dst_dir_fd=new_dir.fd)
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
