"""Launch the minimal attestation realm (guest/asm/attest_realm.S) and collect its token.

The host builds the realm through RMI in kvmtool's order (REALM_CREATE, measured
DATA_CREATE of the image, RTT_INIT_RIPAS over the rest of RAM, REC_CREATE, ACTIVATE), then
runs it, answering its host calls: the REM extends and the challenge the relying party
asked for travel in through RSI_HOST_CALL, and the token travels out through memory the
realm shared. The challenge is not measured, so the RIM depends only on the image and the
realm parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import RmiHashAlgorithm, RmiRecExitReason
from unirealm.arch.rsi import CHALLENGE_SIZE, bytes_to_regs
from unirealm.arch.smccc import PsciFid
from unirealm.arch.token import PROFILE_REALM_1_0, TAG_CCA_TOKEN_COLLECTION
from unirealm.host.memmap import ARM_MEMORY_AREA, ipa_bits_for
from unirealm.machine.board import Machine
from unirealm.rmm.core import Rmm, RmmConfig

from .kvm import RealmConfig, RealmVm
from .rmi_client import HostPages
from .toolchain import assemble

HC_GET_CHALLENGE = 1
HC_GET_REM = 2
HC_TOKEN = 3
HC_FAIL = 4
RAM_SIZE = 1 << 20
FAIL_STEPS = {
    1: "RSI_VERSION",
    2: "RSI_REALM_CONFIG",
    3: "host call GET_REM",
    4: "RSI_MEASUREMENT_EXTEND",
    5: "host call GET_CHALLENGE",
    6: "RSI_ATTESTATION_TOKEN_INIT",
    7: "RSI_ATTESTATION_TOKEN_CONTINUE",
    8: "token larger than the bounce buffer",
    9: "RSI_IPA_STATE_SET",
    10: "RIPAS change rejected",
    11: "host call TOKEN",
}


class RealmFailed(RuntimeError):
    pass


@dataclass
class TokenRequest:
    challenge: bytes = bytes(CHALLENGE_SIZE)
    rpv: bytes = b""
    hash_algo: int = RmiHashAlgorithm.SHA_256
    rems: list[tuple[int, bytes]] = field(default_factory=list)  # (REM index 1..4, value <= 64 B)
    token_format: int = TAG_CCA_TOKEN_COLLECTION
    realm_profile: str = PROFILE_REALM_1_0


@dataclass
class TokenResult:
    token: bytes
    image: bytes


def attest_image() -> bytes:
    return assemble("attest_realm", ARM_MEMORY_AREA)


def create_token(
    request: TokenRequest, trace: Callable[[str], None] | None = None, machine: Machine | None = None
) -> TokenResult:
    machine = machine or Machine(dram_size=64 << 20)
    Rmm(machine.monitor, RmmConfig(token_format=request.token_format, realm_profile=request.realm_profile))
    machine.monitor.trace = trace
    image = attest_image()
    vm = RealmVm(
        machine,
        HostPages(machine),
        RealmConfig(
            ipa_bits=ipa_bits_for(ARM_MEMORY_AREA, RAM_SIZE, True),
            hash_algo=request.hash_algo,
            rpv=request.rpv,
        ),
    )
    vm.ram_ranges = [(ARM_MEMORY_AREA, ARM_MEMORY_AREA + RAM_SIZE)]
    vm.create()
    vm.populate(ARM_MEMORY_AREA, image, measured=True)
    image_end = ARM_MEMORY_AREA + -(-len(image) // GRANULE_SIZE) * GRANULE_SIZE
    vm.init_ripas(image_end, ARM_MEMORY_AREA + RAM_SIZE)
    rec = vm.create_rec(pc=ARM_MEMORY_AREA, gprs=[0] * 8, runnable=True)
    vm.activate()

    pending_rems = list(request.rems)
    token = bytearray()
    failure: list[str] = []

    def host_call(imm: int, gprs: list[int]) -> list[int]:
        if imm == HC_GET_REM:
            if not pending_rems:
                return [0] * 31
            index, value = pending_rems.pop(0)
            return [index, len(value), *bytes_to_regs(value.ljust(64, b"\0")), *([0] * 21)]
        if imm == HC_GET_CHALLENGE:
            return [*bytes_to_regs(request.challenge.ljust(CHALLENGE_SIZE, b"\0")), *([0] * 23)]
        if imm == HC_TOKEN:
            token[:] = vm.read_shared(gprs[0], gprs[1])
            return gprs
        if imm == HC_FAIL:
            step, status = gprs[0], gprs[1]
            failure.append(f"{FAIL_STEPS.get(step, f'step {step}')} returned {status:#x}")
        return gprs

    vm.on_host_call = host_call
    try:
        ex = vm.run(rec)
        if ex.reason != RmiRecExitReason.PSCI or ex.gprs[0] & ~(1 << 30) != PsciFid.SYSTEM_OFF:
            raise RealmFailed("the realm stopped without powering off")
        if failure:
            raise RealmFailed(f"the realm failed: {failure[0]}")
        if not token:
            raise RealmFailed("the realm powered off without handing over a token")
    finally:
        vm.destroy()
        machine.monitor.trace = None
    return TokenResult(bytes(token), image)
