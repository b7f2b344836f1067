"""Concatenated root tables (Arm ARM D8.2.6; digest §2.5 rtt_num_start): an IPA's root entry
is entry (IPA >> level shift) of the roots taken as one table, so in granule
index // 512, entry index % 512."""

from __future__ import annotations

from .conftest import L1, Env


def test_root_slot_of_each_concatenated_root(env: Env) -> None:
    realm = env.create_realm(40)  # level-1 roots, two of them: 1024 entries of 1 GiB
    stage2 = env.realm(realm).stage2
    base = realm.values["rtt_base"]
    assert realm.values["rtt_num_start"] == 2
    assert stage2.root_slot(0) == (base, 0)
    assert stage2.root_slot(5 * L1 + 0x1234) == (base, 5)
    assert stage2.root_slot(511 * L1) == (base, 511)
    assert stage2.root_slot(512 * L1) == (base + 4096, 0)
    assert stage2.root_slot(1023 * L1 + L1 - 1) == (base + 4096, 511)
