"""The REM measurement log: what the unikernel writes at /sys/kernel/security/unirealm/rem_log
for every RSI_MEASUREMENT_EXTEND an app asks for (configfs-tsm rtmr), and what a verifier
replays.

One line per extension, in the order they were made:

    REM<n> <algorithm> <hex of the extended value>

n is 0..3 (RSI measurement index n + 1), the algorithm is the realm's (`sha-256` or
`sha-512`), the value 0..64 bytes. Replaying starts from zero and applies
REM[n] = H(REM[n] || value), the RMM's rule (digest §4.4).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

REM_LOG_PATH = "/sys/kernel/security/unirealm/rem_log"
REM_COUNT = 4
MAX_VALUE = 64
ALGORITHMS = {"sha-256": 32, "sha-512": 64}


class RemLogError(ValueError):
    """A log line that is not `REMn ALGO HEX`."""


@dataclass(frozen=True)
class RemLogEntry:
    rem: int  # 0..3
    algorithm: str
    value: bytes

    def line(self) -> str:
        return f"REM{self.rem} {self.algorithm} {self.value.hex()}\n"


def parse_rem_log(text: str) -> list[RemLogEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        words = line.split()
        if len(words) == 2:
            words.append("")  # an empty value
        if len(words) != 3 or not words[0].startswith("REM") or words[0][3:] not in ("0", "1", "2", "3"):
            raise RemLogError(f"line {number}: expected `REMn ALGORITHM HEX` with n 0..3")
        if words[1] not in ALGORITHMS:
            raise RemLogError(f"line {number}: unknown algorithm {words[1]!r} (sha-256 or sha-512)")
        try:
            value = bytes.fromhex(words[2])
        except ValueError:
            raise RemLogError(f"line {number}: the value is not hex") from None
        if len(value) > MAX_VALUE:
            raise RemLogError(f"line {number}: the value is longer than {MAX_VALUE} bytes")
        entries.append(RemLogEntry(int(words[0][3:]), words[1], value))
    if len({e.algorithm for e in entries}) > 1:
        raise RemLogError("the log mixes hash algorithms")
    return entries


def replay(entries: list[RemLogEntry], algorithm: str | None = None) -> list[bytes]:
    """The four REMs the log's extensions give, from zero."""
    algo = entries[0].algorithm if entries else (algorithm or "sha-256")
    if algorithm is not None and algo != algorithm:
        raise RemLogError(f"the log uses {algo}, the realm {algorithm}")
    size = ALGORITHMS[algo]
    rems = [bytes(size)] * REM_COUNT
    for e in entries:
        rems[e.rem] = hashlib.new(algo.replace("-", ""), rems[e.rem] + e.value).digest()
    return rems
