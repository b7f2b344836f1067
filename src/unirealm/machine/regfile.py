"""The general-purpose registers and PC of an engine that keeps them between runs (the
Python kernel's engine in either process), with the vCPU API's register operations."""

from __future__ import annotations

from unirealm.arch.esr import AccessSyndrome

XZR = 31  # register number 31 reads as zero and ignores writes here (no SP in the file)
MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class RegisterFile:
    """x0..x30 and the PC, as `get_gpr`/`set_gpr`/`reset`/`skip_instruction`/
    `complete_mmio_read` of the vCPU API see them."""

    regs: list[int]
    pc: int

    def get_gpr(self, n: int) -> int:
        return 0 if n == XZR else self.regs[n]

    def set_gpr(self, n: int, value: int) -> None:
        if n != XZR:
            self.regs[n] = value & MASK64

    def get_gprs(self, count: int = 31) -> list[int]:
        return self.regs[:count]

    def reset(self, pc: int, gprs: list[int] | tuple[int, ...] = ()) -> None:
        self.regs = [0] * 31
        for i, v in enumerate(gprs):
            self.regs[i] = v
        self.pc = pc

    def skip_instruction(self) -> None:
        self.pc += 4

    def complete_mmio_read(self, syndrome: AccessSyndrome, value: int) -> None:
        """An emulated load completes: Rt gets the value at the access's size, PC moves on."""
        self.set_gpr(syndrome.srt, value & ((1 << (8 * syndrome.size)) - 1))
        self.pc += 4
