"""`ukrsi.selftest`: every RSI command with good and bad arguments, one result line each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from ..arch.rsi import RSI_ABI_VERSION, RsiRipas, RsiStatus, version
from .loglevel import LOGLEVEL_REQUESTED

if TYPE_CHECKING:
    from .interfaces import Kernel


def run_selftest(kernel: Kernel) -> None:
    rsi = kernel.rsi
    if kernel.realm is None:
        kernel.log("ukrsi.selftest: not a realm, skipped", level=LOGLEVEL_REQUESTED)
        return
    page = kernel.pages.alloc(2)
    other = page + GRANULE_SIZE
    results: list[bool] = []

    def check(label: str, got: int, want: int) -> None:
        ok = got == want
        results.append(ok)
        try:
            name = RsiStatus(got).name
        except ValueError:
            name = hex(got)
        kernel.log(f"ukrsi.selftest: {label} -> {name} [{'ok' if ok else 'FAIL, expected ' + RsiStatus(want).name}]",
                   level=LOGLEVEL_REQUESTED)

    check("RSI_VERSION(1.0)", rsi.version(RSI_ABI_VERSION)[0], RsiStatus.SUCCESS)
    check("RSI_VERSION(2.0)", rsi.version(version(2, 0))[0], RsiStatus.ERROR_INPUT)
    check("RSI_FEATURES(0)", rsi.features(0)[0], RsiStatus.SUCCESS)
    check("RSI_MEASUREMENT_READ(RIM)", rsi.measurement_read(0)[0], RsiStatus.SUCCESS)
    check("RSI_MEASUREMENT_READ(5)", rsi.measurement_read(5)[0], RsiStatus.ERROR_INPUT)
    check("RSI_MEASUREMENT_EXTEND(REM3, 32 B)", rsi.measurement_extend(4, bytes(range(32))), RsiStatus.SUCCESS)
    check("RSI_MEASUREMENT_EXTEND(RIM)", rsi.measurement_extend(0, b"x"), RsiStatus.ERROR_INPUT)
    check("RSI_REALM_CONFIG(granule)", rsi.realm_config(page), RsiStatus.SUCCESS)
    check("RSI_REALM_CONFIG(unaligned)", rsi.realm_config(page + 8), RsiStatus.ERROR_INPUT)
    status, _, ripas = rsi.ipa_state_get(page, page + GRANULE_SIZE)
    check("RSI_IPA_STATE_GET(RAM granule)", status if ripas == RsiRipas.RAM else -1, RsiStatus.SUCCESS)
    check("RSI_IPA_STATE_GET(unaligned)", rsi.ipa_state_get(page + 1, page + GRANULE_SIZE)[0], RsiStatus.ERROR_INPUT)
    check("RSI_IPA_STATE_SET(RAM, RAM granule)", rsi.ipa_state_set(page, other, RsiRipas.RAM, 0)[0], RsiStatus.SUCCESS)
    check("RSI_IPA_STATE_SET(ripas 3)", rsi.ipa_state_set(page, other, 3, 0)[0], RsiStatus.ERROR_INPUT)
    kernel.cpu.zero(other, 256)
    check("RSI_HOST_CALL(aligned)", rsi.host_call(other), RsiStatus.SUCCESS)
    check("RSI_HOST_CALL(unaligned)", rsi.host_call(other + 8), RsiStatus.ERROR_INPUT)
    check("RSI_ATTESTATION_TOKEN_CONTINUE(unaligned)", rsi.attestation_token_continue(page + 8, 0, 8)[0],
          RsiStatus.ERROR_INPUT)
    check("RSI_ATTESTATION_TOKEN_INIT", rsi.attestation_token_init(bytes(64))[0], RsiStatus.SUCCESS)
    status = RsiStatus.INCOMPLETE
    offset = 0
    while status == RsiStatus.INCOMPLETE and offset < GRANULE_SIZE:
        status, n = rsi.attestation_token_continue(page, offset, GRANULE_SIZE - offset)
        offset += n
    check("RSI_ATTESTATION_TOKEN_CONTINUE(to the end)", status, RsiStatus.SUCCESS)
    check("RSI_ATTESTATION_TOKEN_CONTINUE(after the end)", rsi.attestation_token_continue(page, 0, 8)[0],
          RsiStatus.ERROR_STATE)
    # Shared/protected conversion: contents never survive it, in either direction.
    kernel.cpu.write(page, b"protected data")
    rsi.set_memory_shared(page, GRANULE_SIZE)
    alias = page | kernel.realm.unprotected_bit
    kernel.cpu.write(alias, b"shared with the host")
    shared_ok = kernel.cpu.read(alias, 20) == b"shared with the host"
    _, _, ripas = rsi.ipa_state_get(page, page + GRANULE_SIZE)
    check("set_memory_shared: RIPAS EMPTY, alias usable", RsiStatus.SUCCESS if shared_ok and ripas == RsiRipas.EMPTY
          else RsiStatus.ERROR_STATE, RsiStatus.SUCCESS)
    rsi.set_memory_protected(page, GRANULE_SIZE)
    _, _, ripas = rsi.ipa_state_get(page, page + GRANULE_SIZE)
    fresh = kernel.cpu.read(page, 20) == bytes(20)
    check("set_memory_protected: RIPAS RAM, contents gone", RsiStatus.SUCCESS if fresh and ripas == RsiRipas.RAM
          else RsiStatus.ERROR_STATE, RsiStatus.SUCCESS)
    kernel.pages.release(page, 2)
    kernel.log(f"ukrsi.selftest: {sum(results)} passed, {len(results) - sum(results)} failed", level=LOGLEVEL_REQUESTED)
