"""configfs-tsm: Linux's attestation report interface (Documentation/ABI/testing/configfs-tsm)
with the arm_cca_guest provider, and REM extension for apps.

    /sys/kernel/config/tsm/report/NAME/       mkdir: a report of its own
        inblob      write-only, up to 64 bytes: the challenge (committed when the file is closed)
        outblob     read-only: the CCA token for the last inblob (made at the first read)
        provider    "arm_cca_guest"
        generation  how many times inblob was committed
    /sys/kernel/config/tsm/rtmr/NAME/         mkdir: one measurement channel
        index          write 1..4: the RSI measurement index (REM0..REM3)
        allowed_index  "1-4"
        data           write-only, up to 64 bytes: extended into REM[index-1] when closed
        status         0 after the last extension, or -errno
        generation     how many times index or data was committed
    /sys/kernel/security/unirealm/rem_log     every extension (format: arch/remlog.py)
    /sys/bus/platform/devices/arm-cca-dev     present only in a realm (Linux's RSI device)

As Linux: the provider registers only in a realm, and without a provider `mkdir` in
report/ or rtmr/ fails with ENXIO. A report is made as Linux's arm-cca-guest driver makes
it: the inblob must hold 32 to 64 bytes (EINVAL otherwise), RSI_ATTESTATION_TOKEN_INIT takes
it zero-padded to 64 bytes, and RSI_ATTESTATION_TOKEN_CONTINUE fills one bounce granule at a
time until SUCCESS (any other status: ENXIO). A report is made again only after a new write
(read generation == write generation keeps the cached token).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..arch.cpio import S_IFREG
from ..arch.memory import GRANULE_SIZE
from ..arch.remlog import REM_LOG_PATH, RemLogEntry
from ..arch.rsi import RsiStatus
from .vfs import O_ACCMODE, O_RDONLY, O_WRONLY, DirInode, FsError, Inode, LinkInode, OpenFile, Vfs

if TYPE_CHECKING:
    from .interfaces import Kernel

TSM_INBLOB_MAX = 64
TSM_OUTBLOB_MAX = 32 * 1024
TSM_RTMR_DATA_MAX = 64
PROVIDER = "arm_cca_guest"
REM_INDEXES = range(1, 5)  # RSI_MEASUREMENT_EXTEND indexes 1..4 are REM0..REM3
GENERATION_MASK = (1 << 64) - 1
HASH_NAMES = {0: "sha-256", 1: "sha-512"}  # RsiRealmConfig.hash_algo


# --- configfs attributes ------------------------------------------------------------------
class Attribute(Inode):
    """A configfs attribute: `show()` makes what a read returns (once per open), `store(data)`
    takes each write (text attributes) and `commit(data)` takes a binary attribute's whole
    buffer when the file is closed."""

    def __init__(self, show: Callable[[], bytes] | None = None, store: Callable[[bytes], None] | None = None,
                 commit: Callable[[bytes], None] | None = None, max_size: int = 4096,
                 check_write: Callable[[], None] | None = None) -> None:
        mode = (0o444 if show else 0) | (0o200 if store or commit else 0)
        super().__init__(S_IFREG | mode)
        self.show, self.store, self.commit = show, store, commit
        self.max_size = max_size
        self.check_write = check_write

    def size(self) -> int:
        return 4096

    def open(self, flags: int, path: str) -> OpenFile:
        access = flags & O_ACCMODE
        if (access != O_WRONLY and self.show is None) or (access != O_RDONLY and not (self.store or self.commit)):
            raise FsError(errno.EACCES, path)
        return AttributeFile(self, flags, path)


class AttributeFile(OpenFile):
    inode: Attribute

    def __init__(self, attr: Attribute, flags: int, path: str) -> None:
        super().__init__(attr, flags, path)
        self.contents: bytes | None = None
        self.buffer = bytearray()
        self.written = False

    def pread(self, size: int, offset: int) -> bytes:
        if not self.readable:
            raise FsError(errno.EBADF)
        if self.contents is None:
            assert self.inode.show is not None
            self.contents = self.inode.show()
        return self.contents[offset : offset + size]

    def read(self, size: int) -> bytes:
        out = self.pread(size, self.pos)
        self.pos += len(out)
        return out

    def pwrite(self, data: bytes, offset: int) -> int:
        attr = self.inode
        if not self.writable:
            raise FsError(errno.EBADF)
        if attr.check_write is not None:
            attr.check_write()
        if attr.store is not None:
            attr.store(data)
            return len(data)
        if offset + len(data) > attr.max_size:
            raise FsError(errno.EFBIG)
        if offset > len(self.buffer):
            self.buffer.extend(bytes(offset - len(self.buffer)))
        self.buffer[offset : offset + len(data)] = data
        self.written = True
        return len(data)

    def write(self, data: bytes) -> int:
        n = self.pwrite(data, self.pos)
        self.pos += n
        return n

    def seek(self, offset: int, whence: int) -> int:
        base = {0: 0, 1: self.pos}.get(whence)
        if base is None or base + offset < 0:
            raise FsError(errno.EINVAL)
        self.pos = base + offset
        return self.pos

    def close(self) -> None:
        # configfs hands a binary attribute its buffer when the writer closes the file.
        if self.inode.commit is not None and self.written:
            self.inode.commit(bytes(self.buffer))


class ItemDir(DirInode):
    """A configfs item: its attributes are fixed; `rmdir` removes it with them."""

    def __init__(self, attrs: dict[str, Attribute]) -> None:
        super().__init__(0o755)
        for name, attr in attrs.items():
            self._children[name] = attr

    def empty(self) -> bool:
        return True

    def add(self, name: str, node: Inode) -> Inode:
        raise FsError(errno.EPERM)

    def remove(self, name: str, node: Inode) -> None:
        raise FsError(errno.EPERM)


class GroupDir(DirInode):
    """A configfs group whose `mkdir` makes an item (`make_item(name)`)."""

    def __init__(self, make_item: Callable[[str], ItemDir]) -> None:
        super().__init__(0o755)
        self.make_item = make_item

    def mkdir(self, name: str, mode: int) -> None:
        item = self.make_item(name)
        item.parent = self
        self._children[name] = item

    def add(self, name: str, node: Inode) -> Inode:
        raise FsError(errno.EPERM)


def _uint(data: bytes) -> int:
    """kstrtouint(buf, 0): decimal, 0x hex or 0 octal, one trailing newline allowed."""
    text = data.decode(errors="replace")
    text = text[:-1] if text.endswith("\n") else text
    if not text or text != text.strip() or text[0] == "-" or "_" in text:  # int() would take them
        raise FsError(errno.EINVAL)
    try:
        return int(text, 0) if not (len(text) > 1 and text[0] == "0" and text[1].isdigit()) else int(text, 8)
    except ValueError:
        raise FsError(errno.EINVAL) from None


# --- the report and the measurement channel -----------------------------------------------
class Generations:
    def __init__(self) -> None:
        self.write = 0
        self.read = 0

    def advance(self) -> None:
        # Linux stops accepting writes once they would wrap onto the last read's generation.
        if self.write == (self.read - 1) & GENERATION_MASK:
            raise FsError(errno.EBUSY)
        self.write = (self.write + 1) & GENERATION_MASK

    def show(self) -> bytes:
        return f"{self.write}\n".encode()


class Report:
    def __init__(self, tsm: Tsm) -> None:
        self.tsm = tsm
        self.gen = Generations()
        self.inblob = b""
        self.outblob: bytes | None = None

    def item(self) -> ItemDir:
        return ItemDir({
            "inblob": Attribute(commit=self.write_inblob, max_size=TSM_INBLOB_MAX),
            "outblob": Attribute(show=self.read_outblob),
            "provider": Attribute(show=lambda: f"{PROVIDER}\n".encode()),
            "generation": Attribute(show=self.gen.show),
        })

    def write_inblob(self, data: bytes) -> None:
        self.gen.advance()
        self.inblob = data

    def read_outblob(self) -> bytes:
        if not self.inblob:
            raise FsError(errno.EINVAL)
        if self.outblob is None or self.gen.read != self.gen.write:
            self.outblob = None
            self.outblob = self.tsm.report_new(self.inblob)
            self.gen.read = self.gen.write
        return self.outblob


class Rtmr:
    def __init__(self, tsm: Tsm) -> None:
        self.tsm = tsm
        self.gen = Generations()
        self.index: int | None = None
        self.status = 0

    def item(self) -> ItemDir:
        return ItemDir({
            "index": Attribute(store=self.write_index),
            "allowed_index": Attribute(show=lambda: f"{REM_INDEXES[0]}-{REM_INDEXES[-1]}\n".encode()),
            "data": Attribute(commit=self.write_data, max_size=TSM_RTMR_DATA_MAX, check_write=self.need_index),
            "status": Attribute(show=lambda: f"{self.status}\n".encode()),
            "generation": Attribute(show=self.gen.show),
        })

    def write_index(self, data: bytes) -> None:
        value = _uint(data)
        if value not in REM_INDEXES:
            raise FsError(errno.EINVAL)
        self.gen.advance()
        self.index = value

    def need_index(self) -> None:
        if self.index is None:
            raise FsError(errno.EINVAL, "write index first")

    def write_data(self, data: bytes) -> None:
        if self.index is None:
            return
        self.gen.advance()
        self.status = self.tsm.extend(self.index, data)


class Tsm:
    """The TSM core and, in a realm, the arm_cca_guest provider over the kernel's RSI."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.log: list[RemLogEntry] = []

    @property
    def provider(self) -> bool:
        return self.kernel.realm is not None

    def make_report(self, name: str) -> ItemDir:
        if not self.provider:
            raise FsError(errno.ENXIO)
        return Report(self).item()

    def make_rtmr(self, name: str) -> ItemDir:
        if not self.provider:
            raise FsError(errno.ENXIO)
        return Rtmr(self).item()

    def report_new(self, inblob: bytes) -> bytes:
        """arm-cca-guest's report_new: RSI INIT with the zero-padded challenge, then CONTINUE
        through one bounce granule until SUCCESS."""
        if not 32 <= len(inblob) <= TSM_INBLOB_MAX:
            raise FsError(errno.EINVAL, "the inblob must hold 32 to 64 bytes")
        rsi, cpu = self.kernel.rsi, self.kernel.cpu
        status, max_size = rsi.attestation_token_init(inblob)
        if status != RsiStatus.SUCCESS or max_size <= 0:
            raise FsError(errno.EINVAL)
        granule = self.kernel.pages.alloc(1)
        token = bytearray()
        try:
            while True:
                offset = 0
                while True:
                    status, written = rsi.attestation_token_continue(granule, offset, GRANULE_SIZE - offset)
                    offset += written
                    if status != RsiStatus.INCOMPLETE or offset >= GRANULE_SIZE:
                        break
                if status not in (RsiStatus.SUCCESS, RsiStatus.INCOMPLETE):
                    raise FsError(errno.ENXIO)
                if len(token) + offset > min(max_size, TSM_OUTBLOB_MAX):
                    raise FsError(errno.EFBIG, "the RMM wrote more than its bound")
                token += cpu.read(granule, offset)
                if status == RsiStatus.SUCCESS:
                    return bytes(token)
        finally:
            self.kernel.pages.release(granule, 1)

    def extend(self, index: int, data: bytes) -> int:
        realm = self.kernel.realm
        if realm is None:  # an rtmr item is made only with a provider
            return -errno.ENXIO
        status = self.kernel.rsi.measurement_extend(index, data)
        if status != RsiStatus.SUCCESS:
            self.kernel.log(f"tsm: RSI_MEASUREMENT_EXTEND({index}) returned {status}")
            return -errno.EIO
        self.log.append(RemLogEntry(index - 1, HASH_NAMES[realm.hash_algo & 1], data))
        return 0

    def rem_log(self) -> bytes:
        return "".join(e.line() for e in self.log).encode()


def mount_tsm(kernel: Kernel, vfs: Vfs) -> Tsm:
    """The configfs-tsm tree, the REM log and (in a realm) the RSI platform device."""
    tsm = Tsm(kernel)
    root = vfs.makedirs("sys/kernel/config/tsm")
    root.add("report", GroupDir(tsm.make_report))
    root.add("rtmr", GroupDir(tsm.make_rtmr))
    if tsm.provider:
        head, _, name = REM_LOG_PATH.rpartition("/")
        vfs.makedirs(head).add(name, Attribute(show=tsm.rem_log))
        vfs.makedirs("sys/devices/platform/arm-cca-dev")
        vfs.makedirs("sys/bus/platform/devices").add("arm-cca-dev", LinkInode("../../../devices/platform/arm-cca-dev"))
    return tsm
