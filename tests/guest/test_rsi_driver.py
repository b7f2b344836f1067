"""The guest's RSI driver (guest/ukrsi.py) by DEN0137 1.0-rel0: in a realm on the real RMM
(tests/guest/realm_support.py), the failure conditions of RSI_IPA_STATE_SET/GET
(RSI_ERROR_INPUT for an unaligned base), RIPAS runs, the token's buffer bound and host calls;
over a scripted conduit, what the RMM's answer alone decides: the FIDs and argument
registers (X0 = FID, arguments from X1), the RIPAS change flags, the host's REJECT
and a change that makes no progress, and the token CONTINUE loop's granule/offset/size."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from unirealm.guest.kernel import Kernel
from unirealm.guest.ukrsi import Rsi, RsiError

from .realm_support import RAM_BASE, RAM_TOP, run_in_realm

GRANULE = 0x1000
# DEN0137 1.0: the SMC64 FIDs 0xC400_0190..0xC400_0199.
RSI_VERSION = 0xC400_0190
RSI_FEATURES = 0xC400_0191
RSI_MEASUREMENT_READ = 0xC400_0192
RSI_MEASUREMENT_EXTEND = 0xC400_0193
RSI_ATTESTATION_TOKEN_INIT = 0xC400_0194
RSI_ATTESTATION_TOKEN_CONTINUE = 0xC400_0195
RSI_REALM_CONFIG = 0xC400_0196
RSI_IPA_STATE_SET = 0xC400_0197
RSI_IPA_STATE_GET = 0xC400_0198
RSI_HOST_CALL = 0xC400_0199
# RsiCommandReturnCode, RsiResponse, RsiRipas, RsiRipasChangeDestroyed.
SUCCESS, ERROR_INPUT, ERROR_STATE, INCOMPLETE = 0, 1, 2, 3
ACCEPT, REJECT = 0, 1
EMPTY, RAM = 0, 1
NO_CHANGE_DESTROYED, CHANGE_DESTROYED = 0, 1


def in_realm(tmp_path: Path, fn: Any) -> Any:
    return run_in_realm(tmp_path, fn).result


# --- on the real RMM --------------------------------------------------------------------------
def test_ipa_state_set_with_an_unaligned_base_is_error_input(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> Any:
        with pytest.raises(RsiError) as exc:
            kernel.rsi.set_ripas(RAM_TOP - 2 * GRANULE + 8, RAM_TOP, RAM)
        return exc.value

    err = in_realm(tmp_path, body)
    assert err.status == ERROR_INPUT
    assert str(err) == "RSI_IPA_STATE_SET returned ERROR_INPUT"


def test_ipa_state_get_with_an_unaligned_base_is_error_input(tmp_path: Path) -> None:
    def body(kernel: Kernel) -> Any:
        with pytest.raises(RsiError) as exc:
            kernel.rsi.ripas_runs(RAM_BASE + 8, RAM_BASE + GRANULE)
        return exc.value

    err = in_realm(tmp_path, body)
    assert err.status == ERROR_INPUT
    assert str(err) == "RSI_IPA_STATE_GET returned ERROR_INPUT"


def test_ripas_runs_cover_the_range_and_follow_a_change(tmp_path: Path) -> None:
    lo, hi = RAM_TOP - 8 * GRANULE, RAM_TOP

    def body(kernel: Kernel) -> Any:
        before = kernel.rsi.ripas_runs(lo, hi)
        kernel.rsi.set_memory_shared(lo + 2 * GRANULE, 3 * GRANULE)
        after = kernel.rsi.ripas_runs(lo, hi)
        kernel.rsi.set_memory_protected(lo + 2 * GRANULE, 3 * GRANULE)
        return before, after, kernel.rsi.ripas_runs(lo, hi)

    before, after, back = in_realm(tmp_path, body)
    for runs in (before, after, back):
        assert runs[0][0] == lo and runs[-1][1] == hi
        assert all(a[1] == b[0] for a, b in pairwise(runs))  # contiguous
    assert {r[2] for r in before} == {RAM}
    covered = {}
    for base, top, ripas in after:
        for g in range(base, top, GRANULE):
            covered[g] = ripas
    assert covered == {lo + i * GRANULE: EMPTY if 2 <= i < 5 else RAM for i in range(8)}
    assert {r[2] for r in back} == {RAM}  # EMPTY -> RAM again (RSI_CHANGE_DESTROYED not needed, allowed)


def test_a_token_bound_past_the_buffer_is_refused_before_any_continue(tmp_path: Path) -> None:
    challenge = bytes(range(64))

    def body(kernel: Kernel) -> Any:
        status, bound = kernel.rsi.attestation_token_init(challenge)
        assert status == SUCCESS and bound > 0
        with pytest.raises(RsiError) as exc:
            kernel.rsi.attestation_token(challenge, RAM_TOP - GRANULE, 0)
        return bound, exc.value

    bound, err = in_realm(tmp_path, body)
    assert err.status == ERROR_INPUT
    assert str(bound) in str(err)  # the RMM's upper bound (X1 of INIT) is what the error reports


def test_the_token_from_the_rmm_fits_its_bound(tmp_path: Path) -> None:
    challenge = bytes(range(64))

    def body(kernel: Kernel) -> Any:
        _, bound = kernel.rsi.attestation_token_init(challenge)
        pages = (bound + GRANULE - 1) // GRANULE
        return bound, kernel.rsi.attestation_token(challenge, RAM_TOP - pages * GRANULE, pages)

    bound, token = in_realm(tmp_path, body)
    assert 0 < len(token) <= bound
    assert challenge in token  # the realm token's challenge claim carries the 64 bytes


def test_host_call_passes_the_ipa_in_x1(tmp_path: Path) -> None:
    ipa = RAM_TOP - GRANULE

    def body(kernel: Kernel) -> int:
        return kernel.rsi.host_call(ipa)

    run = run_in_realm(tmp_path, body)
    assert run.result == SUCCESS
    assert len(run.host_calls) == 1


# --- over a scripted conduit ------------------------------------------------------------------
class Conduit:
    """Records every SMC; answers IPA_STATE_SET with `set_answer(base, top)`, CONTINUE by copying
    `token` into `memory` at most `chunk` bytes a call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.memory: dict[int, int] = {}
        self.token = b""
        self.bound = 0
        self.chunk = GRANULE
        self.copied = 0
        self.set_answer: Any = lambda base, top: [SUCCESS, top, ACCEPT]
        self.answers: dict[int, list[int]] = {}  # fixed answers by FID
        self.config = b""  # what RSI_REALM_CONFIG writes at X1

    def _fixed(self, fid: int, args: tuple[int, ...]) -> list[int] | None:
        if fid in self.answers:
            return self.answers[fid]
        if fid == RSI_REALM_CONFIG and self.config:
            for i, byte in enumerate(self.config):
                self.memory[args[0] + i] = byte
            return [SUCCESS]
        return None

    def smc(self, fid: int, *args: int) -> list[int]:
        self.calls.append((fid, *args))
        if (fixed := self._fixed(fid, args)) is not None:
            return fixed
        if fid == RSI_IPA_STATE_SET:
            return list(self.set_answer(args[0], args[1]))
        if fid == RSI_IPA_STATE_GET:
            return [SUCCESS, args[1], RAM]
        if fid == RSI_ATTESTATION_TOKEN_INIT:
            return [SUCCESS, self.bound]
        if fid == RSI_ATTESTATION_TOKEN_CONTINUE:
            addr, offset, size = args
            n = min(size, self.chunk, len(self.token) - self.copied)
            for i in range(n):
                self.memory[addr + offset + i] = self.token[self.copied + i]
            self.copied += n
            return [SUCCESS if self.copied == len(self.token) else INCOMPLETE, n]
        if fid == RSI_VERSION:
            return [SUCCESS, 0x1_0000, 0x1_0000]
        if fid in (RSI_MEASUREMENT_READ, RSI_MEASUREMENT_EXTEND, RSI_REALM_CONFIG, RSI_HOST_CALL):
            return [SUCCESS] + [0] * 8
        raise AssertionError(f"unexpected SMC {fid:#x}")

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.memory.get(addr + i, 0) for i in range(size))

    def zero(self, addr: int, size: int) -> None:
        for i in range(size):
            self.memory[addr + i] = 0


def rsi(conduit: Conduit) -> Rsi:
    return Rsi(conduit)  # type: ignore[arg-type]


@pytest.mark.parametrize(("op", "ripas", "flags"), [
    ("setup_memory", RAM, NO_CHANGE_DESTROYED),  # Linux: never revive DESTROYED at boot
    ("set_memory_shared", EMPTY, CHANGE_DESTROYED),
    ("set_memory_protected", RAM, CHANGE_DESTROYED),
])
def test_ipa_state_set_registers(op: str, ripas: int, flags: int) -> None:
    """RSI_IPA_STATE_SET: X1 base, X2 top, X3 RIPAS, X4 flags (bit 0 RsiRipasChangeDestroyed)."""
    conduit = Conduit()
    base = 0x8000_0000
    if op == "setup_memory":
        rsi(conduit).setup_memory(base, base + 4 * GRANULE)
    else:
        getattr(rsi(conduit), op)(base, 4 * GRANULE)
    assert conduit.calls == [(RSI_IPA_STATE_SET, base, base + 4 * GRANULE, ripas, flags)]


def test_ipa_state_set_follows_new_base_until_top() -> None:
    """X1 of the answer is the new base: the change stops early, the caller continues from it."""
    conduit = Conduit()
    conduit.set_answer = lambda base, top: [SUCCESS, min(base + 3 * GRANULE, top), ACCEPT]
    base = 0x8000_0000
    rsi(conduit).set_ripas(base, base + 7 * GRANULE, EMPTY)
    assert [c[1:3] for c in conduit.calls] == [(base, base + 7 * GRANULE), (base + 3 * GRANULE, base + 7 * GRANULE),
                                               (base + 6 * GRANULE, base + 7 * GRANULE)]


@pytest.mark.parametrize(("answer", "text"), [
    ((SUCCESS, 0x8000_0000, ACCEPT), "RSI_IPA_STATE_SET (no progress) returned SUCCESS"),
    ((SUCCESS, 0x8000_0000 - GRANULE, ACCEPT), "RSI_IPA_STATE_SET (no progress) returned SUCCESS"),
    ((SUCCESS, 0x8000_0000 + GRANULE, REJECT), "RSI_IPA_STATE_SET (host rejected the change) returned SUCCESS"),
    ((ERROR_STATE, 0x8000_0000, ACCEPT), "RSI_IPA_STATE_SET returned ERROR_STATE"),
    ((9, 0x8000_0000, ACCEPT), "RSI_IPA_STATE_SET returned 0x9"),  # no such RsiCommandReturnCode
])
def test_ipa_state_set_failures(answer: tuple[int, int, int], text: str) -> None:
    conduit = Conduit()
    conduit.set_answer = lambda base, top: answer
    with pytest.raises(RsiError) as exc:
        rsi(conduit).set_ripas(0x8000_0000, 0x8000_0000 + 2 * GRANULE, EMPTY)
    assert str(exc.value) == text and exc.value.status == answer[0]
    assert len(conduit.calls) == 1


@pytest.mark.parametrize(("size", "chunk"), [(100, GRANULE), (GRANULE, GRANULE), (GRANULE + 1, 1000),
                                             (3 * GRANULE - 5, 700), (2 * GRANULE, 2 * GRANULE)])
def test_token_continue_walks_granules_and_offsets(size: int, chunk: int) -> None:
    """RSI_ATTESTATION_TOKEN_CONTINUE: X1 the granule's IPA, X2 the offset in it, X3 the size left in it; X1 of the
    answer is the bytes copied; INCOMPLETE until the last piece. Each granule is filled from
    offset 0 before the next is used."""
    conduit = Conduit()
    conduit.token = bytes((i * 7 + 3) & 0xFF for i in range(size))
    conduit.bound = 3 * GRANULE
    conduit.chunk = chunk
    buf = 0x8010_0000
    challenge = bytes(range(1, 33))
    assert rsi(conduit).attestation_token(challenge, buf, 3) == conduit.token
    init, *conts = conduit.calls
    assert init == (RSI_ATTESTATION_TOKEN_INIT, *[int.from_bytes((challenge + bytes(32))[i:i + 8], "little")
                                                  for i in range(0, 64, 8)])
    expect = []
    done = 0
    while done < size:
        granule, offset = divmod(done, GRANULE)
        expect.append((RSI_ATTESTATION_TOKEN_CONTINUE, buf + granule * GRANULE, offset, GRANULE - offset))
        done += min(chunk, GRANULE - offset, size - done)
    assert conts == expect


def test_a_token_past_the_buffer_is_an_error() -> None:
    conduit = Conduit()
    conduit.token = bytes(2 * GRANULE + 1)
    conduit.bound = 2 * GRANULE  # the RMM's bound was wrong
    with pytest.raises(RsiError) as exc:
        rsi(conduit).attestation_token(b"x", 0x8010_0000, 2)
    assert exc.value.status == ERROR_INPUT
    assert str(exc.value).startswith("token larger than the buffer")
    assert [c[1:] for c in conduit.calls[1:]] == [(0x8010_0000, 0, GRANULE), (0x8010_1000, 0, GRANULE)]


def test_a_token_bound_past_the_buffer_names_the_bound() -> None:
    conduit = Conduit()
    conduit.bound = 2 * GRANULE + 1
    with pytest.raises(RsiError) as exc:
        rsi(conduit).attestation_token(b"x", 0x8010_0000, 2)
    assert exc.value.status == ERROR_INPUT and f"{2 * GRANULE + 1} bytes" in str(exc.value)
    assert len(conduit.calls) == 1  # no CONTINUE


def test_measurement_and_config_registers() -> None:
    """RSI_MEASUREMENT_EXTEND: X1 index, X2 size, X3..X10 the value (little-endian
    doublewords); RSI_MEASUREMENT_READ: X1 index; RSI_HOST_CALL: X1 the RsiHostCall's IPA;
    RSI_VERSION: X1 the requested version."""
    conduit = Conduit()
    r = rsi(conduit)
    value = bytes(range(48))
    assert r.measurement_extend(2, value) == SUCCESS
    regs = [int.from_bytes(value.ljust(64, b"\0")[i:i + 8], "little") for i in range(0, 64, 8)]
    assert conduit.calls[-1] == (RSI_MEASUREMENT_EXTEND, 2, 48, *regs)
    r.measurement_read(3)
    assert conduit.calls[-1] == (RSI_MEASUREMENT_READ, 3)
    r.host_call(0x8000_3000)
    assert conduit.calls[-1] == (RSI_HOST_CALL, 0x8000_3000)
    r.version()
    assert conduit.calls[-1] == (RSI_VERSION, 0x1_0000)  # requested 1.0: major << 16 | minor


def test_version_and_features_results() -> None:
    """RSI_VERSION: X0 status, X1 the lower and X2 the higher revision (major << 16 | minor);
    RSI_FEATURES: X1 index in, X1 the feature register out."""
    conduit = Conduit()
    conduit.answers[RSI_VERSION] = [SUCCESS, 0x1_0000, 0x1_0002]
    conduit.answers[RSI_FEATURES] = [SUCCESS, 0xABCD]
    r = rsi(conduit)
    assert r.version() == (SUCCESS, 0x1_0000, 0x1_0002)
    assert r.features(0) == (SUCCESS, 0xABCD)
    assert conduit.calls[-1] == (RSI_FEATURES, 0)


def test_detect() -> None:
    conduit = Conduit()
    conduit.answers[RSI_VERSION] = [SUCCESS, 0x1_0000, 0x1_0001]
    assert rsi(conduit).detect() == (1, 0)  # the lower revision is the one the realm gets
    conduit.answers[RSI_VERSION] = [(1 << 64) - 1, 0, 0]  # SMCCC NOT_SUPPORTED (-1): not a realm
    assert rsi(conduit).detect() is None
    conduit.answers[RSI_VERSION] = [ERROR_INPUT, 0x2_0000, 0x2_0001]  # no 1.0 on offer
    with pytest.raises(RsiError) as exc:
        rsi(conduit).detect()
    assert exc.value.status == ERROR_INPUT
    assert str(exc.value) == "RSI_VERSION (RMM offers 2.1) returned ERROR_INPUT"


def test_read_config_layout_and_failure() -> None:
    """RsiRealmConfig: ipa_width at 0x0 (8 bytes), hash_algo at 0x8, rpv at 0x200 (64 bytes)."""
    conduit = Conduit()
    rpv = bytes(range(100, 164))
    page = bytearray(GRANULE)
    page[0:8] = (41).to_bytes(8, "little")
    page[8] = 1  # SHA-512
    page[0x200:0x240] = rpv
    conduit.config = bytes(page)
    cfg = rsi(conduit).read_config(0x8000_5000)
    assert (cfg.ipa_width, cfg.hash_algo, cfg.rpv) == (41, 1, rpv)
    assert cfg.unprotected_bit == 1 << 40
    assert conduit.calls == [(RSI_REALM_CONFIG, 0x8000_5000)]
    conduit.answers[RSI_REALM_CONFIG] = [ERROR_INPUT]
    with pytest.raises(RsiError) as exc:
        rsi(conduit).read_config(0x8000_5000)
    assert exc.value.status == ERROR_INPUT and str(exc.value) == "RSI_REALM_CONFIG returned ERROR_INPUT"


def test_the_rpv_from_the_real_rmm(tmp_path: Path) -> None:
    rpv = bytes(range(7, 71))
    run = run_in_realm(tmp_path, lambda kernel: kernel.realm, rpv=rpv)
    assert run.result.rpv == rpv and run.result.ipa_width == 33


@pytest.mark.parametrize("stage", ["init", "continue"])
def test_token_command_failures(stage: str) -> None:
    conduit = Conduit()
    conduit.bound = GRANULE
    conduit.token = bytes(10)
    fid = RSI_ATTESTATION_TOKEN_INIT if stage == "init" else RSI_ATTESTATION_TOKEN_CONTINUE
    conduit.answers[fid] = [ERROR_STATE, 0]
    with pytest.raises(RsiError) as exc:
        rsi(conduit).attestation_token(b"c", 0x8010_0000, 1)
    assert exc.value.status == ERROR_STATE
    name = "RSI_ATTESTATION_TOKEN_INIT" if stage == "init" else "RSI_ATTESTATION_TOKEN_CONTINUE"
    assert str(exc.value) == f"{name} returned ERROR_STATE"
