// mmio: single-register loads and stores to an unmapped IPA (x2 = 0x50000010), one per
// stage-2 fault, then a pair load (no syndrome), a store of xzr and a final smc #0.
// x3, x4, x5 hold the values to store (set by the test before running).

    .text
    .global _start
_start:
    ldr     x2, =0x50000010
    ldr     x1, [x2]            // 64-bit load, Rt = 1
    str     w3, [x2, #8]        // 32-bit store, Rt = 3
    strb    w4, [x2]            // 8-bit store, Rt = 4
    strh    w5, [x2, #2]        // 16-bit store, Rt = 5
    ldrsb   x6, [x2]            // sign-extending byte load into x
    ldrsb   w7, [x2]            // sign-extending byte load into w
    ldrsh   x8, [x2]
    ldrsh   w9, [x2]
    ldrsw   x10, [x2]
    ldrb    w11, [x2]           // zero-extending
    ldrh    w12, [x2]
    ldr     w13, [x2]           // 32-bit load clears the upper half
    ldp     x14, x15, [x2]      // pair: ISV = 0
    str     xzr, [x2, #16]      // Rt = 31
    smc     #0
    .ltorg
