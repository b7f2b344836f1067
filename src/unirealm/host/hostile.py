"""`unirealm run --hostile ATTACK[,ATTACK...]`: a test mode in which the VMM misbehaves in a
named way, to show what a realm (and the unikernel in it) does when its host turns on it.

Each attack is something a real VMM could do with what it holds: the MMIO answers it
emulates, the shared pages and rings of its devices, the device tree it writes, its answer
to a RIPAS change. None reaches protected memory: that is what the RMM and the GPT refuse
(tests/hostile shows those attempts too). The outcome that counts is the guest's: a clean
error, a refusal, or a stop with a panic status -- never a hang, a leak or a traceback.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unirealm.arch import p9
from unirealm.arch.memory import GRANULE_SIZE, RTT_PAGE_LEVEL
from unirealm.arch.p9 import P9, Qid, QidType
from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiStatus, status_of

if TYPE_CHECKING:
    from .kvm import RealmRec, RealmVm, RecExitInfo

log = logging.getLogger("unirealm.hostile")

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
    "ripas-replay": "around each RIPAS change, RTT_SET_RIPAS over ranges the realm did not ask for: below it, "
                    "past its top, the previous change again, and this one again once done; then a REJECT "
                    "response over the completed change",
    "dtb-device-in-ram": "the device tree puts the RTC's window inside the realm's protected RAM",
}
LONG_TAG = "t" * 5000
REALM_ONLY = ("uart-ram", "ripas-reject", "ripas-refuse", "ripas-replay")  # they act through RMI
NEEDS_9P = ("p9-readdir-loop", "p9-tag-long")
NEEDS_VIRTIO = ("used-bogus", "toctou")


def check_attacks(attacks: frozenset[str], realm: bool, shares: int, nics: int) -> str | None:
    """Why these attacks cannot act in this run (an attack is never accepted and ignored)."""
    for name in sorted(attacks):
        if name in REALM_ONLY and not realm:
            return f"--hostile {name} needs --realm"
        if name in NEEDS_9P and not shares:
            return f"--hostile {name} needs a --9p share"
        if name in NEEDS_VIRTIO and not shares + nics:
            return f"--hostile {name} needs a virtio device (--9p or -n)"
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



@dataclass
class RipasReplay:
    """`ripas-replay`: the host answers each RIPAS change honestly, and around it calls
    RMI_RTT_SET_RIPAS over ranges the realm did not ask for -- the granule below the request,
    the request grown past its top, the previous change replayed, and this change again once
    it is complete. Each must fail with RMI_ERROR_INPUT (the base is not the REC's progress
    pointer, or the top exceeds the requested top) and leave every RTT entry it names as it
    was; anything else is logged as an error. The REC_ENTER that completes the change then
    carries RIPAS_RESPONSE (REJECT): the RMM reports REJECT only for a range left incomplete,
    so the realm is told ACCEPT and goes on (were it told REJECT, its kernel would stop)."""

    last: tuple[int, int] | None = None
    refused: int = 0

    def before(self, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> None:
        base, top = ex.ripas_base, ex.ripas_top
        if base >= GRANULE_SIZE:
            self.attempt(vm, rec, "below the range asked for", base - GRANULE_SIZE, base)
        self.attempt(vm, rec, "past the top asked for", base, top + GRANULE_SIZE)
        if self.last is not None and (self.last[0] != base or self.last[1] > top):  # else it asks this again
            self.attempt(vm, rec, "a replay of the previous change", *self.last)
        self.last = (base, top)

    def response(self) -> int:
        log.warning("hostile ripas-replay: REC_ENTER with RIPAS_RESPONSE (REJECT) over a completed change")
        return int(RmiRecEnterFlags.RIPAS_RESPONSE)

    def after(self, vm: RealmVm, rec: RealmRec, ex: RecExitInfo) -> None:
        self.attempt(vm, rec, "a replay of this change, already done", ex.ripas_base, ex.ripas_top)

    def attempt(self, vm: RealmVm, rec: RealmRec, what: str, base: int, top: int) -> None:
        ends = sorted({base, max(base, top - GRANULE_SIZE)})
        before = [vm.rmi.try_call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)[:5] for ipa in ends]
        status = status_of(vm.rmi.try_call(RmiFid.RTT_SET_RIPAS, vm.rd, rec.pa, base, top)[0])
        after = [vm.rmi.try_call(RmiFid.RTT_READ_ENTRY, vm.rd, ipa, RTT_PAGE_LEVEL)[:5] for ipa in ends]
        if status == RmiStatus.ERROR_INPUT and before == after:
            self.refused += 1
            log.warning("hostile ripas-replay: RTT_SET_RIPAS [%#x, %#x) (%s) -> %s, RTT entries unchanged",
                        base, top, what, status.name)
        else:
            log.error("hostile ripas-replay: RTT_SET_RIPAS [%#x, %#x) (%s) -> %s, RTT entries %s",
                      base, top, what, status.name, "unchanged" if before == after else "CHANGED")
