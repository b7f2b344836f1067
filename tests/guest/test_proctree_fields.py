"""/proc's per-process files field by field as proc(5) and fs/proc/array.c lay them out, on a
real Process over the fake CPU of tests/guest/test_syscall_fuzz.py, opened and read through
the syscall table as EL0 would: /proc/PID/stat's signal masks and thread count, status's
state words, VmData, VmSize and SigQ, statm's data+stack, maps's file offset, the
per-thread task/TID files, /proc/stat, /proc/sys/kernel and /proc's own mode."""

# ruff: noqa: F811  (`proc` is the fixture test_procfs_poll.py defines)
from __future__ import annotations

import math
import stat as st
import struct
import weakref

from unirealm.guest.process import Process
from unirealm.guest.sched import BLOCKED
from unirealm.guest.threads import CLONE_SIGHAND, CLONE_THREAD, CLONE_VM

from .process_support import call, scratch
from .test_procfs_poll import proc  # noqa: F401
from .test_proctree import stat_fields, status_fields

AT_FDCWD = -100
O_RDONLY, O_RDWR, O_CREAT = 0, 2, 0o100
PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
SIGINT, SIGUSR1, SIGPIPE, SIGTERM, SIGCHLD = 2, 10, 13, 15, 17
SIG_BLOCK = 0
RLIMIT_SIGPENDING = 11
FUTEX_WAIT = 0
THREAD = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND


def cstr(p: Process, buf: int, s: str) -> int:
    p.write(buf, s.encode() + b"\0")
    return buf


_BUFFERS: weakref.WeakKeyDictionary[Process, int] = weakref.WeakKeyDictionary()


def io_buffer(p: Process) -> int:
    """One 64 KiB buffer per process for the paths and reads, mapped once so that reading
    /proc does not change the mappings it describes."""
    if p not in _BUFFERS:
        _BUFFERS[p] = scratch(p, 0x11000)
    return _BUFFERS[p]


def sys_open(p: Process, path: str, flags: int = O_RDONLY) -> int:
    buf = io_buffer(p) + 0x10000
    fd = call(p, "openat", AT_FDCWD, cstr(p, buf, path), flags, 0o644)
    assert fd is not None and fd >= 0, (path, fd)
    return fd


def sys_read(p: Process, path: str) -> bytes:
    """open(2), read(2) to the end, close(2): what cat does."""
    fd = sys_open(p, path)
    buf = io_buffer(p)
    out = b""
    while (n := call(p, "read", fd, buf, 0x10000)) and n > 0:
        out += p.read(buf, n)
    assert n == 0
    assert call(p, "close", fd) == 0
    return out


def stat_of(p: Process, path: str) -> list[str]:
    return stat_fields(sys_read(p, path))


def status_of(p: Process, path: str) -> dict[str, str]:
    return status_fields(sys_read(p, path))


def kb(value: str) -> int:
    number, unit = value.split()
    assert unit == "kB"
    return int(number)


def mmap(p: Process, size: int, prot: int, flags: int, fd: int = -1, off: int = 0) -> int:
    addr = call(p, "mmap", 0, size, prot, flags, fd, off)
    assert addr is not None and addr > 0
    return addr


# --- stat's signal fields (31-34: signal blocked sigignore sigcatch, decimal) ----------------
def test_stat_shows_pending_blocked_ignored_and_caught_signals(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, ((1 << (SIGUSR1 - 1)) | (1 << (SIGTERM - 1))).to_bytes(8, "little"))
    assert call(proc, "rt_sigprocmask", SIG_BLOCK, buf, 0, 8) == 0
    proc.write(buf + 0x100, struct.pack("<QQQQ", 1, 0, 0, 0))  # SIG_IGN
    assert call(proc, "rt_sigaction", SIGPIPE, buf + 0x100, 0, 8) == 0
    proc.write(buf + 0x100, struct.pack("<QQQQ", 0x400100, 0, 0, 0))  # a handler
    assert call(proc, "rt_sigaction", SIGINT, buf + 0x100, 0, 8) == 0
    tid = call(proc, "gettid")
    assert call(proc, "tgkill", proc.pid, tid, SIGUSR1) == 0  # blocked: it stays pending on the thread
    f = stat_of(proc, "/proc/self/stat")
    assert int(f[30]) == 1 << (SIGUSR1 - 1)  # signal: pending
    assert int(f[31]) == (1 << (SIGUSR1 - 1)) | (1 << (SIGTERM - 1))  # blocked
    assert int(f[32]) == 1 << (SIGPIPE - 1)  # sigignore
    assert int(f[33]) == 1 << (SIGINT - 1)  # sigcatch
    s = status_of(proc, "/proc/self/status")
    assert s["SigPnd"] == f"{1 << (SIGUSR1 - 1):016x}"  # the thread's own pending set
    assert s["ShdPnd"] == f"{0:016x}"
    t = status_of(proc, f"/proc/self/task/{tid}/status")
    assert t["SigPnd"] == s["SigPnd"] and t["SigBlk"] == s["SigBlk"]


def test_status_sigq_is_queued_over_rlimit_sigpending(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "prlimit64", 0, RLIMIT_SIGPENDING, 0, buf) == 0
    soft, _hard = struct.unpack("<QQ", proc.read(buf, 16))
    assert status_of(proc, "/proc/self/status")["SigQ"] == f"0/{soft}"


# --- threads -------------------------------------------------------------------------------
def test_num_threads_counts_each_thread_and_task_has_each(proc: Process) -> None:
    buf = scratch(proc)
    tid = call(proc, "clone", THREAD, buf + 0x3000, 0, 0, 0)
    assert tid is not None and tid > proc.pid
    f = stat_of(proc, "/proc/self/stat")
    assert f[19] == "2"  # num_threads
    assert status_of(proc, "/proc/self/status")["Threads"] == "2"
    tasks = sorted(int(x) for x in proc.vfs.walk("/proc/self/task")[0].children)  # type: ignore[attr-defined]
    assert tasks == [proc.pid, tid]
    t = stat_of(proc, f"/proc/self/task/{tid}/stat")
    assert t[0] == str(tid) and t[4] == str(proc.pid) and t[19] == "2"  # pid is the TID; pgrp the group's
    s = status_of(proc, f"/proc/{proc.pid}/task/{tid}/status")
    assert s["Pid"] == str(tid) and s["Tgid"] == str(proc.pid) and s["Name"] == "app" and s["Threads"] == "2"


def test_a_thread_waiting_in_futex_is_sleeping(proc: Process) -> None:
    buf = scratch(proc)
    tid = call(proc, "clone", THREAD, buf + 0x3000, 0, 0, 0)
    main = proc.threads[0]
    proc.write(buf + 16, struct.pack("<I", 7))
    assert call(proc, "futex", buf + 16, FUTEX_WAIT, 7, 0, 0, 0) is None  # main blocks
    assert stat_of(proc, f"/proc/{proc.pid}/task/{main.tid}/stat")[2] == "S"
    assert status_of(proc, f"/proc/{proc.pid}/task/{main.tid}/status")["State"] == "S (sleeping)"
    assert stat_of(proc, f"/proc/{proc.pid}/task/{tid}/stat")[2] == "R"
    assert status_of(proc, f"/proc/{proc.pid}/task/{tid}/status")["State"] == "R (running)"
    # /proc/PID/stat and status are the thread-group leader's (fs/proc/array.c's get_task_state(task))
    assert stat_of(proc, f"/proc/{proc.pid}/stat")[2] == "S"
    assert status_of(proc, f"/proc/{proc.pid}/status")["State"] == "S (sleeping)"


def test_the_process_runs_while_its_leader_does(proc: Process) -> None:
    buf = scratch(proc)
    call(proc, "clone", THREAD, buf + 0x3000, 0, 0, 0)
    main, t = proc.threads
    proc.sched.runq.remove(t)
    proc.sched.switch(main, t)
    proc.write(buf + 16, struct.pack("<I", 7))
    assert call(proc, "futex", buf + 16, FUTEX_WAIT, 7, 0, 0, 0) is None  # the second thread blocks
    assert t.state == BLOCKED and main.state != BLOCKED
    assert stat_of(proc, f"/proc/{proc.pid}/stat")[2] == "R"
    assert stat_of(proc, f"/proc/{proc.pid}/task/{t.tid}/stat")[2] == "S"


def test_a_zombie_counts_one_thread(proc: Process) -> None:
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    child.exit(0, 0)
    f = stat_of(proc, f"/proc/{pid}/stat")
    assert f[2] == "Z" and f[19] == "1"
    s = status_of(proc, f"/proc/{pid}/status")
    assert s["State"] == "Z (zombie)" and s["Threads"] == "1" and "VmSize" not in s  # no mm left


def test_thread_self_links_to_the_callers_task(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    tid = call(proc, "gettid")
    n = call(proc, "readlinkat", AT_FDCWD, cstr(proc, buf, "/proc/thread-self"), buf + 0x100, 0x100)
    assert n is not None and proc.read(buf + 0x100, n) == f"{proc.pid}/task/{tid}".encode()
    n = call(proc, "readlinkat", AT_FDCWD, cstr(proc, buf, "/proc/self"), buf + 0x100, 0x100)
    assert n is not None and proc.read(buf + 0x100, n) == str(proc.pid).encode()


# --- memory --------------------------------------------------------------------------------
def test_vmdata_counts_private_writable_mappings_and_statm_data_adds_the_stack(proc: Process) -> None:
    fd = sys_open(proc, "/shared", O_RDWR | O_CREAT)
    assert call(proc, "ftruncate", fd, 0x4000) == 0
    before = status_of(proc, "/proc/self/status")
    statm0 = [int(x) for x in sys_read(proc, "/proc/self/statm").split()]
    mmap(proc, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mmap(proc, 0x4000, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)  # not writable: not data
    mmap(proc, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED, fd)  # shared: not data
    after = status_of(proc, "/proc/self/status")
    statm1 = [int(x) for x in sys_read(proc, "/proc/self/statm").split()]
    assert kb(after["VmData"]) - kb(before["VmData"]) == 0x10000 // 1024
    assert kb(after["VmSize"]) - kb(before["VmSize"]) == 0x18000 // 1024
    assert kb(after["VmStk"]) == kb(before["VmStk"]) > 0
    assert statm1[5] - statm0[5] == 0x10000 // 4096  # data: data + stack, in pages
    assert statm1[5] * 4 == kb(after["VmData"]) + kb(after["VmStk"])
    assert statm1[0] - statm0[0] == 0x18000 // 4096
    assert statm1[3] * 4 == kb(after["VmExe"]) > 0  # text


def test_vmsize_is_the_maps_total_in_kb(proc: Process) -> None:
    mmap(proc, 0x100000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    total = sum(int(b, 16) - int(a, 16) for a, b in
                (line.split()[0].split("-") for line in sys_read(proc, "/proc/self/maps").decode().splitlines()))
    s = status_of(proc, "/proc/self/status")
    assert kb(s["VmSize"]) * 1024 == total and kb(s["VmPeak"]) >= kb(s["VmSize"])
    assert int(stat_of(proc, "/proc/self/stat")[22]) == total


def test_maps_shows_each_permission_bit(proc: Process) -> None:
    none = mmap(proc, 0x1000, 0, MAP_PRIVATE | MAP_ANONYMOUS)  # PROT_NONE: a guard page
    ro = mmap(proc, 0x1000, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    perms = {int(x.split("-")[0], 16): x.split()[1] for x in sys_read(proc, "/proc/self/maps").decode().splitlines()}
    assert perms[none] == "---p" and perms[ro] == "r--p" and perms[0x400000] == "r-xp"


def test_stat_start_brk_is_where_the_heap_begins(proc: Process) -> None:
    start = call(proc, "brk", 0)  # the initial break: the heap's start
    assert start is not None and start > 0
    assert int(stat_of(proc, "/proc/self/stat")[46]) == start  # start_brk
    assert call(proc, "brk", start + 0x3000) == start + 0x3000
    assert int(stat_of(proc, "/proc/self/stat")[46]) == start  # the start stays as the break moves


def test_maps_shows_a_file_mappings_offset(proc: Process) -> None:
    fd = sys_open(proc, "/mapped", O_RDWR | O_CREAT)
    buf = scratch(proc, 0x4000)
    proc.write(buf, bytes(range(256)) * 64)
    assert call(proc, "write", fd, buf, 0x4000) == 0x4000
    addr = mmap(proc, 0x2000, PROT_READ, MAP_PRIVATE, fd, 0x2000)
    assert proc.read(addr, 4) == bytes(range(4))
    (line,) = [x for x in sys_read(proc, "/proc/self/maps").decode().splitlines() if x.startswith(f"{addr:08x}-")]
    fields = line.split()
    assert fields[0] == f"{addr:08x}-{addr + 0x2000:08x}" and fields[1] == "r--p"
    assert fields[2] == "00002000"  # offset into the file


def test_status_shows_a_root_tasks_capabilities(proc: Process) -> None:
    s = status_of(proc, "/proc/self/status")
    full = (1 << 41) - 1  # capabilities 0 (CAP_CHOWN) to 40 (CAP_CHECKPOINT_RESTORE)
    assert s["CapInh"] == s["CapAmb"] == f"{0:016x}"
    assert s["CapPrm"] == s["CapEff"] == s["CapBnd"] == f"{full:016x}" == "000001ffffffffff"
    assert call(proc, "prctl", 23, 40) == 1 and call(proc, "prctl", 23, 41) != 1  # PR_CAPBSET_READ agrees
    assert s["Uid"] == s["Gid"] == "0\t0\t0\t0" and s["Seccomp"] == "0" and s["TracerPid"] == "0"


# --- comm ----------------------------------------------------------------------------------
def test_comm_opened_for_reading_is_named_by_its_path(proc: Process) -> None:
    fd = sys_open(proc, f"/proc/{proc.pid}/comm")
    buf = scratch(proc, 0x1000)
    assert call(proc, "read", fd, buf, 64) == 4 and proc.read(buf, 4) == b"app\n"
    n = call(proc, "readlinkat", AT_FDCWD, cstr(proc, buf, f"/proc/self/fd/{fd}"), buf + 0x100, 0x100)
    assert n is not None and proc.read(buf + 0x100, n) == f"/proc/{proc.pid}/comm".encode()


# --- the system's files --------------------------------------------------------------------
def test_proc_is_r_x_for_everyone(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    for path in ("/proc", "/proc/sys", "/proc/sys/kernel", f"/proc/{proc.pid}"):
        assert call(proc, "newfstatat", AT_FDCWD, cstr(proc, buf, path), buf + 0x100, 0) == 0
        mode = struct.unpack_from("<I", proc.read(buf + 0x100, 128), 16)[0]
        assert st.S_ISDIR(mode) and st.S_IMODE(mode) == 0o555, path


def test_proc_sys_kernel_matches_uname(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "uname", buf) == 0
    sysname, nodename, release = (proc.read(buf + 65 * i, 65).split(b"\0")[0] for i in range(3))
    assert sys_read(proc, "/proc/sys/kernel/ostype") == sysname + b"\n" == b"Linux\n"
    assert sys_read(proc, "/proc/sys/kernel/hostname") == nodename + b"\n"
    assert sys_read(proc, "/proc/sys/kernel/osrelease") == release + b"\n"
    assert int(sys_read(proc, "/proc/sys/kernel/pid_max")) >= proc.pid


def test_system_stat(proc: Process) -> None:
    lines = {line.split()[0]: line.split()[1:] for line in sys_read(proc, "/proc/stat").decode().splitlines()}
    assert len(lines["cpu"]) == 10 and len(lines["cpu0"]) == 10  # user nice system idle ... guest_nice
    assert lines["procs_running"] == ["1"]  # the reader itself
    assert lines["procs_blocked"] == ["0"]
    assert len(lines["softirq"]) == 11  # the total, then HI TIMER NET_TX NET_RX BLOCK IRQ_POLL TASKLET SCHED HRTIMER RCU
    assert int(lines["processes"][0]) >= 1
    buf = scratch(proc, 0x1000)
    assert call(proc, "clock_gettime", 0, buf) == 0  # CLOCK_REALTIME
    now = struct.unpack("<q", proc.read(buf, 8))[0]
    up = float(sys_read(proc, "/proc/uptime").split()[0])
    assert abs(int(lines["btime"][0]) - (now - up)) <= 2  # boot time in seconds since the epoch


# --- more of status ------------------------------------------------------------------------
def test_fdsize_is_the_file_tables_size(proc: Process) -> None:
    assert status_of(proc, "/proc/self/status")["FDSize"] == "64"  # NR_OPEN_DEFAULT slots
    assert call(proc, "dup3", 0, 100, 0) == 100
    assert status_of(proc, "/proc/self/status")["FDSize"] == "128"  # grown to hold fd 100
    assert call(proc, "dup3", 0, 128, 0) == 128
    assert status_of(proc, "/proc/self/status")["FDSize"] == "256"  # fd 128 needs a 129th slot
    assert call(proc, "dup3", 0, 300, 0) == 300
    assert status_of(proc, "/proc/self/status")["FDSize"] == "512"  # 128 * roundup_pow_of_two(300 / 128 + 1)
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    child.exit(0, 0)
    assert status_of(proc, f"/proc/{pid}/status")["FDSize"] == "0"  # a zombie has no file table


def test_fdsize_with_every_descriptor_closed(proc: Process) -> None:
    for fd in (0, 1, 2):
        assert call(proc, "close", fd) == 0
    assert status_of(proc, "/proc/self/status")["FDSize"] == "64"


def test_status_names_procs_lines(proc: Process) -> None:
    s = status_of(proc, "/proc/self/status")
    for key in ("VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem",
                "VmData", "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap"):
        kb(s[key])  # "%8lu kB"
    assert kb(s["VmLck"]) == kb(s["VmPin"]) == 0  # nothing mlock()ed
    assert kb(s["VmSwap"]) == 0  # no swap
    assert kb(s["VmHWM"]) >= kb(s["VmRSS"])
    buf = scratch(proc, 0x1000)
    assert call(proc, "sched_getaffinity", 0, 8, buf) == 8
    mask = int.from_bytes(proc.read(buf, 8), "little")
    assert int(s["Cpus_allowed"], 16) == mask
    assert s["Cpus_allowed_list"] == ",".join(str(c) for c in range(64) if mask >> c & 1)
    assert s["voluntary_ctxt_switches"].isdigit() and s["nonvoluntary_ctxt_switches"].isdigit()


def test_vmstk_is_the_stack_mapping(proc: Process) -> None:
    (stack,) = [x for x in sys_read(proc, "/proc/self/maps").decode().splitlines() if x.endswith("[stack]")]
    lo, hi = (int(a, 16) for a in stack.split()[0].split("-"))
    assert kb(status_of(proc, "/proc/self/status")["VmStk"]) * 1024 == hi - lo


def test_a_zombie_has_no_memory_no_environment_and_no_blocked_signals(proc: Process) -> None:
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    child.exit(0, 0)
    assert sys_read(proc, f"/proc/{pid}/statm") == b"0 0 0 0 0 0 0\n"
    assert sys_read(proc, f"/proc/{pid}/environ") == b""
    assert status_of(proc, f"/proc/{pid}/status")["SigBlk"] == f"{0:016x}"  # it blocked none, as its parent
    assert int(stat_of(proc, f"/proc/{pid}/stat")[31]) == 0


def test_stat_starttime_is_in_clock_ticks_since_boot(proc: Process) -> None:
    f = stat_of(proc, "/proc/self/stat")
    up = float(sys_read(proc, "/proc/uptime").split()[0])
    assert 0 <= int(f[21]) <= up * 100 + 1  # USER_HZ


def test_a_non_utf8_name_is_shown_as_its_bytes(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, b"n\xffx\0")
    assert call(proc, "prctl", 15, buf) == 0  # PR_SET_NAME
    assert sys_read(proc, "/proc/self/comm") == b"n\xffx\n"
    assert sys_read(proc, "/proc/self/stat").startswith(f"{proc.pid} (".encode() + b"n\xffx) ")


def test_modes_of_the_per_process_files(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    for name, mode in (("comm", 0o644), ("environ", 0o400), ("stat", 0o444), ("status", 0o444), ("cmdline", 0o444)):
        assert call(proc, "newfstatat", AT_FDCWD, cstr(proc, buf, f"/proc/self/{name}"), buf + 0x100, 0) == 0
        st_mode = struct.unpack_from("<I", proc.read(buf + 0x100, 128), 16)[0]
        assert st.S_ISREG(st_mode) and st.S_IMODE(st_mode) == mode, name


def test_root_cwd_and_thread_self_of_another_thread(proc: Process) -> None:
    buf = scratch(proc)

    def readlink(path: str) -> bytes:
        n = call(proc, "readlinkat", AT_FDCWD, cstr(proc, buf, path), buf + 0x100, 0x100)
        assert n is not None and n > 0
        return proc.read(buf + 0x100, n)

    assert readlink("/proc/self/root") == b"/"
    assert call(proc, "chdir", cstr(proc, buf, "/proc")) == 0
    assert readlink("/proc/self/cwd") == b"/proc"
    tid = call(proc, "clone", THREAD, buf + 0x3000, 0, 0, 0)
    main, t = proc.threads
    proc.sched.runq.remove(t)
    proc.sched.switch(main, t)  # the new thread runs and looks
    assert call(proc, "gettid") == tid
    assert readlink("/proc/thread-self") == f"{proc.pid}/task/{tid}".encode()


def test_maps_offset_of_anonymous_memory_is_zero(proc: Process) -> None:
    addr = mmap(proc, 0x2000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    lines = sys_read(proc, "/proc/self/maps").decode().splitlines()
    for line in lines:
        if line.startswith(f"{addr:08x}-") or line.endswith("[stack]"):
            assert line.split()[2:5] == ["00000000", "00:00", "0"], line


# --- the system's files --------------------------------------------------------------------
def test_version_and_pipe_max_size(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "uname", buf) == 0
    sysname, _, release, version = (proc.read(buf + 65 * i, 65).split(b"\0")[0] for i in range(4))
    text = sys_read(proc, "/proc/version")
    assert text.startswith(sysname + b" version " + release + b" (") and text.endswith(b" " + version + b"\n")
    assert sys_read(proc, "/proc/sys/fs/pipe-max-size") == b"1048576\n"  # 1 MiB, Linux's default


def test_loadavg_and_sysinfo_count_the_threads(proc: Process) -> None:
    buf = scratch(proc)
    tid = call(proc, "clone", THREAD, buf + 0x3000, 0, 0, 0)
    fields = sys_read(proc, "/proc/loadavg").decode().split()
    assert len(fields) == 5 and fields[:3] == ["0.00", "0.00", "0.00"]
    running, total = (int(x) for x in fields[3].split("/"))
    assert total == 2 and 1 <= running <= total and int(fields[4]) == tid  # the last PID used
    assert call(proc, "sysinfo", buf) == 0
    info = proc.read(buf, 112)
    totalram, freeram = struct.unpack_from("<QQ", info, 32)
    procs = struct.unpack_from("<H", info, 80)[0]
    mem_unit = struct.unpack_from("<I", info, 104)[0]
    assert procs == total  # sysinfo(2)'s procs: the threads
    assert mem_unit == 1  # sizes in bytes
    meminfo = {line.split(":")[0]: kb(line.split(":")[1]) for line in sys_read(proc, "/proc/meminfo").decode().splitlines()}
    assert meminfo["MemTotal"] == totalram * mem_unit // 1024
    assert abs(meminfo["MemFree"] - freeram * mem_unit // 1024) <= 64  # a few pages may move between the looks
    assert meminfo["MemFree"] > 64 and meminfo["MemAvailable"] >= meminfo["MemFree"]


def test_btime_is_the_realtime_clock_at_boot(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "clock_gettime", 0, buf) == 0  # CLOCK_REALTIME
    sec, nsec = struct.unpack("<qq", proc.read(buf, 16))
    stat = {line.split()[0]: line.split()[1:] for line in sys_read(proc, "/proc/stat").decode().splitlines()}
    up = float(sys_read(proc, "/proc/uptime").split()[0])
    now = sec + nsec / 1e9
    lo, hi = math.floor(now - up - 0.02), math.floor(now - up + 0.02)  # uptime shows hundredths
    assert max(0, lo) <= int(stat["btime"][0]) <= max(0, hi)


def test_stat_scheduling_fields_of_a_normal_task(proc: Process) -> None:
    f = stat_of(proc, "/proc/self/stat")
    nice, policy, rt_priority = int(f[18]), int(f[40]), int(f[39])
    assert nice == 0  # nobody called nice(2) or setpriority(2)
    assert int(f[17]) == 20 + nice  # priority: the nice value + 20 for a non-real-time policy
    assert policy == 0 and rt_priority == 0  # SCHED_OTHER, whose rt_priority is 0
    assert f[6] == "0" and f[7] == "-1"  # no controlling terminal: tty_nr 0, tpgid -1
    assert f[4] == f[5] == str(proc.pid)  # the first process leads its group and session


def test_status_groups_line_lists_the_supplementary_groups(proc: Process) -> None:
    assert call(proc, "getgroups", 0, 0) == 0
    assert status_of(proc, "/proc/self/status")["Groups"] == ""  # none


def test_starttime_of_a_later_child(proc: Process) -> None:
    proc.kernel.cpu.t += 2_500_000_000  # the fake counter (1 GHz): 2.5 s on
    up = float(sys_read(proc, "/proc/uptime").split()[0])
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    start = stat_of(proc, f"/proc/{pid}/stat")[21]
    assert start.isdigit() and abs(int(start) - up * 100) <= 1  # clock ticks (USER_HZ) since boot
    assert up >= 2.5


def test_maps_names_the_heap(proc: Process) -> None:
    start = call(proc, "brk", 0)
    assert start is not None and call(proc, "brk", start + 0x2000) == start + 0x2000
    lines = [x for x in sys_read(proc, "/proc/self/maps").decode().splitlines() if x.startswith(f"{start:08x}-")]
    assert len(lines) == 1 and lines[0].split()[0] == f"{start:08x}-{start + 0x2000:08x}"
    assert lines[0].split()[1] == "rw-p" and lines[0].endswith(" [heap]")
