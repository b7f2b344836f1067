"""`unirealm run --hostile ATTACK[,ATTACK...]`: a test mode in which the VMM misbehaves in a
named way, to show what a realm (and the unikernel in it) does when its host turns on it.

Each attack is something a real VMM could do with what it holds: the MMIO answers it
emulates, the shared pages and rings of its devices, the device tree it writes, its answer
to a RIPAS change. None reaches protected memory: that is what the RMM and the GPT refuse
(tests/hostile shows those attempts too). The outcome that counts is the guest's: a clean
error, a refusal, or a stop with a panic status -- never a hang, a leak or a traceback.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from unirealm.arch import p9
from unirealm.arch.p9 import P9, Qid, QidType

ATTACKS = {
    "mmio-sea": "every MMIO access to a device other than the UARTs ends in a synchronous external abort",
    "mmio-sea-all": "every MMIO access, the UARTs' too, ends in a synchronous external abort",
    "mmio-garbage": "MMIO reads of the virtio and RTC windows return random values",
    "uart-ram": "the console UART's window is host RAM full of 0xff (realm: RTT_MAP_UNPROTECTED over its alias)",
    "p9-readdir-loop": "Rreaddir never ends: every reply lists new entries at growing offsets",
    "p9-tag-long": "the 9p device's config space holds a 5000-character mount tag",
    "used-bogus": "used-ring entries name descriptors past the queue and lengths past the buffer",
    "toctou": "each reply in shared memory is overwritten with garbage at every later exit",
    "ripas-reject": "a RIPAS change to RAM is done for one granule, then REJECTed",
    "ripas-refuse": "a RIPAS change is acknowledged without any RTT_SET_RIPAS (no progress)",
    "dtb-device-in-ram": "the device tree puts the RTC's window inside the realm's protected RAM",
}
LONG_TAG = "t" * 5000
REALM_ONLY = ("uart-ram", "ripas-reject", "ripas-refuse")  # they act through RMI
NEEDS_9P = ("p9-readdir-loop", "p9-tag-long")
NEEDS_VIRTIO = ("used-bogus", "toctou")


def check_attacks(attacks: frozenset[str], realm: bool, shares: int, devices: int) -> str | None:
    """Why these attacks cannot act in this run (an attack is never accepted and ignored)."""
    for name in sorted(attacks):
        if name in REALM_ONLY and not realm:
            return f"--hostile {name} needs --realm"
        if name in NEEDS_9P and not shares:
            return f"--hostile {name} needs a --9p share"
        if name in NEEDS_VIRTIO and not shares + devices:
            return f"--hostile {name} needs a virtio device (--9p, -n or --console virtio)"
    return None


def readdir_forever(request: bytes) -> bytes | None:
    """For p9-readdir-loop: an Rreaddir of fresh entries after any offset, or None when the
    request is not a Treaddir."""
    try:
        mtype, tag, fields = p9.decode(request)
    except p9.P9ProtocolError:
        return None
    if mtype != P9.TREADDIR:
        return None
    offset, data = fields["offset"], b""
    while True:
        offset += 1
        entry = p9.pack_dirent(Qid(QidType.FILE, 0, offset), offset, 8, f"f{offset}")
        if len(data) + len(entry) > fields["count"]:
            return p9.encode(P9.RREADDIR, tag, data=data)
        data += entry


@dataclass
class Hostile:
    """The attacks of one run, and the state they need."""

    attacks: frozenset[str]
    rng: random.Random = field(default_factory=lambda: random.Random(0x5EC))
    written: list[tuple[object, int, int]] = field(default_factory=list)  # (memory view, addr, length)

    def __contains__(self, name: str) -> bool:
        return name in self.attacks

    def mmio_read(self, device: str, value: int, size: int) -> int:
        if "mmio-garbage" in self and not device.startswith("ttyS"):
            return self.rng.getrandbits(8 * size)
        return value

    def faults(self, device: str | None) -> bool:
        """Whether this MMIO access ends in an abort."""
        if "mmio-sea-all" in self:
            return True
        return "mmio-sea" in self and device is not None and not device.startswith("ttyS")

    def used_entry(self, queue_num: int, head: int, length: int, capacity: int) -> tuple[int, int]:
        """The (id, len) the device writes in a used-ring slot."""
        if "used-bogus" in self:
            if self.rng.random() < 0.5:
                return queue_num + self.rng.randrange(1, 1 << 16), length
            return head, capacity + self.rng.randrange(1, 1 << 20)
        return head, length

    def note_reply(self, memory: object, addr: int, length: int) -> None:
        if "toctou" in self:
            self.written.append((memory, addr, length))
            del self.written[:-64]

    def at_exit(self) -> None:
        """toctou: overwrite every reply the devices wrote, while the guest may be parsing."""
        for memory, addr, length in self.written:
            try:
                memory.write(addr, self.rng.randbytes(length))  # type: ignore[attr-defined]
            except Exception:  # a page the guest took back: nothing to overwrite
                continue

