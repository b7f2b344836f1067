"""The RSI rows of the RMM's dispatch against the register usage DEN0137 1.0-rel0 gives each
command (B5.3; digest §3): the argument registers X1.. it reads and the result registers
X0.. it writes. The rows are built here with the table's own constructor, `_rsi`, so the
row builder is checked at run time and not only through the table made at import."""

from __future__ import annotations

import pytest

from unirealm.arch.rsi import RsiFid
from unirealm.rmm import core

# FID -> (argument registers X1.., result registers X0.. including X0), from the spec's
# command definitions.
SPEC_REGISTERS = {
    RsiFid.VERSION: (1, 3),  # X1 requested version -> X1 lower, X2 higher
    RsiFid.FEATURES: (1, 2),  # X1 index -> X1 value
    RsiFid.MEASUREMENT_READ: (1, 9),  # X1 index -> X1..X8 the measurement
    RsiFid.MEASUREMENT_EXTEND: (10, 1),  # X1 index, X2 size, X3..X10 the value
    RsiFid.ATTESTATION_TOKEN_INIT: (8, 2),  # X1..X8 the challenge -> X1 max size
    RsiFid.ATTESTATION_TOKEN_CONTINUE: (3, 2),  # X1 granule, X2 offset, X3 size -> X1 length
    RsiFid.REALM_CONFIG: (1, 1),  # X1 the RsiRealmConfig buffer
    RsiFid.IPA_STATE_SET: (4, 3),  # X1 base, X2 top, X3 RIPAS, X4 flags -> X1 new base, X2 response
    RsiFid.IPA_STATE_GET: (2, 3),  # X1 base, X2 end -> X1 top, X2 RIPAS
    RsiFid.HOST_CALL: (1, 1),  # X1 the RsiHostCall buffer
}


def handler(rmm: object, rec: object, regs: list[int]) -> list[int]:
    return regs


@pytest.mark.parametrize("fid", list(RsiFid))
def test_rsi_row_reads_and_writes_the_spec_registers(fid: RsiFid) -> None:
    row = core._rsi(fid, handler)
    assert (row.fid, row.nargs, row.nresults) == (fid, *SPEC_REGISTERS[fid])
    assert row.handler is handler
    assert isinstance(row.fid, RsiFid) and int(row.fid) == int(fid)


def test_rsi_table_rows_match_the_spec() -> None:
    assert {c.fid: (c.nargs, c.nresults) for c in core.RSI_TABLE} == SPEC_REGISTERS
    assert sorted(SPEC_REGISTERS) == sorted(RsiFid)
