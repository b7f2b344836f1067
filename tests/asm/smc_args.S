// smc_args: x0..x17 set to distinct 64-bit values, smc #0, store the results x0..x5
// to the data page at 0x40001000, smc #0 again, then idle in wfi.

    .text
    .global _start
_start:
    ldr     x20, =0x40001000
    ldr     x0, =0x0f1e2d3c4b5a6978
    ldr     x1, =0x912954853410156d
    ldr     x2, =0x3370de4eb5ce9152
    ldr     x3, =0xd5b8401036851d47
    ldr     x4, =0x77c3cbd9b673992c
    ldr     x5, =0x180b4da3372e0511
    ldr     x6, =0xba52f764b0e48106
    ldr     x7, =0x5c9a792e30530deb
    ldr     x8, =0xfea5e0f7b10989d0
    ldr     x9, =0x80ed6ab932c435c5
    ldr     x10, =0x2134ec02b3b2b1aa
    ldr     x11, =0xc37c17c433693d9f
    ldr     x12, =0x6587998dbc27b984
    ldr     x13, =0x07cf03573d922469
    ldr     x14, =0xa8168518bd48a05e
    ldr     x15, =0x4a5e0ce23e072c43
    ldr     x16, =0xec69b6abbffda828
    ldr     x17, =0x8eb1386d38a8541d
    smc     #0
    stp     x0, x1, [x20]
    stp     x2, x3, [x20, #16]
    stp     x4, x5, [x20, #32]
    smc     #0
1:  wfi
    b       1b
    .ltorg
