// lazy_map: stores and loads on the data page at 0x40001000, each step ended by smc #0.
    .text
    .global _start
_start:
    ldr     x20, =0x40001000
    ldr     x1, =0xcafef00d12345678
    str     x1, [x20]           // the guest's store
    smc     #0                  // 1
    ldr     x2, [x20, #8]       // what the host wrote meanwhile
    smc     #0                  // 2
    ldr     x3, [x20]           // after invalidate(): translated again
    smc     #0                  // 3
    ldr     x4, [x20]           // after a PAS change
    smc     #0                  // 4
    .ltorg
