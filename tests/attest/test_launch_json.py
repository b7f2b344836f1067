"""attest/measure.py's launch descriptions: the realm parameters' RIM against RMI_REALM_CREATE's
measurement computed here from the spec's RmiRealmParams layout (DEN0137 B4.4.x: flags at
0x0, s2sz 0x8, sve_vl 0x10, num_bps 0x18, num_wps 0x20, pmu_num_ctrs 0x28, hash_algo 0x30,
the rest of the 4 KiB page zero), named flags, the RIPAS entry bound, and the log's text."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from unirealm.attest import measure as m


def _realm_create_rim(flags: int, s2sz: int, sve_vl: int, bps: int, wps: int, ctrs: int, algo: int) -> bytes:
    page = bytearray(4096)
    struct.pack_into("<Q", page, 0x0, flags)
    for offset, value in ((0x8, s2sz), (0x10, sve_vl), (0x18, bps), (0x20, wps), (0x28, ctrs), (0x30, algo)):
        page[offset] = value
    return (hashlib.sha256 if algo == 0 else hashlib.sha512)(bytes(page)).digest()


@pytest.mark.parametrize(("flags", "value"), [
    ([], 0), (["lpa2"], 1), (["sve"], 2), (["pmu"], 4), (["lpa2", "pmu"], 5), (["pmu", "sve", "lpa2"], 7), (6, 6),
])
def test_realm_parameters_measure_as_realm_create(flags: object, value: int) -> None:
    realm = {"s2sz": 40, "num_bps": 3, "num_wps": 2, "pmu_num_ctrs": 5, "sve_vl": 1, "flags": flags,
             "rpv": "ab" * 64}
    for algo, algo_id in (("sha256", 0), ("sha512", 1)):
        launch = m.launch_from_json({"realm": {**realm, "hash_algo": algo}})
        assert launch.params.flags == value
        log = m.measure_launch(launch)
        assert log.digest == _realm_create_rim(value, 40, 1, 3, 2, 5, algo_id)  # the RPV is not measured


def test_unknown_flag_names() -> None:
    with pytest.raises(m.LaunchError) as exc:
        m.launch_from_json({"realm": {"flags": ["lpa2", "mte"]}})
    assert str(exc.value) == "realm.flags: unknown flag 'mte' (lpa2, sve, pmu)"


def test_ripas_entry_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_RIPAS_ENTRIES entries of an explicit level: that many are measured, one
    more is refused (the bound made small here so the test lists few)."""
    monkeypatch.setattr(m, "MAX_RIPAS_ENTRIES", 4)
    base = 0x8000_0000
    assert m.ripas_entries(base, base + 4 * 4096, 1, 3, set()) == [
        (base + i * 4096, base + (i + 1) * 4096) for i in range(4)]
    with pytest.raises(m.LaunchError) as exc:
        m.ripas_entries(base, base + 5 * 4096, 1, 3, set())
    assert str(exc.value) == "ripas [0x80000000, 0x80005000) is 5 level-3 entries; at most 4 are measured"
    assert len(m.ripas_entries(0, 4 * (2 << 20), 1, 2, set())) == 4


def test_the_real_ripas_bound_is_4_gib_of_pages() -> None:
    with pytest.raises(m.LaunchError, match="is 1048577 level-3 entries; at most 1048576 are measured"):
        m.ripas_entries(0, (1 << 32) + 4096, 0, 3, set())


def test_log_text_shows_each_rim_at_the_digest_length() -> None:
    launch = m.launch_from_json({
        "realm": {"s2sz": 40, "num_bps": 1, "num_wps": 1},
        "operations": [{"op": "ripas", "base": "0x80000000", "top": "0x80002000", "level": 3},
                       {"op": "data", "ipa": "0x80000000", "content_hex": "00ff"},
                       {"op": "rec", "pc": "0x80000000", "gprs": ["0x80001000"]}]})
    for algo, size in (("sha256", 32), ("sha512", 64)):
        launch.params.hash_algo = m.HASH_ALGORITHMS[algo]
        log = m.measure_launch(launch)
        lines = m.log_to_text(log).splitlines()
        kinds = [line.split()[1] for line in lines[::2]]
        assert kinds == ["realm", "ripas", "ripas", "data", "rec"]
        rims = [line.split("-> ")[1] for line in lines[1::2]]
        assert all(len(r) == 2 * size for r in rims)
        assert rims[-1] == log.digest.hex() == m.log_to_json(log)["rim"]
        assert lines[0].startswith("   0 realm flags=0 s2sz=40 ")
        assert lines[2] == "   1 ripas base=0x80000000 top=0x80001000"


def test_load_launch_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "launch.json"
    with pytest.raises(m.LaunchError) as exc:
        m.load_launch(missing)
    assert str(exc.value).startswith(f"cannot read launch description {missing}: ")
    missing.write_text(json.dumps({"realm": {"s2sz": 40}, "operations": [
        {"op": "data", "ipa": 0x80000000, "file": "Image"}]}))
    (tmp_path / "Image").write_bytes(b"kernel")
    launch = m.load_launch(missing)
    assert launch.operations[0].content == b"kernel"  # type: ignore[union-attr]
    missing.write_text("{")
    with pytest.raises(m.LaunchError) as exc:
        m.load_launch(missing)
    assert str(exc.value).startswith(f"launch description {missing} is not valid JSON: ")
