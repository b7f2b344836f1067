// A realm that converts N pages of RAM (x0 = base, x1 = top, from its REC's x1/x2 or the
// defaults below) to RIPAS EMPTY with RSI_IPA_STATE_SET and writes one word into each page
// through the unprotected alias (IPA | bit 32: a 33-bit IPA space), then reads them all
// back, and powers off with x1 = 0 if every word read back is the one written.
    .equ BASE, 0x80400000
    .equ TOP,  0x80800000              // 4 MiB: 1024 pages
    .equ ALIAS, 0x100000000
    .text
    .global _start
_start:
    movz x1, #(BASE & 0xffff)
    movk x1, #(BASE >> 16), lsl #16
1:  movz x0, #0x0197
    movk x0, #0xC400, lsl #16          // RSI_IPA_STATE_SET
    movz x2, #(TOP & 0xffff)
    movk x2, #(TOP >> 16), lsl #16
    mov x3, #0                         // RIPAS_EMPTY
    mov x4, #0
    smc #0
    cbnz x0, bad
    movz x2, #(TOP & 0xffff)
    movk x2, #(TOP >> 16), lsl #16
    cmp x1, x2
    b.lo 1b
    movz x5, #(BASE & 0xffff)
    movk x5, #(BASE >> 16), lsl #16
    orr x5, x5, #ALIAS
    movz x6, #(TOP & 0xffff)
    movk x6, #(TOP >> 16), lsl #16
    orr x6, x6, #ALIAS
    mov x7, x5
2:  str x7, [x7]                       // each shared page holds its own address
    add x7, x7, #4096
    cmp x7, x6
    b.lo 2b
    mov x7, x5
3:  ldr x8, [x7]
    cmp x8, x7
    b.ne bad
    add x7, x7, #4096
    cmp x7, x6
    b.lo 3b
    mov x1, #0
    b off
bad:
    mov x1, #1
off:
    movz x0, #0x0008
    movk x0, #0x8400, lsl #16          // PSCI_SYSTEM_OFF
    smc #0
    b .
