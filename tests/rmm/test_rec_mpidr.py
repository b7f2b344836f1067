"""REC MPIDRs (digest §3, RmiRecMpidr: Aff0 [3:0], Aff1 [15:8], Aff2 [23:16], Aff3 [31:24]):
the REC index an MPIDR names and back, and the MPIDR_EL1 a REC's vCPU reads (Aff3 at
[39:32])."""

from __future__ import annotations

import pytest

from unirealm.rmm.realm import mpidr_to_rec_index, rec_index_to_mpidr, rec_mpidr_to_mpidr


@pytest.mark.parametrize(("index", "mpidr"), [
    (0, 0), (15, 0xF), (16, 0x100), (17, 0x101), (0xFFF, 0xFF0F), (0x1000, 0x1_0000),
    (0x12345, 0x12_3405), (0x100000, 0x100_0000), (0xFFFFFFF, 0xFFFF_FF0F),
])
def test_index_and_mpidr_are_inverse(index: int, mpidr: int) -> None:
    assert rec_index_to_mpidr(index) == mpidr
    assert mpidr_to_rec_index(mpidr) == index


@pytest.mark.parametrize(("rec_mpidr", "mpidr_el1"), [
    (0, 0), (0x0F, 0x0F), (0x12_3405, 0x12_3405), (0xAB00_0001, 0xAB_0000_0001), (0xFFFF_FF0F, 0xFF_00FF_FF0F),
])
def test_rec_mpidr_to_mpidr_el1_moves_aff3(rec_mpidr: int, mpidr_el1: int) -> None:
    assert rec_mpidr_to_mpidr(rec_mpidr) == mpidr_el1


@pytest.mark.parametrize("mpidr", [0x10, 0x11, 0x1F, 0xFF, 0x1_0010, 1 << 32, 0xFF_0000_0000])
def test_mpidr_outside_rmirecmpidr_names_no_rec(mpidr: int) -> None:
    """Aff0 above 15 or anything above bit 31 is not an RmiRecMpidr: no REC index."""
    assert mpidr_to_rec_index(mpidr) < 0
