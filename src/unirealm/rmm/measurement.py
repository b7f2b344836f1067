"""Realm Initial Measurement and Realm Extensible Measurements (digest §4; DEN0137 A7.1).

Pure functions over bytes, shared by the RMM (which measures as it builds a realm) and
the relying party (which predicts the RIM of a launch offline). A measurement slot is
always 64 bytes; with SHA-256 only the first 32 are meaningful and the rest stay zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from unirealm.arch.measurement import (
    HASH_LENGTHS,
    MEASUREMENT_MAX,
    data_descriptor,
    hash_bytes,
    pack_data_descriptor,
    rec_descriptor,
    ripas_descriptor,
)
from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import (
    REALM_PARAMS_MEASURED,
    REC_PARAMS_MEASURED,
    RMI_REALM_PARAMS,
    RMI_REC_PARAMS,
    RmiDataFlags,
    RmiHashAlgorithm,
)

ZERO_SLOT = bytes(MEASUREMENT_MAX)
_PAD32 = bytes(32)  # a SHA-256 digest padded to a 64-byte slot


def hash_length(algo: int) -> int:
    return HASH_LENGTHS[RmiHashAlgorithm(algo)]


def realm_create_rim(params: dict[str, object]) -> bytes:
    """RIM after REALM_CREATE: H(zero page with only the measured params copied in)."""
    page = bytearray(GRANULE_SIZE)
    RMI_REALM_PARAMS.pack_into(page, 0, **{k: params[k] for k in REALM_PARAMS_MEASURED if k in params})
    return hash_bytes(int(params["hash_algo"]), page)  # type: ignore[call-overload]


_SHA256 = hashlib.sha256
_SHA_256 = int(RmiHashAlgorithm.SHA_256)
_MEASURED = int(RmiDataFlags.MEASURED)


def extend_data(rim: bytes, algo: int, ipa: int, flags: int, content: bytes | memoryview | None) -> bytes:
    """DATA_CREATE of one granule: H(DataDescriptor(RIM, ipa, flags, H(content) or 0)).
    `content` may be a view of the granule itself: it is hashed in place."""
    if algo == _SHA_256:  # the common case without the generic dispatch: one call per granule
        # A 32-byte digest packs into its 64-byte slot zero-filled, as the slot holds it.
        content_hash = _SHA256(content).digest() if flags == _MEASURED and content is not None else ZERO_SLOT
        return _SHA256(pack_data_descriptor(rim, ipa, flags, content_hash)).digest() + _PAD32
    content_hash = hash_bytes(algo, content) if flags == RmiDataFlags.MEASURED and content is not None else ZERO_SLOT
    return hash_bytes(algo, data_descriptor(rim, ipa, flags, content_hash))


def extend_ripas(rim: bytes, algo: int, base: int, top: int) -> bytes:
    """One RTT entry converted or accepted by RTT_INIT_RIPAS: H(RipasDescriptor(RIM, base, top))."""
    return hash_bytes(algo, ripas_descriptor(rim, base, top))


def rec_params_hash(algo: int, flags: int, pc: int, gprs: list[int]) -> bytes:
    page = bytearray(GRANULE_SIZE)
    values = {"flags": flags, "pc": pc, "gprs": gprs}
    RMI_REC_PARAMS.pack_into(page, 0, **{k: values[k] for k in REC_PARAMS_MEASURED})
    return hash_bytes(algo, page)


def extend_rec(rim: bytes, algo: int, flags: int, pc: int, gprs: list[int]) -> bytes:
    """REC_CREATE of a runnable REC: H(RecDescriptor(RIM, H(measured RmiRecParams page)))."""
    return hash_bytes(algo, rec_descriptor(rim, rec_params_hash(algo, flags, pc, gprs)))


def rem_extend(rem: bytes, algo: int, value: bytes) -> bytes:
    """REM[i] = H(REM[i][0:hlen] || value[0:size]) (digest §4.4, TF-RMM behaviour)."""
    return hash_bytes(algo, rem[: hash_length(algo)] + value)


@dataclass
class MeasurementEvent:
    """One step of the RIM, for a measurement log."""

    kind: str  # "realm", "data", "ripas", "rec"
    rim: bytes  # the RIM after this step (64-byte slot)
    detail: dict[str, object] = field(default_factory=dict)


@dataclass
class RimLog:
    """A RIM computed step by step, with the log of each step."""

    algo: int
    rim: bytes = ZERO_SLOT
    events: list[MeasurementEvent] = field(default_factory=list)

    @classmethod
    def for_realm(cls, params: dict[str, object]) -> RimLog:
        log = cls(int(params["hash_algo"]))  # type: ignore[call-overload]
        log.rim = realm_create_rim(params)
        detail = {k: params[k] for k in REALM_PARAMS_MEASURED if k in params}
        log.events.append(MeasurementEvent("realm", log.rim, detail))
        return log

    def data(self, ipa: int, flags: int, content: bytes | None) -> None:
        self.rim = extend_data(self.rim, self.algo, ipa, flags, content)
        self.events.append(MeasurementEvent("data", self.rim, {"ipa": ipa, "flags": flags}))

    def ripas(self, base: int, top: int) -> None:
        self.rim = extend_ripas(self.rim, self.algo, base, top)
        self.events.append(MeasurementEvent("ripas", self.rim, {"base": base, "top": top}))

    def rec(self, flags: int, pc: int, gprs: list[int]) -> None:
        self.rim = extend_rec(self.rim, self.algo, flags, pc, gprs)
        self.events.append(MeasurementEvent("rec", self.rim, {"flags": flags, "pc": pc, "gprs": list(gprs)}))

    @property
    def digest(self) -> bytes:
        return self.rim[: hash_length(self.algo)]
