"""A machine for the in-process Python kernel engine (machine/pykernel.py PyKernelEngine):
guest RAM at RAM_IPA holding a unirealm image built here to arch/image.py's format, a
stage 2 the test changes page by page, and the engine booted at the image.

A kernel is either real source in the image's payload, or a function of the test: the
image's entry module then calls the function the test registered (the engine runs in this
process, so the function runs inside the kernel's greenlet and sees only `GuestCpu`)."""

from __future__ import annotations

import hashlib
import io
import sys
import types
import zipfile
from collections.abc import Callable
from typing import Any

from unirealm.arch.image import (
    PAYLOAD_ALIGN,
    UNIKERNEL_HEADER,
    UNIKERNEL_HEADER_OFFSET,
    UNIKERNEL_MAGIC,
    UNIKERNEL_VERSION,
)
from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.machine.memory import PhysicalMemory
from unirealm.machine.pykernel import GuestCpu, PyKernelEngine
from unirealm.machine.vcpu import Mapping, Trap

RAM_IPA = 0x8000_0000
PAGES = 16
DEVICE_IPA = 0x0900_0000  # no stage-2 mapping: every access to it is emulated by the host
BODY_MODULE = "_pykernel_test_body"
CALLBACK_KERNEL = f"import {BODY_MODULE}\n\n\ndef boot(cpu):\n    {BODY_MODULE}.boot(cpu)\n".encode()


def payload(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def image(members: dict[str, bytes] | None = None, entry: bytes = b"k:boot", raw_payload: bytes | None = None,
          **header: Any) -> bytes:
    """A unirealm image (arch/image.py): the arm64 header's 64 bytes left zero, the
    UnikernelHeader at 0x40, the payload at PAYLOAD_ALIGN; `header` overrides fields."""
    data = raw_payload if raw_payload is not None else payload(members or {"k.py": CALLBACK_KERNEL})
    fields = {
        "magic": UNIKERNEL_MAGIC, "version": UNIKERNEL_VERSION, "header_size": UNIKERNEL_HEADER.size,
        "payload_offset": PAYLOAD_ALIGN, "payload_size": len(data), "entry": entry, "bss_size": 0,
        "payload_sha256": hashlib.sha256(data).digest(),
    } | header
    out = bytearray(PAYLOAD_ALIGN + len(data))
    out[UNIKERNEL_HEADER_OFFSET : UNIKERNEL_HEADER_OFFSET + UNIKERNEL_HEADER.size] = UNIKERNEL_HEADER.pack(**fields)
    out[PAYLOAD_ALIGN:] = data
    return bytes(out)


class Machine:
    """PAGES granules of RAM at RAM_IPA (stage 2: IPA RAM_IPA + n -> granule n, non-secure),
    the image at the first, and the engine at RAM_IPA."""

    def __init__(self, data: bytes | None = None, gprs: list[int] | None = None, pages: int = PAGES) -> None:
        data = image() if data is None else data
        self.memory = PhysicalMemory(size=pages * GRANULE_SIZE)
        self.ram = self.memory.accessor(World.NON_SECURE)
        self.ram.write(self.memory.base, data)
        self.stage2: dict[int, Mapping] = {
            RAM_IPA + i * GRANULE_SIZE: Mapping(self.memory.base + i * GRANULE_SIZE, World.NON_SECURE)
            for i in range(pages)
        }
        self.lookups: list[tuple[int, bool]] = []
        self.fetches: list[int] = []  # lookups for an instruction fetch: the kernel makes none
        self.engine = PyKernelEngine(self.memory, self.translate, RAM_IPA, gprs or [], "max")

    def translate(self, ipa: int, write: bool, fetch: bool) -> Mapping | None:
        self.lookups.append((ipa, write))
        if fetch:
            self.fetches.append(ipa)
        return self.stage2.get(ipa)

    def pa(self, ipa: int) -> int:
        return self.memory.base + ipa - RAM_IPA

    def run(self) -> Trap:
        return self.engine.run()

    def close(self) -> None:
        self.engine.close()


def register(monkeypatch: Any, body: Callable[[GuestCpu], object]) -> None:
    """`body` as the kernel of CALLBACK_KERNEL images, for this test."""
    monkeypatch.setitem(sys.modules, BODY_MODULE, types.SimpleNamespace(boot=body))
