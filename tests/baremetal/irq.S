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

    .equ UART, 0x01000000
    .equ GICD, 0x3fff0000
    .equ ESR_MARK, 0x5600abcd        // written to ESR_EL1: an IRQ must leave it alone
    .equ PSCI_CPU_SUSPEND, 0xc4000001
    .equ PSCI_CPU_OFF, 0x84000002
    .equ PSCI_CPU_ON, 0xc4000003
    .equ PSCI_AFFINITY_INFO, 0xc4000004
    .equ PSCI_SYSTEM_OFF, 0x84000008
    .equ RSI_VERSION, 0xc4000190
    .equ RSI_REALM_CONFIG, 0xc4000196
    .equ RSI_IPA_STATE_SET, 0xc4000197
    .equ VQ_DESC, 0                  // offsets in vio_page: 8 descriptors,
    .equ VQ_AVAIL, 128               // the driver ring,
    .equ VQ_USED, 256                // the device ring,
    .equ VQ_REQ, 512                 // the Tversion request,
    .equ VQ_RESP, 1024               // the reply buffer (256 bytes)
    .equ SGI_INTID, 5
    .equ REC_SIZE, 64                // per CPU: intid, elr, spsr, esr, count, vio_status

    .include "console.inc"             // movq

    .macro say label
    adr x0, \label
    bl puts
    .endm

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

    .macro devaddr reg, addr         // a device's address: its IPA, in a realm its unprotected alias
    movq \reg, \addr
    adr x9, dev_alias
    ldr x9, [x9]
    orr \reg, \reg, x9
    .endm

    .macro wait_nonzero addr_reg
1:  ldr x9, [\addr_reg]
    cbz x9, 1b
    .endm

    .text
    .global _start
_start:
    movq x0, RSI_VERSION
    mov x1, #0x10000
    smc #0                           // a plain VM's KVM answers NOT_SUPPORTED
    cbnz x0, 1f
    movq x0, RSI_REALM_CONFIG
    adr x1, rsi_config
    smc #0
    adr x1, rsi_config
    ldr x2, [x1]                     // ipa_width
    sub x2, x2, #1
    mov x3, #1
    lsl x3, x3, x2
    adr x1, dev_alias
    str x3, [x1]
1:  devaddr x20, UART
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
// Rings and buffers live in one page, vio_page. In a realm, as a Linux realm's DMA API
// does, the page is first made RIPAS EMPTY (RSI_IPA_STATE_SET) and then used through its
// unprotected alias, which is also the address the device is given; elsewhere the page is
// used as it is.
virtio_tversion:
    mov x15, x30
    adr x8, vio_page
    adr x9, dev_alias
    ldr x9, [x9]
    cbz x9, 2f
    mov x1, x8                       // base
1:  movq x0, RSI_IPA_STATE_SET
    add x2, x8, #4096                // top
    mov x3, #0                       // RIPAS_EMPTY
    mov x4, #0                       // flags
    smc #0
    cbnz x0, virtio_fail
    cbnz x2, virtio_fail             // the host REJECTed it
    add x2, x8, #4096
    cmp x1, x2
    b.lo 1b
    adr x9, dev_alias
    ldr x9, [x9]
    orr x8, x8, x9
2:  adr x2, vio_dma
    str x8, [x2]
    adr x2, tversion                 // the request into the (shared) page
    add x3, x8, #VQ_REQ
    mov x4, #(tversion_end - tversion)
3:  ldrb w5, [x2], #1
    strb w5, [x3], #1
    subs x4, x4, #1
    b.ne 3b
    devaddr x1, VIRTIO_BASE
    str wzr, [x1, #0x70]             // Status: reset
    mov w0, #1
    str w0, [x1, #0x70]              // ACKNOWLEDGE
    mov w0, #3
    str w0, [x1, #0x70]              // DRIVER
    mov w0, #1
    str w0, [x1, #0x14]              // DeviceFeaturesSel 1
    ldr w2, [x1, #0x10]
    and w2, w2, #3                   // VIRTIO_F_VERSION_1 (32), ACCESS_PLATFORM (33) if offered
    str w0, [x1, #0x24]              // DriverFeaturesSel 1
    str w2, [x1, #0x20]
    str wzr, [x1, #0x24]
    str wzr, [x1, #0x20]
    mov w0, #0xb
    str w0, [x1, #0x70]              // FEATURES_OK
    ldr w0, [x1, #0x70]
    tbz w0, #3, virtio_fail          // the device did not accept the features
    str wzr, [x1, #0x30]             // QueueSel 0
    mov w0, #8
    str w0, [x1, #0x38]              // QueueNum 8
    add x2, x8, #VQ_DESC
    str w2, [x1, #0x80]
    lsr x3, x2, #32
    str w3, [x1, #0x84]
    add x2, x8, #VQ_AVAIL
    str w2, [x1, #0x90]
    lsr x3, x2, #32
    str w3, [x1, #0x94]
    add x2, x8, #VQ_USED
    str w2, [x1, #0xa0]
    lsr x3, x2, #32
    str w3, [x1, #0xa4]
    mov w0, #1
    str w0, [x1, #0x44]              // QueueReady
    mov w0, #0xf
    str w0, [x1, #0x70]              // DRIVER_OK
    // descriptor 0: the Tversion request, then descriptor 1: the reply buffer
    add x2, x8, #VQ_DESC
    add x3, x8, #VQ_REQ
    str x3, [x2, #0]
    mov w3, #(tversion_end - tversion)
    str w3, [x2, #8]
    mov w3, #1                       // VIRTQ_DESC_F_NEXT
    strh w3, [x2, #12]
    strh w3, [x2, #14]               // next = 1
    add x3, x8, #VQ_RESP
    str x3, [x2, #16]
    mov w3, #256
    str w3, [x2, #24]
    mov w3, #2                       // VIRTQ_DESC_F_WRITE
    strh w3, [x2, #28]
    add x2, x8, #VQ_AVAIL
    strh wzr, [x2, #4]               // ring[0] = descriptor 0
    mov w3, #1
    strh w3, [x2, #2]                // idx = 1
    dsb sy
    adr x10, records
    ldr x21, [x10, #32]
    str wzr, [x1, #0x50]             // QueueNotify 0, IRQs still masked
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
    str wzr, [x1, #0x14]             // GICR_WAKER: ProcessorSleep = 0
    add x1, x1, #0x10000             // SGI frame
    mov w2, #-1
    str w2, [x1, #0x80]              // GICR_IGROUPR0: Group 1
    movz w2, #0xffff
    movk w2, #(1 << (27 - 16)), lsl #16
    str w2, [x1, #0x100]             // GICR_ISENABLER0: SGIs and the virtual timer's PPI 27
    mov x1, #0xf0
    msr ICC_PMR_EL1, x1
    mov x1, #1
    msr ICC_IGRPEN1_EL1, x1
    isb
    ret

gic_dist_setup:
    devaddr x1, GICD
    mov w2, #2
    str w2, [x1, #0]                 // GICD_CTLR.EnableGrp1 (ARE is RAO)
    movq x3, VIRTIO_SPI
    lsr x4, x3, #4                   // ICFGR<n>: 16 INTIDs each
    add x5, x1, #0xc00
    and x6, x3, #15
    lsl x6, x6, #1
    add x6, x6, #1
    mov w7, #1
    lsl w7, w7, w6
    str w7, [x5, x4, lsl #2]         // edge-triggered, as the DT says
    lsr x4, x3, #5
    add x5, x1, #0x100
    and x6, x3, #31
    mov w7, #1
    lsl w7, w7, w6
    str w7, [x5, x4, lsl #2]         // GICD_ISENABLER<n>
    ret

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

// --- exceptions -----------------------------------------------------------------------
    .macro vector target
    .balign 0x80
    b \target
    .endm

    .balign 0x800
vectors:
    vector unexpected                // current EL, SP0
    vector unexpected
    vector unexpected
    vector unexpected
    vector unexpected                // current EL, SPx: synchronous
    vector irq_handler               // IRQ
    vector unexpected                // FIQ
    vector unexpected
    .rept 8
    vector unexpected                // lower EL
    .endr

unexpected:
    devaddr x20, UART
    say s_unexpected
    mrs x0, esr_el1
    bl puthex_sp
    mrs x0, elr_el1
    bl puthex_line
    psci PSCI_SYSTEM_OFF, #1
    b .

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
s_unexpected: .asciz "unexpected "

    .balign 8
tversion:                            // size[4] Tversion[1] tag[2] msize[4] version[s]
    .word tversion_end - tversion
    .byte 100
    .hword 0xffff
    .word 8192
    .hword 8
    .ascii "9P2000.L"
tversion_end:

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
