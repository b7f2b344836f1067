// A bare-metal AArch64 guest that does real work under an interrupt storm (`unirealm run
// --hostile irq-storm`), one vCPU. Each of ROUNDS rounds arms the virtual timer for 1 ms and
// waits for its interrupt, then sends a virtio-9p Tversion and waits for the device's SPI;
// the round's results are checked (the time slept, the used ring's index, id and length,
// the Rversion) and folded into a sum of the loop's registers.
//
// Its handler treats an interrupt as its own only when the source shows it: the timer's
// PPI with CNTV_CTL ENABLE and ISTATUS set, the device's SPI with a bit in InterruptStatus.
// Anything else it acknowledges is foreign and only EOIed; an acknowledge that reads 1023
// is spurious and not EOIed. Before the acknowledge the handler reads GICD_ISPENDR1 (an MMIO
// access, an exit): as any exit between the exception and the acknowledge would (a host
// timer tick), it lets the host change what is pending -- withdraw it, say.
//
// CPU 0 prints one line per result on ttyS0; PSCI SYSTEM_OFF ends the run with x1 = 0.
// --defsym: VIRTIO_BASE and VIRTIO_SPI (the first virtio-mmio window and its INTID) and
// REDIST0 (the redistributor's RD frame). A realm (RSI_VERSION answers) reaches the devices
// through the unprotected alias of their IPAs and shares the virtqueue's page.

    .equ PSCI_SYSTEM_OFF, 0x84000008
    .equ ROUNDS, 20
    .equ TICKS_1MS, 62500
    .equ RVERSION_SIZE, 21           // size[4] type[1] tag[2] msize[4] version[2 + 8]
    .equ MARK_A, 0x0123456789abcdef  // kept in x23/x24 all along: an interrupt must not change them
    .equ MARK_B, 0xfedcba9876543210

    .include "console.inc"             // movq
    .include "gicv3.inc"               // devaddr, UART, GICD
    .include "virtio9p.inc"            // the layout of vio_page

    .macro wait_change counter       // WFI until counter (a quad at a label) differs from x21
1:  adr x9, \counter
    ldr x9, [x9]
    cmp x9, x21
    b.ne 2f
    wfi                              // IRQs masked: no wake-up is lost between look and WFI
    msr daifclr, #2                  // every pending interrupt is taken here
    isb
    msr daifset, #2
    b 1b
2:
    .endm

    .text
    .global _start
_start:
    bl realm_detect
    devaddr x20, UART
    adr x1, stack_top
    mov sp, x1
    adr x1, vectors
    msr vbar_el1, x1
    devaddr x1, REDIST0
    bl gic_redist_setup
    bl gic_dist_setup
    say s_hello
    bl vio_init                      // x8 = the virtqueue page, x1 = the device
    mov x27, x1
    mov x28, x8
    movq x23, MARK_A
    movq x24, MARK_B
    mov x19, #0                      // round
    mov x25, #0                      // sum over the rounds
    mov x26, #0                      // failed checks

round:
    // the timer: 1 ms, then its interrupt
    adr x9, timer_count
    ldr x21, [x9]
    mrs x22, cntvct_el0
    movq x0, TICKS_1MS
    msr cntv_tval_el0, x0
    mov x0, #1
    msr cntv_ctl_el0, x0
    wait_change timer_count
    mrs x0, cntvct_el0
    sub x0, x0, x22
    movq x1, TICKS_1MS
    cmp x0, x1
    cinc x26, x26, lo                // woken before the deadline
    // the device: one Tversion, then its used-buffer interrupt
    adr x9, vio_count
    ldr x21, [x9]
    mov x8, x28
    mov x1, x27
    mov w0, w19
    bl vio_post
    wait_change vio_count
    ldrh w0, [x28, #(VQ_USED + 2)]
    add w1, w19, #1
    cmp w0, w1
    cinc x26, x26, ne                // used index: one more
    and x2, x19, #7
    add x2, x28, x2, lsl #3
    ldr w0, [x2, #(VQ_USED + 4)]
    cmp w0, #0
    cinc x26, x26, ne                // used id: descriptor 0
    ldr w0, [x2, #(VQ_USED + 8)]
    cmp w0, #RVERSION_SIZE
    cinc x26, x26, ne                // used len: the Rversion's
    ldr w0, [x28, #VQ_RESP]
    cmp w0, #RVERSION_SIZE
    cinc x26, x26, ne                // the reply's size[4]
    ldrb w0, [x28, #(VQ_RESP + 4)]
    cmp w0, #101
    cinc x26, x26, ne                // Rversion
    // the registers the interrupts came and went around
    madd x25, x19, x19, x25          // sum of round^2
    add x19, x19, #1
    cmp x19, #ROUNDS
    b.lo round

    movq x0, MARK_A
    cmp x23, x0
    cinc x26, x26, ne
    movq x0, MARK_B
    cmp x24, x0
    cinc x26, x26, ne
    say s_rounds
    mov x0, x19
    bl puthex_sp
    mov x0, x25
    bl puthex_sp
    mov x0, x26
    bl puthex_line                   // rounds, sum of round^2, failed checks
    say s_counts
    adr x10, timer_count
    ldr x0, [x10]
    bl puthex_sp
    ldr x0, [x10, #8]
    bl puthex_sp
    ldr x0, [x10, #16]
    bl puthex_sp
    ldr x0, [x10, #24]
    bl puthex_line                   // timer, virtio, foreign, spurious
    say s_done
    mov x1, #0
    movq x0, PSCI_SYSTEM_OFF
    adr x9, dev_alias
    ldr x9, [x9]
    cbz x9, 3f
    smc #0
3:  hvc #0
    b .

virtio_fail:
    say s_virtio_fail
fail_off:
    mov x1, #1
    movq x0, PSCI_SYSTEM_OFF
    adr x9, dev_alias
    ldr x9, [x9]
    cbz x9, 4f
    smc #0
4:  hvc #0
    b .

// --- the interrupt handler (the vector table and `unexpected`: gicv3.inc) ------------
irq_handler:
    stp x0, x1, [sp, #-16]!
    stp x2, x3, [sp, #-16]!
    stp x9, x10, [sp, #-16]!
    adr x10, timer_count
    devaddr x1, GICD
    ldr w2, [x1, #0x204]             // GICD_ISPENDR1: an exit before the acknowledge
    mrs x0, ICC_IAR1_EL1
    cmp x0, #1023
    b.ne 1f
    ldr x3, [x10, #24]               // spurious: nothing to EOI
    add x3, x3, #1
    str x3, [x10, #24]
    b 9f
1:  cmp x0, #27
    b.ne 2f
    mrs x2, cntv_ctl_el0
    tbz x2, #0, 5f                   // ENABLE
    tbz x2, #2, 5f                   // and ISTATUS: the timer fired
    msr cntv_ctl_el0, xzr            // its line drops
    ldr x3, [x10, #0]
    add x3, x3, #1
    str x3, [x10, #0]
    b 8f
2:  movq x1, VIRTIO_SPI
    cmp x0, x1
    b.ne 5f
    devaddr x1, VIRTIO_BASE
    ldr w2, [x1, #0x60]              // InterruptStatus
    cbz w2, 5f
    str w2, [x1, #0x64]              // InterruptACK
    tbz w2, #0, 5f                   // not a used buffer
    ldr x3, [x10, #8]
    add x3, x3, #1
    str x3, [x10, #8]
    b 8f
5:  ldr x3, [x10, #16]               // foreign: no source of ours shows it
    add x3, x3, #1
    str x3, [x10, #16]
8:  msr ICC_EOIR1_EL1, x0
9:  ldp x9, x10, [sp], #16
    ldp x2, x3, [sp], #16
    ldp x0, x1, [sp], #16
    eret

// --- what the guests share ----------------------------------------------------------
    .include "console.inc"             // puts, puthex_line, puthex_sp, puthex
    .include "virtio9p.inc"            // vio_init, vio_post
    .include "gicv3.inc"               // realm_detect, gic_*_setup, tversion, vectors

// --- data -----------------------------------------------------------------------------
s_hello:       .asciz "storm guest\n"
s_rounds:      .asciz "rounds "
s_counts:      .asciz "counts "
s_done:        .asciz "done\n"
s_virtio_fail: .asciz "virtio set-up failed\n"

    .balign 64
dev_alias:   .quad 0                 // the unprotected IPA bit in a realm, else 0
vio_dma:     .quad 0
timer_count: .quad 0                 // the timer's interrupts (the handler: +0),
vio_count:   .quad 0                 // the device's (+8),
             .quad 0, 0              // foreign (+16), spurious: 1023 (+24)
    .balign 16
stack:       .skip 1024
stack_top:
    .balign 4096
rsi_config:  .skip 4096              // RsiRealmConfig
vio_page:    .skip 4096              // the virtqueue
