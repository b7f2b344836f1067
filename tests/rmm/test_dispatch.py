"""The dispatch tables and the RMM's module layering: dispatch above, handlers in the
middle, granule/realm/RTT objects below, imports one way and none inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from unirealm.arch.rmi import RMI_ARGS, RMI_RESULTS, RmiFid
from unirealm.arch.rsi import RsiFid
from unirealm.rmm import core

RMM_DIR = Path(core.__file__).parent
# A module may import only modules of a lower rank: no cycle can form.
LAYERS = {
    "core": 6,  # dispatch
    "rmi": 5, "rsi": 5, "psci": 5,  # handlers
    "run": 4, "attestation": 4,
    "state": 3, "sysreg": 3, "realm": 2, "rtt": 1, "vgic": 1, "s2tte": 0, "measurement": 0,  # objects
}


def test_every_rmi_command_has_one_row_with_the_abi_counts() -> None:
    assert sorted(c.fid for c in core.RMI_TABLE) == sorted(RmiFid)
    for c in core.RMI_TABLE:
        assert c.nargs == len(RMI_ARGS[c.fid])
        assert c.nresults == len(RMI_RESULTS.get(c.fid, ())) <= core.RMI_RESULT_REGS


def test_every_rsi_command_has_one_row() -> None:
    assert sorted(c.fid for c in core.RSI_TABLE) == sorted(RsiFid)
    assert {c.fid: c.nargs for c in core.RSI_TABLE}[RsiFid.MEASUREMENT_EXTEND] == 10


def _relative_imports(path: Path) -> tuple[set[str], list[int]]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    nested: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(a.name for a in node.names)
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            nested += [n.lineno for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
    return names, nested


def test_rmm_modules_import_only_downwards_and_never_inside_functions() -> None:
    for path in sorted(RMM_DIR.glob("*.py")):
        if path.stem == "__init__":
            continue
        names, nested = _relative_imports(path)
        assert not nested, f"{path.name}: import inside a function at lines {nested}"
        for name in names:
            assert LAYERS[name] < LAYERS[path.stem], f"{path.name} imports {name}, not a layer below it"
