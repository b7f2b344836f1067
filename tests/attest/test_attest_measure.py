"""`unirealm measure`: RIM prediction from realm parameters and host operations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from unirealm.arch.rmi import RmiDataFlags, RmiHashAlgorithm
from unirealm.attest.measure import (
    DataOp,
    Launch,
    LaunchError,
    RealmParams,
    RecOp,
    RipasOp,
    launch_from_json,
    measure_launch,
    ripas_entries,
)
from unirealm.rmm.measurement import RimLog

RIM_6_1_SHA256 = "6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973"
RIM_6_1_SHA512 = (
    "799e434048fb57eb9d4f0e2a2b98158720377252deab2bdfcd69b5a8f82237f4"
    "34bd6bb1c75bf160a2d49382f733b3439a3ff769e4ea5dd9a6f72239d44bbbab"
)
PARAMS_6_1 = {"flags": 0, "s2sz": 48, "sve_vl": 0, "num_bps": 1, "num_wps": 1, "pmu_num_ctrs": 0}
Cli = Callable[..., tuple[int, str, str]]


def _write(tmp_path: Path, obj: object, name: str = "launch.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(("algo", "rim"), [("sha256", RIM_6_1_SHA256), ("sha512", RIM_6_1_SHA512)])
def test_cli_reproduces_digest_6_1(cli: Cli, tmp_path: Path, algo: str, rim: str) -> None:
    path = _write(tmp_path, {"realm": {**PARAMS_6_1, "hash_algo": algo}, "operations": []})
    status, out, _ = cli("measure", path)
    assert status == 0
    assert rim in out.splitlines()[0]
    status, out, _ = cli("measure", path, "--json")
    assert status == 0
    log = json.loads(out)
    assert log["rim"] == rim
    assert [e["kind"] for e in log["events"]] == ["realm"]


def test_data_file_is_split_into_zero_padded_granules(tmp_path: Path) -> None:
    content = bytes(range(256)) * 20  # 5120 bytes: two granules
    (tmp_path / "image.bin").write_bytes(content)
    launch = launch_from_json(
        {
            "realm": PARAMS_6_1,
            "operations": [
                {"op": "data", "ipa": "0x80000000", "file": "image.bin"},
                {"op": "data", "ipa": "0x80002000", "content_hex": "aa", "measured": False},
            ],
        },
        tmp_path,
    )
    log = measure_launch(launch)
    expected = RimLog.for_realm({**PARAMS_6_1, "hash_algo": 0})
    expected.data(0x80000000, RmiDataFlags.MEASURED, content[:4096])
    expected.data(0x80001000, RmiDataFlags.MEASURED, content[4096:].ljust(4096, b"\0"))
    expected.data(0x80002000, RmiDataFlags.UNMEASURED, None)
    assert log.digest == expected.digest
    assert [e.kind for e in log.events] == ["realm", "data", "data", "data"]


def test_operations_as_dataclasses_match_json(tmp_path: Path) -> None:
    launch = Launch(
        RealmParams(hash_algo=RmiHashAlgorithm.SHA_512),
        [
            RipasOp(0x80000000, 0x80400000, None),
            DataOp(0x80000000, b"kernel"),
            RecOp(0x80000000, [0x80200000]),
        ],
    )
    from_json = launch_from_json(
        {
            "realm": {"hash_algo": "sha512"},
            "operations": [
                {"op": "ripas", "base": 0x80000000, "top": 0x80400000, "level": "auto"},
                {"op": "data", "ipa": 0x80000000, "content_hex": b"kernel".hex()},
                {"op": "rec", "pc": "0x80000000", "gprs": ["0x80200000"]},
            ],
        },
        tmp_path,
    )
    assert measure_launch(launch).digest == measure_launch(from_json).digest
    expected = RimLog.for_realm({**PARAMS_6_1, "hash_algo": 1})
    expected.ripas(0x80000000, 0x80200000)
    expected.ripas(0x80200000, 0x80400000)
    expected.data(0x80000000, RmiDataFlags.MEASURED, b"kernel".ljust(4096, b"\0"))
    expected.rec(1, 0x80000000, [0x80200000] + [0] * 7)
    assert measure_launch(launch).digest == expected.digest


def test_non_runnable_rec_is_not_measured() -> None:
    base = measure_launch(Launch(RealmParams(), []))
    idle = measure_launch(Launch(RealmParams(), [RecOp(0x1000, [], flags=0)]))
    assert idle.digest == base.digest
    assert measure_launch(Launch(RealmParams(), [RecOp(0x1000)])).digest != base.digest


def test_ripas_auto_uses_the_largest_block_that_fits() -> None:
    gib, mib2, kib4 = 1 << 30, 1 << 21, 1 << 12
    # s2sz 48 starts at level 0: no level-0 blocks, so 1 GiB entries where aligned
    assert ripas_entries(gib, 3 * gib, 0, None, set()) == [(gib, 2 * gib), (2 * gib, 3 * gib)]
    # an unaligned top splits down to 2 MiB, then 4 KiB
    entries = ripas_entries(0, mib2 + 2 * kib4, 0, None, set())
    assert entries == [(0, mib2), (mib2, mib2 + kib4), (mib2 + kib4, mib2 + 2 * kib4)]


def test_ripas_auto_splits_where_data_was_placed() -> None:
    mib2, kib4 = 1 << 21, 1 << 12
    entries = ripas_entries(0, 2 * mib2, 0, None, {mib2})
    assert entries[0] == (0, mib2)
    assert len(entries) == 1 + 512 and all(hi - lo == kib4 for lo, hi in entries[1:])


def test_ripas_explicit_level() -> None:
    assert len(ripas_entries(0, 1 << 21, 0, 3, set())) == 512
    with pytest.raises(LaunchError, match="aligned"):
        ripas_entries(0x1000, 1 << 21, 0, 2, set())


def test_data_before_ripas_changes_the_rim() -> None:
    """The host's tables at RTT_INIT_RIPAS time change the RIM (digest §4.3 step 2)."""
    ripas, data = RipasOp(0x80000000, 0x80200000), DataOp(0x80000000, b"x")
    first = measure_launch(Launch(RealmParams(), [ripas, data]))
    after = measure_launch(Launch(RealmParams(), [data, ripas]))
    assert [e.kind for e in first.events].count("ripas") == 1
    assert [e.kind for e in after.events].count("ripas") == 512


@pytest.mark.parametrize(
    ("launch", "message"),
    [
        ({"realm": {"hash_algo": "md5"}}, "hash_algo"),
        ({"realm": {"s2sz": 300}}, "s2sz"),
        ({"realm": {"bogus": 1}}, "bogus"),
        ({"operations": [{"op": "ripas", "base": 0, "top": 4096}]}, "level"),
        ({"operations": [{"op": "ripas", "base": 0, "top": 4096, "level": 2}]}, "aligned"),
        ({"operations": [{"op": "data", "ipa": 1, "content_hex": "00"}]}, "aligned"),
        ({"operations": [{"op": "data", "ipa": 0, "file": "missing.bin"}]}, "cannot read"),
        ({"operations": [{"op": "rec", "pc": 0, "gprs": list(range(9))}]}, "gprs"),
        ({"operations": [{"op": "jump"}]}, "op must be"),
        ([], "JSON object"),
    ],
)
def test_bad_launch_files_exit_2_with_one_line(
    cli: Cli, tmp_path: Path, launch: object, message: str
) -> None:
    status, _, err = cli("measure", _write(tmp_path, launch))
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unreadable_launch_file(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert cli("measure", tmp_path / "bad.json")[0] == 2
    assert cli("measure", tmp_path / "missing.json")[0] == 2


def test_comid_output_is_the_veraison_realm_shape(cli: Cli, tmp_path: Path) -> None:
    rpv = "41" * 64
    path = _write(tmp_path, {"realm": {**PARAMS_6_1, "hash_algo": "sha256", "rpv": rpv}})
    out_path = tmp_path / "comid.json"
    assert cli("measure", path, "--comid", out_path)[0] == 0
    comid = json.loads(out_path.read_text())
    (triple,) = comid["triples"]["reference-values"]
    assert triple["environment"]["class"]["id"]["type"] == "bytes"
    keys = [m["key"]["value"] for m in triple["measurements"]]
    assert keys == ["cca.rim", "cca.rpv"]
    alg, value = triple["measurements"][0]["value"]["digests"][0]
    assert alg == 1  # sha-256 in the IANA named-information registry
    import base64

    assert base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex() == RIM_6_1_SHA256
    assert triple["measurements"][1]["value"]["raw-value"] == {
        "type": "bytes",
        "value": base64.b64encode(bytes.fromhex(rpv)).decode(),
    }
