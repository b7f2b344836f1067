"""A bare-metal AArch64 kernel (tests/baremetal/checks.S) through the VMM in the three
environments: stage-1 MMU on with RAM at 2 GiB, stage-1 aborts and SVCs taken at EL1 and
from EL0 exactly as the Arm ARM takes them, the hypervisor conduit of each environment,
ID registers as each configuration shows them, and a realm host call serviced as KVM does.

Expected syndromes are typed from the Arm ARM (ESR_ELx: EC[31:26], IL[25], ISS): a data
abort from the same EL with a level-3 translation fault is 0x96000007 (EC 0x25), from EL0
0x92000007 (EC 0x24); instruction aborts 0x86000007 (EC 0x21) and 0x82000007 (EC 0x20);
SVC #imm 0x56000000 | imm (EC 0x15); an unknown-reason exception 0x02000000 (EC 0)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.vmm import Vmm

from .guest_build import Guest, build

NOMAP = 0x801F_0000
USER_CODE = 0x801E_0000
USER_STACK_TOP = 0x801E_2000
ENVS = {"kvm": ["--platform", "kvm"], "rme": ["--platform", "rme"], "realm": ["--realm"]}


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    return build("checks", tmp_path_factory.mktemp("baremetal"))


def run(guest: Guest, env: list[str]) -> tuple[int, list[str]]:
    cfg = RunConfig.from_args(run_parser().parse_args([*env, "-c", "1", "-k", str(guest.image)]))
    out, log = io.BytesIO(), io.BytesIO()
    status = Vmm(cfg, out, None, log_output=log).run().status
    return status, out.getvalue().decode().splitlines()


def exceptions_after(lines: list[str], marker: str) -> list[list[int]]:
    """The `exc` lines printed after `marker` (up to the next other line), as numbers:
    vector offset, ESR, FAR, ELR, SPSR, SP_EL0, SP at the exception."""
    start = lines.index(marker) + 1
    found = []
    for line in lines[start:]:
        if not line.startswith("exc "):
            break
        found.append([int(field, 16) for field in line.split()[1:]])
    return found


def values_after(lines: list[str], marker: str, count: int) -> list[int]:
    start = lines.index(marker) + 1
    return [int(v, 16) for v in lines[start : start + count]]


@pytest.mark.parametrize("name", list(ENVS))
def test_bare_metal_guest(guest: Guest, name: str) -> None:
    status, lines = run(guest, ENVS[name])
    sym = guest.symbols
    realm = name == "realm"
    assert status == 0, lines
    assert lines[0] == ("env realm" if realm else "env plain")
    assert "FAIL" not in lines and lines[-1] == "system off"

    # Stage 1 on, RAM at 2 GiB: the code ran on after SCTLR_EL1.M = 1 and read its data.
    mmu = next(line for line in lines if line.startswith("mmu on, sctlr "))
    assert int(mmu.split()[-1], 16) & 1

    stack_top = sym["stack_top"]
    # EL1 data abort: current EL, SP_ELx vector; FAR = the VA; ELR = the load.
    [dabt] = exceptions_after(lines, "el1 data abort")
    assert dabt[:4] == [0x200, 0x9600_0007, NOMAP + 8, sym["el1_dabt_at"]]
    assert dabt[4] & 0x3FF == 0x3C5 and dabt[6] == stack_top
    # EL1 prefetch abort: FAR = ELR = the branch target.
    [iabt] = exceptions_after(lines, "el1 prefetch abort")
    assert iabt[:4] == [0x200, 0x8600_0007, NOMAP, NOMAP]

    # The EL0 program: lower-EL vector, SPSR = EL0t, SP_EL0 readable by the handler (which
    # runs on SP_EL1: the SP it found is its own stack), ELR after the SVC, FAR the VA.
    def user(label: str) -> int:
        return USER_CODE + sym[label] - sym["user_program"]

    svc, dabt0, iabt0, back = exceptions_after(lines, "el0 program")
    assert svc[:2] == [0x400, 0x5600_0077] and svc[3] == user("user_svc_at") + 4
    assert dabt0[:4] == [0x400, 0x9200_0007, NOMAP + 16, user("user_ldr_at")]
    assert iabt0[:4] == [0x400, 0x8200_0007, NOMAP, NOMAP]
    assert back[:2] == [0x400, 0x5600_0000] and back[3] == user("user_exit_at") + 4
    for taken in (svc, dabt0, iabt0, back):
        assert taken[4] & 0xF == 0  # SPSR.M = EL0t
        assert taken[5] == USER_STACK_TOP and taken[6] == stack_top
    assert "back at el1" in lines

    # A load through VA 0x140600008 (IPA 0x80600008): plain RAM in a VM; a realm gave that
    # granule to the host (RSI_IPA_STATE_SET EMPTY), so the RMM injects an SEA whose FAR is
    # the VA, not the IPA.
    taken = exceptions_after(lines, "alias load")
    if realm:
        assert [t[:4] for t in taken] == [[0x200, 0x9600_0010, 0x1_4060_0008, sym["alias_ldr_at"]]]
    else:
        assert taken == []

    pfr0, dfr0 = values_after(lines, "id registers", 2)
    sve, pmuver = (pfr0 >> 32) & 0xF, (dfr0 >> 8) & 0xF
    if realm:
        # The RMM shows the realm no SVE and no PMU (RmiRealmParams enabled neither), and
        # the breakpoints and watchpoints the VMM asked for, as KVM asks: all FeatReg0
        # offers, 6 and 4 (fields hold count - 1).
        assert sve == 0 and pmuver == 0
        assert (dfr0 >> 12) & 0xF == 5 and (dfr0 >> 20) & 0xF == 3
        # HVC in a realm: UNDEF, ELR = the next instruction (the HVC does not re-execute).
        [undef] = exceptions_after(lines, "hvc in a realm")
        assert undef[:2] == [0x200, 0x0200_0000] and undef[3] == sym["realm_hvc_at"] + 4
        status_x0, version, features, unknown = values_after(lines, "host call", 4)
        assert status_x0 == 0  # RSI_SUCCESS
        assert version == 0x10001  # SMCCC_VERSION 1.1, from the host
        assert features == 0  # SMCCC_ARCH_FEATURES(SMCCC_VERSION): implemented
        assert unknown == (1 << 64) - 1  # NOT_SUPPORTED
    else:
        assert sve == 1 and pmuver != 0  # the CPU model's own values, as KVM passes them on
        # ... and SVE works at EL1 at the length ZCR_EL1 asks: (LEN + 1) x 16 bytes, no exception
        assert exceptions_after(lines, "sve") == [] and values_after(lines, "sve", 1) == [32]
        version, cpu_on_features, affinity, on_self, on_absent, smccc = values_after(lines, "psci over hvc", 6)
        assert version == 0x10001  # PSCI 1.1
        assert cpu_on_features == 0
        assert affinity == 0  # AFFINITY_INFO(0): ON
        assert on_self == (1 << 64) - 4  # ALREADY_ON
        assert on_absent == (1 << 64) - 2  # INVALID_PARAMETERS: -c 1 has no CPU 1
        assert smccc == 0x10001


def test_a_broken_vector_table_is_reported_not_spun_on(tmp_path: Path) -> None:
    """A guest whose vectors fault at their first instruction: the VMM stops with one line."""
    from unirealm.host.vmm import VmmError

    src = tmp_path / "broken.S"
    src.write_text(".text\n.global _start\n_start:\n  mov x0, #0x40000000\n  msr vbar_el1, x0\n  isb\n  udf #0\n")
    from . import guest_build

    monkey = guest_build.HERE
    guest_build.HERE = tmp_path
    try:
        broken = build("broken", tmp_path)
    finally:
        guest_build.HERE = monkey
    with pytest.raises(VmmError, match="exception vector at 0x40000200 faults"):
        run(broken, ENVS["kvm"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--sve-vl", "256"], "--sve-vl: this RMM offers realms no SVE"),
     (["--pmu-counters", "4"], "--pmu-counters: this RMM offers realms no PMU")],
)
def test_realm_features_the_rmm_does_not_offer_are_refused(guest: Guest, flags: list[str], message: str) -> None:
    from unirealm.host.vmm import VmmError

    cfg = RunConfig.from_args(run_parser().parse_args(["--realm", *flags, "-k", str(guest.image)]))
    with pytest.raises(VmmError, match=message):
        Vmm(cfg, io.BytesIO(), None)
