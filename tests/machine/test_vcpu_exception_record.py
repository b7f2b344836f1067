"""How machine/vcpu.py finds the exception record in Unicorn's CPU context (ExceptionRecord), run
afresh: the offset is kept once found per process, so each test here clears it first and the
search itself runs.

The facts checked come from the Arm ARM and QEMU's CPUARMState, not from the search: an
`svc #imm16` taken from EL1 has the syndrome EC 0x15, IL 1, ISS imm16 (D24.2.40 ESR_EL1;
0x56000000 | imm16) and is taken to EL1; an exclusive load from an address that is not
aligned to its size is an Alignment fault (EC 0x25 from the current EL, DFSC 0b100001)
whose FAR is that address. QEMU's record is `{u32 syndrome; u32 fsr; u64 vaddress; u32
target_el}`, 8-byte aligned in the context for its u64."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.unicorn import Uc

from unirealm.arch import sysreg
from unirealm.machine import vcpu
from unirealm.machine.vcpu import El2Context, ExceptionRecord

SVC_BASE = 0x5600_0000  # ESR: EC 0x15 (SVC from AArch64) << 26 | IL << 25
ALIGNMENT_FAULT = (0x25 << 26) | (1 << 25) | 0x21  # Data Abort, current EL; IL 1; DFSC 0b100001
EXCP_SWI, EXCP_DATA_ABORT = 2, 4  # QEMU's exception numbers, as UC_HOOK_INTR passes them


@pytest.fixture
def fresh_search(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(ExceptionRecord, "_offset", None)
    yield


def taken(code: list[int], regs: dict[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """Run `code` at 0 in a new engine at EL1; each exception it raises: (intno, syndrome, FAR, target EL)
    as ExceptionRecord reads them at UC_HOOK_INTR, the first stopping the run."""
    uc = UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"".join(w.to_bytes(4, "little") for w in code))
    for reg, value in (regs or {}).items():
        uc.reg_write(reg, value)
    # SCR_EL3.RW and HCR_EL2.RW as EL3 and EL2 leave them for a guest: EL1 is AArch64, and its
    # faults are reported in the long-descriptor format
    el2 = El2Context()
    for sreg, value in ((sysreg.SCR_EL3, el2.scr_el3), (sysreg.HCR_EL2, el2.hcr_el2)):
        uc.cpr_write(sreg.op0, sreg.op1, sreg.crn, sreg.crm, sreg.op2, value)
    record = ExceptionRecord(uc)
    seen: list[tuple[int, int, int, int]] = []

    def hook(uc: Uc, intno: int, _ud: object) -> None:
        seen.append((intno, *record.read()))
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, hook)
    uc.emu_start(0, 4 * len(code))
    return seen


def test_the_offset_found_reads_the_syndrome_of_another_svc(fresh_search: None) -> None:
    offset = ExceptionRecord.find_offset()
    assert ExceptionRecord._offset == offset
    assert offset > 0 and offset % 8 == 0
    for imm in (0x0000, 0x1234, 0xFFFF):
        svc = 0xD400_0001 | imm << 5
        assert taken([svc]) == [(EXCP_SWI, SVC_BASE | imm, 0, 1)]


def test_the_record_holds_the_far_of_an_alignment_fault(fresh_search: None) -> None:
    ldxr = 0xC85F_7C20  # ldxr x0, [x1]
    for address in (0x101, 0x804, 0xFFF, 0xFFFF_8000_0000_0F01):  # the last one a TTBR1 VA
        seen = taken([ldxr], {a64.UC_ARM64_REG_X1: address})
        assert seen == [(EXCP_DATA_ABORT, ALIGNMENT_FAULT, address, 1)]


def test_the_offset_is_kept_once_found(fresh_search: None, monkeypatch: pytest.MonkeyPatch) -> None:
    offset = ExceptionRecord.find_offset()

    def no_engine(*_args: object) -> None:
        raise AssertionError("the search ran again")

    monkeypatch.setattr(vcpu, "UcAArch64", no_engine)
    assert ExceptionRecord.find_offset() == offset
    assert ExceptionRecord(UcAArch64(UC_ARCH_ARM64, UC_MODE_ARM)).offset == offset


@pytest.mark.parametrize("syndrome", [
    0x1234_5678,  # a syndrome no `svc` gives: nowhere in the context
    0,  # zero: in the context more than once
])
def test_a_record_not_found_once_is_refused_with_one_line(fresh_search: None, monkeypatch: pytest.MonkeyPatch,
                                                          syndrome: int) -> None:
    assert struct.pack("<I", syndrome) != struct.pack("<I", SVC_BASE | ExceptionRecord.PROBE_IMM)
    monkeypatch.setattr(vcpu, "esr", lambda ec, iss=0: syndrome)
    with pytest.raises(RuntimeError, match=r"^this Unicorn build does not expose its exception record$"):
        ExceptionRecord.find_offset()
    assert ExceptionRecord._offset is None
