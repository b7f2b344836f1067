"""Predict the RIM of a realm launch offline (digest §4.3), from realm parameters and the
host's list of RMI operations, reusing `unirealm.rmm.measurement.RimLog`.

Callers build a `Launch` (parameters + a list of `DataOp` / `RipasOp` / `RecOp`) directly,
or read one from JSON with `launch_from_json`:

    {"realm": {"s2sz": 48, "hash_algo": "sha256", "num_bps": 1, "num_wps": 1,
               "pmu_num_ctrs": 0, "sve_vl": 0, "flags": 0, "rpv": "<hex, optional>"},
     "operations": [
        {"op": "ripas", "base": "0x80000000", "top": "0x90000000", "level": "auto"},
        {"op": "data", "ipa": "0x80000000", "file": "Image", "measured": true},
        {"op": "rec", "flags": 1, "pc": "0x80000000", "gprs": ["0x88000000"]}]}

Numbers may be JSON integers or "0x" strings; a data `file` is relative to the JSON file
(or give `content_hex`). Operations are measured in the order given.

RIPAS block sizes. RMI_RTT_INIT_RIPAS extends the RIM once per RTT entry, of the size of
the level where the RTT walk ends (digest §4.3 step 2), so the host's tables matter.
`"level": 1|2|3` says every entry of the range is at that level (base and top must be
aligned to it). `"level": "auto"` derives the entries the way a host that creates tables
only when it must would leave them:
  * a table exists at the start level (the concatenated root tables);
  * an entry is split into a next-level table when it is not wholly inside [base, top)
    (the host gets RMI_ERROR_RTT and creates the table, as Linux KVM does), when it is at
    level 0 (no level-0 blocks), or when a DATA granule created by an earlier operation
    lies inside it (DATA_CREATE needs a level-3 table, and all the tables above it);
  * otherwise the entry is used as it is: the largest aligned block that fits.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirealm.arch.memory import (
    GRANULE_SIZE,
    RTT_MIN_BLOCK_LEVEL,
    RTT_PAGE_LEVEL,
    default_start_level,
    level_size,
)
from unirealm.arch.rmi import RmiDataFlags, RmiHashAlgorithm, RmiRealmFlags, RmiRecFlags
from unirealm.attest.inputs import DATA_LIMIT, InputError, load_json, read_bounded
from unirealm.rmm.measurement import RimLog

HASH_ALGORITHMS = {
    "sha256": RmiHashAlgorithm.SHA_256,
    "sha-256": RmiHashAlgorithm.SHA_256,
    "sha512": RmiHashAlgorithm.SHA_512,
    "sha-512": RmiHashAlgorithm.SHA_512,
}
REALM_FLAG_NAMES = {"lpa2": RmiRealmFlags.LPA2, "sve": RmiRealmFlags.SVE, "pmu": RmiRealmFlags.PMU}
MAX_GPRS = 8  # RmiRecParams.gprs[0..7]
MAX_RIPAS_ENTRIES = 1 << 20  # RTT entries one ripas operation may measure (4 GiB at level 3)


class LaunchError(ValueError):
    """A launch description that cannot be measured; the message says which field."""


@dataclass
class RealmParams:
    """The measured fields of RmiRealmParams (digest §4.3 step 1), plus the unmeasured RPV."""

    s2sz: int = 48
    hash_algo: RmiHashAlgorithm = RmiHashAlgorithm.SHA_256
    num_bps: int = 1  # count - 1 (rel0 encoding)
    num_wps: int = 1  # count - 1
    pmu_num_ctrs: int = 0
    sve_vl: int = 0
    flags: int = 0
    rpv: bytes = bytes(64)

    def measured(self) -> dict[str, object]:
        return {
            "flags": self.flags,
            "s2sz": self.s2sz,
            "sve_vl": self.sve_vl,
            "num_bps": self.num_bps,
            "num_wps": self.num_wps,
            "pmu_num_ctrs": self.pmu_num_ctrs,
            "hash_algo": int(self.hash_algo),
        }


@dataclass
class DataOp:
    """RMI_DATA_CREATE of `content`, split into 4 KiB granules (the last zero-padded)."""

    ipa: int
    content: bytes
    measured: bool = True


@dataclass
class RipasOp:
    """RMI_RTT_INIT_RIPAS over [base, top); `level` None derives the entries (see module doc)."""

    base: int
    top: int
    level: int | None = None


@dataclass
class RecOp:
    """RMI_REC_CREATE; only a runnable REC is measured."""

    pc: int
    gprs: list[int] = field(default_factory=list)
    flags: int = RmiRecFlags.RUNNABLE


Operation = DataOp | RipasOp | RecOp


@dataclass
class Launch:
    params: RealmParams
    operations: list[Operation] = field(default_factory=list)


def _granules(op: DataOp) -> list[tuple[int, bytes]]:
    content = op.content or bytes(GRANULE_SIZE)  # an empty file still takes one granule
    return [
        (op.ipa + off, content[off : off + GRANULE_SIZE].ljust(GRANULE_SIZE, b"\0"))
        for off in range(0, len(content), GRANULE_SIZE)
    ]


def ripas_entries(
    base: int, top: int, start_level: int, level: int | None, data_granules: set[int]
) -> list[tuple[int, int]]:
    """The (base, top) of each RTT entry RTT_INIT_RIPAS measures over [base, top)."""
    if level is not None:
        if not max(start_level, RTT_MIN_BLOCK_LEVEL) <= level <= RTT_PAGE_LEVEL:
            raise LaunchError(f"ripas level {level} is not a block level below the start level {start_level}")
        size = level_size(level)
        if base % size or top % size:
            raise LaunchError(f"ripas [{base:#x}, {top:#x}) is not aligned to level {level} ({size:#x})")
        if (top - base) // size > MAX_RIPAS_ENTRIES:
            raise LaunchError(
                f"ripas [{base:#x}, {top:#x}) is {(top - base) // size} level-{level} entries;"
                f" at most {MAX_RIPAS_ENTRIES} are measured"
            )
        return [(a, a + size) for a in range(base, top, size)]

    granules = sorted(data_granules)

    def has_data(lo: int, hi: int) -> bool:
        i = bisect_left(granules, lo)
        return i < len(granules) and granules[i] < hi

    entries: list[tuple[int, int]] = []
    addr = base
    while addr < top:
        lvl = start_level
        while True:
            size = level_size(lvl)
            block = addr - addr % size
            usable = (
                block == addr
                and addr + size <= top
                and lvl >= RTT_MIN_BLOCK_LEVEL
                and (lvl == RTT_PAGE_LEVEL or not has_data(block, block + size))
            )
            if usable or lvl == RTT_PAGE_LEVEL:
                break
            lvl += 1
        entries.append((addr, addr + size))
        addr += size
    return entries


def measure_launch(launch: Launch) -> RimLog:
    """Run the launch's operations through the RIM and return the log."""
    params = launch.params
    log = RimLog.for_realm(params.measured())
    start_level = default_start_level(params.s2sz)
    data_granules: set[int] = set()
    for i, op in enumerate(launch.operations):
        if isinstance(op, DataOp):
            if op.ipa % GRANULE_SIZE:
                raise LaunchError(f"operations[{i}]: data ipa {op.ipa:#x} is not 4 KiB aligned")
            flags = RmiDataFlags.MEASURED if op.measured else RmiDataFlags.UNMEASURED
            for ipa, granule in _granules(op):
                log.data(ipa, flags, granule)
                data_granules.add(ipa)
        elif isinstance(op, RipasOp):
            if op.base % GRANULE_SIZE or op.top % GRANULE_SIZE or op.top <= op.base:
                raise LaunchError(
                    f"operations[{i}]: ripas [{op.base:#x}, {op.top:#x}) is not a granule range"
                )
            if op.top > 1 << (params.s2sz - 1):
                raise LaunchError(
                    f"operations[{i}]: ripas top {op.top:#x} is outside the protected IPA space"
                )
            for lo, hi in ripas_entries(op.base, op.top, start_level, op.level, data_granules):
                try:
                    log.ripas(lo, hi)
                except TypeError as exc:  # a descriptor-packing fault must not end in a traceback
                    raise LaunchError(f"operations[{i}]: cannot build the RIPAS descriptor ({exc})") from None
        elif isinstance(op, RecOp):
            if len(op.gprs) > MAX_GPRS:
                raise LaunchError(f"operations[{i}]: a REC takes at most {MAX_GPRS} gprs")
            if op.flags & RmiRecFlags.RUNNABLE:
                log.rec(op.flags, op.pc, list(op.gprs) + [0] * (MAX_GPRS - len(op.gprs)))
        else:
            raise LaunchError(f"operations[{i}]: unknown operation {op!r}")
    return log


# --- JSON ---------------------------------------------------------------------------------
def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise LaunchError(f"{what}: expected an integer")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        try:
            result = int(value, 0)
        except ValueError:
            shown = value if len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
            raise LaunchError(f"{what}: {shown!r} is not an integer") from None
    else:
        raise LaunchError(f"{what}: expected an integer")
    if result < 0:
        raise LaunchError(f"{what}: must not be negative")
    return result


def _bounded(value: Any, what: str, bits: int) -> int:
    result = _int(value, what)
    if result >> bits:
        raise LaunchError(f"{what}: {result} does not fit in {bits} bits")
    return result


def _params(obj: Any) -> RealmParams:
    if not isinstance(obj, dict):
        raise LaunchError("realm: expected an object")
    known = {"s2sz", "hash_algo", "num_bps", "num_wps", "pmu_num_ctrs", "sve_vl", "flags", "rpv"}
    if unknown := sorted(set(obj) - known):
        raise LaunchError(f"realm: unknown field(s) {', '.join(unknown)}")
    p = RealmParams()
    algo = obj.get("hash_algo", "sha256")
    if algo not in HASH_ALGORITHMS:
        raise LaunchError(f"realm.hash_algo: {algo!r} is not sha256 or sha512")
    p.hash_algo = HASH_ALGORITHMS[algo]
    for name in ("s2sz", "num_bps", "num_wps", "pmu_num_ctrs", "sve_vl"):
        if name in obj:
            setattr(p, name, _bounded(obj[name], f"realm.{name}", 8))
    if not 32 <= p.s2sz <= 52:
        raise LaunchError(f"realm.s2sz: {p.s2sz} is outside 32..52")
    flags = obj.get("flags", 0)
    if isinstance(flags, list):
        p.flags = 0
        for name in flags:
            if name not in REALM_FLAG_NAMES:
                raise LaunchError(f"realm.flags: unknown flag {name!r} (lpa2, sve, pmu)")
            p.flags |= REALM_FLAG_NAMES[name]
    else:
        p.flags = _bounded(flags, "realm.flags", 64)
    if "rpv" in obj:
        try:
            rpv = bytes.fromhex(str(obj["rpv"]))
        except ValueError:
            raise LaunchError("realm.rpv: not a hex string") from None
        if len(rpv) > 64:
            raise LaunchError("realm.rpv: longer than 64 bytes")
        p.rpv = rpv.ljust(64, b"\0")
    return p


def _operation(obj: Any, i: int, base_dir: Path) -> Operation:
    where = f"operations[{i}]"
    if not isinstance(obj, dict):
        raise LaunchError(f"{where}: expected an object")
    kind = obj.get("op")
    fields = {"data": {"ipa", "file", "content_hex", "measured"}, "ripas": {"base", "top", "level"},
              "rec": {"pc", "gprs", "flags", "runnable"}}  # fmt: skip
    if kind not in fields:
        raise LaunchError(f"{where}: op must be data, ripas or rec")
    if unknown := sorted(set(obj) - fields[kind] - {"op"}):
        raise LaunchError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if kind == "data":
        if ("file" in obj) == ("content_hex" in obj):
            raise LaunchError(f"{where}: give exactly one of file, content_hex")
        if "file" in obj:
            path = base_dir / str(obj["file"])
            try:
                content = read_bounded(path, DATA_LIMIT, "data file")
            except InputError as exc:
                raise LaunchError(f"{where}: {exc}") from None
        else:
            try:
                content = bytes.fromhex(str(obj["content_hex"]))
            except ValueError:
                raise LaunchError(f"{where}: content_hex is not hex") from None
        measured = obj.get("measured", True)
        if not isinstance(measured, bool):
            raise LaunchError(f"{where}: measured must be true or false")
        return DataOp(_int(obj.get("ipa"), f"{where}.ipa"), content, measured)
    if kind == "ripas":
        if "level" not in obj:
            raise LaunchError(f'{where}: give the RTT level of the entries: 1, 2, 3 or "auto"')
        level = obj["level"]
        if level != "auto" and level not in (1, 2, 3):
            raise LaunchError(f'{where}: level must be 1, 2, 3 or "auto"')
        return RipasOp(
            _int(obj.get("base"), f"{where}.base"),
            _int(obj.get("top"), f"{where}.top"),
            None if level == "auto" else int(level),
        )
    gprs = obj.get("gprs", [])
    if not isinstance(gprs, list):
        raise LaunchError(f"{where}.gprs: expected an array")
    flags = _bounded(obj.get("flags", RmiRecFlags.RUNNABLE), f"{where}.flags", 64)
    if "runnable" in obj:
        flags = (flags | RmiRecFlags.RUNNABLE) if obj["runnable"] else (flags & ~RmiRecFlags.RUNNABLE)
    return RecOp(
        _int(obj.get("pc"), f"{where}.pc"),
        [_bounded(g, f"{where}.gprs[{j}]", 64) for j, g in enumerate(gprs)],
        flags,
    )


def launch_from_json(obj: Any, base_dir: Path | str = ".") -> Launch:
    if not isinstance(obj, dict):
        raise LaunchError("expected a JSON object with realm and operations")
    if unknown := sorted(set(obj) - {"realm", "operations"}):
        raise LaunchError(f"unknown field(s) {', '.join(unknown)}")
    ops = obj.get("operations", [])
    if not isinstance(ops, list):
        raise LaunchError("operations: expected an array")
    base = Path(base_dir)
    return Launch(_params(obj.get("realm", {})), [_operation(op, i, base) for i, op in enumerate(ops)])


def load_launch(path: Path | str) -> Launch:
    path = Path(path)
    try:
        obj = load_json(path, "launch description")
    except InputError as exc:
        raise LaunchError(str(exc)) from None
    return launch_from_json(obj, path.parent)


def log_to_json(log: RimLog) -> dict[str, Any]:
    def value(v: object) -> object:
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    hlen = len(log.digest)
    return {
        "hash_algo": "sha-256" if log.algo == RmiHashAlgorithm.SHA_256 else "sha-512",
        "rim": log.digest.hex(),
        "events": [
            {"kind": e.kind, **{k: value(v) for k, v in e.detail.items()}, "rim": e.rim[:hlen].hex()}
            for e in log.events
        ],
    }


def log_to_text(log: RimLog) -> str:
    hlen = len(log.digest)
    lines = []
    for i, e in enumerate(log.events):
        detail = " ".join(
            f"{k}={v:#x}" if isinstance(v, int) and k in ("ipa", "base", "top", "pc") else f"{k}={v}"
            for k, v in e.detail.items()
        )
        lines.append(f"{i:4d} {e.kind:<5} {detail}\n     -> {e.rim[:hlen].hex()}")
    return "\n".join(lines)
