"""The guest's 9P2000.L client (guest/p9.py) against the VMM's real 9P server
(host/devices/virtio_9p.py P9Server) over a host directory: through a transport that hands
each request to the server (and, for the hostile cases, rewrites its reply), and once
through the whole virtio path (guest virtio driver, VMM virtio-mmio device) with
mount_all. What the guest sees must be what the host directory holds; a reply that cannot
be true (another tag, another type, an errno out of range, more data than asked, a write
of nothing, a listing without end) is EIO, never believed."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.host.virtio_support import FlatMemory

from unirealm.arch import p9
from unirealm.arch.cpio import S_IFDIR, S_IFLNK, S_IFREG
from unirealm.arch.p9 import P9, Qid
from unirealm.arch.virtio import VIRTIO_MMIO_CONFIG, VirtioMmio, VirtioStatus
from unirealm.guest import p9 as client_mod
from unirealm.guest.p9 import MAX_DIR_ENTRIES, Mount, P9Client, P9Dir, P9File, P9Link, P9Reg, parse_mounts
from unirealm.guest.vfs import O_APPEND, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, DirInode, FsError, RegInode, Vfs
from unirealm.guest.virtio import VirtioError, VirtioMmioTransport
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.devices.virtio_9p import P9Server, Virtio9p
from unirealm.host.devices.virtio_mmio import RamView, VirtioMmioDevice

from .test_console_drivers import RAM_BASE, RAM_SIZE, FakeCpu, FakeKernel

Rewrite = Callable[[P9, bytes], bytes]


class ServerQueue:
    """A request queue whose device is the host's P9Server; `rewrite(type, reply)` may
    change the reply to a request of a given type before the client sees it."""

    def __init__(self, root: Path, capacity: int = client_mod.MSIZE) -> None:
        self.server = P9Server(str(root))
        self.capacity = capacity
        self.rewrite: Rewrite | None = None
        self.seen: list[P9] = []

    def request(self, out: bytes) -> bytes:
        mtype = P9(out[4])
        self.seen.append(mtype)
        reply = self.server.handle(out, self.capacity)
        return self.rewrite(mtype, reply) if self.rewrite else reply


def mount(root: Path, msize: int = client_mod.MSIZE) -> tuple[P9Dir, ServerQueue]:
    queue = ServerQueue(root)
    client = P9Client(queue, msize)  # type: ignore[arg-type]
    version = client.rpc(P9.TVERSION, msize=msize, version=p9.VERSION_9P2000_L)
    client.msize = version["msize"]
    client.rpc(P9.TATTACH, fid=0, afid=p9.NOFID, uname="root", aname="", n_uname=0)
    return P9Dir(Mount(client, "share"), 0, client.getattr(0)), queue


def on(mtype: P9, change: Callable[[int, bytes], bytes]) -> Rewrite:
    """A rewrite of replies to `mtype` only: change(tag, reply)."""
    return lambda t, reply: change(struct.unpack_from("<H", reply, 5)[0], reply) if t == mtype else reply


def hello_file(share: Path, flags: int = O_RDONLY) -> tuple[P9File, ServerQueue]:
    root, queue = mount(share)
    hello = root.get("hello.txt")
    assert isinstance(hello, P9Reg)
    return hello.open(flags, "/hello.txt"), queue


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: several Treads
    os.symlink("hello.txt", root / "link")
    return root


# --- what the share holds -------------------------------------------------------------------
def test_listing_and_attributes_are_the_host_directory(share: Path) -> None:
    root, _ = mount(share)
    children = root.children
    assert sorted(children) == ["big.bin", "hello.txt", "link", "sub"]
    st = (share / "hello.txt").stat()
    hello = children["hello.txt"]
    assert isinstance(hello, P9Reg) and hello.kind == S_IFREG
    assert hello.ino == st.st_ino and hello.size() == 13 and hello.mode == st.st_mode
    assert hello.mtime_ns == st.st_mtime_ns and hello.nlink == 1
    assert isinstance(children["sub"], P9Dir) and children["sub"].kind == S_IFDIR
    assert children["sub"].parent is root
    link = children["link"]
    assert isinstance(link, P9Link) and link.kind == S_IFLNK and link.target == "hello.txt"
    assert root.get("missing") is None
    assert root.get("hello.txt") is hello  # one inode per qid.path


def test_read_in_iounit_pieces(share: Path) -> None:
    root, queue = mount(share, msize=8192)
    big = root.get("big.bin")
    assert isinstance(big, P9Reg)
    f = big.open(O_RDONLY, "/big.bin")
    assert isinstance(f, P9File) and f.iounit == 8192 - p9.IOHDRSZ
    queue.seen.clear()
    data = f.pread(300_000, 0)  # past the end: the short last read ends it
    assert data == (share / "big.bin").read_bytes()
    assert queue.seen.count(P9.TREAD) == -(-len(data) // f.iounit)
    assert f.pread(10, 256 * 1024 - 4) == bytes(range(252, 256))
    assert big.data == data
    f.close()
    f.close()  # once only
    assert queue.seen.count(P9.TCLUNK) == 2  # this file's fid, and big.data's


def test_write_create_truncate_append_rename_unlink(share: Path) -> None:
    root, _ = mount(share, msize=4096)
    new = root.add("new.txt", RegInode(mode=0o600))
    assert isinstance(new, P9Reg)
    assert (share / "new.txt").stat().st_mode & 0o777 == 0o600
    f = new.open(O_RDWR, "/new.txt")  # the fid Tlcreate left open
    payload = os.urandom(10_000)  # more than one Twrite at msize 4096
    assert f.write(payload) == len(payload) and f.pos == len(payload)
    f.fsync()
    f.close()
    assert (share / "new.txt").read_bytes() == payload
    g = new.open(O_WRONLY | O_APPEND, "/new.txt")
    g.write(b"tail")
    g.close()
    assert (share / "new.txt").read_bytes() == payload + b"tail"
    assert new.size() == len(payload) + 4
    h = new.open(O_RDWR | O_TRUNC, "/new.txt")
    assert new.size() == 0
    h.pwrite(b"abc", 5)
    h.truncate(4)
    h.close()
    assert (share / "new.txt").read_bytes() == b"\0\0\0\0"
    sub = root.get("sub")
    assert isinstance(sub, P9Dir)
    root.move("new.txt", sub, "moved.txt", new)
    assert (share / "sub" / "moved.txt").exists() and not (share / "new.txt").exists()
    sub.remove("moved.txt", new)
    assert not (share / "sub" / "moved.txt").exists()
    made = root.add("dir", DirInode(0o750))
    assert isinstance(made, P9Dir) and (share / "dir").is_dir()
    root.remove("dir", made)
    assert not (share / "dir").exists()


def test_host_errors_keep_their_errno(share: Path) -> None:
    root, _ = mount(share)
    hello = root.get("hello.txt")
    sub = root.get("sub")
    assert isinstance(hello, P9Reg) and isinstance(sub, P9Dir)
    with pytest.raises(FsError) as exc:
        root.add("hello.txt", RegInode())  # Tlcreate with EXCL
    assert exc.value.errno == errno.EEXIST
    with pytest.raises(FsError) as exc:
        root.add("sub", DirInode())
    assert exc.value.errno == errno.EEXIST
    with pytest.raises(FsError) as exc:
        root.remove("sub", hello)  # a directory unlinked without AT_REMOVEDIR
    assert exc.value.errno in (errno.EISDIR, errno.EPERM)
    for call, code in ((lambda: root.link("x", hello), errno.EPERM), (lambda: root.exchange("a", sub, "b"), errno.EINVAL),
                       (lambda: root.add("dev", object()), errno.EPERM),  # type: ignore[arg-type]
                       (lambda: root.move("hello.txt", DirInode(), "x", hello), errno.EXDEV)):
        with pytest.raises(FsError) as exc:
            call()
        assert exc.value.errno == code
    f = hello.open(O_RDONLY, "/hello.txt")
    with pytest.raises(FsError) as exc:
        f.pwrite(b"x", 0)
    assert exc.value.errno == errno.EBADF
    w = hello.open(O_WRONLY, "/hello.txt")
    with pytest.raises(FsError) as exc:
        w.pread(1, 0)
    assert exc.value.errno == errno.EBADF


def test_seek_whences(share: Path) -> None:
    f, _ = hello_file(share)
    assert f.seek(-3, 2) == 10 and f.read(10) == b"ld\n"
    assert f.seek(4, 0) == 4 and f.seek(2, 1) == 6
    assert f.seek(5, 3) == 5  # SEEK_DATA: no holes
    assert f.seek(5, 4) == 13  # SEEK_HOLE: the end
    for offset, whence, code in ((13, 3, errno.ENXIO), (-1, 4, errno.ENXIO), (-1, 0, errno.EINVAL),
                                 (0, 9, errno.EINVAL), (-14, 2, errno.EINVAL)):
        with pytest.raises(FsError) as exc:
            f.seek(offset, whence)
        assert exc.value.errno == code


def test_fids_are_reused_after_clunk_and_a_short_walk_makes_none(share: Path) -> None:
    root, _ = mount(share)
    client = root.client
    fid = client.walk(0, ["sub"])
    assert fid is not None
    client.clunk(fid)
    assert client.walk(0, ["hello.txt"]) == fid  # the clunked fid again
    assert client.walk(0, ["sub", "missing"]) is None  # partial: no fid made
    assert client.alloc_fid() == fid + 1  # the short walk's fid went back to the pool
    with pytest.raises(FsError) as exc:
        client.walk(0, ["missing"])
    assert exc.value.errno == errno.ENOENT


def test_mounts_spec() -> None:
    assert parse_mounts("a:/x,b:/y/z/") == [("a", "/x"), ("b", "/y/z")]
    for bad in ("a", ":/x", "a:x", "a:/", "a://", "a:/x,"):
        with pytest.raises(ValueError, match="want TAG:/PATH"):
            parse_mounts(bad)


# --- a server that lies -----------------------------------------------------------------------
def retag(tag: int, reply: bytes) -> bytes:
    return reply[:5] + struct.pack("<H", (tag + 1) & 0xFFFF) + reply[7:]


def retype(tag: int, reply: bytes) -> bytes:
    return p9.encode(P9.RCLUNK, tag)


@pytest.mark.parametrize(("change", "why"), [
    (retag, "another request's tag"),
    (retype, "another reply type"),
    (lambda tag, reply: p9.rlerror(tag, 0), "errno 0"),
    (lambda tag, reply: p9.rlerror(tag, 4096), "errno past 4095"),
    (lambda tag, reply: p9.rlerror(tag, 0xFFFF_FFFF), "errno -1"),
    (lambda tag, reply: reply[:-1], "cut short"),
    (lambda tag, reply: struct.pack("<I", len(reply) + 1) + reply[4:] + b"\0", "a byte left over inside the message"),
    (lambda tag, reply: b"", "empty"),
])
def test_a_reply_that_cannot_be_true_is_eio(share: Path, change: Callable[[int, bytes], bytes], why: str) -> None:
    root, queue = mount(share)
    queue.rewrite = on(P9.TGETATTR, change)
    with pytest.raises(FsError) as exc:
        root.get("hello.txt")
    assert exc.value.errno == errno.EIO, why


def test_an_rlerror_in_range_is_passed_on(share: Path) -> None:
    root, queue = mount(share)
    queue.rewrite = on(P9.TGETATTR, lambda tag, reply: p9.rlerror(tag, errno.EACCES))
    with pytest.raises(FsError) as exc:
        root.get("hello.txt")
    assert exc.value.errno == errno.EACCES
    queue.rewrite = on(P9.TGETATTR, lambda tag, reply: p9.rlerror(tag, 4095))
    with pytest.raises(FsError) as exc:
        root.get("hello.txt")
    assert exc.value.errno == 4095


def test_more_data_than_asked_is_eio(share: Path) -> None:
    f, queue = hello_file(share)
    queue.rewrite = on(P9.TREAD, lambda tag, reply: p9.encode(P9.RREAD, tag, data=b"x" * 5))
    with pytest.raises(FsError) as exc:
        f.pread(4, 0)
    assert exc.value.errno == errno.EIO
    assert f.pread(5, 0) == b"xxxxx"  # exactly what was asked is fine


@pytest.mark.parametrize("count", [0, 4, 0xFFFF_FFFF])
def test_a_write_count_of_nothing_or_more_than_sent_is_eio(share: Path, count: int) -> None:
    f, queue = hello_file(share, O_RDWR)
    queue.rewrite = on(P9.TWRITE, lambda tag, reply: p9.encode(P9.RWRITE, tag, count=count))
    with pytest.raises(FsError) as exc:
        f.pwrite(b"abc", 0)
    assert exc.value.errno == errno.EIO


def test_a_short_write_count_is_continued(share: Path) -> None:
    f, queue = hello_file(share, O_RDWR)
    real = queue.request
    sent: list[bytes] = []

    def one_byte_at_a_time(out: bytes) -> bytes:  # a server that takes one byte per Twrite
        mtype, tag, fields = p9.decode(out)
        if mtype != P9.TWRITE:
            return real(out)
        sent.append(fields["data"])
        real(p9.encode(P9.TWRITE, tag, fid=fields["fid"], offset=fields["offset"], data=fields["data"][:1]))
        return p9.encode(P9.RWRITE, tag, count=1)
    queue.request = one_byte_at_a_time  # type: ignore[method-assign]
    assert f.pwrite(b"HEL", 0) == 3
    assert sent == [b"HEL", b"EL", b"L"]
    assert (share / "hello.txt").read_bytes() == b"HELlo, world\n"


def endless(tag: int, reply: bytes) -> bytes:
    qid = Qid(0, 0, 99)
    counter[0] += 1
    # each reply ends at a larger offset, as a server that never says "no more"
    entries = b"".join(p9.pack_dirent(qid, counter[0] * 1000 + i, 0, f"e{counter[0]}_{i}") for i in range(100))
    return p9.encode(P9.RREADDIR, tag, data=entries)


counter = [0]


def test_a_listing_without_end_is_eio(share: Path) -> None:
    root, queue = mount(share)
    counter[0] = 0
    queue.rewrite = on(P9.TREADDIR, endless)
    with pytest.raises(FsError) as exc:
        root.children  # noqa: B018
    assert exc.value.errno == errno.EIO
    assert counter[0] == MAX_DIR_ENTRIES // 100 + 1  # it stopped right past the bound


def test_a_listing_whose_offset_does_not_advance_ends(share: Path) -> None:
    root, queue = mount(share)
    qid = Qid(0, 0, 1)
    same = p9.pack_dirent(qid, 0, 0, "hello.txt")
    queue.rewrite = on(P9.TREADDIR, lambda tag, reply: p9.encode(P9.RREADDIR, tag, data=same))
    assert list(root.children) == ["hello.txt"]  # one reply read, not a loop


@pytest.mark.parametrize("names", [["a/b"], [""], ["."], [".."]])
def test_dirent_names_that_are_not_names_are_skipped(share: Path, names: list[str]) -> None:
    root, queue = mount(share)
    data = b"".join(p9.pack_dirent(Qid(0, 0, 1), i + 1, 0, n) for i, n in enumerate([*names, "hello.txt"]))
    replies = iter([data, b""])
    queue.rewrite = on(P9.TREADDIR, lambda tag, reply: p9.encode(P9.RREADDIR, tag, data=next(replies)))
    assert list(root.children) == ["hello.txt"]


def test_malformed_dirents_are_eio(share: Path) -> None:
    root, queue = mount(share)
    queue.rewrite = on(P9.TREADDIR, lambda tag, reply: p9.encode(P9.RREADDIR, tag, data=b"\x01\x02\x03"))
    with pytest.raises(FsError) as exc:
        root.children  # noqa: B018
    assert exc.value.errno == errno.EIO


def test_a_listing_fid_is_clunked_even_on_failure(share: Path) -> None:
    root, queue = mount(share)
    queue.rewrite = on(P9.TREADDIR, lambda tag, reply: p9.rlerror(tag, errno.EIO))
    queue.seen.clear()
    with pytest.raises(FsError):
        root.children  # noqa: B018
    assert queue.seen == [P9.TWALK, P9.TLOPEN, P9.TREADDIR, P9.TCLUNK]


def test_a_create_whose_lookup_is_not_a_file_is_eio(share: Path) -> None:
    root, queue = mount(share)
    (share / "race").mkdir()  # what the lookup after Tlcreate finds: the server says a directory
    real = queue.request

    def created_is_dir(out: bytes) -> bytes:
        if P9(out[4]) == P9.TLCREATE:
            _, tag, _ = p9.decode(out)
            return p9.encode(P9.RLCREATE, tag, qid=Qid(0, 0, 1), iounit=0)
        return real(out)
    queue.request = created_is_dir  # type: ignore[method-assign]
    with pytest.raises(FsError) as exc:
        root.add("race", RegInode())
    assert exc.value.errno == errno.EIO


# --- through virtio: config space, version, mount_all ------------------------------------------
DEV = 0x1200_0000


class BootFacts:
    def __init__(self, devices: list[object]) -> None:
        self.devices = devices


class Dev:
    compatible = "virtio,mmio"
    irq = None  # no interrupt: the driver polls

    def __init__(self, path: str, base: int) -> None:
        self.path, self.base, self.size, self.address = path, base, 0x200, base


def virtio_kernel(shares: dict[str, Path], options: dict[str, str] | None = None,
                  server: Callable[[str], P9Server] | None = None,
                  device: type[Virtio9p] = Virtio9p) -> tuple[FakeKernel, MmioBus]:
    ram = FlatMemory(RAM_BASE, RAM_SIZE)
    bus = MmioBus()
    devices = []
    for i, (tag, root) in enumerate(shares.items()):
        view = RamView(ram, RAM_BASE, RAM_BASE, RAM_SIZE)
        srv = server(str(root)) if server else P9Server(str(root))
        bus.register(DEV + i * 0x200, 0x200, VirtioMmioDevice(device(srv, tag), memory=view), f"9p{i}")
        devices.append(Dev(f"/virtio@{DEV + i * 0x200:x}", DEV + i * 0x200))
    kernel = FakeKernel(FakeCpu(bus, ram))
    kernel.info = BootFacts(devices)  # type: ignore[attr-defined]
    kernel.options = options or {}  # type: ignore[attr-defined]
    return kernel, bus


def test_mount_all_mounts_every_share_at_mnt_tag(tmp_path: Path, share: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_bytes(b"X")
    kernel, _ = virtio_kernel({"data": share, "more": other})
    vfs = Vfs()
    assert client_mod.mount_all(kernel, vfs) == 2
    assert vfs.read_file("/mnt/data/hello.txt") == b"hello, world\n"
    assert vfs.read_file("/mnt/more/x") == b"X"
    assert any("data (/virtio@12000000, msize 65536) mounted at /mnt/data; buffers in guest RAM" in x
               for x in kernel.logged)


def test_mount_all_follows_the_9p_option(tmp_path: Path, share: Path) -> None:
    kernel, _ = virtio_kernel({"data": share}, {"9p": "data:/srv/web,gone:/x"})
    vfs = Vfs()
    assert client_mod.mount_all(kernel, vfs) == 1
    node, _ = vfs.walk("/srv/web/sub")
    assert node.kind == S_IFDIR
    assert "9p: no device with tag 'gone'" in kernel.logged
    kernel, _ = virtio_kernel({"data": share}, {"9p": "data:/"})
    assert client_mod.mount_all(kernel, Vfs()) == 0
    assert any("want TAG:/PATH" in x for x in kernel.logged)


def test_mount_all_without_a_device(tmp_path: Path) -> None:
    kernel, _ = virtio_kernel({}, {"9p": "a:/b"})
    assert client_mod.mount_all(kernel, Vfs()) == 0
    assert kernel.logged == ["9p: no virtio-9p device (start the VMM with --9p DIR,TAG)"]


class OldServer(P9Server):
    def t_version(self, m, _limit):  # type: ignore[no-untyped-def]
        return P9.RVERSION, {"msize": 2048, "version": p9.VERSION_9P2000_L}


class OtherVersion(P9Server):
    def t_version(self, m, _limit):  # type: ignore[no-untyped-def]
        return P9.RVERSION, {"msize": 8192, "version": "9P2000.u"}


@pytest.mark.parametrize(("server", "said"), [(OldServer, "msize 2048"), (OtherVersion, "'9P2000.u'")])
def test_a_server_of_another_dialect_is_not_mounted(share: Path, server: type[P9Server], said: str) -> None:
    kernel, _ = virtio_kernel({"data": share}, server=server)
    assert client_mod.mount_all(kernel, Vfs()) == 0
    assert any(said in x for x in kernel.logged), kernel.logged


class NoMountTag(Virtio9p):
    features = 0


def test_read_tag_needs_the_feature_and_room_in_config_space(share: Path) -> None:
    kernel, _ = virtio_kernel({"kvm_9p": share})
    t = VirtioMmioTransport(kernel.cpu, DEV)  # type: ignore[arg-type]
    assert client_mod.read_tag(t) == "kvm_9p"
    exact = VirtioMmioTransport(kernel.cpu, DEV, size=VIRTIO_MMIO_CONFIG + 2 + 6)  # type: ignore[arg-type]
    assert client_mod.read_tag(exact) == "kvm_9p"  # a tag that just fits
    small = VirtioMmioTransport(kernel.cpu, DEV, size=VIRTIO_MMIO_CONFIG + 2 + 5)  # type: ignore[arg-type]
    with pytest.raises(VirtioError, match="mount tag of 6 bytes does not fit the 5 bytes"):
        client_mod.read_tag(small)
    assert t.r(VirtioMmio.STATUS) == VirtioStatus.FAILED
    kernel, _ = virtio_kernel({"kvm_9p": share}, device=NoMountTag)
    t = VirtioMmioTransport(kernel.cpu, DEV)  # type: ignore[arg-type]
    with pytest.raises(VirtioError, match="no mount tag"):
        client_mod.read_tag(t)
    assert t.r(VirtioMmio.STATUS) == VirtioStatus.FAILED


def test_statfs_is_the_host_file_systems(share: Path) -> None:
    root, _ = mount(share)
    answer = root.statfs()
    host = os.statvfs(share)
    assert answer["type"] == 0x01021997  # V9FS_MAGIC
    assert answer["bsize"] == host.f_bsize and answer["blocks"] == host.f_blocks
    assert answer["namelen"] == host.f_namemax
    assert root.st_dev != Vfs().root.st_dev  # a file system of its own
    hello = root.get("hello.txt")
    assert hello is not None and hello.st_dev == root.st_dev
