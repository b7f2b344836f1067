"""A 9P2000.L client over virtio-9p, and the VFS nodes that put a host directory into the
unikernel's file tree.

Mounts come from the kernel option `9p=TAG:/PATH[,TAG:/PATH...]`; without it, every
virtio-9p device is mounted at /mnt/TAG. A mount replaces whatever the initrd put at PATH
(PATH may not be `/`).

Nothing is cached but attributes: every lookup walks (Twalk + Tgetattr), every read and
write goes to the server (Tread/Twrite in iounit pieces), so the host file is the file.
Inodes are identified by qid.path (the host inode number), so hard links and repeated
lookups give one inode. Errors from the server arrive as Rlerror and become FsError with
the same errno; a device or protocol failure becomes EIO.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
from typing import TYPE_CHECKING, Any

from ..arch import p9
from ..arch.cpio import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG
from ..arch.memory import GRANULE_SIZE
from ..arch.p9 import P9
from ..arch.virtio import VIRTIO_9P_MOUNT_TAG, VIRTIO_F_EVENT_IDX, VIRTIO_MMIO_CONFIG, VirtioDeviceId, feature
from .mm import OutOfMemory
from .pagecache import PAGE, FilePages
from .uapi import NSEC
from .ukrsi import RsiError
from .vfs import (
    O_ACCMODE,
    O_APPEND,
    O_RDWR,
    O_TRUNC,
    DirInode,
    FsError,
    Inode,
    LinkInode,
    RegFile,
    RegInode,
)
from .virtio import DmaPool, RequestQueue, VirtioError, VirtioMmioTransport, virtio_devices

if TYPE_CHECKING:
    from .interfaces import DeviceFacts, Kernel
    from .vfs import Vfs

MSIZE = 64 * 1024
MAX_DIR_ENTRIES = 1 << 16  # a listing longer than this is a server that never ends it: EIO


class P9Client:
    def __init__(self, queue: RequestQueue, msize: int = MSIZE) -> None:
        self.queue = queue
        self.msize = msize
        self.tag = 0
        self._next_fid = 1
        self._free: list[int] = []
        self.requests = 0

    def rpc(self, mtype: P9, **fields: Any) -> dict[str, Any]:
        tag = p9.NOTAG if mtype == P9.TVERSION else self._next_tag()
        try:
            raw = self.queue.request(p9.encode(mtype, tag, **fields))
            rtype, rtag, out = p9.decode(raw)
        except (VirtioError, p9.P9ProtocolError):
            raise FsError(errno.EIO, "9p transport") from None
        self.requests += 1
        if rtag != tag:
            raise FsError(errno.EIO, "9p reply for another request")
        if rtype == P9.RLERROR:
            code = out["ecode"]
            raise FsError(code if 0 < code < 4096 else errno.EIO)
        if rtype != mtype + 1:
            raise FsError(errno.EIO, f"9p {P9(rtype).name} answering {mtype.name}")
        return out

    def _next_tag(self) -> int:
        self.tag = self.tag % 0xFFFE + 1
        return self.tag

    def alloc_fid(self) -> int:
        if self._free:
            return self._free.pop()
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def clunk(self, fid: int) -> None:
        with contextlib.suppress(FsError):
            self.rpc(P9.TCLUNK, fid=fid)
        self._free.append(fid)

    def walk(self, fid: int, names: list[str]) -> int | None:
        """A new fid for `names` below `fid`; None if the walk stopped short (ENOENT)."""
        new = self.alloc_fid()
        try:
            qids = self.rpc(P9.TWALK, fid=fid, newfid=new, wnames=names)["qids"]
        except FsError:
            self._free.append(new)
            raise
        if len(qids) != len(names):
            self._free.append(new)  # a partial walk creates no fid
            return None
        return new

    def getattr(self, fid: int) -> dict[str, Any]:
        return self.rpc(P9.TGETATTR, fid=fid, request_mask=p9.GETATTR_BASIC)

    def setattr(self, fid: int, valid: int, **values: int) -> None:
        fields = dict(mode=0, uid=0, gid=0, size=0, atime_sec=0, atime_nsec=0, mtime_sec=0, mtime_nsec=0)
        fields.update(values)
        self.rpc(P9.TSETATTR, fid=fid, valid=valid, **fields)


_mount_devs = itertools.count(0x31)  # st_dev of each mount (anonymous devices 0:49, 0:50, ...)


class Mount:
    def __init__(self, client: P9Client, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.dev = next(_mount_devs)
        self.nodes: dict[int, P9Reg | P9Link | P9Dir] = {}  # qid.path -> inode

    def node(self, fid: int, attrs: dict[str, Any]) -> Inode:
        """The inode for a freshly walked fid (kept by the inode, or clunked if the inode
        already has one)."""
        key = attrs["qid"].path
        kind = attrs["mode"] & S_IFMT
        old = self.nodes.get(key)
        if old is not None and old.kind == kind:
            self.client.clunk(old.fid)
            old.fid = fid
            old.apply(attrs)
            return old
        cls = P9Dir if kind == S_IFDIR else P9Link if kind == S_IFLNK else P9Reg
        node = cls(self, fid, attrs)
        self.nodes[key] = node
        return node


class _P9Node:
    mount: Mount
    fid: int
    _size: int

    def _setup(self, mount: Mount, fid: int, attrs: dict[str, Any]) -> None:
        self.mount, self.fid = mount, fid
        node: Any = self
        node.st_dev = mount.dev  # each mount is a file system of its own
        self.apply(attrs)

    def apply(self, attrs: dict[str, Any]) -> None:
        node: Any = self
        node.ino = attrs["qid"].path
        node.mode = attrs["mode"]
        node.uid, node.gid = attrs["uid"], attrs["gid"]
        node.nlink = attrs["nlink"]
        node.rdev = attrs["rdev"]
        node.mtime_ns = attrs["mtime_sec"] * NSEC + attrs["mtime_nsec"]
        self._size = attrs["size"]

    def refresh(self) -> int:
        self.apply(self.mount.client.getattr(self.fid))
        return self._size

    @property
    def client(self) -> P9Client:
        return self.mount.client

    def statfs(self) -> dict[str, Any]:
        """The server's Rstatfs for this file's file system (9P2000.L Tstatfs)."""
        return self.client.rpc(P9.TSTATFS, fid=self.fid)


class P9Reg(_P9Node, RegInode):
    def __init__(self, mount: Mount, fid: int, attrs: dict[str, Any]) -> None:
        Inode.__init__(self, S_IFREG | 0o644)
        self.loader = None
        self.gen = None
        self._image = None
        self.pages = None  # the page cache, once the file is mapped MAP_SHARED
        self.pending_fid: int | None = None  # the open fid Tlcreate left, for the next open
        self._setup(mount, fid, attrs)

    def size(self) -> int:
        return self.refresh()

    @property
    def data(self) -> bytes:
        """The whole file (for mmap and exec of a file on the share)."""
        f = self.open(0, "")
        try:
            return f.pread(self.refresh(), 0)
        finally:
            f.close()

    def blocks(self) -> int:
        return Inode.blocks(self)  # from the server's size, whatever is cached

    def file_pages(self) -> FilePages:
        if self.pages is None:
            self.pages = FilePages()
        return self.pages

    def map_page(self, idx: int) -> int:
        """A page of the file for a MAP_SHARED mapping: read from the server into the page
        cache the first time, then the same page for every mapping, read and write."""
        cache = self.file_pages()
        ipa = cache.pages.get(idx)
        if ipa is None:
            f = self.open(0, "")
            try:
                data = f.server_read(PAGE, idx * PAGE)
            finally:
                f.close()
            ipa = cache.page(idx)
            cache.store.ram.write(ipa, data)
        return cache.store.ref(ipa)

    def sync_pages(self) -> None:
        """msync, munmap, fsync: the cached pages go back to the server (up to its size)."""
        if self.pages is None or not self.pages.pages:
            return
        size = self.refresh()
        f = self.open(O_RDWR, "")
        try:
            for idx, ipa in sorted(self.pages.pages.items()):
                if idx * PAGE < size:
                    f.server_write(self.pages.store.ram.read(ipa, min(PAGE, size - idx * PAGE)), idx * PAGE)
        finally:
            f.close()

    def open(self, flags: int, path: str) -> P9File:
        c = self.client
        if self.pending_fid is not None:
            pending, self.pending_fid = self.pending_fid, None
            if flags & O_TRUNC:
                c.setattr(pending, p9.SETATTR_SIZE, size=0)
            return P9File(self, flags, path, pending, c.msize - p9.IOHDRSZ)
        fid = c.walk(self.fid, [])
        if fid is None:
            raise FsError(errno.EIO)
        try:
            iounit = c.rpc(P9.TLOPEN, fid=fid, flags=flags & (O_ACCMODE | O_TRUNC))["iounit"]
        except FsError:
            c.clunk(fid)
            raise
        iounit = min(iounit or c.msize - p9.IOHDRSZ, c.msize - p9.IOHDRSZ)
        return P9File(self, flags, path, fid, iounit)

    def truncate(self, length: int) -> None:
        self.client.setattr(self.fid, p9.SETATTR_SIZE, size=length)
        if self.pages is not None:
            self.pages.drop_from(length)

    def cached(self, data: bytes, offset: int, store: bool) -> bytes:
        """Keep read and write coherent with shared mappings: `data` at `offset` with the
        cached pages laid over it (a read), or written into them (a write)."""
        cache = self.pages
        if cache is None or not cache.pages or not data:
            return data
        out = bytearray(data)
        for idx in range(offset // PAGE, (offset + len(data) - 1) // PAGE + 1):
            ipa = cache.pages.get(idx)
            if ipa is None:
                continue
            lo, hi = max(offset, idx * PAGE), min(offset + len(data), (idx + 1) * PAGE)
            if store:
                cache.store.ram.write(ipa + lo - idx * PAGE, out[lo - offset : hi - offset])
            else:
                out[lo - offset : hi - offset] = cache.store.ram.read(ipa + lo - idx * PAGE, hi - lo)
        return bytes(out)


class P9File(RegFile):
    inode: P9Reg

    def __init__(self, inode: P9Reg, flags: int, path: str, fid: int, iounit: int) -> None:
        super().__init__(inode, flags, path)
        self.fid = fid
        self.iounit = max(iounit, 1)
        self.closed = False

    def pread(self, size: int, offset: int) -> bytes:
        if not self.readable:
            raise FsError(errno.EBADF)
        return self.inode.cached(self.server_read(size, offset), offset, False)

    def server_read(self, size: int, offset: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            want = min(size - len(out), self.iounit)
            data = self.inode.client.rpc(P9.TREAD, fid=self.fid, offset=offset + len(out), count=want)["data"]
            if len(data) > want:
                raise FsError(errno.EIO)
            out += data
            if len(data) < want:
                break
        return bytes(out)

    def pwrite(self, data: bytes, offset: int) -> int:
        if not self.writable:
            raise FsError(errno.EBADF)
        n = self.server_write(data, offset)
        self.inode.cached(data[:n], offset, True)
        return n

    def punch(self, offset: int, length: int) -> None:
        self.pwrite(bytes(length), offset)

    def server_write(self, data: bytes, offset: int) -> int:
        done = 0
        while done < len(data):
            piece = data[done : done + self.iounit]
            n = self.inode.client.rpc(P9.TWRITE, fid=self.fid, offset=offset + done, data=piece)["count"]
            if n == 0 or n > len(piece):
                raise FsError(errno.EIO)
            done += n
        return done

    def write(self, data: bytes) -> int:
        if self.flags & O_APPEND:
            self.pos = self.inode.size()
        n = self.pwrite(data, self.pos)
        self.pos += n
        return n

    def seek(self, offset: int, whence: int) -> int:
        size = self.inode.size() if whence in (2, 3, 4) else 0
        if whence == 0:
            base = 0
        elif whence == 1:
            base = self.pos
        elif whence == 2:
            base = size
        elif whence in (3, 4):  # SEEK_DATA, SEEK_HOLE: no holes
            if offset >= size or offset < 0:
                raise FsError(errno.ENXIO)
            base, offset = (offset, 0) if whence == 3 else (size, 0)
        else:
            raise FsError(errno.EINVAL)
        if base + offset < 0:
            raise FsError(errno.EINVAL)
        self.pos = base + offset
        return self.pos

    def truncate(self, length: int) -> None:
        self.inode.truncate(length)

    def fsync(self) -> None:
        self.inode.sync_pages()
        self.inode.client.rpc(P9.TFSYNC, fid=self.fid, datasync=0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inode.client.clunk(self.fid)


class P9Link(_P9Node, LinkInode):
    def __init__(self, mount: Mount, fid: int, attrs: dict[str, Any]) -> None:
        Inode.__init__(self, S_IFLNK | 0o777)
        self._target = ""
        self._setup(mount, fid, attrs)

    @property
    def target(self) -> str:
        return str(self.client.rpc(P9.TREADLINK, fid=self.fid)["target"])

    def size(self) -> int:
        return self.refresh()


class P9Dir(_P9Node, DirInode):
    def __init__(self, mount: Mount, fid: int, attrs: dict[str, Any]) -> None:
        DirInode.__init__(self)
        self._setup(mount, fid, attrs)

    def size(self) -> int:
        return self.refresh()

    def get(self, name: str) -> Inode | None:
        c = self.client
        try:
            fid = c.walk(self.fid, [name])
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        if fid is None:
            return None
        try:
            attrs = c.getattr(fid)
        except FsError:
            c.clunk(fid)
            raise
        node = self.mount.node(fid, attrs)
        if isinstance(node, DirInode):
            node.parent = self
        return node

    @property
    def children(self) -> dict[str, Inode]:
        c = self.client
        fid = c.walk(self.fid, [])
        if fid is None:
            raise FsError(errno.EIO)
        names: list[str] = []
        try:
            c.rpc(P9.TLOPEN, fid=fid, flags=p9.DOTL_RDONLY)
            offset = 0
            while True:
                data = c.rpc(P9.TREADDIR, fid=fid, offset=offset, count=c.msize - p9.IOHDRSZ)["data"]
                if not data:
                    break
                try:
                    entries = p9.unpack_dirents(data)
                except p9.P9ProtocolError:
                    raise FsError(errno.EIO) from None
                names += [e.name for e in entries if e.name not in (".", "..")]
                if len(names) > MAX_DIR_ENTRIES:  # a server that never ends the listing
                    raise FsError(errno.EIO)
                if entries[-1].offset <= offset:
                    break
                offset = entries[-1].offset
        finally:
            c.clunk(fid)
        out = {}
        for n in names:
            if n and "/" not in n:
                node = self.get(n)
                if node is not None:
                    out[n] = node
        return out

    def add(self, name: str, node: Inode) -> Inode:
        c = self.client
        if isinstance(node, RegInode):
            fid = c.walk(self.fid, [])
            if fid is None:
                raise FsError(errno.EIO)
            try:
                c.rpc(P9.TLCREATE, fid=fid, name=name, flags=p9.DOTL_RDWR | p9.DOTL_CREATE | p9.DOTL_EXCL,
                      mode=node.mode & 0o7777, gid=0)
            except FsError:
                c.clunk(fid)
                raise
            child = self.get(name)
            if not isinstance(child, P9Reg):
                c.clunk(fid)
                raise FsError(errno.EIO)
            child.pending_fid = fid
            return child
        if isinstance(node, DirInode):
            c.rpc(P9.TMKDIR, dfid=self.fid, name=name, mode=node.mode & 0o7777, gid=0)
            child = self.get(name)
            if child is None:
                raise FsError(errno.EIO)
            return child
        raise FsError(errno.EPERM)

    def remove(self, name: str, node: Inode) -> None:
        flags = p9.AT_REMOVEDIR if isinstance(node, DirInode) else 0
        self.client.rpc(P9.TUNLINKAT, dirfid=self.fid, name=name, flags=flags)

    def move(self, name: str, dst: DirInode, dst_name: str, node: Inode) -> None:
        if not isinstance(dst, P9Dir) or dst.mount is not self.mount:
            raise FsError(errno.EXDEV)
        self.client.rpc(P9.TRENAMEAT, olddirfid=self.fid, oldname=name, newdirfid=dst.fid, newname=dst_name)

    def exchange(self, name: str, dst: DirInode, dst_name: str) -> None:
        raise FsError(errno.EINVAL)

    def link(self, name: str, node: Inode) -> None:
        raise FsError(errno.EPERM)


def parse_mounts(spec: str) -> list[tuple[str, str]]:
    """`TAG:/PATH[,TAG:/PATH...]` -> [(tag, path)]."""
    out = []
    for item in spec.split(","):
        tag, sep, path = item.partition(":")
        if not tag or not sep or not path.startswith("/") or path.rstrip("/") == "":
            raise ValueError(f"9p mount {item!r}: want TAG:/PATH (not /)")
        out.append((tag, "/" + path.strip("/")))
    return out


def read_tag(transport: VirtioMmioTransport) -> str:
    """Negotiate features (VERSION_1, ACCESS_PLATFORM and EVENT_IDX if offered, MOUNT_TAG)
    and read the mount tag from config space."""
    offered = transport.negotiate(feature(VIRTIO_9P_MOUNT_TAG) | feature(VIRTIO_F_EVENT_IDX))
    if not offered & feature(VIRTIO_9P_MOUNT_TAG):
        transport.fail()
        raise VirtioError("no mount tag")
    tag_len = int.from_bytes(transport.config(0, 2), "little")
    room = transport.size - VIRTIO_MMIO_CONFIG - 2
    if tag_len > room:
        transport.fail()
        raise VirtioError(f"mount tag of {tag_len} bytes does not fit the {room} bytes of config space")
    return transport.config(2, tag_len).decode("utf-8", "replace")


def attach(kernel: Kernel, transport: VirtioMmioTransport) -> P9Client:
    """The queue in a DMA pool (shared pages in a realm), DRIVER_OK, Tversion, Tattach."""
    pages = 1 + 2 * (MSIZE // GRANULE_SIZE)
    pool = DmaPool(kernel, pages)
    queue = RequestQueue(transport, pool, 0, MSIZE)
    transport.enable_interrupts()
    transport.driver_ok()
    client = P9Client(queue, MSIZE)
    version = client.rpc(P9.TVERSION, msize=MSIZE, version=p9.VERSION_9P2000_L)
    if version["version"] != p9.VERSION_9P2000_L or not 4096 <= version["msize"] <= MSIZE:
        raise VirtioError(f"server speaks {version['version']!r}, msize {version['msize']}")
    client.msize = version["msize"]
    client.rpc(P9.TATTACH, fid=0, afid=p9.NOFID, uname="root", aname="", n_uname=0)
    return client


def mount_all(kernel: Kernel, vfs: Vfs) -> int:
    """Mount the 9p shares the kernel options ask for; the number mounted."""
    devices = [(dev, t) for dev, t, did in virtio_devices(kernel) if did == VirtioDeviceId.NINEP]
    spec = kernel.options.get("9p")
    if not devices:
        if spec:
            kernel.log("9p: no virtio-9p device (start the VMM with --9p DIR,TAG)", error=True)
        return 0
    tags: list[tuple[DeviceFacts, VirtioMmioTransport, str]] = []
    for dev, t in devices:
        try:
            tag = read_tag(t)
        except (VirtioError, FsError) as exc:
            kernel.log(f"9p {dev.path}: {exc}", error=True)
            continue
        tags.append((dev, t, tag))
    try:
        wanted = parse_mounts(spec) if spec else [(tag, f"/mnt/{tag}") for _, _, tag in tags]
    except ValueError as exc:
        kernel.log(f"9p: {exc}", error=True)
        return 0
    mounted = 0
    for want_tag, path in wanted:
        found = next(((d, t) for d, t, tag in tags if tag == want_tag), None)
        if found is None:
            kernel.log(f"9p: no device with tag {want_tag!r}", error=True)
            continue
        dev, t = found
        try:
            client = attach(kernel, t)
            mount = Mount(client, want_tag)
            root = P9Dir(mount, 0, client.getattr(0))
        except (VirtioError, FsError, RsiError, OutOfMemory) as exc:
            kernel.log(f"9p {dev.path}: {exc}", error=True)
            continue
        head, _, name = path.rpartition("/")
        vfs.makedirs(head or "/").add(name, root)
        vfs.mounts.append((want_tag, path, "9p", f"rw,relatime,access=client,msize={client.msize},trans=virtio"))
        tags = [x for x in tags if x[2] != want_tag]  # one mount per device
        mounted += 1
        where = "shared pages, aliased DMA addresses" if kernel.realm is not None else "guest RAM"
        kernel.log(f"9p: {want_tag} ({dev.path}, msize {client.msize}) mounted at {path}; buffers in {where}")
    return mounted
