"""/proc per process (guest/proctree.py), comm and PR_SET_NAME/PR_GET_NAME, and statfs/fstatfs
(guest/namei.py) on a real Process over the fake CPU of tests/guest/test_syscall_fuzz.py,
called through the syscall table as EL0 would. The formats are proc(5)'s and prctl(2)'s;
struct statfs's layout is checked against the host libc's own statfs(2) of the host's /proc
(x86_64 and arm64 share asm-generic's 64-bit struct statfs)."""

# ruff: noqa: F811  (`proc` is the fixture test_procfs_poll.py defines)
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct

from unirealm.guest.process import Process
from unirealm.guest.vfs import LinkInode

from .process_support import WILD, call, scratch
from .test_procfs_poll import proc, read_file  # noqa: F401

SIGCHLD = 17
PR_SET_NAME, PR_GET_NAME = 15, 16
TMPFS_MAGIC, PROC_SUPER_MAGIC = 0x01021994, 0x9FA0
STATFS = struct.Struct("<11Q32x")


def stat_fields(raw: bytes) -> list[str]:
    """proc(5): pid (comm) state ...; comm may hold spaces and parentheses: split at the last ')'."""
    text = raw.decode().rstrip("\n")
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    return [pid, comm, *rest.split()]


def status_fields(raw: bytes) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in raw.decode().splitlines())


# --- /proc/PID ------------------------------------------------------------------------------
def test_stat_has_procs_52_fields(proc: Process) -> None:
    f = stat_fields(read_file(proc, "/proc/self/stat"))
    assert len(f) == 52
    assert f[0] == str(proc.pid) and f[1] == "app" and f[2] == "R"
    assert f[3] == "0"  # ppid: the first process has no parent
    assert f[19] == "1"  # num_threads
    vsize = sum(int(b, 16) - int(a, 16) for a, b in
                (line.split()[0].split("-") for line in read_file(proc, "/proc/self/maps").decode().splitlines()))
    assert int(f[22]) == vsize  # vsize covers every mapping
    assert int(f[23]) == len(proc.mm.owned) > 0  # rss in pages
    assert f[37] == str(SIGCHLD)  # exit_signal
    statm = read_file(proc, "/proc/self/statm").split()
    assert int(statm[0]) * 4096 == vsize and int(statm[1]) == int(f[23])


def test_status_shows_the_signal_masks_and_dispositions(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, (1 << 9).to_bytes(8, "little"))  # SIGUSR1 (10)
    assert call(proc, "rt_sigprocmask", 0, buf, 0, 8) == 0
    proc.write(buf + 0x100, struct.pack("<QQQQ", 1, 0, 0, 0))  # SIG_IGN
    assert call(proc, "rt_sigaction", 13, buf + 0x100, 0, 8) == 0  # SIGPIPE
    proc.write(buf + 0x100, struct.pack("<QQQQ", 0x400100, 0, 0, 0))  # a handler
    assert call(proc, "rt_sigaction", 2, buf + 0x100, 0, 8) == 0  # SIGINT
    s = status_fields(read_file(proc, "/proc/self/status"))
    assert s["Name"] == "app" and s["State"] == "R (running)" and s["Tgid"] == s["Pid"] == str(proc.pid)
    assert s["PPid"] == "0" and s["Threads"] == "1" and s["Uid"] == "0\t0\t0\t0"
    assert s["SigBlk"] == f"{1 << 9:016x}"
    assert s["SigIgn"] == f"{1 << 12:016x}" and s["SigCgt"] == f"{1 << 1:016x}"
    assert int(s["VmRSS"].split()[0]) == len(proc.mm.owned) * 4
    keys = list(s)
    assert keys.index("Name") < keys.index("State") < keys.index("PPid") < keys.index("VmRSS") < keys.index("SigBlk")


def test_self_links_to_the_pid_and_each_process_has_a_directory(proc: Process) -> None:
    link, _ = proc.vfs.walk("/proc/self", follow=False)
    assert isinstance(link, LinkInode) and link.target == str(proc.pid)
    child_pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    assert child_pid is not None and child_pid > 0
    root, _ = proc.vfs.walk("/proc")
    assert {str(proc.pid), str(child_pid), "self", "thread-self", "mounts"} <= set(root.children)  # type: ignore[attr-defined]
    f = stat_fields(read_file(proc, f"/proc/{child_pid}/stat"))
    assert f[0] == str(child_pid) and f[3] == str(proc.pid)  # its parent
    assert read_file(proc, f"/proc/{child_pid}/cmdline") == b"/app\0"
    tasks, _ = proc.vfs.walk(f"/proc/{child_pid}/task")
    assert list(tasks.children) == [str(child_pid)]  # type: ignore[attr-defined]
    assert read_file(proc, f"/proc/{proc.pid}/task/{proc.pid}/comm") == b"app\n"


def test_a_zombie_shows_z_until_it_is_reaped(proc: Process) -> None:
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    assert pid is not None
    (child,) = proc.children
    child.exit(128 + 9, 9)
    f = stat_fields(read_file(proc, f"/proc/{pid}/stat"))
    assert f[1] == "app" and f[2] == "Z" and int(f[51]) == 9  # exit_code: the wait status
    assert status_fields(read_file(proc, f"/proc/{pid}/status"))["State"] == "Z (zombie)"
    assert read_file(proc, f"/proc/{pid}/cmdline") == b""  # no memory left to read it from
    assert call(proc, "wait4", pid, 0, 0, 0) == pid
    root, _ = proc.vfs.walk("/proc")
    assert str(pid) not in root.children  # type: ignore[attr-defined]


# --- comm -----------------------------------------------------------------------------------
def test_pr_set_name_renames_the_thread_cut_to_15_bytes(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, b"a-rather-long-thread-name\0")
    assert call(proc, "prctl", PR_SET_NAME, buf) == 0
    assert read_file(proc, "/proc/self/comm") == b"a-rather-long-t\n"
    assert stat_fields(read_file(proc, "/proc/self/stat"))[1] == "a-rather-long-t"
    proc.write(buf + 0x100, b"\xff" * 16)
    assert call(proc, "prctl", PR_GET_NAME, buf + 0x100) == 0
    assert proc.read(buf + 0x100, 16) == b"a-rather-long-t\0"  # TASK_COMM_LEN, NUL included
    assert call(proc, "prctl", PR_SET_NAME, WILD) == -errno.EFAULT


def test_writing_a_threads_comm_renames_it(proc: Process) -> None:
    path = f"/proc/self/task/{proc.threads[0].tid}/comm"
    node, _ = proc.vfs.walk(path)
    f = node.open(1, path)  # O_WRONLY
    assert f.write(b"worker") == 6
    assert proc.threads[0].comm == "worker"
    assert read_file(proc, "/proc/self/comm") == b"worker\n"


def test_exec_names_the_task_after_the_file_it_was_given(proc: Process) -> None:
    from unirealm.guest.process import comm_of
    assert comm_of("/usr/bin/python3.11") == "python3.11"
    assert comm_of("/proc/self/exe") == "exe"  # what busybox's re-exec of itself shows
    assert comm_of("/opt/" + "x" * 40) == "x" * 15


# --- statfs ---------------------------------------------------------------------------------
def test_statfs_layout_matches_the_host_libc() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    raw = ctypes.create_string_buffer(STATFS.size)
    assert libc.statfs(b"/proc", raw) == 0
    words = STATFS.unpack(raw.raw)
    assert words[0] == PROC_SUPER_MAGIC and words[1] == 4096 and words[8] == 255  # f_type, f_bsize, f_namelen


def test_statfs_of_the_root_proc_and_an_open_file(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    path = buf + 0x800
    proc.write(path, b"/\0")
    assert call(proc, "statfs", path, buf) == 0
    f_type, bsize, blocks, bfree, bavail, files, ffree, _fsid, namelen, frsize, _flags = STATFS.unpack(
        proc.read(buf, STATFS.size))
    pages = proc.kernel.pages
    assert f_type == TMPFS_MAGIC and bsize == frsize == 4096 and namelen == 255
    assert blocks == pages.total // 4096 and bfree == bavail == pages.free_bytes // 4096
    assert files == blocks and ffree == bfree
    proc.write(path, b"/proc/self/stat\0")
    assert call(proc, "statfs", path, buf) == 0
    assert STATFS.unpack(proc.read(buf, STATFS.size))[0] == PROC_SUPER_MAGIC
    assert call(proc, "fstatfs", 1, buf) == 0  # the console, on the root file system
    assert STATFS.unpack(proc.read(buf, STATFS.size))[0] == TMPFS_MAGIC
    proc.write(path, b"/no/such\0")
    assert call(proc, "statfs", path, buf) == -errno.ENOENT
    assert call(proc, "statfs", WILD, buf) == -errno.EFAULT
    proc.write(path, b"/\0")
    assert call(proc, "statfs", path, WILD) == -errno.EFAULT
    assert call(proc, "fstatfs", 77, buf) == -errno.EBADF


def test_proc_files_have_their_own_device(proc: Process) -> None:
    root_dev = proc.vfs.walk("/")[0].st_dev
    assert proc.vfs.walk("/proc/self/stat")[0].st_dev != root_dev
    assert proc.vfs.walk("/proc")[0].st_dev != root_dev
    mounts = read_file(proc, "/proc/mounts").decode().splitlines()
    assert mounts[0].split() == ["rootfs", "/", "rootfs", "rw", "0", "0"]
    assert any(line.split()[1:3] == ["/proc", "proc"] for line in mounts)


# --- prctl ----------------------------------------------------------------------------------
def test_prctl_options_as_kernel_sys_c_answers_them(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "prctl", 1, 65) == -errno.EINVAL  # PR_SET_PDEATHSIG: not a signal
    assert call(proc, "prctl", 1, 15) == 0
    assert call(proc, "prctl", 2, buf) == 0 and struct.unpack("<i", proc.read(buf, 4)) == (15,)
    assert call(proc, "prctl", 3) == 1  # PR_GET_DUMPABLE
    assert call(proc, "prctl", 4, 2) == -errno.EINVAL and call(proc, "prctl", 4, 0) == 0
    assert call(proc, "prctl", 3) == 0
    assert call(proc, "prctl", 21) == 0  # PR_GET_SECCOMP: none
    assert call(proc, "prctl", 23, 40) == 1 and call(proc, "prctl", 23, 41) == -errno.EINVAL  # CAPBSET_READ
    assert call(proc, "prctl", 30) == 50_000  # the default timer slack
    assert call(proc, "prctl", 29, 1000) == 0 and call(proc, "prctl", 30) == 1000
    assert call(proc, "prctl", 29, 0) == 0 and call(proc, "prctl", 30) == 50_000  # 0: back to the default
    assert call(proc, "prctl", 38, 0) == -errno.EINVAL  # PR_SET_NO_NEW_PRIVS takes only 1
    assert call(proc, "prctl", 39) == 0
    assert call(proc, "prctl", 38, 1) == 0 and call(proc, "prctl", 39) == 1
    assert status_fields(read_file(proc, "/proc/self/status"))["NoNewPrivs"] == "1"
    assert call(proc, "prctl", 41, 1) == 0 and call(proc, "prctl", 42) == 1  # THP disable
    assert call(proc, "prctl", 41, 1, 1) == -errno.EINVAL
    for unknown in (0, 36, 0x53564D41, 1 << 20):  # no subreaper or VMA names here
        assert call(proc, "prctl", unknown) == -errno.EINVAL
    child_pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    child = next(c for c in proc.children if c.pid == child_pid)
    assert child.state.no_new_privs == 1 and child.pdeath_signal == 0  # one is inherited, one is not


def test_pdeathsig_is_sent_when_the_parent_ends(proc: Process) -> None:
    child_pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    child = next(c for c in proc.children if c.pid == child_pid)
    child.pdeath_signal = 10  # what the child's prctl(PR_SET_PDEATHSIG, SIGUSR1) stores
    proc.exit(0)
    assert child.shared_pending.bits == 1 << 9
