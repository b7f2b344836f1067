"""/proc as Linux's procfs shows it (fs/proc, proc(5)), made at each look from the processes
the scheduler knows:

- /proc/PID for every process, zombies included until they are reaped (State Z, no
  memory, no cmdline); /proc/self links to the caller's PID, /proc/thread-self to
  PID/task/TID.
- in each: exe, cwd and root (links), fd/ (links to each open file's path), cmdline,
  environ, comm, maps, stat (the 52 fields of fs/proc/array.c's do_task_stat), statm,
  status (proc_pid_status), mounts, and task/TID/ with each thread's comm, stat and status.
  A thread's comm is writable (pthread_setname_np writes it for another thread).
- cpuinfo, meminfo, stat, uptime, loadavg, version, mounts (-> self/mounts), filesystems,
  and sys/kernel (hostname, ostype, osrelease, pid_max) and sys/fs/pipe-max-size.

What is not kept here reads as Linux shows a task that never ran: CPU times, page-fault
counts and context switches are 0 (the unikernel does not account them per task), and the
capabilities are a root task's full set. Clock ticks are USER_HZ (100) since boot (the
first process's start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from .process import TASK_COMM_LEN, Process
from .sched import BLOCKED, Thread
from .uapi import (
    CAP_LAST_CAP,
    NSEC,
    RLIM_INFINITY,
    SIGCHLD,
    UTS_NODENAME,
    UTS_RELEASE,
    UTS_SYSNAME,
    UTS_VERSION,
)
from .vfs import DirInode, Inode, LinkInode, RegFile, RegInode

if TYPE_CHECKING:
    from .interfaces import Kernel
    from .vfs import OpenFile

PROC_DEV = 0x15  # procfs's st_dev (0:21)
USER_HZ = 100
PAGE_KB = GRANULE_SIZE // 1024
CAP_FULL = (1 << CAP_LAST_CAP + 1) - 1  # a root task's capability sets
PIPE_MAX_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size's default


def _text(gen: Callable[[], str]) -> RegInode:
    return RegInode(mode=0o444, gen=lambda: gen().encode("utf-8", "surrogateescape"))


def _on_proc(entries: dict[str, Inode]) -> dict[str, Inode]:
    """Mark a directory's entries as procfs's (their st_dev)."""
    for node in entries.values():
        node.st_dev = PROC_DEV
    return entries


def _nul_list(items: list[str]) -> bytes:
    return b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in items)


def caller(p: Process) -> Process:
    """The process on whose behalf /proc is looked at: the running thread's."""
    current = p.sched.current
    if current is not None and isinstance(current.proc, Process):
        return current.proc
    return p


def proc_root(p: Process) -> DirInode:
    """/proc for the processes of `p`'s scheduler."""
    kernel = p.kernel
    boot_ns = p.state.start_ns
    static: dict[str, Inode] = {
        "cpuinfo": RegInode(mode=0o444, gen=cpuinfo),
        "meminfo": RegInode(mode=0o444, gen=lambda: meminfo(kernel)),
        "stat": _text(lambda: system_stat(p, boot_ns)),
        "uptime": _text(lambda: uptime(p, boot_ns)),
        "loadavg": _text(lambda: loadavg(p)),
        "version": _text(lambda: f"{UTS_SYSNAME} version {UTS_RELEASE} ({UTS_NODENAME}) {UTS_VERSION}\n"),
        "filesystems": _text(lambda: "nodev\tsysfs\nnodev\trootfs\nnodev\ttmpfs\nnodev\tproc\n"
                                      "nodev\tdevtmpfs\nnodev\t9p\n"),
        "mounts": LinkInode("self/mounts"),
    }
    sysdir = DirInode(0o555)
    kdir = DirInode(0o555)
    sysdir.add("kernel", kdir)
    for name, value in (("hostname", UTS_NODENAME), ("ostype", UTS_SYSNAME), ("osrelease", UTS_RELEASE),
                        ("pid_max", "32768")):
        kdir.add(name, RegInode((value + "\n").encode(), 0o444))
    fsdir = DirInode(0o555)
    sysdir.add("fs", fsdir)
    fsdir.add("pipe-max-size", _text(lambda: f"{PIPE_MAX_SIZE}\n"))
    static["sys"] = sysdir
    root = DirInode(0o555)

    def children() -> dict[str, Inode]:
        me = caller(p)
        entries = dict(static)
        entries["self"] = LinkInode(str(me.pid))
        t = p.sched.current
        entries["thread-self"] = LinkInode(f"{me.pid}/task/{t.tid if t is not None else me.pid}")
        for q in p.sched.processes:
            if isinstance(q, Process):
                entries[str(q.pid)] = pid_dir(q, root, boot_ns)
        return _on_proc(entries)

    root.dynamic = children
    root.st_dev = sysdir.st_dev = kdir.st_dev = fsdir.st_dev = PROC_DEV
    _on_proc(dict(kdir.children))
    _on_proc(dict(fsdir.children))
    for node in static.values():
        if isinstance(node, DirInode):
            node.parent = root
    return root


def pid_dir(q: Process, parent: DirInode, boot_ns: int) -> DirInode:
    """/proc/PID of process `q`."""
    d = DirInode(0o555, parent=parent)
    live = q.exit_status is None
    leader = q.threads[0] if q.threads else None

    def entries() -> dict[str, Inode]:
        out: dict[str, Inode] = {
            "stat": _text(lambda: task_stat(q, None, boot_ns)),
            "statm": _text(lambda: statm(q)),
            "status": _text(lambda: status(q, None)),
            "comm": CommInode(q, leader),
            "cmdline": RegInode(mode=0o444, gen=lambda: _nul_list(q.argv) if q.exit_status is None else b""),
            "environ": RegInode(mode=0o400, gen=lambda: _nul_list(q.state.envp) if q.exit_status is None else b""),
            "mounts": _text(lambda: mounts(q)),
            "task": task_dir(q, d, boot_ns),
        }
        if live:
            out["exe"] = LinkInode(q.exe_path)
            out["cwd"] = LinkInode(q.state.cwd)
            out["root"] = LinkInode("/")
            out["maps"] = RegInode(mode=0o444, gen=lambda: maps(q))
            out["fd"] = DirInode(0o500, parent=d, dynamic=lambda: _on_proc({
                str(fd): LinkInode(e.file.path) for fd, e in sorted(q.state.fds.items())}))
        return _on_proc(out)

    d.dynamic = entries
    return d


def task_dir(q: Process, parent: DirInode, boot_ns: int) -> DirInode:
    d = DirInode(0o555, parent=parent)

    def entries() -> dict[str, Inode]:
        out: dict[str, Inode] = {}
        for t in list(q.threads):
            out[str(t.tid)] = thread_dir(q, t, d, boot_ns)
        return _on_proc(out)

    d.dynamic = entries
    return d


def thread_dir(q: Process, t: Thread, parent: DirInode, boot_ns: int) -> DirInode:
    def entries() -> dict[str, Inode]:
        return _on_proc({"stat": _text(lambda: task_stat(q, t, boot_ns)), "status": _text(lambda: status(q, t)),
                         "comm": CommInode(q, t)})

    return DirInode(0o555, parent=parent, dynamic=entries)


class CommInode(RegInode):
    """/proc/PID[/task/TID]/comm: the thread's name and a newline; a write (at most 15
    bytes) renames the thread (proc_pid_cmdline's sibling comm_write)."""

    def __init__(self, q: Process, t: Thread | None) -> None:
        super().__init__(mode=0o644, gen=lambda: self._name() + b"\n")
        self.q, self.t = q, t

    def _name(self) -> bytes:
        comm = self.t.comm if self.t is not None else self.q.comm
        return comm.encode("utf-8", "surrogateescape")

    def open(self, flags: int, path: str) -> OpenFile:
        if flags & 3:  # O_WRONLY or O_RDWR: writes rename
            return RegFile(self, flags, path)
        return super().open(flags, path)

    def read_at(self, offset: int, size: int) -> bytes:
        return (self._name() + b"\n")[offset : offset + size]

    def size(self) -> int:
        return len(self._name()) + 1

    def write_at(self, offset: int, data: bytes) -> int:
        if self.t is not None:
            name = data[: TASK_COMM_LEN - 1].split(b"\0", 1)[0]
            self.t.comm = name.decode("utf-8", "surrogateescape")
        return len(data)

    def truncate(self, length: int) -> None:
        return None


# --- a task's numbers -----------------------------------------------------------------------
def _state(q: Process, t: Thread | None) -> tuple[str, str]:
    """(the stat letter, status's words): thread `t`'s, or for the process its leader's, as
    fs/proc/array.c's get_task_state(task) of /proc/PID's task."""
    if q.exit_status is not None:
        return "Z", "Z (zombie)"
    task = t if t is not None else (q.threads[0] if q.threads else None)
    if task is not None and task.state == BLOCKED:
        return "S", "S (sleeping)"
    return "R", "R (running)"


def _ppid(q: Process) -> int:
    parent = q.parent
    return parent.pid if parent is not None and parent.exit_status is None else 0


def _sigsets(q: Process, t: Thread | None) -> tuple[int, int, int, int, int]:
    """(thread pending, shared pending, blocked, ignored, caught) as 64-bit masks."""
    t = t if t is not None else (q.threads[0] if q.threads else None)
    ignored = caught = 0
    for sig, act in q.state.sigactions.items():
        handler = int.from_bytes(act[:8], "little")
        if handler == 1:
            ignored |= 1 << (sig - 1)
        elif handler > 1:
            caught |= 1 << (sig - 1)
    pending = t.pending.bits if t is not None else 0
    blocked = t.sigmask if t is not None else 0
    return pending, q.shared_pending.bits, blocked, ignored, caught


def _vm(q: Process) -> dict[str, int]:
    """Sizes in bytes: the whole address space, its data, stack and program text; RSS pages."""
    if q.exit_status is not None:
        return {"size": 0, "data": 0, "stack": 0, "exe": 0, "rss": 0}
    vmas = [v for v in q.mm.vmas if v.end > v.start]
    size = sum(v.end - v.start for v in vmas)
    stack = sum(v.end - v.start for v in vmas if v.name == "stack")
    exe = sum(v.end - v.start for v in vmas if v.name == q.exe_path and v.prot & 4)  # the program's own text
    data = sum(v.end - v.start for v in vmas if v.prot & 2 and v.shared is None and v.name != "stack")
    return {"size": size, "data": data, "stack": stack, "exe": exe, "rss": len(q.mm.owned)}


def _fdsize(q: Process) -> int:
    """The file table's size (status's FDSize): fs/file.c's 64 slots, then, for a higher fd,
    alloc_fdtable's 128 * roundup_pow_of_two(fd / 128 + 1); none for a zombie."""
    if q.exit_status is not None:
        return 0
    top = max(q.state.fds, default=0)
    return 64 if top < 64 else 128 << (top // 128).bit_length()


def task_stat(q: Process, t: Thread | None, boot_ns: int) -> str:
    """/proc/PID/stat (or task/TID/stat): proc(5)'s 52 fields."""
    letter, _ = _state(q, t)
    pending, shared, blocked, ignored, caught = _sigsets(q, t)
    vm = _vm(q)
    name = t.comm if t is not None else q.comm
    start = max(0, (q.started_ns - boot_ns) * USER_HZ // NSEC)
    threads = len(q.threads) if q.exit_status is None else 1
    brk = q.mm.brk_start if q.exit_status is None else 0
    exit_code = q.wait_status if q.exit_status is not None else 0
    tid = t.tid if t is not None else q.pid
    fields = [
        tid, f"({name})", letter, _ppid(q), q.pid, q.pid, 0, -1, 0x400000,  # pid comm state ppid pgrp session tty tpgid flags
        0, 0, 0, 0,  # minflt cminflt majflt cmajflt
        0, 0, 0, 0,  # utime stime cutime cstime
        20, 0, threads, 0, start,  # priority nice num_threads itrealvalue starttime
        vm["size"], vm["rss"], RLIM_INFINITY,  # vsize rss rsslim
        0, 0, 0, 0, 0,  # startcode endcode startstack kstkesp kstkeip (hidden, as for an unprivileged reader)
        (pending | shared) & 0xFFFFFFFF, blocked & 0xFFFFFFFF, ignored & 0xFFFFFFFF, caught & 0xFFFFFFFF,
        0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0,  # wchan nswap cnswap exit_signal processor rt_priority policy blkio guest cguest
        0, 0, brk, 0, 0, 0, 0, exit_code,  # start_data end_data start_brk arg_start arg_end env_start env_end exit_code
    ]
    return " ".join(str(f) for f in fields) + "\n"


def statm(q: Process) -> str:
    vm = _vm(q)
    pages = GRANULE_SIZE
    return f"{vm['size'] // pages} {vm['rss']} 0 {vm['exe'] // pages} 0 {(vm['data'] + vm['stack']) // pages} 0\n"


def status(q: Process, t: Thread | None) -> str:
    """/proc/PID/status (proc_pid_status), the lines programs read."""
    _, state = _state(q, t)
    pending, shared, blocked, ignored, caught = _sigsets(q, t)
    vm = _vm(q)
    tid = t.tid if t is not None else q.pid
    lines = [
        f"Name:\t{t.comm if t is not None else q.comm}",
        f"Umask:\t{q.state.umask:04o}",
        f"State:\t{state}",
        f"Tgid:\t{q.pid}", "Ngid:\t0", f"Pid:\t{tid}", f"PPid:\t{_ppid(q)}", "TracerPid:\t0",
        "Uid:\t0\t0\t0\t0", "Gid:\t0\t0\t0\t0", f"FDSize:\t{_fdsize(q)}", "Groups:\t",
        f"NStgid:\t{q.pid}", f"NSpid:\t{tid}", f"NSpgid:\t{q.pid}", f"NSsid:\t{q.pid}",
    ]
    if q.exit_status is None:
        kb = {k: v // 1024 for k, v in vm.items() if k != "rss"}
        rss = vm["rss"] * PAGE_KB
        lines += [f"VmPeak:\t{kb['size']:8d} kB", f"VmSize:\t{kb['size']:8d} kB", "VmLck:\t       0 kB",
                  "VmPin:\t       0 kB", f"VmHWM:\t{rss:8d} kB", f"VmRSS:\t{rss:8d} kB",
                  f"RssAnon:\t{rss:8d} kB", "RssFile:\t       0 kB", "RssShmem:\t       0 kB",
                  f"VmData:\t{kb['data']:8d} kB", f"VmStk:\t{kb['stack']:8d} kB", f"VmExe:\t{kb['exe']:8d} kB",
                  "VmLib:\t       0 kB", "VmPTE:\t       0 kB", "VmSwap:\t       0 kB"]
    lines += [
        f"Threads:\t{len(q.threads) if q.exit_status is None else 1}",
        f"SigQ:\t0/{RLIM_INFINITY & 0x7FFF}",
        f"SigPnd:\t{pending:016x}", f"ShdPnd:\t{shared:016x}", f"SigBlk:\t{blocked:016x}",
        f"SigIgn:\t{ignored:016x}", f"SigCgt:\t{caught:016x}",
        "CapInh:\t0000000000000000", f"CapPrm:\t{CAP_FULL:016x}", f"CapEff:\t{CAP_FULL:016x}",
        f"CapBnd:\t{CAP_FULL:016x}", "CapAmb:\t0000000000000000", f"NoNewPrivs:\t{q.state.no_new_privs}", "Seccomp:\t0",
        "Cpus_allowed:\t1", "Cpus_allowed_list:\t0",
        "voluntary_ctxt_switches:\t0", "nonvoluntary_ctxt_switches:\t0",
    ]
    return "\n".join(lines) + "\n"


def mounts(q: Process) -> str:
    """/proc/PID/mounts: what the VFS has mounted (the same for every process here)."""
    return "".join(f"{src} {target} {fstype} {opts} 0 0\n" for src, target, fstype, opts in q.vfs.mounts)


# --- the system's numbers -------------------------------------------------------------------
def system_stat(p: Process, boot_ns: int) -> str:
    procs = [q for q in p.sched.processes if isinstance(q, Process) and q.exit_status is None]
    running = sum(1 for q in procs for t in q.threads if t.state != BLOCKED)
    return ("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nintr 0\nctxt 0\n"
            f"btime {max(0, (p.kernel.realtime_offset_ns + boot_ns) // NSEC)}\n"
            f"processes {len(p.sched.processes)}\nprocs_running {max(1, running)}\nprocs_blocked 0\n"
            "softirq 0 0 0 0 0 0 0 0 0 0 0\n")


def uptime(p: Process, boot_ns: int) -> str:
    up = max(0, p.sched.now_ns() - boot_ns)
    return f"{up // NSEC}.{up % NSEC // 10_000_000:02d} 0.00\n"


def loadavg(p: Process) -> str:
    procs = [q for q in p.sched.processes if isinstance(q, Process) and q.exit_status is None]
    threads = sum(len(q.threads) for q in procs)
    running = sum(1 for q in procs for t in q.threads if t.state != BLOCKED)
    last = max((t.tid for q in procs for t in q.threads), default=1)
    return f"0.00 0.00 0.00 {max(1, running)}/{threads} {last}\n"


def maps(p: Process) -> bytes:
    lines = []
    for v in sorted(p.mm.vmas, key=lambda v: v.start):
        if v.end <= v.start:
            continue
        perms = ("r" if v.prot & 1 else "-") + ("w" if v.prot & 2 else "-") + ("x" if v.prot & 4 else "-")
        perms += "s" if v.shared is not None else "p"
        name = {"anon": "", "heap": "[heap]", "stack": "[stack]"}.get(v.name, v.name)  # a file's: its path
        off = max(0, v.start - v.data_va) if v.data is not None else 0
        lines.append(f"{v.start:08x}-{v.end:08x} {perms} {off:08x} 00:00 0{' ' * 19}{name}".rstrip())
    return ("\n".join(lines) + "\n").encode()


def cpuinfo() -> bytes:
    return (b"processor\t: 0\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\n"
            b"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
            b"CPU revision\t: 3\n\n")


def meminfo(kernel: Kernel) -> bytes:
    total = kernel.pages.total >> 10
    free = kernel.pages.free_bytes >> 10
    return (f"MemTotal:       {total:8d} kB\nMemFree:        {free:8d} kB\n"
            f"MemAvailable:   {free:8d} kB\n").encode()
