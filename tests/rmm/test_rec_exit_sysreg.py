"""The REC's PE and its interrupt lines (rmm/run.py attach_interrupt_lines, gic_trap_exit):
at REC_ENTER the PE gets the REC's lines (virtual CPU interface and timers) and the MPIDR it
reads; an ICC_SGI0R/SGI1R/ASGI1R_EL1 write the lines trap to EL2 ends REC_ENTER with a SYNC
exit carrying the MSR's EC 0x18 syndrome (its Rt from the instruction) and the value in
gprs[0] (digest §2.5; TF-RMM handle_sysreg_access_trap, which lets the host emulate SGIs).

The ISS is built here from ESR_EL2's EC 0x18 layout (Arm ARM D19.2.37): Op0 [21:20],
Op2 [19:17], Op1 [16:14], CRn [13:10], Rt [9:5], CRm [4:1], Direction [0]."""

from __future__ import annotations

import pytest

from unirealm.arch.rmi import RmiFid, RmiRecExitReason, RmiStatus
from unirealm.machine.vcpu import IrqTrap, Trap

from .conftest import Env, RecHandle, assert_status

EC_SYSREG = 0x18 << 26
IL = 1 << 25
EMULATED_MMIO = 1 << 0

# (name, op2, the key of arch.gic's sysreg_key: op0:op1:CRn:CRm:op2 in 2:3:4:4:3 bits)
SGI_REGS = {"SGI1R": 5, "ASGI1R": 6, "SGI0R": 7}  # all op0 3, op1 0, CRn 12, CRm 11


def key(op2: int) -> int:
    return (3 << 14) | (0 << 11) | (12 << 7) | (11 << 3) | op2


def msr(op2: int, rt: int) -> int:
    """MSR S3_0_C12_C11_<op2>, X<rt> (C6.2 MSR (register)): 0xD5100000 | o0<<19 | ... | Rt."""
    return 0xD510_0000 | (1 << 19) | (0 << 16) | (12 << 12) | (11 << 8) | (op2 << 5) | rt


def iss(op2: int, rt: int) -> int:
    return (3 << 20) | (op2 << 17) | (0 << 14) | (12 << 10) | (rt << 5) | (11 << 1) | 0  # a write


class Pe:
    """What the REC's PE does on its next run: an MSR to one of the SGI registers, through
    the interrupt lines the RMM attached, then an interrupt stop; and the instruction there."""

    def __init__(self, rec: RecHandle, op2: int, rt: int, value: int, insn: int | None = None) -> None:
        self.engine = rec.engine
        self.op2, self.value = op2, value
        self.insn = msr(op2, rt) if insn is None else insn
        self.mpidr: list[int] = []
        self.runs = 0
        self.fetched: list[int] = []
        self.next_run = self.engine.run
        engine = self.engine
        engine.interrupts = None  # type: ignore[attr-defined]
        engine.run = self.run  # type: ignore[method-assign]
        engine.read_insn_at = self.read_insn_at  # type: ignore[attr-defined]
        engine.set_mpidr = self.mpidr.append  # type: ignore[attr-defined]

    def run(self) -> Trap:
        self.runs += 1
        if self.runs > 1:
            return self.next_run()
        lines = self.engine.interrupts  # type: ignore[attr-defined]
        assert lines is not None, "the RMM gave the PE no interrupt lines"
        assert lines.write_sysreg(key(self.op2), self.value)
        self.engine.pc += 4  # the MSR completed
        return IrqTrap(self.engine.pc)

    def read_insn_at(self, address: int) -> int:
        self.fetched.append(address)
        return self.insn


def realm_rec(env: Env) -> RecHandle:
    _, rec = env.active_realm_with_rec(40)
    rec.engine.idle_wfi = True
    return rec


@pytest.mark.parametrize("name", list(SGI_REGS))
@pytest.mark.parametrize("rt", [0, 5, 30])
def test_sgi_write_is_a_sysreg_exit(env: Env, name: str, rt: int) -> None:
    rec = realm_rec(env)
    op2 = SGI_REGS[name]
    pe = Pe(rec, op2, rt, 0x0100_0000_0C00_0008)
    out, run = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == EC_SYSREG | IL | iss(op2, rt)
    assert run["exit_gprs"][0] == 0x0100_0000_0C00_0008
    assert run["exit_gprs"][1:] == [0] * 30
    assert (run["exit_far"], run["exit_hpfar"]) == (0, 0)
    assert pe.fetched == [0x1000]  # the MSR just executed, at the entry point
    # The write was reported once: the next entry runs the realm on.
    out, run = env.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ  # its WFI


def test_sysreg_exit_then_emulated_mmio_is_error_rec(env: Env) -> None:
    """A sysreg exit is not a data abort: EMULATED_MMIO after it is refused."""
    rec = realm_rec(env)
    Pe(rec, 5, 2, 1)
    env.enter(rec)
    assert_status(env.enter(rec, EMULATED_MMIO)[0], RmiStatus.ERROR_REC)


def test_rt_is_zero_when_the_instruction_is_not_an_msr(env: Env) -> None:
    rec = realm_rec(env)
    Pe(rec, 5, 9, 7, insn=0xD503_207F)  # WFI
    _, run = env.enter(rec)
    assert run["exit_esr"] == EC_SYSREG | IL | iss(5, 0)
    assert run["exit_gprs"][0] == 7


def test_rt_is_zero_when_the_pe_cannot_fetch(env: Env) -> None:
    rec = realm_rec(env)
    Pe(rec, 7, 9, 0xFFFF_FFFF_FFFF_FFFF)
    del rec.engine.read_insn_at  # type: ignore[attr-defined]
    _, run = env.enter(rec)
    assert run["exit_esr"] == EC_SYSREG | IL | iss(7, 0)
    assert run["exit_gprs"][0] == 0xFFFF_FFFF_FFFF_FFFF


def test_pe_behind_an_impl_gets_the_lines(env: Env) -> None:
    """A machine.cpu.Cpu hands the REC its implementation (`impl`): the lines, the MPIDR and
    the instruction fetch are that implementation's."""
    rec = realm_rec(env)

    class Impl:
        interrupts = None

        def __init__(self) -> None:
            self.mpidr: list[int] = []

        def set_mpidr(self, value: int) -> None:
            self.mpidr.append(value)

        def read_insn_at(self, address: int) -> int:
            return msr(6, 17)

    impl = Impl()
    engine = rec.engine
    engine.impl = impl  # type: ignore[attr-defined]
    calls = []

    def run() -> Trap:
        calls.append(1)
        assert impl.interrupts is not None
        impl.interrupts.write_sysreg(key(6), 0x42)
        engine.pc += 4
        return IrqTrap(engine.pc)

    engine.run = run  # type: ignore[method-assign]
    _, run_page = env.enter(rec)
    assert run_page["exit_esr"] == EC_SYSREG | IL | iss(6, 17)
    assert run_page["exit_gprs"][0] == 0x42
    assert impl.mpidr == [0]  # REC 0: affinity 0 (the PE adds MPIDR's RES1 bit 31)
    assert not hasattr(engine, "interrupts")


def test_pe_gets_the_recs_mpidr(env: Env) -> None:
    realm = env.create_realm(40)
    recs = [env.create_rec(realm) for _ in range(3)]
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    seen = []
    for rec in recs[1:]:
        rec.engine.idle_wfi = True
        pe = Pe(rec, 5, 1, 0)
        env.enter(rec)
        seen.append(pe.mpidr)
    # RmiRecMpidr Aff0 [3:0] -> MPIDR_EL1 Aff0 [7:0], set at every entry.
    assert seen == [[1], [2]]
    env.enter(recs[2])
    assert seen[1] == [2, 2]
