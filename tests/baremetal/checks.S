// A bare-metal AArch64 guest kernel (raw binary, loaded by the VMM at RAM + 0x80000 =
// 0x80080000, entered at EL1h with x0 = DTB). It finds out whether it is a realm
// (RSI_VERSION over SMC), turns its MMU on with an identity map of RAM at 2 GiB, takes
// stage-1 aborts and SVCs at EL1 and from an EL0 program, makes hypervisor calls over
// the conduit of its environment, reads ID registers, and prints one line per result on
// ttyS0. PSCI SYSTEM_OFF ends the run with x1 = 0.
//
// x19 = 1 in a realm, x20 = UART base (the unprotected alias in a realm), x27/x28 = the
// return the exception handler makes: x28 = 0 to ELR, 1 to ELR + 4, 2 to x30,
// 3 to x27 at EL1h.

    .equ UART, 0x01000000
    .equ NOMAP, 0x801F0000           // a RAM page the stage-1 tables leave invalid
    .equ USER_CODE, 0x801E0000       // EL0 code page (read-only, EL0-executable)
    .equ USER_STACK, 0x801E1000      // EL0 stack page (EL0 read/write, never executable)
    .equ RSI_VERSION, 0xC4000190
    .equ RSI_REALM_CONFIG, 0xC4000196
    .equ RSI_HOST_CALL, 0xC4000199
    .equ RSI_IPA_STATE_SET, 0xC4000197

    .include "console.inc"             // movq

    .macro say label
    adr x0, \label
    bl puts
    .endm

    // conduit call: smc in a realm, hvc in a plain VM (x19 selects)
    .macro call_conduit
    cbz x19, 1f
    smc #0
    b 2f
1:  hvc #0
2:
    .endm

    .text
    .global _start
_start:
    adr x0, stack_top
    mov sp, x0
    adr x0, vectors
    msr vbar_el1, x0
    isb
    movq x20, UART
    mov x19, #0
    movq x0, RSI_VERSION
    mov x1, #0x10000
    smc #0
    cbnz x0, 1f
    mov x19, #1
    movq x0, RSI_REALM_CONFIG
    adr x1, rsi_buf
    smc #0
    adr x1, rsi_buf
    ldr x2, [x1]                     // ipa_width
    sub x2, x2, #1
    mov x3, #1
    lsl x3, x3, x2
    orr x20, x20, x3
    movq x1, USER_CODE               // the EL0 pages are RAM beyond the image: RIPAS RAM
4:  movq x0, RSI_IPA_STATE_SET
    movq x2, (USER_STACK + 4096)
    mov x3, #1                       // RIPAS_RAM
    mov x4, #0
    smc #0
    cbnz x0, fail
    movq x2, (USER_STACK + 4096)
    cmp x1, x2
    b.lo 4b
1:  cbz x19, 2f
    say s_realm
    b 3f
2:  say s_plain
3:
    // --- MMU on: identity map, RAM at 2 GiB through L1[2] -> L2[0] -> L3 ---------------
    adr x0, l3
    movq x1, NOMAP
    movq x2, 0x80000000
    sub x3, x1, x2
    lsr x3, x3, #9                   // (va - base) / 4096 * 8
    str xzr, [x0, x3]                // NOMAP: invalid
    movq x1, USER_CODE
    sub x3, x1, x2
    lsr x3, x3, #9
    movq x4, (USER_CODE | 0x0020000000000787)   // PXN, AP=11 (EL0/EL1 read-only), AF, SH, Attr1, page
    str x4, [x0, x3]
    add x3, x3, #8
    movq x4, (USER_STACK | 0x0060000000000747)  // PXN UXN, AP=01 (EL0/EL1 read/write), AF, SH, Attr1, page
    str x4, [x0, x3]
    movq x0, USER_CODE
    adr x1, user_program
    mov x2, #0
1:  ldr w3, [x1, x2]                 // copy the EL0 program into its page while the MMU is
    str w3, [x0, x2]                 // off: once on, the page is read-only at EL1 too
    add x2, x2, #4
    cmp x2, #(user_program_end - user_program)
    b.lo 1b
    dsb sy
    ic iallu
    dsb sy
    movq x0, 0xff00                  // MAIR: Attr0 Device-nGnRnE, Attr1 Normal WB
    msr mair_el1, x0
    movq x0, (25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
    msr tcr_el1, x0                  // T0SZ 25 (39-bit VA), 4K granule, TTBR1 walks off, IPS 40 bits
    adr x0, l1
    msr ttbr0_el1, x0
    isb
    mrs x0, sctlr_el1
    movq x1, ((1 << 0) | (1 << 2) | (1 << 12) | (1 << 23))  // M, C, I, SPAN
    orr x0, x0, x1
    msr sctlr_el1, x0
    isb
    adr x1, probe_word
    ldr x2, [x1]
    movq x3, 0x0123456789abcdef
    cmp x2, x3
    b.ne fail
    say s_mmu
    mrs x0, sctlr_el1
    bl puthex_line

    // --- stage-1 data and prefetch aborts at EL1 -------------------------------------
    say s_el1_dabt
    mov x28, #1
    movq x1, (NOMAP + 8)
el1_dabt_at:
    ldr x2, [x1]
    say s_el1_iabt
    mov x28, #2
    movq x1, NOMAP
    blr x1

    // --- an EL0 program: SVC, data and prefetch aborts, then back to EL1 -------------
    say s_el0
    adr x27, el0_done
    movq x0, USER_STACK + 4096
    msr sp_el0, x0
    isb
    movq x0, USER_CODE
    msr elr_el1, x0
    msr spsr_el1, xzr                // EL0t
    eret
el0_done:
    say s_back

    // --- a VA that is not its IPA: RAM seen again at 5 GiB; in a realm, RIPAS EMPTY there -
    cbz x19, 7f                      // a realm first gives that page to the host (all RAM starts RIPAS RAM)
    movq x1, 0x80600000
8:  movq x0, RSI_IPA_STATE_SET
    movq x2, 0x80601000
    mov x3, #0                       // RIPAS_EMPTY
    mov x4, #0
    smc #0
    cbnz x0, fail
    movq x2, 0x80601000
    cmp x1, x2
    b.lo 8b
7:  say s_alias
    mov x28, #1
    movq x1, 0x140600008             // -> IPA 0x80600008
alias_ldr_at:
    ldr x2, [x1]

    // --- hypervisor calls and ID registers -------------------------------------------
    say s_idregs
    mrs x0, id_aa64pfr0_el1
    bl puthex_line
    mrs x0, id_aa64dfr0_el1
    bl puthex_line
    cbz x19, plain_calls

    say s_realm_hvc
    mov x28, #0
realm_hvc_at:
    hvc #0
    say s_hostcall
    adr x1, rsi_buf
    str xzr, [x1]                    // imm = 0
    movq x0, 0x80000000              // gprs[0] = SMCCC_VERSION
    str x0, [x1, #8]
    movq x0, RSI_HOST_CALL
    smc #0
    bl puthex_line                   // RSI status
    adr x1, rsi_buf
    ldr x0, [x1, #8]
    bl puthex_line                   // the host's x0
    adr x1, rsi_buf
    movq x0, 0x80000001              // SMCCC_ARCH_FEATURES(SMCCC_VERSION)
    str x0, [x1, #8]
    movq x0, 0x80000000
    str x0, [x1, #16]
    movq x0, RSI_HOST_CALL
    smc #0
    adr x1, rsi_buf
    ldr x0, [x1, #8]
    bl puthex_line
    adr x1, rsi_buf
    movq x0, 0xC2001234              // an FID nobody implements
    str x0, [x1, #8]
    movq x0, RSI_HOST_CALL
    smc #0
    adr x1, rsi_buf
    ldr x0, [x1, #8]
    bl puthex_line
    b off

plain_calls:
    // SVE, which ID_AA64PFR0_EL1 shows a VM: EL1 turns it on (CPACR_EL1.ZEN, FPEN) and picks
    // its vector length (ZCR_EL1.LEN); RDVL gives it in bytes.
    say s_sve
    mrs x0, cpacr_el1
    orr x0, x0, #(3 << 16)
    orr x0, x0, #(3 << 20)
    msr cpacr_el1, x0
    isb
    mov x0, #1
    msr s3_0_c1_c2_0, x0             // ZCR_EL1.LEN = 1: 256 bits
    isb
    .inst 0x04bf5020                 // rdvl x0, #1
    bl puthex_line
    say s_psci
    movq x0, 0x84000000              // PSCI_VERSION
    hvc #0
    bl puthex_line
    movq x0, 0x8400000A              // PSCI_FEATURES(CPU_ON_64)
    movq x1, 0xC4000003
    hvc #0
    bl puthex_line
    movq x0, 0xC4000004              // AFFINITY_INFO_64(mpidr 0, level 0)
    mov x1, #0
    mov x2, #0
    hvc #0
    bl puthex_line
    movq x0, 0xC4000003              // CPU_ON_64(mpidr 0): this CPU is on
    mov x1, #0
    adr x2, fail
    mov x3, #0
    hvc #0
    bl puthex_line
    movq x0, 0xC4000003              // CPU_ON_64(mpidr 1): no such CPU
    mov x1, #1
    adr x2, fail
    mov x3, #0
    hvc #0
    bl puthex_line
    movq x0, 0x80000000              // SMCCC_VERSION
    hvc #0
    bl puthex_line

off:
    say s_off
    movq x0, 0x84000008              // PSCI_SYSTEM_OFF, x1 = exit status
    mov x1, #0
    call_conduit
    b .

fail:
    say s_fail
    movq x0, 0x84000008
    mov x1, #1
    call_conduit
    b .

// --- the EL0 program (copied to USER_CODE) ------------------------------------------
user_program:
    mov x28, #0
    mov x9, #0x1234
user_svc_at:
    svc #0x77                        // the handler prints ESR, ELR and SP_EL0, returns to ELR
    mov x28, #1
    movz x1, #(NOMAP & 0xffff)
    movk x1, #(NOMAP >> 16), lsl #16
user_ldr_at:
    ldr x2, [x1, #16]                // EL0 data abort
    mov x28, #2
    blr x1                           // EL0 prefetch abort
    mov x28, #3
user_exit_at:
    svc #0                           // back to EL1 at x27
user_program_end:

// --- console ------------------------------------------------------------------------
    .include "console.inc"             // puts, puthex_line, puthex_sp, puthex

// --- exceptions ---------------------------------------------------------------------
// Every synchronous exception prints: exc <vector offset> <ESR> <FAR> <ELR> <SPSR> <SP_EL0> <SP>
    .macro vector offset
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x0, #\offset
    b handler
    .endm

    .balign 0x800
vectors:
    vector 0x000
    vector 0x080
    vector 0x100
    vector 0x180
    vector 0x200
    vector 0x280
    vector 0x300
    vector 0x380
    vector 0x400
    vector 0x480
    vector 0x500
    vector 0x580
    vector 0x600
    vector 0x680
    vector 0x700
    vector 0x780

handler:
    stp x2, x3, [sp, #-16]!
    stp x4, x5, [sp, #-16]!
    str x30, [sp, #-16]!
    mov x5, x0
    adr x0, s_exc
    bl puts
    mov x0, x5
    bl puthex_sp
    mrs x0, esr_el1
    bl puthex_sp
    mrs x0, far_el1
    bl puthex_sp
    mrs x0, elr_el1
    bl puthex_sp
    mrs x0, spsr_el1
    bl puthex_sp
    mrs x0, sp_el0                   // privileged: UNDEF if the handler ran with EL0 state
    bl puthex_sp
    add x0, sp, #64                  // the SP the exception found
    bl puthex_line
    ldr x30, [sp], #16
    ldp x4, x5, [sp], #16
    cmp x28, #1
    b.ne 1f
    mrs x0, elr_el1
    add x0, x0, #4
    msr elr_el1, x0
    b 9f
1:  cmp x28, #2
    b.ne 2f
    msr elr_el1, x30
    b 9f
2:  cmp x28, #3
    b.ne 9f
    msr elr_el1, x27
    mov x0, #0x3c5
    msr spsr_el1, x0
9:  ldp x2, x3, [sp], #16
    ldp x0, x1, [sp], #16
    eret

s_realm:    .asciz "env realm\n"
s_plain:    .asciz "env plain\n"
s_mmu:      .asciz "mmu on, sctlr "
s_el1_dabt: .asciz "el1 data abort\n"
s_el1_iabt: .asciz "el1 prefetch abort\n"
s_el0:      .asciz "el0 program\n"
s_back:     .asciz "back at el1\n"
s_alias:    .asciz "alias load\n"
s_idregs:   .asciz "id registers\n"
s_realm_hvc: .asciz "hvc in a realm\n"
s_hostcall: .asciz "host call\n"
s_psci:     .asciz "psci over hvc\n"
s_sve:      .asciz "sve\n"
s_off:      .asciz "system off\n"
s_fail:     .asciz "FAIL\n"
s_exc:      .asciz "exc "

    .balign 8
probe_word: .quad 0x0123456789abcdef

    .balign 4096
rsi_buf:    .space 4096
    .space 4096
stack_top:

// --- stage-1 tables -----------------------------------------------------------------
    .balign 4096
l1:
    .quad 0x0060000000000401         // [0] 0..1 GiB: Device-nGnRnE block (UART, RTC, virtio)
    .quad 0
    .quad l2 + 3                     // [2] 2..3 GiB: RAM, through L2
    .quad 0
    .quad 0x0060000100000401         // [4] 4..5 GiB: the realm's unprotected alias (33-bit IPA)
    .quad 0x0000000080000705         // [5] 5..6 GiB: RAM again, a Normal block
    .fill 506, 8, 0
l2:
    .quad l3 + 3                     // [0] 0x80000000..0x80200000 through L3
    .set blk, 0x80200000
    .rept 511
    .quad blk | 0x705                // 2 MiB Normal blocks
    .set blk, blk + 0x200000
    .endr
l3:
    .set pg, 0x80000000
    .rept 512
    .quad pg | 0x707                 // 4 KiB Normal pages, EL1 read/write
    .set pg, pg + 0x1000
    .endr
