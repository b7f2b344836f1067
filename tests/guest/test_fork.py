"""clone (a process), vfork, execve and wait4 (guest/fork.py) on a real Process, page tables
and Unicorn registers included, over the fake CPU of tests/guest/test_syscall_fuzz.py,
called through the syscall table as EL0 would. What they give is Linux's (clone(2),
execve(2), wait4(2)): the child's copy of memory, descriptors and registers (x0 = 0), the
TID stores, ECHILD/WNOHANG, the status word, EACCES/ENOEXEC/E2BIG/EFAULT before the point of
no return, and EINVAL for the flag combinations copy_process refuses."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from unicorn import arm64_const as a64

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.procfs import mount_system
from unirealm.guest.sched import BLOCKED, RUNNABLE, Blocked, ProcessExit
from unirealm.guest.threads import (
    CLONE_CHILD_CLEARTID,
    CLONE_CHILD_SETTID,
    CLONE_PARENT_SETTID,
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
)
from unirealm.guest.vfs import DirInode, Inode, RegInode

from .process_support import WILD, call, scratch
from .test_syscall_fuzz import make_process, tiny_elf

SIGCHLD = 17
WNOHANG = 1


@pytest.fixture
def proc() -> Process:
    try:
        p = make_process()
        p.vfs.install("/app", RegInode(tiny_elf(), mode=0o755))
        yield p
    finally:
        Store.current = None


def as_child(p: Process, child: Process) -> None:
    """What the scheduler does when the child's thread is picked: its registers loaded."""
    t = child.threads[0]
    p.sched.runq.remove(t)
    p.sched.switch(p.current, t)


# --- clone: a process -------------------------------------------------------------------------
def test_fork_copies_memory_registers_and_files(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf, b"before")
    proc.uc.reg_write(a64.UC_ARM64_REG_X5, 0x5555)
    proc.uc.reg_write(a64.UC_ARM64_REG_Q3, 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210)
    proc.uc.reg_write(a64.UC_ARM64_REG_TPIDR_EL0, 0x7777)
    pc = proc.uc.reg_read(a64.UC_ARM64_REG_PC)
    sp = proc.uc.reg_read(a64.UC_ARM64_REG_SP)
    assert call(proc, "pipe2", buf + 8, 0) == 0
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    assert pid == child.pid != proc.pid and child.parent is proc
    assert [t.state for t in child.threads] == [RUNNABLE] and child.threads[0] in proc.sched.runq
    # memory: a copy, not a share
    assert child.read(buf, 6) == b"before"
    proc.write(buf, b"parent")
    assert child.read(buf, 6) == b"before"
    # descriptors: the same open files, one more reference each
    assert sorted(child.state.fds) == sorted(proc.state.fds) == [0, 1]
    assert child.state.fds is not proc.state.fds
    assert all(child.state.fds.file(fd) is proc.state.fds.file(fd) for fd in child.state.fds)
    assert [proc.state.fds.file(fd).refs for fd in (0, 1)] == [2, 2]
    assert child.state.argv == proc.state.argv and child.state.argv is not proc.state.argv
    as_child(proc, child)
    assert proc.sched.current is child.threads[0]
    assert child.uc.reg_read(a64.UC_ARM64_REG_X0) == 0  # fork returns 0 in the child
    assert child.uc.reg_read(a64.UC_ARM64_REG_X5) == 0x5555
    assert child.uc.reg_read(a64.UC_ARM64_REG_Q3) == 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210
    assert child.uc.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 0x7777  # no CLONE_SETTLS: the parent's
    # entered at EL0 through the trampoline: ERET to the parent's PC, on the parent's stack
    assert child.space.reg("elr_el1") == pc and child.space.reg("sp_el0") == sp
    assert child.uc.reg_read(a64.UC_ARM64_REG_PC) == 0x1000


def test_fork_with_a_stack_tls_and_tid_stores(proc: Process) -> None:
    buf = scratch(proc)
    flags = SIGCHLD | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
    pid = call(proc, "clone", flags, buf + 0x3000, buf + 8, 0xABCD, buf + 16)
    (child,) = proc.children
    assert proc.read(buf + 8, 4) == struct.pack("<I", pid)  # in the caller's memory
    assert proc.read(buf + 16, 4) == bytes(4)  # ... and CHILD_SETTID's only in the child's
    assert child.read(buf + 16, 4) == struct.pack("<I", pid)
    assert child.threads[0].clear_tid == buf + 16
    assert child.threads[0].sigmask == proc.current.sigmask
    as_child(proc, child)
    assert child.uc.reg_read(a64.UC_ARM64_REG_TPIDR_EL0) == 0xABCD
    assert child.space.reg("sp_el0") == buf + 0x3000


def test_fork_copies_the_signal_mask(proc: Process) -> None:
    proc.current.sigmask = 1 << 9
    call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    assert proc.children[0].threads[0].sigmask == 1 << 9


def test_fork_tid_store_to_a_wild_pointer_is_efault(proc: Process) -> None:
    assert call(proc, "clone", SIGCHLD | CLONE_PARENT_SETTID, 0, WILD, 0, 0) == -errno.EFAULT


def test_fork_without_room_for_the_copy_is_enomem(proc: Process) -> None:
    pages = proc.kernel.pages
    need = (len(proc.mm.owned) + 1) * GRANULE_SIZE
    hold = []
    while pages.free_bytes >= need:
        hold.append(pages.alloc(1))
    assert call(proc, "clone", SIGCHLD, 0, 0, 0, 0) == -errno.ENOMEM
    assert proc.children == [] and len(proc.sched.runq) == 0
    pages.release(hold.pop(), 1)
    while pages.free_bytes < need:
        pages.release(hold.pop(), 1)
    assert call(proc, "clone", SIGCHLD, 0, 0, 0, 0) == proc.children[0].pid


@pytest.mark.parametrize("flags", [
    CLONE_THREAD,  # CLONE_THREAD without CLONE_SIGHAND
    CLONE_SIGHAND,  # CLONE_SIGHAND without CLONE_VM
    CLONE_THREAD | CLONE_SIGHAND,  # a thread without a shared address space
    CLONE_VM | CLONE_THREAD,  # a thread without CLONE_SIGHAND
])
def test_flag_combinations_linux_refuses_are_einval(proc: Process, flags: int) -> None:
    assert call(proc, "clone", flags | SIGCHLD, 0, 0, 0, 0) == -errno.EINVAL
    assert proc.children == [] and len(proc.threads) == 1


def test_a_shared_address_space_without_vfork_is_enosys(proc: Process) -> None:
    logged: list[str] = []
    proc.kernel.log = lambda text, error=False: logged.append(text)
    assert call(proc, "clone", CLONE_VM | SIGCHLD, 0, 0, 0, 0) == -errno.ENOSYS
    assert call(proc, "clone", CLONE_VM | CLONE_SIGHAND | SIGCHLD, 0, 0, 0, 0) == -errno.ENOSYS
    assert logged == ["clone with flags 0x111 is not supported (ENOSYS)"]  # said once
    assert proc.children == []


def test_clone3_falls_back(proc: Process) -> None:
    assert call(proc, "clone3", 0, 88) == -errno.ENOSYS


def test_vfork_parks_the_parent_until_the_child_execs_or_exits(proc: Process) -> None:
    parent = proc.current
    assert call(proc, "clone", CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0) is None
    (child,) = proc.children
    assert parent.state == BLOCKED and parent.ready is not None and not parent.ready()
    assert parent.ready_result == child.pid  # vfork's return value once the parent runs
    assert parent.what == f"vfork child {child.pid}"  # what a deadlock report names
    child.execed = True
    assert parent.ready()
    child.execed = False
    child.exit(0)
    assert parent.ready()


def test_vfork_parent_resumes_with_the_pid(proc: Process) -> None:
    parent = proc.current
    call(proc, "clone", CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    child.exit(3)
    proc.sched.poll()
    assert parent.state == RUNNABLE and parent.result == child.pid


# --- wait4 ---------------------------------------------------------------------------------
def test_wait4_without_children_is_echild(proc: Process) -> None:
    assert call(proc, "wait4", -1, 0, 0, 0) == -errno.ECHILD
    assert call(proc, "wait4", 0, 0, WNOHANG, 0) == -errno.ECHILD


def test_wait4_reaps_a_zombie_with_its_status(proc: Process) -> None:
    buf = scratch(proc)
    a = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    b = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    assert a is not None and b is not None
    assert call(proc, "wait4", -1, buf, WNOHANG, 0) == 0  # none has exited
    assert call(proc, "wait4", b + 100, buf, WNOHANG, 0) == -errno.ECHILD  # not a child
    child_b = next(c for c in proc.children if c.pid == b)
    child_b.exit(0x1FF)  # only the low 8 bits are the status
    assert call(proc, "wait4", a, buf, WNOHANG, 0) == 0  # a is alive
    proc.write(buf + 0x100, b"\xff" * 144)
    assert call(proc, "wait4", -1, buf, 0, buf + 0x100) == b
    assert proc.read(buf, 4) == struct.pack("<I", 0xFF << 8)  # WIFEXITED, WEXITSTATUS 255
    assert proc.read(buf + 0x100, 144) == bytes(144)  # the rusage
    assert [c.pid for c in proc.children] == [a]  # reaped once
    assert call(proc, "wait4", b, buf, WNOHANG, 0) == -errno.ECHILD


def wait_status(proc: Process, pid: int) -> int:
    buf = scratch(proc, 0x1000)
    assert call(proc, "wait4", pid, buf, WNOHANG, 0) == pid
    return int.from_bytes(proc.read(buf, 4), "little")


def test_wait4_tells_a_child_killed_by_a_signal_from_one_that_exited(proc: Process) -> None:
    # The host libc's own macros (wait(2)) decode the status words.
    a = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    b = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    c = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    assert a is not None and b is not None and c is not None
    kids = {k.pid: k for k in proc.children}
    kids[a].exit(128 + 10, 10)  # SIGUSR1's default action
    kids[b].exit(128 + 11, 11)  # a fault no handler took
    kids[c].exit(128 + 10)  # exit(138): an exit code that only looks like a signal's
    status = wait_status(proc, a)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 10 and not os.WIFEXITED(status)
    assert not os.WCOREDUMP(status)  # no core file is written
    status = wait_status(proc, b)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11 and not os.WCOREDUMP(status)
    status = wait_status(proc, c)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 138 and not os.WIFSIGNALED(status)


def test_sigchld_says_how_the_child_ended(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    proc.write(buf, (1 << (SIGCHLD - 1)).to_bytes(8, "little"))
    assert call(proc, "rt_sigprocmask", 0, buf, 0, 8) == 0  # SIG_BLOCK: SIGCHLD stays pending
    proc.write(buf + 32, bytes(16))  # a zero timeout
    for code, status, signal in ((2, 9, 9), (1, 3, 0)):  # CLD_KILLED with the signal, CLD_EXITED with the code
        pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
        child = next(k for k in proc.children if k.pid == pid)
        child.exit(128 + signal if signal else status, signal)
        assert call(proc, "rt_sigtimedwait", buf, buf + 64, buf + 32, 8) == SIGCHLD
        signo, _errno, si_code = struct.unpack_from("<iii", proc.read(buf + 64, 12))
        si_pid, _uid, si_status = struct.unpack_from("<iIi", proc.read(buf + 64 + 16, 12))
        assert (signo, si_code, si_pid, si_status) == (SIGCHLD, code, pid, status)
        assert call(proc, "wait4", pid, 0, 0, 0) == pid


def test_rlimit_core_is_zero_so_no_core_is_promised(proc: Process) -> None:
    buf = scratch(proc, 0x1000)
    assert call(proc, "prlimit64", 0, 4, 0, buf) == 0  # RLIMIT_CORE
    assert struct.unpack("<QQ", proc.read(buf, 16)) == (0, (1 << 64) - 1)  # soft 0, hard RLIM_INFINITY


def test_wait4_for_a_pid_given_as_a_32_bit_register(proc: Process) -> None:
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    proc.children[0].exit(7)
    # pid_t is 32 bits: -1 arrives as 0xFFFFFFFF in a 64-bit register with garbage above
    assert call(proc, "wait4", 0xABCD_0000_FFFF_FFFF, 0, 0, 0) == pid


def test_wait4_with_a_null_status_pointer(proc: Process) -> None:
    pid = call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    proc.children[0].exit(1)
    assert call(proc, "wait4", pid, 0, 0, 0) == pid


def test_wait4_to_a_wild_status_pointer_is_efault(proc: Process) -> None:
    call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    proc.children[0].exit(1)
    assert call(proc, "wait4", -1, WILD, 0, 0) == -errno.EFAULT


def test_wait4_with_unknown_options_is_einval(proc: Process) -> None:
    call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    proc.children[0].exit(1)
    for options in (0x10, 4, 0x100, 1 << 31 >> 1 | 0x10):  # 4: WEXITED, which only waitid takes
        assert call(proc, "wait4", -1, 0, options, 0) == -errno.EINVAL
    assert len(proc.children) == 1  # nothing reaped
    pid = proc.children[0].pid
    # options is an int: the register's upper half is not looked at
    assert call(proc, "wait4", -1, 0, 0xFFFF_0000_0000_0000 | 0x4000_0000 | WNOHANG, 0) == pid


def test_wait4_blocks_while_children_run(proc: Process) -> None:
    call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    with pytest.raises(Blocked) as blocked:  # another thread can run: the syscall restarts
        call(proc, "wait4", -1, 0, 0, 0)
    assert not blocked.value.ready()
    child.exit(4)
    assert blocked.value.ready()


# --- execve --------------------------------------------------------------------------------
def put(p: Process, addr: int, text: str) -> int:
    p.write(addr, text.encode() + b"\0")
    return addr


def strings(p: Process, addr: int, values: list[int]) -> int:
    p.write(addr, b"".join(struct.pack("<Q", v) for v in [*values, 0]))
    return addr


def test_execve_refusals_leave_the_process_as_it_was(proc: Process) -> None:
    buf = scratch(proc, 0x8000)
    proc.vfs.makedirs("bin").add("text", RegInode(b"#!/bin/sh\n", mode=0o755))
    proc.vfs.makedirs("bin").add("noexec", RegInode(tiny_elf(), mode=0o644))
    proc.vfs.makedirs("bin").add("dir", DirInode())
    argv = strings(proc, buf + 0x1000, [put(proc, buf + 0x2000, "x")])
    proc.vfs.makedirs("dev").add("tty", Inode(0o020666))  # a character device: not a regular file
    for path, err in [("/dev/tty", errno.EACCES), ("/bin/dir", errno.EACCES), ("/bin/noexec", errno.EACCES), ("/bin/text", errno.ENOEXEC),
                      ("/bin/missing", errno.ENOENT), ("/dev/null", errno.EACCES)]:
        proc.vfs.makedirs("dev").add("null", RegInode(b"", mode=0o666)) if path == "/dev/null" else None
        assert call(proc, "execve", put(proc, buf, path), argv, 0) == -err, path
    assert call(proc, "execve", 0, argv, 0) == -errno.EFAULT
    assert call(proc, "execve", WILD, argv, 0) == -errno.EFAULT
    assert call(proc, "execve", put(proc, buf, "/app"), WILD, 0) == -errno.EFAULT
    assert call(proc, "execve", put(proc, buf, "/app"), strings(proc, buf + 0x1000, [WILD]), 0) == -errno.EFAULT
    assert unchanged(proc, buf)


def unchanged(p: Process, buf: int) -> bool:
    """The old program is still there: its text, the scratch mapping, its name."""
    return (p.mm.find_vma(0x400000) is not None and p.mm.find_vma(buf) is not None and not p.execed
            and p.state.exe_path == "/app" and p.state.argv == ["/app"])


def test_execve_with_too_many_arguments_is_e2big(proc: Process) -> None:
    buf = scratch(proc, 0x10000)
    arg = put(proc, buf, "a")
    argv = strings(proc, buf + 0x100, [arg] * 4097)
    assert call(proc, "execve", put(proc, buf + 8, "/app"), argv, 0) == -errno.E2BIG
    assert unchanged(proc, buf)


def test_execve_replaces_the_program(proc: Process) -> None:
    buf = scratch(proc, 0x8000)
    proc.vfs.makedirs("bin").add("prog", RegInode(tiny_elf(), mode=0o755))
    argv = strings(proc, buf + 0x1000, [put(proc, buf + 0x2000, "prog"), put(proc, buf + 0x2100, "-x")])
    envp = strings(proc, buf + 0x1800, [put(proc, buf + 0x2200, "A=1")])
    assert call(proc, "pipe2", buf + 0x3000, 0) == 0  # kept
    assert call(proc, "pipe2", buf + 0x3000, 0o2000000) == 0  # O_CLOEXEC
    r, w = struct.unpack("<ii", proc.read(buf + 0x3000, 8))
    assert (r, w) == (2, 3)
    proc.state.sigactions[10] = b"handler"
    proc.current.clear_tid = buf
    proc.uc.reg_write(a64.UC_ARM64_REG_X7, 77)
    assert call(proc, "execve", put(proc, buf, "/bin/prog"), argv, envp) is None
    assert proc.execed
    assert proc.state.argv == ["prog", "-x"] and proc.state.envp == ["A=1"]
    assert proc.state.exe_path == "/bin/prog"
    assert r not in proc.state.fds and w not in proc.state.fds and 1 in proc.state.fds
    assert proc.state.sigactions == {}
    assert proc.current.clear_tid == 0 and proc.current.robust_list == (0, 0)
    assert proc.uc.reg_read(a64.UC_ARM64_REG_PC) == proc.state.entry == 0x400078
    assert proc.uc.reg_read(a64.UC_ARM64_REG_X7) == 0
    sp = proc.uc.reg_read(a64.UC_ARM64_REG_SP)
    assert int.from_bytes(proc.read(sp, 8), "little") == 2  # argc on the new stack
    assert proc.mm.find_vma(buf) is None  # the old mappings are gone


def test_execve_ends_the_other_threads(proc: Process) -> None:
    buf = scratch(proc)
    tid = call(proc, "clone", CLONE_VM | CLONE_THREAD | CLONE_SIGHAND, buf + 0x1000, 0, 0, 0)
    assert tid is not None and len(proc.threads) == 2
    assert call(proc, "execve", put(proc, buf, "/app"), 0, 0) is None
    assert proc.threads == [proc.current] and proc.sched.live == 1
    assert proc.state.argv == []


def interp_elf(interp: bytes) -> bytes:
    """tiny_elf's program with a PT_INTERP naming `interp` (a dynamically linked program)."""
    code = struct.pack("<II", 0xD4000001, 0x14000000)
    hdrs = 64 + 2 * 56
    path_off, code_off = hdrs, hdrs + len(interp) + 1
    end = code_off + len(code)
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, 0x400000 + code_off, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    pinterp = struct.pack("<IIQQQQQQ", 3, 4, path_off, 0x400000 + path_off, 0, len(interp) + 1, len(interp) + 1, 1)
    pload = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, end, end, 0x1000)
    return ehdr + pinterp + pload + interp + b"\0" + code


def test_execve_checks_the_interpreter_before_the_point_of_no_return(proc: Process) -> None:
    """Linux's load_elf_binary opens and checks the interpreter before flushing the old
    program: a missing one is ENOENT, one that is not an AArch64 ELF ELIBBAD, to the caller."""
    buf = scratch(proc)
    bin_ = proc.vfs.makedirs("bin")
    bin_.add("dyn", RegInode(interp_elf(b"/lib/ld-missing.so"), mode=0o755))
    bin_.add("dyn2", RegInode(interp_elf(b"/lib/ld-text.so"), mode=0o755))
    bin_.add("dyn3", RegInode(interp_elf(b"/lib/ld-ok.so"), mode=0o755))
    lib = proc.vfs.makedirs("lib")
    lib.add("ld-text.so", RegInode(b"not an ELF at all", mode=0o755))
    lib.add("ld-ok.so", RegInode(tiny_elf(), mode=0o755))
    assert call(proc, "execve", put(proc, buf, "/bin/dyn"), 0, 0) == -errno.ENOENT
    assert call(proc, "execve", put(proc, buf, "/bin/dyn2"), 0, 0) == -errno.ELIBBAD
    assert unchanged(proc, buf)
    assert call(proc, "execve", put(proc, buf, "/bin/dyn3"), 0, 0) is None
    assert proc.state.auxv["entry"] == 0x400000 + 64 + 2 * 56 + len(b"/lib/ld-ok.so") + 1
    assert proc.state.entry == 0x400078  # the interpreter's entry (an ET_EXEC: not relocated)


def test_execve_of_a_program_that_does_not_load_ends_the_process(proc: Process) -> None:
    """A segment past the end of the file is found while mapping, after the old program is
    gone: the process ends (status 127), with the reason in the kernel log."""
    buf = scratch(proc)
    bad = bytearray(tiny_elf())
    struct.pack_into("<Q", bad, 64 + 8, 1 << 20)  # p_offset past the end of the file
    proc.vfs.makedirs("bin").add("bad", RegInode(bytes(bad), mode=0o755))
    logged: list[str] = []
    proc.kernel.log = lambda text, error=False: logged.append(text)
    with pytest.raises(ProcessExit) as end:
        call(proc, "execve", put(proc, buf, "/bin/bad"), 0, 0)
    assert end.value.status == 127
    assert logged == ["/bin/bad: malformed ELF: segment extends past the file"]


def test_execve_of_a_relative_path_from_the_working_directory(proc: Process) -> None:
    buf = scratch(proc)
    proc.vfs.makedirs("bin").add("prog", RegInode(tiny_elf(), mode=0o755))
    assert call(proc, "execve", put(proc, buf, "prog"), 0, 0) == -errno.ENOENT  # from /
    proc.state.cwd = "/bin"
    assert call(proc, "execve", put(proc, buf, "prog"), 0, 0) is None
    assert proc.state.exe_path == "/bin/prog"


def test_execve_arguments_that_are_not_utf8_pass_through(proc: Process) -> None:
    buf = scratch(proc)
    proc.write(buf + 0x100, b"caf\xe9\0")  # Latin-1 bytes, as a file name may hold
    argv = strings(proc, buf + 0x200, [buf + 0x100])
    assert call(proc, "execve", put(proc, buf, "/app"), argv, argv) is None
    assert proc.state.argv == ["caf\udce9"] and proc.state.envp == ["caf\udce9"]
    sp = proc.uc.reg_read(a64.UC_ARM64_REG_SP)
    argc, argv0 = struct.unpack("<QQ", proc.read(sp, 16))
    assert argc == 1 and proc.read_cstring(argv0) == b"caf\xe9"  # the new stack holds the same bytes
    mount_system(proc)
    node, _ = proc.vfs.walk("/proc/self/cmdline")
    assert node.open(0, "/proc/self/cmdline").read(100) == b"caf\xe9\0"
    node, _ = proc.vfs.walk("/proc/self/environ")
    assert node.open(0, "/proc/self/environ").read(100) == b"caf\xe9\0"


def test_a_child_killed_by_a_sent_signal_is_no_crash_in_the_log(proc: Process) -> None:
    logged: list[tuple[str, bool]] = []
    proc.kernel.log = lambda text, error=False, level=None: logged.append((text, error))  # type: ignore[method-assign]
    call(proc, "clone", SIGCHLD, 0, 0, 0, 0)
    (child,) = proc.children
    for sig in (15, 11):  # SIGTERM from a kill; SIGSEGV, a fault's
        with pytest.raises(ProcessExit) as ended:
            child.syscalls.die_of(sig)  # type: ignore[attr-defined]
        assert ended.value.signal == sig
    with pytest.raises(ProcessExit):
        proc.syscalls.die_of(15)  # type: ignore[attr-defined]
    # quiet shows errors only: the first process's death and a fault, not a child's kill
    assert logged == [("/app: killed by signal 15", False), ("/app: killed by signal 11", True),
                      ("/app: killed by signal 15", True)]
