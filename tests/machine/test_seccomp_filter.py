"""The kernel process's seccomp filter as the kernel would run it: the BPF program libseccomp
builds from kernel_child.build_filter, decoded and run by tests/machine/bpf.py against
seccomp_data records. Expectations are seccomp(2)'s actions and the syscall tables of the
kernel (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h)."""

from __future__ import annotations

import errno
import os
import platform

import pytest

from unirealm.machine import kernel_child
from unirealm.machine import seccomp as sc
from unirealm.machine.kernel_channel import WINDOW, WINDOW_SIZE

from . import bpf
from .bpf import Insn

NR = {
    "x86_64": dict(read=0, write=1, close=3, fstat=5, mmap=9, mprotect=10, munmap=11, brk=12, ioctl=16,
                   pread64=17, pwrite64=18, mremap=25, madvise=28, getpid=39, socket=41, sendto=44, recvfrom=45,
                   sendmsg=46, recvmsg=47, clone=56, execve=59, kill=62, ftruncate=77, futex=202, exit_group=231,
                   tgkill=234, openat=257, newfstatat=262, fallocate=285),
    "aarch64": dict(read=63, write=64, close=57, fstat=80, mmap=222, mprotect=226, munmap=215, brk=214, ioctl=29,
                    pread64=67, pwrite64=68, mremap=216, madvise=233, getpid=172, socket=198, sendto=206,
                    recvfrom=207, sendmsg=211, recvmsg=212, clone=220, execve=221, kill=129, ftruncate=46,
                    futex=98, exit_group=94, tgkill=131, openat=56, newfstatat=79, fallocate=47),
}
AUDIT = {"x86_64": bpf.AUDIT_ARCH_X86_64, "aarch64": bpf.AUDIT_ARCH_AARCH64}
MACHINE = platform.machine()
OTHER = "aarch64" if MACHINE == "x86_64" else "x86_64"
CHAN, MEMFD, MEMFD_RO, IRQ = 3, 5, 6, 7
EPERM = bpf.SECCOMP_RET_ERRNO | errno.EPERM
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20  # <sys/mman.h>, both architectures
FD_NONE = 0xFFFF_FFFF_FFFF_FFFF  # fd -1 as a 64-bit register


@pytest.fixture
def program() -> list[Insn]:
    return bpf.decode(kernel_child.build_filter(CHAN, MEMFD, MEMFD_RO, IRQ).export_bpf())


def verdict(program: list[Insn], name: str, *args: int, arch: str = MACHINE) -> int:
    return bpf.run(program, bpf.seccomp_data(NR[arch][name], AUDIT[arch], args))


def killed(ret: int) -> bool:
    return ret & bpf.SECCOMP_RET_ACTION_FULL in (bpf.SECCOMP_RET_KILL_PROCESS, bpf.SECCOMP_RET_KILL_THREAD)


# --- the interpreter itself, on hand-assembled programs -------------------------------------
def test_the_interpreter_runs_a_hand_assembled_allowlist() -> None:
    ld, jeq, ret = bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, bpf.BPF_JMP | bpf.BPF_JEQ | bpf.BPF_K, bpf.BPF_RET | bpf.BPF_K
    prog = [Insn(ld, 0, 0, 4), Insn(jeq, 1, 0, 0xC000_003E), Insn(ret, 0, 0, 0),  # arch, else kill
            Insn(ld, 0, 0, 0), Insn(jeq, 0, 1, 39), Insn(ret, 0, 0, bpf.SECCOMP_RET_ALLOW),
            Insn(ret, 0, 0, EPERM)]
    assert bpf.run(prog, bpf.seccomp_data(39, 0xC000_003E)) == bpf.SECCOMP_RET_ALLOW
    assert bpf.run(prog, bpf.seccomp_data(40, 0xC000_003E)) == EPERM
    assert bpf.run(prog, bpf.seccomp_data(39, 0xC000_00B7)) == 0
    raw = b"".join(bpf.INSN.pack(i.code, i.jt, i.jf, i.k) for i in prog)
    assert bpf.decode(raw) == prog
    with pytest.raises(bpf.BpfError):
        bpf.decode(raw[:-1])
    with pytest.raises(bpf.BpfError):  # an unaligned load
        bpf.run([Insn(ld, 0, 0, 2)], bpf.seccomp_data(0, 0))


def test_the_interpreter_compares_unsigned_and_tests_bits() -> None:
    ld, ret = bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, bpf.BPF_RET | bpf.BPF_K
    jgt, jge, jset = (bpf.BPF_JMP | op | bpf.BPF_K for op in (bpf.BPF_JGT, bpf.BPF_JGE, bpf.BPF_JSET))
    for op, k, arg, taken in ((jgt, 5, 6, True), (jgt, 5, 5, False), (jge, 5, 5, True), (jge, 5, 4, False),
                              (jgt, 5, 0xFFFF_FFFF, True), (jset, 0x20, 0x22, True), (jset, 0x20, 0x02, False)):
        prog = [Insn(ld, 0, 0, 16), Insn(op, 0, 1, k), Insn(ret, 0, 0, 1), Insn(ret, 0, 0, 2)]
        assert bpf.run(prog, bpf.seccomp_data(0, 0, (arg,))) == (1 if taken else 2), (op, k, arg)
    st = [Insn(bpf.BPF_LD | bpf.BPF_IMM, 0, 0, 7), Insn(bpf.BPF_ST, 0, 0, 3),
          Insn(bpf.BPF_LDX | bpf.BPF_MEM, 0, 0, 3), Insn(bpf.BPF_MISC | bpf.BPF_TXA, 0, 0, 0),
          Insn(bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K, 0, 0, 6), Insn(bpf.BPF_RET | bpf.BPF_A, 0, 0, 0)]
    assert bpf.run(st, bpf.seccomp_data(0, 0)) == 6


# --- the kernel process's filter ----------------------------------------------------------------
def test_the_filter_checks_the_architecture_before_the_number(program: list[Insn]) -> None:
    assert program[0] == Insn(bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, 0, 0, 4)  # seccomp_data.arch
    assert verdict(program, "getpid") == bpf.SECCOMP_RET_ALLOW
    # the same calls made through another architecture's entry are killed, allowed numbers or not
    for name in ("getpid", "read", "close", "futex", "openat"):
        assert killed(verdict(program, name, CHAN, arch=OTHER)), name
    if MACHINE == "x86_64":  # the x32 ABI (__X32_SYSCALL_BIT) is not the filter's ABI
        ret = bpf.run(program, bpf.seccomp_data(0x4000_0000 | NR[MACHINE]["getpid"], AUDIT[MACHINE]))
        assert ret != bpf.SECCOMP_RET_ALLOW


@pytest.mark.parametrize("name", ["munmap", "mprotect", "brk", "futex", "getpid", "exit_group", "close", "fstat"])
def test_the_interpreter_needs_are_allowed_whatever_their_arguments(program: list[Insn], name: str) -> None:
    for args in ((), (CHAN,), (99, 1, 2, 3, 4, 5), (FD_NONE,)):
        assert verdict(program, name, *args) == bpf.SECCOMP_RET_ALLOW, (name, args)


@pytest.mark.parametrize("name", ["openat", "socket", "execve", "clone", "pread64", "pwrite64", "ftruncate",
                                  "fallocate", "newfstatat", "ioctl", "kill"])
def test_everything_else_fails_with_eperm(program: list[Insn], name: str) -> None:
    for args in ((), (CHAN,), (MEMFD,), (os.getpid(), 9)):
        assert verdict(program, name, *args) == EPERM, (name, args)


@pytest.mark.parametrize("name", ["read", "recvfrom", "recvmsg", "write", "sendto", "sendmsg"])
def test_io_only_on_the_channel(program: list[Insn], name: str) -> None:
    assert verdict(program, name, CHAN, 0x1234, 64) == bpf.SECCOMP_RET_ALLOW
    for fd in (0, 1, 2, CHAN + 1, MEMFD, MEMFD_RO, CHAN | 1 << 32):
        assert verdict(program, name, fd, 0x1234, 64) == EPERM, (name, fd)
    expected = bpf.SECCOMP_RET_ALLOW if name == "read" else EPERM  # the watchdog reads the eventfd
    assert verdict(program, name, IRQ, 0x1234, 8) == expected


def test_signals_only_to_itself(program: list[Insn]) -> None:
    me = os.getpid()
    assert verdict(program, "tgkill", me, me, 6) == bpf.SECCOMP_RET_ALLOW
    assert verdict(program, "tgkill", me + 1, me + 1, 6) == EPERM
    assert verdict(program, "tgkill", 1, 1, 9) == EPERM


def test_mmap_anonymous_freely_the_memory_file_through_the_supervisor(program: list[Insn]) -> None:
    rw = 3
    assert verdict(program, "mmap", 0, 4096, rw, MAP_PRIVATE | MAP_ANONYMOUS, FD_NONE, 0) == bpf.SECCOMP_RET_ALLOW
    assert verdict(program, "mmap", 0, 4096, rw, MAP_PRIVATE | MAP_ANONYMOUS, 0xFFFF_FFFF, 0) \
        == bpf.SECCOMP_RET_ALLOW  # fd -1 as a 32-bit int
    assert verdict(program, "mmap", 0, 4096, rw, MAP_SHARED, FD_NONE, 0) == bpf.SECCOMP_RET_ALLOW
    assert verdict(program, "mmap", 0, 4096, rw, MAP_PRIVATE | MAP_ANONYMOUS, 9, 0) == bpf.SECCOMP_RET_ALLOW
    for fd in (MEMFD, MEMFD_RO):
        assert verdict(program, "mmap", WINDOW, 4096, rw, MAP_SHARED | 0x10, fd, 0) == bpf.SECCOMP_RET_USER_NOTIF
    for fd in (0, CHAN, IRQ, 9, FD_NONE - 1):
        assert verdict(program, "mmap", WINDOW, 4096, rw, MAP_SHARED, fd, 0) == EPERM, fd


def test_mremap_only_outside_the_window(program: list[Insn]) -> None:
    allow = bpf.SECCOMP_RET_ALLOW
    for addr, expected in ((0, allow), (WINDOW - 4096, allow), (WINDOW, EPERM), (WINDOW + 4096, EPERM),
                           (WINDOW + WINDOW_SIZE - 4096, EPERM), (WINDOW + WINDOW_SIZE, allow),
                           (0x7FFF_0000_0000, allow)):
        assert verdict(program, "mremap", addr, 4096, 8192, 1) == expected, hex(addr)


def test_madvise_but_not_madv_remove(program: list[Insn]) -> None:
    for advice in (0, 4, 8, 10, 14):  # MADV_NORMAL, MADV_DONTNEED, MADV_FREE, MADV_DONTFORK, MADV_HUGEPAGE
        assert verdict(program, "madvise", 0x1000, 4096, advice) == bpf.SECCOMP_RET_ALLOW, advice
    assert verdict(program, "madvise", WINDOW, 4096, 9) == EPERM  # MADV_REMOVE


# --- the filter builder -------------------------------------------------------------------------
def test_a_filter_has_the_default_action_it_was_built_with() -> None:
    f = sc.Filter(sc.SCMP_ACT_ALLOW)
    f.add(sc.scmp_act_errno(errno.EACCES), "getpid")
    f.add(sc.SCMP_ACT_KILL_PROCESS, "kill", sc.Arg(1, sc.SCMP_CMP_EQ, 9))
    f.add(sc.SCMP_ACT_LOG, "close", sc.Arg(0, sc.SCMP_CMP_GT, 100))
    f.add(sc.SCMP_ACT_NOTIFY, "dup", sc.Arg(0, sc.SCMP_CMP_MASKED_EQ, 0xF0, 0x30))
    prog = bpf.decode(f.export_bpf())
    assert verdict(prog, "getpid") == bpf.SECCOMP_RET_ERRNO | errno.EACCES
    assert verdict(prog, "openat") == bpf.SECCOMP_RET_ALLOW
    assert verdict(prog, "kill", 1, 9) == bpf.SECCOMP_RET_KILL_PROCESS
    assert verdict(prog, "kill", 1, 15) == bpf.SECCOMP_RET_ALLOW
    assert verdict(prog, "close", 101) == bpf.SECCOMP_RET_LOG
    assert verdict(prog, "close", 100) == bpf.SECCOMP_RET_ALLOW
    dup = NR[MACHINE].get("dup", 32 if MACHINE == "x86_64" else 23)
    assert bpf.run(prog, bpf.seccomp_data(dup, AUDIT[MACHINE], (0x3F,))) == bpf.SECCOMP_RET_USER_NOTIF
    assert bpf.run(prog, bpf.seccomp_data(dup, AUDIT[MACHINE], (0x4F,))) == bpf.SECCOMP_RET_ALLOW


def test_errno_actions_carry_the_errno_in_the_low_sixteen_bits() -> None:
    assert sc.scmp_act_errno(errno.EPERM) == 0x0005_0001
    assert sc.scmp_act_errno(errno.ENOSYS) == 0x0005_0000 | 38
    assert sc.scmp_act_errno(0x1_0001) == 0x0005_0001


def test_the_builder_refuses_what_libseccomp_refuses() -> None:
    with pytest.raises(sc.SeccompError) as exc:
        sc.Filter(0x1234_5678)  # no such action
    assert exc.value.errno == errno.EINVAL and exc.value.strerror == "seccomp_init failed"
    f = sc.Filter(sc.SCMP_ACT_ALLOW)
    with pytest.raises(sc.SeccompError) as exc:
        f.add(sc.SCMP_ACT_ALLOW, "no_such_call")
    assert exc.value.errno == errno.ENOSYS and exc.value.strerror == "seccomp: unknown system call no_such_call"
    with pytest.raises(sc.SeccompError) as exc:
        f.add(sc.scmp_act_errno(1), "read", sc.Arg(6, sc.SCMP_CMP_EQ, 0))  # six arguments: 0..5
    assert exc.value.errno == errno.EINVAL and exc.value.strerror == "seccomp: read: EINVAL"
    with pytest.raises(sc.SeccompError) as exc:
        sc.syscall_number("no_such_call")
    assert exc.value.errno == errno.ENOSYS and "unknown system call no_such_call" in str(exc.value)
    assert sc.syscall_number("mmap") == NR[MACHINE]["mmap"]
    assert sc.syscall_number("tgkill") == NR[MACHINE]["tgkill"]


def test_an_export_that_cannot_be_written_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    f = sc.Filter(sc.SCMP_ACT_ALLOW)
    monkeypatch.setattr(sc.os, "memfd_create", lambda name, flags=0: os.open("/dev/null", os.O_RDONLY))
    with pytest.raises(sc.SeccompError) as exc:
        f.export_bpf()
    assert exc.value.strerror.startswith("seccomp: export: ")


def test_the_library_is_found_by_name_when_its_soname_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "LIBSECCOMP", "libseccomp.so.999")  # a system without the usual soname
    lib = sc._lib()
    assert lib.seccomp_syscall_resolve_name(b"mmap") == NR[MACHINE]["mmap"]


class _NoTsync:
    """libseccomp, but seccomp_attr_set(3) refuses the attribute (-EINVAL)."""

    def __init__(self, lib: object) -> None:
        self._real = lib

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    @staticmethod
    def seccomp_attr_set(ctx: int, attr: int, value: int) -> int:
        return -errno.EINVAL


def test_a_filter_that_cannot_synchronise_all_threads_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sc._lib
    monkeypatch.setattr(sc, "_lib", lambda: _NoTsync(real()))
    with pytest.raises(sc.SeccompError) as exc:
        sc.Filter(sc.SCMP_ACT_ALLOW)
    assert exc.value.errno == errno.EINVAL and exc.value.strerror == "seccomp: TSYNC: EINVAL"


def test_a_failure_without_an_errno_name_carries_its_number() -> None:
    with pytest.raises(sc.SeccompError) as exc:
        sc.Filter._check(-4000, "load")  # no errno has the number 4000
    assert exc.value.errno == 4000 and exc.value.strerror.startswith("seccomp: load: ")
    assert "4000" in exc.value.strerror
    sc.Filter._check(0, "load")  # 0 and positive: success
    sc.Filter._check(7, "load")


class _LoadFails:
    """libseccomp, but seccomp_load(3) fails (as when the kernel refuses the program) after
    noting the context it was given; no filter reaches this process."""

    def __init__(self, lib: object) -> None:
        self._real = lib
        self.loaded: list[object] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def seccomp_load(self, ctx: object) -> int:
        self.loaded.append(ctx)
        return -errno.ECANCELED


def test_a_load_the_kernel_refuses_is_an_error_for_that_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _LoadFails(sc._lib())
    monkeypatch.setattr(sc, "_lib", lambda: fake)
    f = sc.Filter(sc.SCMP_ACT_ALLOW)
    with pytest.raises(sc.SeccompError) as exc:
        f.load()
    assert exc.value.errno == errno.ECANCELED and exc.value.strerror == "seccomp: load: ECANCELED"
    assert fake.loaded == [f._ctx] and f._ctx
