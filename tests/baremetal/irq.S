// A bare-metal AArch64 guest for interrupts, timers and SMP (raw binary at RAM + 0x80000,
// entered at EL1h with x0 = DTB, MMU off). It brings up the GICv3 (distributor, its own
// redistributor, the system-register CPU interface), takes the virtual timer's PPI first
// while masked and then after the unmask, sleeps in WFI until the timer wakes it, starts
// CPUs 1-3 with PSCI CPU_ON (each stores its MPIDR_EL1), asks AFFINITY_INFO on the way,
// lets CPU 2 wait in a CPU_SUSPEND standby for its own timer,
// sends CPU 3 an SGI, and takes a virtio-9p device's SPI after a notify. CPU 0 prints one
// line per result on ttyS0; PSCI SYSTEM_OFF ends the run with x1 = 0.
//
// The test assembles it with --defsym: REDIST0 (CPU 0's RD frame), VIRTIO_BASE and
// VIRTIO_SPI (the first virtio-mmio window and its INTID, as the DT gives them).
//
// In a realm (RSI_VERSION answers) PSCI goes over SMC, the devices (UART, GIC, virtio) are
// reached through the unprotected alias of their IPAs, and the virtqueue's page is shared
// memory: RIPAS EMPTY, used through its alias, as a Linux realm's DMA API does.
//
// Every IRQ goes through irq_handler, which acknowledges it (ICC_IAR1_EL1), records
// INTID, ELR, SPSR and ESR in its CPU's record, quiets the source (the timer's ENABLE,
// the virtio InterruptStatus) and EOIs it.

    .equ ESR_MARK, 0x5600abcd        // written to ESR_EL1: an IRQ must leave it alone
    .equ PSCI_CPU_SUSPEND, 0xc4000001
    .equ PSCI_CPU_OFF, 0x84000002
    .equ PSCI_CPU_ON, 0xc4000003
    .equ PSCI_AFFINITY_INFO, 0xc4000004
    .equ PSCI_SYSTEM_OFF, 0x84000008
    .equ SGI_INTID, 5
    .equ REC_SIZE, 64                // per CPU: intid, elr, spsr, esr, count, vio_status

    .include "console.inc"             // movq
    .include "gicv3.inc"               // devaddr, UART, GICD
    .include "virtio9p.inc"            // the layout of vio_page

    .macro psci fid, a1=xzr, a2=xzr, a3=xzr
    mov x1, \a1
    mov x2, \a2
    mov x3, \a3
    movq x0, \fid
    adr x9, dev_alias
    ldr x9, [x9]
    cbz x9, 91f
    smc #0                           // a realm's conduit
    b 92f
91: hvc #0
92:
    .endm

    .macro wait_nonzero addr_reg
1:  ldr x9, [\addr_reg]
    cbz x9, 1b
    .endm

    .text
    .global _start
_start:
    bl realm_detect
    devaddr x20, UART
    mov x0, #0
    bl cpu_setup
    bl gic_dist_setup
    say s_hello

// --- 1. a pending timer interrupt is not taken while PSTATE.I is set ------------------
    movq x0, ESR_MARK
    msr esr_el1, x0
    mrs x0, cntvct_el0
    msr cntv_cval_el0, x0            // condition met at once
    mov x0, #1
    msr cntv_ctl_el0, x0
1:  mrs x0, cntv_ctl_el0
    tbz x0, #2, 1b                   // ISTATUS: the PPI is asserted
    mov x9, #2000
2:  subs x9, x9, #1
    b.ne 2b
    say s_masked
    adr x10, records
    ldr x0, [x10, #32]
    bl puthex_line                   // interrupts taken while masked: 0
    .global unmask_at
unmask_at:
    msr daifclr, #2
    .global after_unmask
after_unmask:
    nop
    msr daifset, #2
    say s_timer
    bl print_record0

// --- 2. WFI woken by the timer ------------------------------------------------------------
    adr x10, records
    ldr x21, [x10, #32]              // interrupts so far
    mrs x22, cntvct_el0
    movq x0, 312500                  // 5 ms at 62.5 MHz
    msr cntv_tval_el0, x0
    mov x0, #1
    msr cntv_ctl_el0, x0
3:  ldr x0, [x10, #32]               // IRQs masked: no wake-up is lost between look and WFI
    cmp x0, x21
    b.ne 4f
    wfi                              // wakes on the pending PPI, masked or not
    msr daifclr, #2                  // and takes it here
    isb
    msr daifset, #2
    b 3b
4:  mrs x0, cntvct_el0
    sub x22, x0, x22
    say s_wfi
    ldr x0, [x10, #0]
    bl puthex_sp
    mov x0, x22
    bl puthex_line                   // intid, ticks slept

// --- 3. CPU_ON, AFFINITY_INFO, an SGI to CPU 3 ------------------------------------------
    say s_aff
    psci PSCI_AFFINITY_INFO, #1, #0
    bl puthex_sp                     // CPU 1 before CPU_ON: OFF
    adr x5, secondary
    psci PSCI_CPU_ON, #1, x5, #1
    mov x23, x0
    psci PSCI_AFFINITY_INFO, #1, #0
    mov x24, x0
    mov x0, x23
    bl puthex_sp                     // CPU_ON(1): SUCCESS
    mov x0, x24
    bl puthex_sp                     // CPU 1 just after: ON_PENDING (or ON)
    psci PSCI_AFFINITY_INFO, #0, #0
    bl puthex_sp                     // CPU 0: ON
    movq x5, 0x100
    psci PSCI_AFFINITY_INFO, x5, #0
    bl puthex_line                   // no CPU with Aff1 = 1: INVALID_PARAMETERS
    adr x5, secondary
    psci PSCI_CPU_ON, #2, x5, #2
    adr x5, secondary
    psci PSCI_CPU_ON, #3, x5, #3
    adr x5, secondary
    movq x6, 0x100
    psci PSCI_CPU_ON, x6, x5, #9
    mov x23, x0
    adr x11, mailbox
    add x12, x11, #8
    wait_nonzero x12
    add x12, x11, #16
    wait_nonzero x12
    add x12, x11, #24
    wait_nonzero x12
    say s_on
    mov x0, x23
    bl puthex_sp                     // CPU_ON of a bad MPIDR: INVALID_PARAMETERS
    adr x5, secondary
    psci PSCI_CPU_ON, #3, x5, #3
    bl puthex_line                   // CPU 3 is ON (waiting for its SGI): ALREADY_ON
    adr x12, suspend_result + 8
    wait_nonzero x12
    say s_suspend
    adr x12, suspend_result
    ldr x0, [x12]
    bl puthex_sp
    ldr x0, [x12, #8]
    bl puthex_line                   // CPU 2's CPU_SUSPEND: SUCCESS, after its timer's 1 ms
    say s_mpidr
    adr x11, mailbox
    ldr x0, [x11, #8]
    bl puthex_sp
    ldr x0, [x11, #16]
    bl puthex_sp
    ldr x0, [x11, #24]
    bl puthex_line
4:  psci PSCI_AFFINITY_INFO, #1, #0  // CPU 1 turns itself off
    cmp x0, #1
    b.ne 4b
    mov x23, x0
    say s_off
    mov x0, x23
    bl puthex_line
    adr x12, ready3
    wait_nonzero x12
    mov x0, #(SGI_INTID << 24)
    orr x0, x0, #(1 << 3)            // Aff3.Aff2.Aff1 = 0, target list: CPU 3
    msr ICC_SGI1R_EL1, x0
    isb
    adr x12, sgi_done
    wait_nonzero x12
5:  psci PSCI_AFFINITY_INFO, #3, #0
    cmp x0, #1
    b.ne 5b
    say s_sgi
    adr x10, records
    ldr x0, [x10, #(3 * REC_SIZE)]
    bl puthex_sp
    ldr x0, [x10, #(0 * REC_SIZE + 32)]
    bl puthex_line                   // SGI INTID on CPU 3; CPU 0's count is unchanged

// --- 4. a virtio-9p request: notify, WFI, the device's SPI ------------------------------
    bl virtio_tversion
    say s_virtio
    adr x10, records
    ldr x0, [x10, #0]
    bl puthex_sp                     // INTID
    ldr x0, [x10, #40]
    bl puthex_sp                     // InterruptStatus seen by the handler
    adr x8, vio_dma
    ldr x8, [x8]
    ldrh w0, [x8, #(VQ_USED + 2)]
    bl puthex_sp                     // used index
    ldr w0, [x8, #(VQ_USED + 4)]
    bl puthex_sp                     // used ring[0].id
    ldr w0, [x8, #(VQ_USED + 8)]
    bl puthex_sp                     // used ring[0].len
    ldr w0, [x8, #VQ_RESP]
    bl puthex_sp                     // the reply's size[4]
    ldrb w0, [x8, #(VQ_RESP + 4)]
    bl puthex_line                   // its type: Rversion (101)
    say s_done
    psci PSCI_SYSTEM_OFF, #0
    b .

// --- the virtio-9p request ------------------------------------------------------------
virtio_tversion:
    mov x15, x30
    bl vio_init
    adr x10, records
    ldr x21, [x10, #32]
    mov w0, #0
    bl vio_post                      // QueueNotify, IRQs still masked
6:  wfi                              // the SPI is pending: WFI does not wait
    msr daifclr, #2
    isb
    msr daifset, #2
    ldr x0, [x10, #32]
    cmp x0, x21
    b.eq 6b
    ret x15

virtio_fail:
    say s_virtio_fail
fail_off:
    psci PSCI_SYSTEM_OFF, #1
    b .

// --- CPUs 1-3 -------------------------------------------------------------------------
secondary:                           // x0 = context_id = CPU index
    mov x19, x0
    bl cpu_setup
    mrs x1, mpidr_el1
    adr x2, mailbox
    str x1, [x2, x19, lsl #3]
    cmp x19, #2
    b.ne 9f
    mrs x22, cntvct_el0              // CPU 2: a standby until its own timer's PPI is pending
    movq x0, 62500                   // 1 ms
    msr cntv_tval_el0, x0
    mov x0, #1
    msr cntv_ctl_el0, x0
    psci PSCI_CPU_SUSPEND            // power_state 0: standby; IRQs stay masked
    mov x23, x0
    mrs x0, cntvct_el0
    sub x22, x0, x22
    msr cntv_ctl_el0, xzr
    adr x2, suspend_result
    stp x23, x22, [x2]
    b 8f
9:  cmp x19, #3
    b.ne 8f
    adr x2, ready3
    mov x1, #1
    str x1, [x2]
    adr x10, records
    add x10, x10, #(3 * REC_SIZE)
7:  ldr x0, [x10, #32]
    cbnz x0, 10f
    wfi
    msr daifclr, #2
    isb
    msr daifset, #2
    b 7b
10: adr x2, sgi_done
    mov x1, #1
    str x1, [x2]
8:  psci PSCI_CPU_OFF
    b .

// --- set-up ---------------------------------------------------------------------------
cpu_setup:                           // x0 = CPU index: stack, vectors, redistributor, CPU interface
    adr x1, stacks
    add x2, x0, #1
    add x1, x1, x2, lsl #10
    mov sp, x1
    adr x1, vectors
    msr vbar_el1, x1
    devaddr x1, REDIST0
    mov x2, #0x20000
    madd x1, x0, x2, x1              // this CPU's RD frame
    b gic_redist_setup

// --- output ---------------------------------------------------------------------------
print_record0:                       // CPU 0's record: intid elr spsr esr
    mov x16, x30
    adr x10, records
    ldr x0, [x10, #0]
    bl puthex_sp
    ldr x0, [x10, #8]
    bl puthex_sp
    ldr x0, [x10, #16]
    bl puthex_sp
    ldr x0, [x10, #24]
    bl puthex_line
    ret x16

    .include "console.inc"             // puts, puthex_line, puthex_sp, puthex
    .include "gicv3.inc"               // realm_detect, gic_redist_setup, gic_dist_setup, tversion
    .include "virtio9p.inc"            // vio_init, vio_post

// --- exceptions (vectors, unexpected: gicv3.inc) -------------------------------------

irq_handler:
    stp x0, x1, [sp, #-16]!
    stp x2, x3, [sp, #-16]!
    stp x9, xzr, [sp, #-16]!
    mrs x0, ICC_IAR1_EL1
    mrs x1, mpidr_el1
    and x1, x1, #0xf
    adr x2, records
    mov x3, #REC_SIZE
    madd x2, x1, x3, x2
    str x0, [x2, #0]
    mrs x3, elr_el1
    str x3, [x2, #8]
    mrs x3, spsr_el1
    str x3, [x2, #16]
    mrs x3, esr_el1
    str x3, [x2, #24]
    cmp x0, #27
    b.ne 1f
    msr cntv_ctl_el0, xzr            // the timer's line drops
1:  movq x1, VIRTIO_SPI
    cmp x0, x1
    b.ne 2f
    devaddr x1, VIRTIO_BASE
    ldr w3, [x1, #0x60]              // InterruptStatus
    str x3, [x2, #40]
    str w3, [x1, #0x64]              // InterruptACK
2:  msr ICC_EOIR1_EL1, x0
    ldr x3, [x2, #32]
    add x3, x3, #1
    str x3, [x2, #32]
    ldp x9, xzr, [sp], #16
    ldp x2, x3, [sp], #16
    ldp x0, x1, [sp], #16
    eret

// --- data -----------------------------------------------------------------------------
s_hello:      .asciz "irq guest\n"
s_masked:     .asciz "masked "
s_timer:      .asciz "timer "
s_wfi:        .asciz "wfi "
s_aff:        .asciz "aff "
s_on:         .asciz "on "
s_mpidr:      .asciz "mpidr "
s_off:        .asciz "off "
s_suspend:    .asciz "suspend "
s_sgi:        .asciz "sgi "
s_virtio:     .asciz "virtio "
s_virtio_fail: .asciz "virtio set-up failed\n"
s_done:       .asciz "done\n"

    .balign 64
dev_alias: .quad 0                   // the unprotected IPA bit in a realm, else 0
records:  .skip 4 * REC_SIZE
mailbox:  .skip 4 * 8
ready3:   .quad 0
sgi_done: .quad 0
suspend_result: .quad 0, 0           // CPU 2: x0 of CPU_SUSPEND, ticks it slept
vio_dma:  .quad 0                   // vio_page as the guest and the device address it
    .balign 16
stacks:   .skip 4 * 1024
    .balign 4096
rsi_config: .skip 4096               // RsiRealmConfig
vio_page: .skip 4096                 // the virtqueue: VQ_DESC, VQ_AVAIL, VQ_USED, VQ_REQ, VQ_RESP
