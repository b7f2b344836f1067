"""arch/a64.access_address against instructions the cross assembler encodes, with
x2 = 0x1000, x3 = 0x30, SP = 0x8000 and the instruction at PC 0x4000_0000."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirealm.arch.a64 import access_address

from .asm_snippet import assemble

CASES = [
    ("ldr x1, [x2, #8]", 0x1008),
    ("ldur w1, [x2, #-4]", 0x0FFC),
    ("ldr x1, [x2], #16", 0x1000),  # post-index: the base before writeback
    ("str x1, [x2, #-16]!", 0x0FF0),  # pre-index
    ("ldr x1, [x2, x3, lsl #3]", 0x1180),
    ("ldrb w1, [x2, w3, uxtw]", 0x1030),
    ("ldp x0, x1, [sp, #-32]", 0x7FE0),
    ("stp w0, w1, [x2], #8", 0x1000),
    ("ldxr x0, [x2]", 0x1000),
    ("ldadd x0, x1, [x2]", 0x1000),
    ("ldr q0, [x2, #32]", 0x1020),
    ("ldr x1, .+64", 0x4000_0040),
    ("ldtr x1, [x2, #8]", 0x1008),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_access_address(tmp_path: Path, text: str, expected: int) -> None:
    insn = int.from_bytes(assemble(f".arch armv8.1-a\n{text}", 0x4000_0000, tmp_path)[:4], "little")
    regs = {2: 0x1000, 3: 0x30}
    assert access_address(insn, lambda n: regs.get(n, 0), 0x8000, 0x4000_0000) == expected


def test_not_a_load_or_store() -> None:
    assert access_address(0xD503201F, lambda n: 0, 0, 0) is None  # nop
