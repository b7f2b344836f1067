"""ukrsi: the realm's RSI driver — every RSI 1.0 command, and the helpers a unikernel needs
(detection, realm memory set-up, shared/protected conversion, attestation tokens).

Register usage follows DEN0137 1.0-rel0 (digest §1.4): X0 = FID, arguments from X1,
results from X0. 64-byte values are eight little-endian registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..arch.memory import GRANULE_SIZE
from ..arch.rsi import (
    RSI_ABI_VERSION,
    RSI_REALM_CONFIG,
    RsiFid,
    RsiResponse,
    RsiRipas,
    RsiRipasChangeFlags,
    RsiStatus,
    bytes_to_regs,
    regs_to_bytes,
    version_major,
    version_minor,
)
from ..arch.smccc import SMCCC_NOT_SUPPORTED

if TYPE_CHECKING:
    from .interfaces import Cpu


class RsiError(Exception):
    def __init__(self, command: str, status: int) -> None:
        try:
            name = RsiStatus(status).name
        except ValueError:
            name = hex(status)
        super().__init__(f"{command} returned {name}")
        self.status = status


@dataclass
class RealmConfig:
    ipa_width: int
    hash_algo: int
    rpv: bytes

    @property
    def unprotected_bit(self) -> int:
        return 1 << (self.ipa_width - 1)


class Rsi:
    """The ten RSI commands over a CPU's SMC conduit."""

    def __init__(self, cpu: Cpu) -> None:
        self.cpu = cpu

    def _call(self, fid: int, *args: int) -> list[int]:
        return self.cpu.smc(fid, *args)

    # --- raw commands -------------------------------------------------------------------
    def version(self, requested: int = RSI_ABI_VERSION) -> tuple[int, int, int]:
        """(status, lower, higher)."""
        r = self._call(RsiFid.VERSION, requested)
        return r[0], r[1], r[2]

    def features(self, index: int) -> tuple[int, int]:
        r = self._call(RsiFid.FEATURES, index)
        return r[0], r[1]

    def measurement_read(self, index: int) -> tuple[int, bytes]:
        r = self._call(RsiFid.MEASUREMENT_READ, index)
        return r[0], regs_to_bytes(r[1:9])

    def measurement_extend(self, index: int, value: bytes) -> int:
        return self._call(RsiFid.MEASUREMENT_EXTEND, index, len(value), *bytes_to_regs(value[:64]))[0]

    def attestation_token_init(self, challenge: bytes) -> tuple[int, int]:
        r = self._call(RsiFid.ATTESTATION_TOKEN_INIT, *bytes_to_regs(challenge.ljust(64, b"\0")[:64]))
        return r[0], r[1]

    def attestation_token_continue(self, granule: int, offset: int, size: int) -> tuple[int, int]:
        r = self._call(RsiFid.ATTESTATION_TOKEN_CONTINUE, granule, offset, size)
        return r[0], r[1]

    def realm_config(self, ipa: int) -> int:
        return self._call(RsiFid.REALM_CONFIG, ipa)[0]

    def ipa_state_set(self, base: int, top: int, ripas: int, flags: int) -> tuple[int, int, int]:
        r = self._call(RsiFid.IPA_STATE_SET, base, top, ripas, flags)
        return r[0], r[1], r[2]

    def ipa_state_get(self, base: int, end: int) -> tuple[int, int, int]:
        r = self._call(RsiFid.IPA_STATE_GET, base, end)
        return r[0], r[1], r[2]

    def host_call(self, ipa: int) -> int:
        return self._call(RsiFid.HOST_CALL, ipa)[0]

    # --- helpers ------------------------------------------------------------------------
    def detect(self) -> tuple[int, int] | None:
        """RSI 1.0 present? NOT_SUPPORTED from the conduit means "not a realm" (Linux's rule);
        any other failure is a version mismatch. Returns (major, minor) or None."""
        status, lower, higher = self.version()
        if status == SMCCC_NOT_SUPPORTED:
            return None
        if status != RsiStatus.SUCCESS:
            raise RsiError(f"RSI_VERSION (RMM offers {version_major(higher)}.{version_minor(higher)})", status)
        return version_major(lower), version_minor(lower)

    def read_config(self, page_ipa: int) -> RealmConfig:
        """RSI_REALM_CONFIG into a zeroed 4 KiB granule."""
        self.cpu.zero(page_ipa, GRANULE_SIZE)
        status = self.realm_config(page_ipa)
        if status != RsiStatus.SUCCESS:
            raise RsiError("RSI_REALM_CONFIG", status)
        cfg = RSI_REALM_CONFIG.unpack(self.cpu.read(page_ipa, GRANULE_SIZE))
        return RealmConfig(cfg["ipa_width"], cfg["hash_algo"], cfg["rpv"])

    def set_ripas(self, base: int, top: int, ripas: int, change_destroyed: bool = False) -> None:
        """IPA_STATE_SET over [base, top), looping on the returned base; the host must accept."""
        flags = RsiRipasChangeFlags.CHANGE_DESTROYED if change_destroyed else RsiRipasChangeFlags.NO_CHANGE_DESTROYED
        while base < top:
            status, new_base, response = self.ipa_state_set(base, top, ripas, flags)
            if status != RsiStatus.SUCCESS:
                raise RsiError("RSI_IPA_STATE_SET", status)
            if response != RsiResponse.ACCEPT:
                raise RsiError("RSI_IPA_STATE_SET (host rejected the change)", status)
            if new_base <= base:
                raise RsiError("RSI_IPA_STATE_SET (no progress)", status)
            base = new_base

    def setup_memory(self, base: int, top: int) -> None:
        """Make [base, top) realm RAM, refusing to revive DESTROYED granules (as Linux)."""
        self.set_ripas(base, top, RsiRipas.RAM, change_destroyed=False)

    def set_memory_shared(self, base: int, size: int) -> None:
        """Give granules to the host: RIPAS EMPTY (contents are lost); use them through the
        unprotected alias from now on."""
        self.set_ripas(base, base + size, RsiRipas.EMPTY, change_destroyed=True)

    def set_memory_protected(self, base: int, size: int) -> None:
        self.set_ripas(base, base + size, RsiRipas.RAM, change_destroyed=True)

    def ripas_runs(self, base: int, end: int) -> list[tuple[int, int, int]]:
        """[(base, top, ripas)] covering [base, end)."""
        runs = []
        while base < end:
            status, top, ripas = self.ipa_state_get(base, end)
            if status != RsiStatus.SUCCESS:
                raise RsiError("RSI_IPA_STATE_GET", status)
            runs.append((base, top, ripas))
            base = top
        return runs

    def attestation_token(self, challenge: bytes, buffer_ipa: int, buffer_pages: int) -> bytes:
        """INIT then CONTINUE into bounce granules, Linux's loop: per granule, offset from 0,
        size = 4096 - offset, while INCOMPLETE."""
        status, bound = self.attestation_token_init(challenge)
        if status != RsiStatus.SUCCESS:
            raise RsiError("RSI_ATTESTATION_TOKEN_INIT", status)
        if bound > buffer_pages * GRANULE_SIZE:
            raise RsiError(f"token needs {bound} bytes of buffer", RsiStatus.ERROR_INPUT)
        token = bytearray()
        for page in range(buffer_pages):
            granule = buffer_ipa + page * GRANULE_SIZE
            offset = 0
            while True:
                status, written = self.attestation_token_continue(granule, offset, GRANULE_SIZE - offset)
                offset += written
                if status == RsiStatus.SUCCESS:
                    token += self.cpu.read(granule, offset)
                    return bytes(token)
                if status != RsiStatus.INCOMPLETE:
                    raise RsiError("RSI_ATTESTATION_TOKEN_CONTINUE", status)
                if offset >= GRANULE_SIZE:
                    break
            token += self.cpu.read(granule, GRANULE_SIZE)
        raise RsiError("token larger than the buffer", RsiStatus.ERROR_INPUT)
