"""Realm Services Interface, DEN0137 1.0-rel0 (digest §1.3, §1.4, §2.5; TF-RMM smc-rsi.h).

The ABI a realm uses to talk to the RMM: function IDs, return codes, enums and the two
in-memory structures (RsiRealmConfig, RsiHostCall).
"""

from __future__ import annotations

from enum import IntEnum

from .layout import Field, Layout


def version(major: int, minor: int) -> int:
    """Version word: bit31 = 0, major in [30:16], minor in [15:0] (digest §1.2)."""
    return ((major & 0x7FFF) << 16) | (minor & 0xFFFF)


def version_major(word: int) -> int:
    return (word >> 16) & 0x7FFF


def version_minor(word: int) -> int:
    return word & 0xFFFF


RSI_ABI_VERSION = version(1, 0)


class RsiFid(IntEnum):
    VERSION = 0xC400_0190
    FEATURES = 0xC400_0191
    MEASUREMENT_READ = 0xC400_0192
    MEASUREMENT_EXTEND = 0xC400_0193
    ATTESTATION_TOKEN_INIT = 0xC400_0194
    ATTESTATION_TOKEN_CONTINUE = 0xC400_0195
    REALM_CONFIG = 0xC400_0196
    IPA_STATE_SET = 0xC400_0197
    IPA_STATE_GET = 0xC400_0198
    HOST_CALL = 0xC400_0199


RSI_FNUM_FIRST = 0x190
RSI_FNUM_LAST = 0x1AF


class RsiStatus(IntEnum):
    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_STATE = 2
    INCOMPLETE = 3
    ERROR_UNKNOWN = 4


class RsiHashAlgorithm(IntEnum):
    SHA_256 = 0
    SHA_512 = 1


class RsiRipas(IntEnum):
    EMPTY = 0
    RAM = 1
    DESTROYED = 2


class RsiRipasChangeFlags(IntEnum):
    """IPA_STATE_SET X4 bit 0 (RsiRipasChangeDestroyed)."""

    NO_CHANGE_DESTROYED = 0
    CHANGE_DESTROYED = 1


class RsiResponse(IntEnum):
    ACCEPT = 0
    REJECT = 1


MEASUREMENT_SLOTS = 5  # 0 = RIM, 1..4 = REM0..REM3
MAX_MEASUREMENT_SIZE = 64
CHALLENGE_SIZE = 64
RPV_SIZE = 64

# RsiRealmConfig, one 4 KiB granule (digest §2.5).
RSI_REALM_CONFIG = Layout(
    "RsiRealmConfig",
    "DEN0137 1.0-rel0, RsiRealmConfig type (digest §2.5)",
    4096,
    (
        Field("ipa_width", 0x000, "Q"),
        Field("hash_algo", 0x008, "B"),
        Field("rpv", 0x200, "64s"),
    ),
)

# RsiHostCall, 256 bytes, 256-byte aligned inside one granule (digest §2.5).
RSI_HOST_CALL = Layout(
    "RsiHostCall",
    "DEN0137 1.0-rel0, RsiHostCall type (digest §2.5)",
    256,
    (
        Field("imm", 0x000, "H"),
        Field("gprs", 0x008, "31Q"),
    ),
)
RSI_HOST_CALL_ALIGN = 256


def regs_to_bytes(regs: list[int] | tuple[int, ...]) -> bytes:
    """64-byte values travel as little-endian 64-bit words: byte 0 is bits [7:0] of the first
    register (digest §1.4, "Byte order")."""
    return b"".join((r & ((1 << 64) - 1)).to_bytes(8, "little") for r in regs)


def bytes_to_regs(data: bytes, count: int = 8) -> list[int]:
    data = data.ljust(count * 8, b"\0")
    return [int.from_bytes(data[i * 8 : i * 8 + 8], "little") for i in range(count)]

RSI_ARGS: dict[RsiFid, tuple[str, ...]] = {
    RsiFid.VERSION: ("req",),
    RsiFid.FEATURES: ("index",),
    RsiFid.MEASUREMENT_READ: ("index",),
    RsiFid.MEASUREMENT_EXTEND: ("index", "size", "value0", "value1", "value2", "value3", "value4", "value5", "value6", "value7"),
    RsiFid.ATTESTATION_TOKEN_INIT: tuple(f"challenge{i}" for i in range(8)),
    RsiFid.ATTESTATION_TOKEN_CONTINUE: ("granule", "offset", "size"),
    RsiFid.REALM_CONFIG: ("config",),
    RsiFid.IPA_STATE_SET: ("base", "top", "ripas", "flags"),
    RsiFid.IPA_STATE_GET: ("base", "end"),
    RsiFid.HOST_CALL: ("host_call",),
}
RSI_RESULTS: dict[RsiFid, tuple[str, ...]] = {
    RsiFid.VERSION: ("lower", "higher"),
    RsiFid.FEATURES: ("value",),
    RsiFid.MEASUREMENT_READ: tuple(f"value{i}" for i in range(8)),
    RsiFid.ATTESTATION_TOKEN_INIT: ("max_size",),
    RsiFid.ATTESTATION_TOKEN_CONTINUE: ("len",),
    RsiFid.IPA_STATE_SET: ("new_base", "response"),
    RsiFid.IPA_STATE_GET: ("top", "ripas"),
}
