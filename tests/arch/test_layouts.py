"""Every byte layout in unirealm.arch against offsets typed from the digest's tables
(§2.5 RMI/RSI structures, §4.2 measurement descriptors), checked by packing a distinct
value into each field and finding it at the digest's offset with the digest's width; and
the §6.3 RAK/platform binding vector from the shared tf-rmm host sample."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import cbor2
import pytest

from unirealm.arch import token as tk
from unirealm.arch.layout import Layout
from unirealm.arch.measurement import DATA_DESCRIPTOR, REC_DESCRIPTOR, RIPAS_DESCRIPTOR, data_descriptor
from unirealm.arch.rmi import (
    RMI_REALM_PARAMS,
    RMI_REC_ENTER_SPAN,
    RMI_REC_EXIT_SPAN,
    RMI_REC_PARAMS,
    RMI_REC_RUN,
)
from unirealm.arch.rsi import RSI_HOST_CALL, RSI_REALM_CONFIG
from unirealm.arch.virtio import VIRTIO_CONSOLE_CONFIG

# (field, offset, width in bytes, element count) as the digest's tables give them.
REALM_PARAMS = [  # §2.5 RmiRealmParams
    ("flags", 0x000, 8, 1),
    ("s2sz", 0x008, 1, 1),
    ("sve_vl", 0x010, 1, 1),
    ("num_bps", 0x018, 1, 1),
    ("num_wps", 0x020, 1, 1),
    ("pmu_num_ctrs", 0x028, 1, 1),
    ("hash_algo", 0x030, 1, 1),
    ("rpv", 0x400, 64, 1),
    ("vmid", 0x800, 2, 1),
    ("rtt_base", 0x808, 8, 1),
    ("rtt_level_start", 0x810, 8, 1),
    ("rtt_num_start", 0x818, 4, 1),
]
REC_PARAMS = [  # §2.5 RmiRecParams
    ("flags", 0x000, 8, 1),
    ("mpidr", 0x100, 8, 1),
    ("pc", 0x200, 8, 1),
    ("gprs", 0x300, 8, 8),
    ("num_rec_aux", 0x800, 8, 1),
    ("aux", 0x808, 8, 16),
]
_ENTER = [  # §2.5 RmiRecEnter, offsets within enter
    ("flags", 0x000, 8, 1),
    ("gprs", 0x200, 8, 31),
    ("gicv3_hcr", 0x300, 8, 1),
    ("gicv3_lrs", 0x308, 8, 16),
]
_EXIT = [  # §2.5 RmiRecExit, offsets within exit
    ("reason", 0x000, 8, 1),  # exit_reason: 8 bits in the spec, written as 64 by TF-RMM (digest §2.5)
    ("esr", 0x100, 8, 1),
    ("far", 0x108, 8, 1),
    ("hpfar", 0x110, 8, 1),
    ("gprs", 0x200, 8, 31),
    ("gicv3_hcr", 0x300, 8, 1),
    ("gicv3_lrs", 0x308, 8, 16),
    ("gicv3_misr", 0x388, 8, 1),
    ("gicv3_vmcr", 0x390, 8, 1),
    ("cntp_ctl", 0x400, 8, 1),
    ("cntp_cval", 0x408, 8, 1),
    ("cntv_ctl", 0x410, 8, 1),
    ("cntv_cval", 0x418, 8, 1),
    ("ripas_base", 0x500, 8, 1),
    ("ripas_top", 0x508, 8, 1),
    ("ripas_value", 0x510, 1, 1),
    ("imm", 0x600, 2, 1),
    ("pmu_ovf_status", 0x700, 1, 1),
]
REC_RUN = [(f"enter_{n}", off, w, c) for n, off, w, c in _ENTER] + [
    (f"exit_{n}", 0x800 + off, w, c) for n, off, w, c in _EXIT
]
REALM_CONFIG = [  # §2.5 RsiRealmConfig
    ("ipa_width", 0x000, 8, 1),
    ("hash_algo", 0x008, 1, 1),
    ("rpv", 0x200, 64, 1),
]
HOST_CALL = [  # §2.5 RsiHostCall
    ("imm", 0x000, 2, 1),
    ("gprs", 0x008, 8, 31),
]
_DESC_HEAD = [("desc_type", 0x00, 1, 1), ("len", 0x08, 8, 1), ("rim", 0x10, 64, 1)]
DATA_DESC = [*_DESC_HEAD, ("ipa", 0x50, 8, 1), ("flags", 0x58, 8, 1), ("content", 0x60, 64, 1)]  # §4.2
REC_DESC = [*_DESC_HEAD, ("content", 0x50, 64, 1)]
RIPAS_DESC = [*_DESC_HEAD, ("base", 0x50, 8, 1), ("top", 0x58, 8, 1)]

TABLES = [
    (RMI_REALM_PARAMS, 4096, REALM_PARAMS),
    (RMI_REC_PARAMS, 4096, REC_PARAMS),
    (RMI_REC_RUN, 4096, REC_RUN),
    (RSI_REALM_CONFIG, 4096, REALM_CONFIG),
    (RSI_HOST_CALL, 256, HOST_CALL),
    (DATA_DESCRIPTOR, 256, DATA_DESC),
    (REC_DESCRIPTOR, 256, REC_DESC),
    (RIPAS_DESCRIPTOR, 256, RIPAS_DESC),
]
IDS = [layout.name for layout, _, _ in TABLES]


def distinct(width: int, seed: int) -> bytes:
    """A value of `width` bytes with no zero byte, different for every seed."""
    return bytes(((seed * 37 + i * 11) % 251) + 1 for i in range(width))


@pytest.mark.parametrize(("layout", "size", "table"), TABLES, ids=IDS)
def test_fields_are_at_the_digest_offsets(layout: Layout, size: int, table: list[tuple[str, int, int, int]]) -> None:
    assert layout.size == size
    assert sorted(f.name for f in layout.fields) == sorted(n for n, _, _, _ in table)
    for name, offset, width, count in table:
        f = layout[name]
        assert f.offset == offset, name
        assert f.size == width * count, name


@pytest.mark.parametrize(("layout", "size", "table"), TABLES, ids=IDS)
def test_packed_bytes_land_at_the_digest_offsets(layout: Layout, size: int, table: list[tuple[str, int, int, int]]) -> None:
    values: dict[str, object] = {}
    expected = bytearray(size)
    for seed, (name, offset, width, count) in enumerate(table):
        raw = distinct(width * count, seed)
        if count > 1:
            values[name] = [int.from_bytes(raw[i * width : (i + 1) * width], "little") for i in range(count)]
        elif width in (1, 2, 4, 8) and name not in ("rpv",):
            value = int.from_bytes(raw, "little")
            if name == "rtt_level_start":  # signed
                value = int.from_bytes(raw, "little", signed=True)
            values[name] = value
        else:
            values[name] = raw
        expected[offset : offset + width * count] = raw
    packed = layout.pack(**values)
    assert packed == bytes(expected)  # nothing else written, every byte where the digest says
    back = layout.unpack(packed)
    assert back == values


def test_rec_exit_reason_spec_byte_is_the_low_byte() -> None:
    """The spec's 8-bit exit_reason is byte 0x800; writing it as 64 bits keeps it there."""
    page = RMI_REC_RUN.pack(exit_reason=5)
    assert page[0x800] == 5 and page[0x801:0x808] == bytes(7)
    assert RMI_REC_RUN.unpack(page)["exit_reason"] == 5


# --- §6.3 binding vector -------------------------------------------------------------------
BINDING = "0d22e08a98469058486318283489bdb36f09dbefeb1864df433fa6e54ea2d711"


@pytest.fixture(scope="module")
def tf_rmm() -> Path:
    env = os.environ.get("UNIREALM_VECTORS")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
    folder = root / "tokens" / "tf-rmm"
    if not folder.is_dir():
        pytest.skip(f"shared vectors not found at {folder} (set UNIREALM_VECTORS)")
    return folder


def test_binding_vector(tf_rmm: Path) -> None:
    point = (tf_rmm / "host-sample-rak-pub-p384-sec1.bin").read_bytes()
    assert len(point) == 97 and point[0] == 0x04
    cose_key = tk.cose_ec2_key(tk.COSE_CRV_P384, point[1:49], point[49:])
    assert len(cose_key) == 107
    assert cbor2.loads(cose_key) == {1: 2, -1: 2, -2: point[1:49], -3: point[49:]}
    assert list(cbor2.loads(cose_key)) == [1, -1, -2, -3]  # kty, crv, x, y: TF-RMM's order
    digest = hashlib.sha256(cose_key).hexdigest()
    assert digest == BINDING

    token = cbor2.loads((tf_rmm / "host-platform-token.cbor").read_bytes())
    assert isinstance(token, cbor2.CBORTag) and token.tag == 18
    claims = cbor2.loads(token.value[2])
    assert claims[10].hex() == BINDING
    assert claims[265] == "tag:arm.com,2023:cca_platform#1.0.0"


def test_compiled_layout_packs_as_the_field_by_field_pack() -> None:
    """Layout.compiled (DATA_CREATE's descriptor, packed at once) gives the very bytes the
    field-by-field pack gives, gaps zero, for every measurement descriptor and the console
    config; an array field is refused."""
    rng = random.Random(7)
    for layout in (DATA_DESCRIPTOR, RIPAS_DESCRIPTOR, VIRTIO_CONSOLE_CONFIG):
        values = {f.name: rng.randbytes(f.size) if f.fmt.endswith("s") else rng.getrandbits(8 * f.size)
                  for f in layout.fields}
        ordered = [values[f.name] for f in sorted(layout.fields, key=lambda f: f.offset)]
        assert layout.compiled().pack(*ordered) == layout.pack(**values)
        assert layout.compiled().size == layout.size
    rim, content = rng.randbytes(64), rng.randbytes(64)
    assert data_descriptor(rim, 0x8000_1000, 1, content) == DATA_DESCRIPTOR.pack(
        desc_type=0, len=0x100, rim=rim, ipa=0x8000_1000, flags=1, content=content)
    with pytest.raises(ValueError, match="array"):
        RMI_REC_PARAMS.compiled()


def test_rec_run_spans_pack_as_the_field_by_field_pack() -> None:
    """RmiRecEnter and RmiRecExit as compiled spans (the REC_ENTER hot path): the same bytes as
    the field-by-field pack of RmiRecRun, the other bytes of each half zero, short arrays
    padded with zeros, values read back as the field-by-field unpack reads them; a field
    outside a span is refused."""
    rng = random.Random(11)
    values: dict[str, object] = {}
    for f in RMI_REC_RUN.fields:
        if f.is_array:
            values[f.name] = [rng.getrandbits(64) for _ in range(rng.randrange(f.count + 1))]
        else:
            values[f.name] = rng.getrandbits(8 * f.size)
    page = RMI_REC_RUN.pack(**values)
    enter = {k: v for k, v in values.items() if k.startswith("enter_")}
    exit_ = {k: v for k, v in values.items() if k.startswith("exit_")}
    assert RMI_REC_ENTER_SPAN.pack(**enter) == page[:0x800]
    assert RMI_REC_EXIT_SPAN.pack(**exit_) == page[0x800:]
    assert RMI_REC_ENTER_SPAN.size == RMI_REC_EXIT_SPAN.size == 0x800
    whole = RMI_REC_RUN.unpack(page)
    assert RMI_REC_ENTER_SPAN.unpack(page[:0x800]) == {k: whole[k] for k in enter}
    assert RMI_REC_EXIT_SPAN.unpack(page[0x800:]) == {k: whole[k] for k in exit_}
    assert RMI_REC_EXIT_SPAN.pack() == bytes(0x800)
    with pytest.raises(KeyError, match="enter_flags"):
        RMI_REC_EXIT_SPAN.pack(exit_reason=1, enter_flags=1)
    with pytest.raises(ValueError, match="outside"):
        RMI_REC_RUN.span(["exit_reason"], 0, 0x800)
