"""The guest trusts no RIPAS answer it did not ask for: RSI_IPA_STATE_SET succeeding with the
host's REJECT response is an error (digest §4.4: the host may refuse a change; the realm must
not go on as if the range had changed), and a device region the realm still owns (RIPAS RAM)
is never mapped through the unprotected alias. The SMC conduit is scripted: what the
host answers is the host's choice, the guest's reaction is what is tested."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from unirealm.arch.rsi import RsiFid, RsiResponse, RsiRipas, RsiStatus
from unirealm.guest.kernel import Kernel
from unirealm.guest.ukrsi import Rsi, RsiError

GRANULE = 0x1000
BASE = 0x8000_0000


class ScriptedConduit:
    """IPA_STATE_SET advances by one granule per call with the given response; IPA_STATE_GET
    reports `ripas` for the granules in `owned` and EMPTY elsewhere."""

    def __init__(self, response: int = RsiResponse.ACCEPT, reject_at: int | None = None,
                 owned: frozenset[int] = frozenset()) -> None:
        self.response, self.reject_at, self.owned = response, reject_at, owned
        self.calls: list[tuple[int, ...]] = []

    def smc(self, fid: int, *args: int) -> list[int]:
        self.calls.append((fid, *args))
        if fid == RsiFid.IPA_STATE_SET:
            base, top = args[0], args[1]
            response = RsiResponse.REJECT if base == self.reject_at else self.response
            return [RsiStatus.SUCCESS, base if response == RsiResponse.REJECT else min(base + GRANULE, top),
                    response]
        if fid == RsiFid.IPA_STATE_GET:
            base = args[0]
            ripas = RsiRipas.RAM if base in self.owned else RsiRipas.EMPTY
            return [RsiStatus.SUCCESS, base + GRANULE, ripas]
        raise AssertionError(f"unexpected SMC {fid:#x}")


def test_accepted_change_walks_the_whole_range() -> None:
    conduit = ScriptedConduit()
    Rsi(conduit).set_memory_shared(BASE, 4 * GRANULE)  # type: ignore[arg-type]
    assert [c[1] for c in conduit.calls] == [BASE + i * GRANULE for i in range(4)]


@pytest.mark.parametrize("at", [0, 3])
def test_host_rejection_is_an_error(at: int) -> None:
    conduit = ScriptedConduit(reject_at=BASE + at * GRANULE)
    with pytest.raises(RsiError, match="host rejected the change"):
        Rsi(conduit).set_memory_shared(BASE, 4 * GRANULE)  # type: ignore[arg-type]
    assert len(conduit.calls) == at + 1  # stops at the refusal


@pytest.mark.parametrize("op", ["setup_memory", "set_memory_protected"])
def test_rejection_to_ram_is_an_error_too(op: str) -> None:
    rsi = Rsi(ScriptedConduit(response=RsiResponse.REJECT))  # type: ignore[arg-type]
    with pytest.raises(RsiError, match="host rejected"):
        if op == "setup_memory":
            rsi.setup_memory(BASE, BASE + GRANULE)  # [base, top)
        else:
            rsi.set_memory_protected(BASE, GRANULE)  # (base, size)


def _map(devices: list[SimpleNamespace], owned: frozenset[int]) -> list[str]:
    logged: list[str] = []
    kernel = SimpleNamespace(
        info=SimpleNamespace(devices=devices), realm=SimpleNamespace(unprotected_bit=1 << 47),
        rsi=Rsi(ScriptedConduit(owned=owned)),  # type: ignore[arg-type]
        log=lambda text, error=False, level=None: logged.append(text))
    Kernel.map_devices(kernel)  # type: ignore[arg-type]
    return logged


def _device(base: int, size: int) -> SimpleNamespace:
    return SimpleNamespace(path=f"/virtio@{base:x}", compatible="virtio,mmio", base=base, size=size, address=0)


def test_device_in_protected_ram_stays_protected() -> None:
    shared, protected = _device(0x0A00_0000, 0x200), _device(0x0A00_1000, 0x200)
    logged = _map([shared, protected], owned=frozenset({0x0A00_1000}))
    assert shared.address == 0x0A00_0000 | 1 << 47
    assert protected.address == 0x0A00_1000
    assert any("RIPAS is not EMPTY; left protected" in line for line in logged)


def test_device_straddling_into_protected_ram_stays_protected() -> None:
    """Every granule the region touches counts, the last one included."""
    dev = _device(0x0A00_0F00, 0x200)  # ends in the granule at 0x0A001000
    _map([dev], owned=frozenset({0x0A00_1000}))
    assert dev.address == 0x0A00_0F00
    edge = _device(0x0A00_0E00, 0x200)  # ends exactly at the granule boundary: one granule
    _map([edge], owned=frozenset({0x0A00_1000}))
    assert edge.address == 0x0A00_0E00 | 1 << 47
