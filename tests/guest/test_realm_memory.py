"""The guest's side of RIPAS (guest/ukrsi.py, guest/kernel.py map_devices): a RIPAS change
the host rejects or does not progress ends the boot; a device is reached through the
unprotected alias only when every granule it touches is RIPAS EMPTY (realm RAM is never
handed to a device model). The conduit is scripted per granule as the RMM answers
(DEN0137 B5.3.8 RSI_IPA_STATE_GET, B5.3.9 RSI_IPA_STATE_SET)."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rsi import RsiFid, RsiResponse, RsiRipas, RsiStatus
from unirealm.guest.kernel import Device, Kernel
from unirealm.guest.ukrsi import RealmConfig, Rsi, RsiError

G = GRANULE_SIZE
RAM = 0x8000_0000


class RipasConduit:
    """RSI_IPA_STATE_GET/SET over a map of granule -> RIPAS; the host's answer to a change
    is `policy(base, top) -> (response, new_base)`."""

    def __init__(self, ripas: dict[int, int], policy=None) -> None:
        self.ripas = dict(ripas)
        self.policy = policy or (lambda base, top: (RsiResponse.ACCEPT, top))
        self.calls: list[tuple[int, ...]] = []

    def smc(self, fid: int, *args: int) -> list[int]:
        self.calls.append((fid, *args))
        if fid == RsiFid.IPA_STATE_GET:
            base, end = args[:2]
            kind = self.ripas.get(base, RsiRipas.EMPTY)
            top = base + G
            while top < end and self.ripas.get(top, RsiRipas.EMPTY) == kind:
                top += G
            return [RsiStatus.SUCCESS, top, kind]
        if fid == RsiFid.IPA_STATE_SET:
            base, top, ripas, _flags = args[:4]
            response, new_base = self.policy(base, top)
            if response == RsiResponse.ACCEPT:
                for g in range(base, new_base, G):
                    self.ripas[g] = ripas
            return [RsiStatus.SUCCESS, new_base, response]
        raise AssertionError(f"unexpected SMC {fid:#x}")


def test_accepted_change_in_steps_covers_the_range() -> None:
    conduit = RipasConduit({}, lambda base, top: (RsiResponse.ACCEPT, base + G))  # one granule a call
    Rsi(conduit).setup_memory(RAM, RAM + 4 * G)  # type: ignore[arg-type]
    assert all(conduit.ripas[RAM + i * G] == RsiRipas.RAM for i in range(4))
    assert len(conduit.calls) == 4


def test_a_rejected_change_ends_the_boot() -> None:
    conduit = RipasConduit({}, lambda base, top: (RsiResponse.ACCEPT, base + G) if base == RAM
                           else (RsiResponse.REJECT, base))
    with pytest.raises(RsiError, match="host rejected the change"):
        Rsi(conduit).setup_memory(RAM, RAM + 4 * G)  # type: ignore[arg-type]
    assert conduit.ripas == {RAM: RsiRipas.RAM}


def test_a_reject_that_claims_progress_still_ends_the_boot() -> None:
    conduit = RipasConduit({}, lambda base, top: (RsiResponse.REJECT, top))
    with pytest.raises(RsiError, match="host rejected the change"):
        Rsi(conduit).set_memory_shared(RAM, 2 * G)  # type: ignore[arg-type]


def test_no_progress_ends_the_boot() -> None:
    conduit = RipasConduit({}, lambda base, top: (RsiResponse.ACCEPT, base))
    with pytest.raises(RsiError, match="no progress"):
        Rsi(conduit).setup_memory(RAM, RAM + G)  # type: ignore[arg-type]


DEV = 0x0A00_0000


def kernel_with(ripas: dict[int, int], devices: list[Device], realm: bool = True) -> Kernel:
    k = Kernel(RipasConduit(ripas))  # type: ignore[arg-type]
    k.realm = RealmConfig(ipa_width=40, hash_algo=0, rpv=bytes(64)) if realm else None
    k.info.devices = devices
    return k


@pytest.mark.parametrize(("ripas", "dev", "shared"), [
    ({}, Device("/uart", "ns16550a", DEV, 8), True),  # EMPTY: the host's
    ({DEV: RsiRipas.RAM}, Device("/uart", "ns16550a", DEV, 8), False),  # realm RAM: left protected
    ({DEV: RsiRipas.DESTROYED}, Device("/uart", "ns16550a", DEV, 8), False),
    ({DEV + G: RsiRipas.RAM}, Device("/virtio", "virtio,mmio", DEV + G - 0x100, 0x200), False),  # straddles
    ({DEV + G: RsiRipas.RAM}, Device("/virtio", "virtio,mmio", DEV + 0x200, 0x200), True),  # inside one granule
    ({DEV + 2 * G: RsiRipas.RAM}, Device("/big", "x", DEV, 3 * G), False),  # its last granule is RAM
])
def test_devices_are_shared_only_over_empty_granules(ripas: dict[int, int], dev: Device, shared: bool) -> None:
    k = kernel_with(ripas, [dev])
    k.map_devices()
    unprotected = 1 << 39
    assert dev.address == (dev.base | unprotected if shared else dev.base)


def test_outside_a_realm_devices_are_at_their_base() -> None:
    dev = Device("/uart", "ns16550a", DEV, 8)
    k = kernel_with({}, [dev], realm=False)
    k.map_devices()
    assert dev.address == DEV and not k.cpu.calls  # type: ignore[attr-defined]
