"""What the ELF loader (guest/loader.py) leaves in a new process, against pyelftools's reading
of the same cross-compiled programs and the arm64 ELF ABI / binfmt_elf's initial stack: the
PT_LOAD segments as VMAs (page-rounded, with their PF_R/W/X, the file's bytes from the page
holding p_offset and zeros past p_filesz), the dynamic loader beside a PIE, the heap, the
vDSO and its data page, and argc/argv/envp/auxv on a 16-byte aligned stack."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from unirealm.guest import syscalls as sc
from unirealm.guest.addrspace import PROT_EXEC, PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP
from unirealm.guest.loader import (
    HWCAP,
    INTERP_BASE,
    PIE_BASE,
    VDSO_BASE,
    VVAR_BASE,
    VVAR_MULT_SHIFT,
    ExecError,
)
from unirealm.guest.pagecache import Store
from unirealm.guest.process import Process
from unirealm.guest.vfs import RegInode, Vfs

from .test_syscall_fuzz import FakeCpu, make_kernel

CC = shutil.which("aarch64-linux-gnu-gcc")
LD_SO = Path("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1")
PROGRAM = "#include <stdio.h>\nint data = 7; char bss[20000];\nint main(void) { return puts(\"hi\") + data + bss[9]; }\n"
PAGE = 4096
# auxv types (include/uapi/linux/auxvec.h, arch/arm64/include/uapi/asm/auxvec.h)
AT = {"NULL": 0, "PHDR": 3, "PHENT": 4, "PHNUM": 5, "PAGESZ": 6, "BASE": 7, "FLAGS": 8, "ENTRY": 9,
      "UID": 11, "EUID": 12, "GID": 13, "EGID": 14, "PLATFORM": 15, "HWCAP": 16, "CLKTCK": 17,
      "SECURE": 23, "RANDOM": 25, "HWCAP2": 26, "EXECFN": 31, "SYSINFO_EHDR": 33, "MINSIGSTKSZ": 51}


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    tmp = tmp_path_factory.mktemp("loader")
    (tmp / "p.c").write_text(PROGRAM)
    out = {}
    for name, flags in (("static", ["-static", "-no-pie"]), ("pie", ["-pie", "-fPIE"])):
        subprocess.run([CC, "-O2", *flags, "-o", str(tmp / name), str(tmp / "p.c")], check=True)
        out[name] = (tmp / name).read_bytes()
    out["ld.so"] = LD_SO.read_bytes()
    return out


class VdsoCpu(FakeCpu):
    cntfrq = 62_500_000
    VDSO = b"\x7fELF-vdso" + bytes(5000)

    def read_image_file(self, name: str) -> bytes:
        if name == "vdso/linux-vdso.so.1":
            return self.VDSO
        raise KeyError(name)


def spawn(elf: bytes, interp: bytes | None = None, cpu: FakeCpu | None = None, **kw: object) -> Process:
    kernel = make_kernel()
    if cpu is not None:
        kernel.cpu = cpu
    vfs = Vfs()
    if interp is not None:
        vfs.makedirs("lib").add("ld-linux-aarch64.so.1", RegInode(interp))
    try:
        return Process.spawn(kernel, elf, ["/app", "one", "zwei"], "/bin/app", sc.Syscalls, vfs=vfs, **kw)
    finally:
        Store.current = None


def loads(data: bytes) -> list[dict[str, int]]:
    elf = ELFFile(io.BytesIO(data))
    return [dict(seg.header) for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]


def check_segments(p: Process, data: bytes, base: int) -> int:
    """Every PT_LOAD is one VMA as binfmt_elf maps it; returns the end of the highest."""
    end = 0
    for seg in loads(data):
        vaddr = base + seg["p_vaddr"]
        start, stop = vaddr & ~(PAGE - 1), (vaddr + seg["p_memsz"] + PAGE - 1) & ~(PAGE - 1)
        vma = p.mm.find_vma(vaddr)
        assert vma is not None and (vma.start, vma.end) == (start, stop)
        flags = seg["p_flags"]
        want = (PROT_READ if flags & 4 else 0) | (PROT_WRITE if flags & 2 else 0) | (PROT_EXEC if flags & 1 else 0)
        assert vma.prot == want
        assert vma.data is not None and vma.data_va == start
        lead = vaddr - start
        assert vma.data == data[seg["p_offset"] - lead : seg["p_offset"] + seg["p_filesz"]]
        assert len(vma.data) == lead + seg["p_filesz"]  # past p_filesz: zeros, not the file
        end = max(end, stop)
    return end


def test_a_static_program_is_mapped_as_its_headers_say(programs: dict[str, bytes]) -> None:
    data = programs["static"]
    elf = ELFFile(io.BytesIO(data))
    p = spawn(data)
    assert p.state.entry == elf.header["e_entry"]
    end = check_segments(p, data, 0)
    assert p.mm.brk_start == p.mm.brk == end
    heap = p.mm.find_vma(end) or next(v for v in p.mm.vmas if v.name == "heap")
    assert heap.name == "heap" and heap.start == heap.end == end
    aux = p.state.auxv
    assert aux["base"] == 0 and aux["entry"] == elf.header["e_entry"]
    assert (aux["phnum"], aux["phent"]) == (elf.header["e_phnum"], elf.header["e_phentsize"])
    first = loads(data)[0]  # no PT_PHDR in a static program: the headers inside the first PT_LOAD
    assert aux["phdr"] == first["p_vaddr"] + elf.header["e_phoff"] - first["p_offset"]


def test_a_pie_runs_its_interpreter_first(programs: dict[str, bytes]) -> None:
    data, ld = programs["pie"], programs["ld.so"]
    elf, ldelf = ELFFile(io.BytesIO(data)), ELFFile(io.BytesIO(ld))
    p = spawn(data, ld)
    assert p.state.entry == INTERP_BASE + ldelf.header["e_entry"]  # where the thread starts
    check_segments(p, data, PIE_BASE)
    check_segments(p, ld, INTERP_BASE)
    aux = p.state.auxv
    assert aux["base"] == INTERP_BASE and aux["entry"] == PIE_BASE + elf.header["e_entry"]
    phdr = next(s for s in elf.iter_segments() if s["p_type"] == "PT_PHDR")
    assert aux["phdr"] == PIE_BASE + phdr["p_vaddr"]


def test_a_missing_interpreter_is_refused(programs: dict[str, bytes]) -> None:
    with pytest.raises(ExecError, match=re.escape("interpreter /lib/ld-linux-aarch64.so.1 not found")):
        spawn(programs["pie"])


def test_an_interpreter_that_asks_for_one_is_refused(programs: dict[str, bytes]) -> None:
    """One interpreter is loaded and a PT_INTERP inside it is not followed: the loader
    refuses it with a message naming it (binfmt_elf ignores it, and such an interpreter,
    never relocated, faults at its entry)."""
    with pytest.raises(ExecError, match=re.escape("/lib/ld-linux-aarch64.so.1: the interpreter itself asks")):
        spawn(programs["pie"], programs["pie"])


def read_c_string(p: Process, va: int) -> bytes:
    out = b""
    while (c := p.read(va + len(out), 1)) != b"\0":
        out += c
    return out


def test_the_initial_stack_is_linux_arm64s(programs: dict[str, bytes]) -> None:
    cpu = VdsoCpu()
    p = spawn(programs["pie"], programs["ld.so"], cpu=cpu, envp=["A=1", "PATH=/bin"])
    p.sched.current = p.threads[0]
    sp = p.setup_stack()
    assert sp % 16 == 0 and STACK_TOP - STACK_SIZE < sp < STACK_TOP
    stack = p.mm.find_vma(sp)
    assert stack is not None and (stack.start, stack.end) == (STACK_TOP - STACK_SIZE, STACK_TOP)
    assert stack.prot == PROT_READ | PROT_WRITE

    def word(i: int) -> int:
        return int(struct.unpack("<Q", p.read(sp + 8 * i, 8))[0])

    argc = word(0)
    assert argc == 3
    assert [read_c_string(p, word(1 + i)) for i in range(argc)] == [b"/app", b"one", b"zwei"]
    assert word(1 + argc) == 0
    i, env = 2 + argc, []
    while word(i):
        env.append(read_c_string(p, word(i)))
        i += 1
    assert env == [b"A=1", b"PATH=/bin"]
    i += 1
    aux: dict[int, int] = {}
    while True:
        key, value = word(i), word(i + 1)
        i += 2
        if key == AT["NULL"]:
            break
        assert key not in aux
        aux[key] = value
    elf = ELFFile(io.BytesIO(programs["pie"]))
    assert aux[AT["PAGESZ"]] == PAGE and aux[AT["BASE"]] == INTERP_BASE
    assert aux[AT["ENTRY"]] == PIE_BASE + elf.header["e_entry"]
    assert aux[AT["PHNUM"]] == elf.header["e_phnum"] and aux[AT["PHENT"]] == 56
    assert aux[AT["PHDR"]] == p.state.auxv["phdr"]
    assert [aux[AT[k]] for k in ("UID", "EUID", "GID", "EGID", "SECURE", "FLAGS")] == [0] * 6
    assert aux[AT["HWCAP"]] == HWCAP and aux[AT["CLKTCK"]] == 100
    assert read_c_string(p, aux[AT["PLATFORM"]]) == b"aarch64"
    assert read_c_string(p, aux[AT["EXECFN"]]) == b"/bin/app"
    assert p.read(aux[AT["RANDOM"]], 16) == (0x1234_5678_9ABC_DEF0).to_bytes(8, "little") * 2
    assert aux[AT["SYSINFO_EHDR"]] == VDSO_BASE
    assert aux[AT["MINSIGSTKSZ"]] >= 4096  # arm64's signal frame needs more than MINSIGSTKSZ 2048
    # strings above the vectors, all inside the stack
    for key in ("PLATFORM", "EXECFN", "RANDOM"):
        assert sp < aux[AT[key]] < STACK_TOP


def test_the_vdso_and_its_data_page(programs: dict[str, bytes]) -> None:
    cpu = VdsoCpu()
    p = spawn(programs["static"], cpu=cpu)
    p.kernel.realtime_offset_ns = 1_700_000_000_123_456_789
    p.sched.current = p.threads[0]
    p.setup_stack()
    vvar, vdso = p.mm.find_vma(VVAR_BASE), p.mm.find_vma(VDSO_BASE)
    assert vvar is not None and (vvar.start, vvar.end, vvar.prot) == (VVAR_BASE, VVAR_BASE + PAGE, PROT_READ)
    assert vdso is not None and vdso.prot == PROT_READ | PROT_EXEC
    assert (vdso.start, vdso.end) == (VDSO_BASE, VDSO_BASE + 2 * PAGE)  # 5009 bytes: two pages
    assert p.read(VDSO_BASE, len(cpu.VDSO)) == cpu.VDSO
    mult, zero, offset = struct.unpack("<QQq", p.read(VVAR_BASE, 24))
    ticks = 10**6  # 16 ms at 62.5 MHz
    assert (ticks * mult) >> VVAR_MULT_SHIFT == pytest.approx(16_000_000, abs=1)
    assert zero == 0 and offset == 1_700_000_000_123_456_789
    assert p.read(VVAR_BASE + 24, PAGE - 24) == bytes(PAGE - 24)  # the rest of the data page is zero


def test_no_vdso_when_the_image_has_none(programs: dict[str, bytes]) -> None:
    p = spawn(programs["static"])
    p.sched.current = p.threads[0]
    sp = p.setup_stack()
    words = struct.unpack(f"<{(STACK_TOP - sp) // 8}Q", p.read(sp, STACK_TOP - sp))
    argc = words[0]
    i = 1 + argc + 1
    while words[i]:
        i += 1
    keys = words[i + 1 :: 2]
    assert AT["SYSINFO_EHDR"] not in keys[: keys.index(AT["NULL"])]
    assert p.mm.find_vma(VDSO_BASE) is None
