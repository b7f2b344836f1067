"""/dev, /proc and /etc of the first process (guest/procfs.py) and the readiness syscalls
(guest/poll.py: ppoll, pselect6, epoll) on a real Process over the fake CPU of
tests/guest/test_syscall_fuzz.py, called through the syscall table as EL0 would; results as
Linux gives them (poll(2), select(2), epoll_ctl(2), proc(5))."""

from __future__ import annotations

import errno
import struct

import pytest

from unirealm.guest import syscalls as sc
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.procfs import mount_system
from unirealm.guest.vfs import POLLHUP, POLLIN, POLLNVAL, POLLOUT, RegInode

from .test_syscall_fuzz import make_process

MASK = (1 << 64) - 1
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLONESHOT = 1 << 30


@pytest.fixture
def proc() -> Process:
    try:
        p = make_process()
        mount_system(p)
        yield p
    finally:
        Store.current = None


def call(p: Process, name: str, *args: int) -> int:
    result = p.syscalls.call(sc.NR[name], [a & MASK for a in (*args, 0, 0, 0, 0, 0, 0)][:6])
    assert result is not None
    result &= MASK
    return result - (1 << 64) if result >> 63 else result


def scratch(p: Process, size: int = 0x4000) -> int:
    addr = call(p, "mmap", 0, size, 3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    assert addr > 0
    return addr


def pipe(p: Process, buf: int) -> tuple[int, int]:
    assert call(p, "pipe2", buf, 0) == 0
    r, w = struct.unpack("<ii", p.read(buf, 8))
    return r, w


def read_file(p: Process, path: str) -> bytes:
    node, _ = p.vfs.walk(path)
    f = node.open(0, path)
    out = b""
    while chunk := f.read(65536):
        out += chunk
    return out


# --- procfs ---------------------------------------------------------------------------------
def test_proc_self_describes_the_calling_process(proc: Process) -> None:
    assert read_file(proc, "/proc/self/cmdline") == b"/app\0"
    status = read_file(proc, "/proc/self/status").decode()
    assert f"\nPid:\t{proc.pid}\n" in status and status.startswith("Name:\tapp\n") and "\nThreads:\t1\n" in status
    assert read_file(proc, "/proc/self/stat").startswith(f"{proc.pid} (app) R ".encode())
    assert read_file(proc, "/proc/self/environ") == b"".join(e.encode() + b"\0" for e in proc.state.envp)
    exe, _ = proc.vfs.walk("/proc/self/exe", follow=False)
    assert exe.target == "/app"  # type: ignore[attr-defined]
    assert proc.vfs.walk(f"/proc/{proc.pid}/cmdline")[0] is not None
    fds, _ = proc.vfs.walk("/proc/self/fd")
    assert sorted(fds.children) == ["0", "1", "2"]  # type: ignore[attr-defined]
    assert fds.children["1"].target == "/dev/console"  # type: ignore[attr-defined]


def test_proc_self_maps_lists_every_vma(proc: Process) -> None:
    buf = scratch(proc, 0x3000)
    call(proc, "mprotect", buf + 0x1000, 0x1000, 1)  # the middle page read-only: its own line
    lines = read_file(proc, "/proc/self/maps").decode().splitlines()
    elf = [x for x in lines if x.startswith("00400000-00401000 r-xp 00000000 00:00 0")]
    assert elf and elf[0].endswith(" /app")
    assert any(x.startswith(f"{buf:08x}-{buf + 0x1000:08x} rw-p ") for x in lines)
    assert any(x.startswith(f"{buf + 0x1000:08x}-{buf + 0x2000:08x} r--p ") for x in lines)
    assert any(x.endswith("[stack]") and " rw-p " in x for x in lines)
    starts = [int(x.split("-")[0], 16) for x in lines]
    assert starts == sorted(starts)


def test_dev_files(proc: Process) -> None:
    null, _ = proc.vfs.walk("/dev/null")
    f = null.open(2, "/dev/null")
    assert f.read(10) == b"" and f.write(b"gone") == 4
    zero, _ = proc.vfs.walk("/dev/zero")
    assert zero.open(0, "/dev/zero").read(5) == bytes(5)
    rnd, _ = proc.vfs.walk("/dev/urandom")
    assert rnd.open(0, "/dev/urandom").read(10) == ((0x1234_5678_9ABC_DEF0).to_bytes(8, "little") * 2)[:10]
    assert proc.vfs.walk("/dev/stdout", follow=False)[0].target == "/proc/self/fd/1"  # type: ignore[attr-defined]
    assert proc.vfs.walk("/dev/shm")[0].mode & 0o7777 == 0o1777


def test_proc_files_and_etc(proc: Process) -> None:
    meminfo = read_file(proc, "/proc/meminfo").decode()
    total = proc.kernel.pages.total >> 10
    assert f"MemTotal:       {total:8d} kB\n" in meminfo
    assert "processor\t: 0\n" in read_file(proc, "/proc/cpuinfo").decode()
    assert read_file(proc, "/sys/devices/system/cpu/online") == b"0\n"
    assert read_file(proc, "/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert read_file(proc, "/etc/hostname") == b"unirealm\n"


def test_etc_files_from_the_initrd_are_kept() -> None:
    p = make_process()
    try:
        p.vfs.makedirs("etc").add("passwd", RegInode(b"app:x:1000:1000::/:/bin/false\n"))
        mount_system(p)
        assert read_file(p, "/etc/passwd") == b"app:x:1000:1000::/:/bin/false\n"
        assert read_file(p, "/etc/group") == b"root:x:0:\n"
    finally:
        Store.current = None


# --- ppoll and pselect6 -------------------------------------------------------------------------
def pollfds(p: Process, buf: int, items: list[tuple[int, int]]) -> None:
    p.write(buf, b"".join(struct.pack("<ihh", fd, ev, 0x5555) for fd, ev in items))


def revents(p: Process, buf: int, n: int) -> list[int]:
    return [struct.unpack_from("<ihh", p.read(buf, 8 * n), 8 * i)[2] for i in range(n)]


def test_ppoll_reports_readiness_per_descriptor(proc: Process) -> None:
    buf = scratch(proc)
    r, w = pipe(proc, buf)
    ts = buf + 0x100
    proc.write(ts, struct.pack("<qq", 0, 0))  # no waiting
    fds = buf + 0x200
    pollfds(proc, fds, [(r, POLLIN), (w, POLLOUT | POLLIN), (-1, POLLIN), (99, POLLIN)])
    assert call(proc, "ppoll", fds, 4, ts) == 2  # the write end, and the bad descriptor
    assert revents(proc, fds, 4) == [0, POLLOUT, 0, POLLNVAL]
    proc.write(buf + 0x300, b"x")
    assert call(proc, "write", w, buf + 0x300, 1) == 1
    pollfds(proc, fds, [(r, POLLIN), (w, POLLIN)])  # the write end asks for nothing it has
    assert call(proc, "ppoll", fds, 2, ts) == 1
    assert revents(proc, fds, 2) == [POLLIN, 0]
    assert call(proc, "close", w) == 0
    pollfds(proc, fds, [(r, POLLOUT)])  # POLLHUP is reported whether asked for or not
    assert call(proc, "ppoll", fds, 1, ts) == 1
    assert revents(proc, fds, 1)[0] & POLLHUP
    assert call(proc, "ppoll", fds, 1025, ts) == -errno.EINVAL
    assert call(proc, "ppoll", 0, 0, ts) == 0


def test_pselect6_sets(proc: Process) -> None:
    buf = scratch(proc)
    r, w = pipe(proc, buf)
    ts = buf + 0x100
    proc.write(ts, struct.pack("<qq", 0, 0))
    rset, wset, eset = buf + 0x200, buf + 0x300, buf + 0x400
    proc.write(rset, (1 << r | 1 << w).to_bytes(8, "little"))
    proc.write(wset, (1 << w).to_bytes(8, "little"))
    proc.write(eset, b"\xff" * 8)
    n = max(r, w) + 1
    assert call(proc, "pselect6", n, rset, wset, eset, ts) == 1  # only the write end is writable
    assert int.from_bytes(proc.read(rset, 8), "little") == 0
    assert int.from_bytes(proc.read(wset, 8), "little") == 1 << w
    assert proc.read(eset, 8) == bytes(8)  # no exceptional conditions
    proc.write(buf + 0x500, b"data")
    call(proc, "write", w, buf + 0x500, 4)
    proc.write(rset, (1 << r).to_bytes(8, "little"))
    assert call(proc, "pselect6", n, rset, 0, 0, ts) == 1
    assert int.from_bytes(proc.read(rset, 8), "little") == 1 << r
    proc.write(rset, (1 << 40).to_bytes(8, "little"))  # a descriptor that is not open: EBADF
    assert call(proc, "pselect6", 41, rset, 0, 0, ts) == -errno.EBADF
    eset = buf + 0x400
    proc.write(rset, (1 << r).to_bytes(8, "little"))
    proc.write(eset, (1 << 40).to_bytes(8, "little"))  # in the exception set too
    assert call(proc, "pselect6", 41, rset, 0, eset, ts) == -errno.EBADF
    assert call(proc, "pselect6", 40, rset, 0, eset, ts) == 1  # bit 40 is past nfds: not looked at
    assert call(proc, "pselect6", (1 << 32) - 1, rset, 0, 0, ts) == -errno.EINVAL  # nfds -1


# --- epoll ----------------------------------------------------------------------------------------
def event(p: Process, addr: int, events: int, data: int) -> int:
    p.write(addr, struct.pack("<IxxxxQ", events, data))
    return addr


def test_epoll_ctl_and_wait(proc: Process) -> None:
    buf = scratch(proc)
    r, w = pipe(proc, buf)
    ep = call(proc, "epoll_create1", 0)
    assert ep >= 0
    ev, out = buf + 0x100, buf + 0x200
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_ADD, r, event(proc, ev, POLLIN, 0xAA)) == 0
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_ADD, r, ev) == -errno.EEXIST
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_MOD, w, ev) == -errno.ENOENT
    assert call(proc, "epoll_ctl", ep, 7, r, ev) == -errno.EINVAL
    assert call(proc, "epoll_ctl", r, EPOLL_CTL_ADD, w, ev) == -errno.EINVAL  # not an epoll descriptor
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_ADD, 77, ev) == -errno.EBADF
    assert call(proc, "epoll_pwait", ep, out, 8, 0) == 0  # nothing to read yet
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_ADD, w, event(proc, ev, POLLOUT | EPOLLONESHOT, 0xBB)) == 0
    assert call(proc, "epoll_pwait", ep, out, 8, 0) == 1
    assert struct.unpack("<IxxxxQ", proc.read(out, 16)) == (POLLOUT, 0xBB)
    assert call(proc, "epoll_pwait", ep, out, 8, 0) == 0  # one-shot: disarmed until MOD
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_MOD, w, event(proc, ev, POLLOUT, 0xCC)) == 0
    proc.write(buf + 0x300, b"z")
    call(proc, "write", w, buf + 0x300, 1)
    assert call(proc, "epoll_pwait", ep, out, 8, 0) == 2
    got = [struct.unpack_from("<IxxxxQ", proc.read(out, 32), 16 * i) for i in range(2)]
    assert sorted(got) == [(POLLIN, 0xAA), (POLLOUT, 0xCC)]
    assert call(proc, "epoll_pwait", ep, out, 1, 0) == 1  # maxevents bounds the answer
    for bad in (0, -1):
        assert call(proc, "epoll_pwait", ep, out, bad, 0) == -errno.EINVAL
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_DEL, w, 0) == 0
    assert call(proc, "epoll_ctl", ep, EPOLL_CTL_DEL, w, 0) == -errno.ENOENT
    assert call(proc, "epoll_pwait", ep, out, 8, 0) == 1
    assert struct.unpack("<IxxxxQ", proc.read(out, 16)) == (POLLIN, 0xAA)


@pytest.mark.parametrize(("sec", "nsec"), [(-1, 0), (0, -1), (0, 1_000_000_000), (-(1 << 63), 0)])
def test_ppoll_and_pselect6_refuse_an_invalid_timespec(proc: Process, sec: int, nsec: int) -> None:
    """poll_select_set_timeout: a timespec that is not timespec64_valid is EINVAL, before any
    descriptor is looked at (not a timeout of 0)."""
    buf = scratch(proc)
    r, _w = pipe(proc, buf)
    ts = buf + 0x100
    proc.write(ts, struct.pack("<qq", sec, nsec))
    fds = buf + 0x200
    pollfds(proc, fds, [(r, POLLIN)])
    assert call(proc, "ppoll", fds, 1, ts) == -errno.EINVAL
    rset = buf + 0x300
    proc.write(rset, (1 << r).to_bytes(8, "little"))
    assert call(proc, "pselect6", r + 1, rset, 0, 0, ts) == -errno.EINVAL
    assert call(proc, "ppoll", fds, 1, 0xDEAD_0000_0000) == -errno.EFAULT


def test_ppoll_and_pselect6_write_back_what_is_left_of_the_timeout(proc: Process) -> None:
    """The raw system calls update the timespec (poll_select_finish); a call that returns at
    once leaves nearly all of it, one that times out leaves {0, 0}."""
    buf = scratch(proc)
    r, w = pipe(proc, buf)
    ts, fds = buf + 0x100, buf + 0x200
    pollfds(proc, fds, [(w, POLLOUT)])
    proc.write(ts, struct.pack("<qq", 5, 0))
    assert call(proc, "ppoll", fds, 1, ts) == 1
    sec, nsec = struct.unpack("<qq", proc.read(ts, 16))
    assert 0 <= nsec < 1_000_000_000 and 4_000_000_000 < sec * 1_000_000_000 + nsec < 5_000_000_000  # time passed
    rset = buf + 0x300
    proc.write(rset, (1 << r).to_bytes(8, "little"))
    proc.write(ts, struct.pack("<qq", 0, 0))
    assert call(proc, "pselect6", r + 1, rset, 0, 0, ts) == 0  # nothing to read, no waiting
    assert struct.unpack("<qq", proc.read(ts, 16)) == (0, 0)
    assert int.from_bytes(proc.read(rset, 8), "little") == 0


def test_the_signal_mask_arguments_are_checked(proc: Process) -> None:
    """set_user_sigmask: a mask of another size than sigset_t is EINVAL, one that cannot be
    read EFAULT; pselect6's sixth argument points at {sigset_t *, size_t}."""
    buf = scratch(proc)
    _r, w = pipe(proc, buf)
    ts, fds, mask, pair = buf + 0x100, buf + 0x200, buf + 0x300, buf + 0x400
    proc.write(ts, struct.pack("<qq", 0, 0))
    proc.write(mask, bytes(8))
    pollfds(proc, fds, [(w, POLLOUT)])
    assert call(proc, "ppoll", fds, 1, ts, mask, 8) == 1
    assert call(proc, "ppoll", fds, 1, ts, mask, 16) == -errno.EINVAL
    assert call(proc, "ppoll", fds, 1, ts, 0xDEAD_0000_0000, 8) == -errno.EFAULT
    assert call(proc, "ppoll", fds, 1, ts, 0, 16) == 1  # no mask: its size is not looked at
    wset = buf + 0x500
    proc.write(wset, (1 << w).to_bytes(8, "little"))
    proc.write(pair, struct.pack("<QQ", mask, 8))
    assert call(proc, "pselect6", w + 1, 0, wset, 0, ts, pair) == 1
    proc.write(pair, struct.pack("<QQ", mask, 4))
    assert call(proc, "pselect6", w + 1, 0, wset, 0, ts, pair) == -errno.EINVAL
    proc.write(pair, struct.pack("<QQ", 0, 4))
    assert call(proc, "pselect6", w + 1, 0, wset, 0, ts, pair) == 1
    assert call(proc, "pselect6", w + 1, 0, wset, 0, ts, 0xDEAD_0000_0000) == -errno.EFAULT


# Documentation/admin-guide/devices.txt: (major, minor) of each character device
LINUX_DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
                 "console": (5, 1), "ttyS0": (4, 64)}


def test_dev_nodes_have_linuxs_numbers_and_names(proc: Process) -> None:
    for name, (major, minor) in LINUX_DEVICES.items():
        node, _ = proc.vfs.walk(f"/dev/{name}")
        assert node.rdev == major << 8 | minor, name  # type: ignore[attr-defined]  # old_encode_dev
        f = node.open(2, f"/dev/{name}")
        assert f.path == f"/dev/{name}" and f.inode is node
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        assert proc.vfs.walk(f"/dev/{name}", follow=False)[0].target == f"/proc/self/fd/{fd}"  # type: ignore[attr-defined]
    assert proc.vfs.walk("/dev/fd", follow=False)[0].target == "/proc/self/fd"  # type: ignore[attr-defined]


@pytest.mark.parametrize("options", [(), ("tty",)])
def test_the_console_is_on_0_1_and_2_and_a_terminal_only_with_tty(options: tuple[str, ...]) -> None:
    try:
        p = make_process()
        p.kernel.options = list(options)  # type: ignore[attr-defined]
        mount_system(p)
        consoles = [p.state.fds.get(fd).file for fd in range(3)]
        assert [f.path for f in consoles] == ["/dev/console"] * 3
        assert all(f.is_tty() == bool(options) for f in consoles)
        for name in ("tty", "console", "ttyS0"):  # opened by name, the device nodes are terminals
            node, _ = p.vfs.walk(f"/dev/{name}")
            assert node.open(2, f"/dev/{name}").is_tty()
    finally:
        Store.current = None
