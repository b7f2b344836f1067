"""Measurement descriptors hashed into the RIM (digest §4.2; TF-RMM measurement_descs.h).

Each descriptor is 256 bytes, zero-filled, little-endian, and carries the current RIM
(hash-length bytes, zero-padded to 64) at 0x10.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import IntEnum
from functools import partial

from .layout import Field, Layout
from .rmi import RmiHashAlgorithm


class MeasurementDescriptorType(IntEnum):
    DATA = 0x0
    REC = 0x1
    RIPAS = 0x2


DESCRIPTOR_SIZE = 0x100
MEASUREMENT_MAX = 64

DATA_DESCRIPTOR = Layout(
    "RmmMeasurementDescriptorData",
    "DEN0137 1.0-rel0 A7.1.1 Realm Initial Measurement (digest §4.2)",
    DESCRIPTOR_SIZE,
    (
        Field("desc_type", 0x00, "B"),
        Field("len", 0x08, "Q"),
        Field("rim", 0x10, "64s"),
        Field("ipa", 0x50, "Q"),
        Field("flags", 0x58, "Q"),
        Field("content", 0x60, "64s"),
    ),
)

REC_DESCRIPTOR = Layout(
    "RmmMeasurementDescriptorRec",
    "DEN0137 1.0-rel0 A7.1.1 Realm Initial Measurement (digest §4.2)",
    DESCRIPTOR_SIZE,
    (
        Field("desc_type", 0x00, "B"),
        Field("len", 0x08, "Q"),
        Field("rim", 0x10, "64s"),
        Field("content", 0x50, "64s"),
    ),
)

RIPAS_DESCRIPTOR = Layout(
    "RmmMeasurementDescriptorRipas",
    "DEN0137 1.0-rel0 A7.1.1 Realm Initial Measurement (digest §4.2)",
    DESCRIPTOR_SIZE,
    (
        Field("desc_type", 0x00, "B"),
        Field("len", 0x08, "Q"),
        Field("rim", 0x10, "64s"),
        Field("base", 0x50, "Q"),
        Field("top", 0x58, "Q"),
    ),
)

HASH_NAMES = {RmiHashAlgorithm.SHA_256: "sha-256", RmiHashAlgorithm.SHA_512: "sha-512"}
HASH_LENGTHS = {RmiHashAlgorithm.SHA_256: 32, RmiHashAlgorithm.SHA_512: 64}


def hash_bytes(algo: int, data: bytes | bytearray | memoryview) -> bytes:
    """H(data) with the realm's algorithm, zero-padded to 64 bytes (a measurement slot)."""
    if algo == RmiHashAlgorithm.SHA_256:
        digest = hashlib.sha256(data).digest()
    elif algo == RmiHashAlgorithm.SHA_512:
        digest = hashlib.sha512(data).digest()
    else:
        raise ValueError(f"unknown measurement algorithm {algo}")
    return digest.ljust(MEASUREMENT_MAX, b"\0")


_DATA_DESCRIPTOR_STRUCT = DATA_DESCRIPTOR.compiled()  # desc_type, len, rim, ipa, flags, content


_DATA_DESCRIPTOR_PACK = _DATA_DESCRIPTOR_STRUCT.pack
_DESC_TYPE_DATA = int(MeasurementDescriptorType.DATA)


# data_descriptor(rim, ipa, flags, content_hash) as one C call, the constant fields bound:
# DATA_CREATE builds one per granule.
pack_data_descriptor: Callable[[bytes, int, int, bytes], bytes] = partial(
    _DATA_DESCRIPTOR_PACK, _DESC_TYPE_DATA, DESCRIPTOR_SIZE
)


def data_descriptor(rim: bytes, ipa: int, flags: int, content_hash: bytes) -> bytes:
    """Packed at once (pack_data_descriptor). `rim` and `content_hash` may be shorter than
    their 64-byte slots (a SHA-256 digest): the packing zero-fills the rest."""
    return pack_data_descriptor(rim, ipa, flags, content_hash)


def rec_descriptor(rim: bytes, rec_params_hash: bytes) -> bytes:
    return REC_DESCRIPTOR.pack(
        desc_type=MeasurementDescriptorType.REC, len=DESCRIPTOR_SIZE, rim=rim, content=rec_params_hash
    )


def ripas_descriptor(rim: bytes, base: int, top: int) -> bytes:
    return RIPAS_DESCRIPTOR.pack(
        desc_type=MeasurementDescriptorType.RIPAS, len=DESCRIPTOR_SIZE, rim=rim, base=base, top=top
    )
