"""The syscall shim's registration and table (guest/systable.py): numbers from asm-generic's
unistd.h, a handler per name, and the refusals `assemble` makes, with the names they give."""

from __future__ import annotations

import pytest

from unirealm.guest.systable import NAMES, NR, SyscallSet, assemble


class Owner:
    def sys_a(self) -> int:
        return 0

    def sys_b(self) -> int:
        return 1

    not_a_call = 3


def test_numbers_are_asm_generics() -> None:
    # include/uapi/asm-generic/unistd.h, which arm64 uses
    assert (NR["openat"], NR["read"], NR["write"], NR["exit_group"], NR["clone"], NR["execve"]) == (
        56, 63, 64, 94, 220, 221)
    assert (NR["getpid"], NR["socket"], NR["mmap"], NR["wait4"], NR["clone3"], NR["faccessat2"]) == (
        172, 198, 222, 260, 435, 439)
    assert NAMES[56] == "openat" and len(NAMES) == len(NR)


def test_a_handler_registers_under_each_of_its_names() -> None:
    calls = SyscallSet("ids")
    assert calls.subsystem == "ids"
    fn = calls("getuid", "geteuid")(Owner.sys_a)
    assert fn is Owner.sys_a  # the decorator hands the method back unchanged
    calls("getgid")(Owner.sys_b)
    assert calls.methods == {"getuid": "sys_a", "geteuid": "sys_a", "getgid": "sys_b"}
    assert assemble([calls], Owner) == {NR["getuid"]: ("ids", "sys_a"), NR["geteuid"]: ("ids", "sys_a"),
                                        NR["getgid"]: ("ids", "sys_b")}


def test_of_methods_takes_the_prefixed_methods_by_their_names() -> None:
    class Sockets:
        def sys_socket(self) -> int:
            return 0

        def sys_bind(self) -> int:
            return 0

        def helper(self) -> int:
            return 0

    calls = SyscallSet.of_methods("sockets", Sockets)
    assert calls.subsystem == "sockets" and calls.methods == {"socket": "sys_socket", "bind": "sys_bind"}
    assert assemble([calls], Sockets) == {198: ("sockets", "sys_socket"), 200: ("sockets", "sys_bind")}
    assert SyscallSet.of_methods("x", Sockets, prefix="help").methods == {"er": "helper"}


def test_assembly_refuses_unknown_duplicate_and_missing() -> None:
    good = SyscallSet("x")
    good("getpid")(Owner.sys_a)
    assert assemble([good], Owner) == {NR["getpid"]: ("x", "sys_a")}
    assert assemble([], Owner) == {}
    unknown = SyscallSet("x")
    unknown("no_such_call")(Owner.sys_a)
    with pytest.raises(ValueError, match=r"^x: no_such_call is not an AArch64 syscall$"):
        assemble([unknown], Owner)
    other = SyscallSet("y")
    other("getpid")(Owner.sys_b)
    with pytest.raises(ValueError, match=r"^getpid: registered by x and y$"):
        assemble([good, other], Owner)
    missing = SyscallSet("z")
    missing.methods["gettid"] = "sys_missing"
    with pytest.raises(ValueError, match=r"^z: gettid names sys_missing, which Owner lacks$"):
        assemble([missing], Owner)
    not_callable = SyscallSet("z")
    not_callable.methods["gettid"] = "not_a_call"
    with pytest.raises(ValueError, match="which Owner lacks"):
        assemble([not_callable], Owner)
    with pytest.raises(ValueError, match=r"^x: getpid registered twice$"):
        good("getpid")(Owner.sys_b)
    assert good.methods == {"getpid": "sys_a"}
