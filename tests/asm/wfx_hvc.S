// wfx_hvc: wfi, hvc #0x42, smc #0
    .text
    .global _start
_start:
    wfi
    hvc     #0x42
    smc     #0
