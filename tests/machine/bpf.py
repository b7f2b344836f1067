"""A classic BPF interpreter for seccomp filters, written from linux/filter.h and
linux/bpf_common.h, and the seccomp_data record (linux/seccomp.h) it runs against.

struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }  (8 bytes, native order)
struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }  (64 bytes)
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

INSN = struct.Struct("=HBBI")
SECCOMP_DATA = struct.Struct("=iIQ6Q")
MASK32 = 0xFFFF_FFFF

# linux/audit.h
AUDIT_ARCH_X86_64 = 0xC000_003E
AUDIT_ARCH_AARCH64 = 0xC000_00B7

# linux/seccomp.h: the action in the high 16 bits, its data in the low 16
SECCOMP_RET_KILL_PROCESS = 0x8000_0000
SECCOMP_RET_KILL_THREAD = 0x0000_0000
SECCOMP_RET_TRAP = 0x0003_0000
SECCOMP_RET_ERRNO = 0x0005_0000
SECCOMP_RET_USER_NOTIF = 0x7FC0_0000
SECCOMP_RET_TRACE = 0x7FF0_0000
SECCOMP_RET_LOG = 0x7FFC_0000
SECCOMP_RET_ALLOW = 0x7FFF_0000
SECCOMP_RET_ACTION_FULL = 0xFFFF_0000
SECCOMP_RET_DATA = 0x0000_FFFF

# linux/bpf_common.h
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_A = 0x10  # BPF_RET's source
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MEMWORDS = 16


class BpfError(Exception):
    """A program the kernel's checker would refuse, or one that misbehaves when run."""


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def decode(program: bytes) -> list[Insn]:
    if not program or len(program) % INSN.size:
        raise BpfError(f"a program is a whole number of {INSN.size}-byte instructions, not {len(program)} bytes")
    return [Insn(*INSN.unpack_from(program, off)) for off in range(0, len(program), INSN.size)]


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0) -> bytes:
    full = tuple(args) + (0,) * (6 - len(args))
    return SECCOMP_DATA.pack(nr, arch, ip, *full)


def _alu(op: int, a: int, src: int) -> int:
    if op == BPF_ADD:
        return (a + src) & MASK32
    if op == BPF_SUB:
        return (a - src) & MASK32
    if op == BPF_MUL:
        return (a * src) & MASK32
    if op in (BPF_DIV, BPF_MOD):
        if src == 0:
            raise BpfError("division by zero")
        return a // src if op == BPF_DIV else a % src
    if op == BPF_OR:
        return a | src
    if op == BPF_AND:
        return a & src
    if op == BPF_XOR:
        return a ^ src
    if op == BPF_LSH:
        return (a << src) & MASK32 if src < 32 else 0
    if op == BPF_RSH:
        return a >> src if src < 32 else 0
    if op == BPF_NEG:
        return -a & MASK32
    raise BpfError(f"ALU operation {op:#x}")


def _load(data: bytes, size: int, offset: int) -> int:
    width = {BPF_W: 4, BPF_H: 2, BPF_B: 1}.get(size)
    if width is None:
        raise BpfError(f"load size {size:#x}")
    if offset % width or not 0 <= offset <= len(data) - width:
        raise BpfError(f"load of {width} bytes at {offset} from a {len(data)}-byte record")
    # seccomp_data words are loaded in the machine's order (the kernel's seccomp checker
    # allows only aligned 32-bit loads of the record)
    return int.from_bytes(data[offset:offset + width], sys.byteorder)


def _source(mode: int, k: int, mem: list[int], data: bytes, what: str) -> int:
    """The value an LD or LDX of `mode` loads other than from the record."""
    if mode == BPF_IMM:
        return k
    if mode == BPF_MEM:
        return mem[k]
    if mode == BPF_LEN:
        return len(data)
    raise BpfError(f"{what} mode {mode:#x}")


def run(program: list[Insn], data: bytes, limit: int = 4096) -> int:
    """The program's return value for the record `data`."""
    a = x = 0
    mem = [0] * BPF_MEMWORDS
    pc = 0
    for _ in range(limit):
        if not 0 <= pc < len(program):
            raise BpfError(f"ran off the program at {pc}")
        ins = program[pc]
        cls, code, k = ins.code & 0x07, ins.code, ins.k
        pc += 1
        if cls == BPF_LD:
            mode = code & 0xE0
            if mode == BPF_ABS:
                a = _load(data, code & 0x18, k)
            elif mode == BPF_IND:
                a = _load(data, code & 0x18, (x + k) & MASK32)
            else:
                a = _source(mode, k, mem, data, "LD")
        elif cls == BPF_LDX:
            x = _source(code & 0xE0, k, mem, data, "LDX")
        elif cls == BPF_ST:
            mem[k] = a
        elif cls == BPF_STX:
            mem[k] = x
        elif cls == BPF_ALU:
            a = _alu(code & 0xF0, a, x if code & BPF_X else k)
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            src = x if code & BPF_X else k
            if op == BPF_JEQ:
                taken = a == src
            elif op == BPF_JGT:
                taken = a > src
            elif op == BPF_JGE:
                taken = a >= src
            elif op == BPF_JSET:
                taken = bool(a & src)
            else:
                raise BpfError(f"jump {op:#x}")
            pc += ins.jt if taken else ins.jf
        elif cls == BPF_RET:
            return a if code & 0x18 == BPF_A else k
        else:  # BPF_MISC
            if code & 0xF8 == BPF_TAX:
                x = a
            elif code & 0xF8 == BPF_TXA:
                a = x
            else:
                raise BpfError(f"MISC {code:#x}")
    raise BpfError("no return within the step limit")
