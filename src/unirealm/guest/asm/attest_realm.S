// attest_realm: a minimal realm that produces its own CCA attestation token.
//
// It runs at EL1 with the MMU off (VA = IPA), loaded at the start of its RAM, and talks to
// the RMM only through RSI (SMC #0) and to the host only through RSI_HOST_CALL:
//   1. RSI_VERSION(1.0), RSI_REALM_CONFIG -> IPA width -> the unprotected IPA bit
//   2. REM extends the host asks for        (host call GET_REM, then RSI_MEASUREMENT_EXTEND)
//   3. the challenge the host passes on     (host call GET_CHALLENGE, then TOKEN_INIT)
//   4. RSI_ATTESTATION_TOKEN_CONTINUE into protected buffer granules, as Linux does
//   5. RSI_IPA_STATE_SET(EMPTY) on a buffer, copy the token through its unprotected alias
//   6. host call TOKEN(ipa, length), then PSCI SYSTEM_OFF
// On any failure: host call FAIL(step, status), then PSCI SYSTEM_OFF.

    .equ RSI_VERSION,                0xC4000190
    .equ RSI_MEASUREMENT_EXTEND,     0xC4000193
    .equ RSI_TOKEN_INIT,             0xC4000194
    .equ RSI_TOKEN_CONTINUE,         0xC4000195
    .equ RSI_REALM_CONFIG,           0xC4000196
    .equ RSI_IPA_STATE_SET,          0xC4000197
    .equ RSI_HOST_CALL,              0xC4000199
    .equ PSCI_SYSTEM_OFF,            0x84000008
    .equ RSI_INCOMPLETE,             3

    .equ HC_GET_CHALLENGE,           1
    .equ HC_GET_REM,                 2
    .equ HC_TOKEN,                   3
    .equ HC_FAIL,                    4

    // Offsets from the load address (the start of RAM)
    .equ CONFIG_OFF,                 0x10000    // RsiRealmConfig granule
    .equ HOSTCALL_OFF,               0x11000    // RsiHostCall
    .equ TOKBUF_OFF,                 0x12000    // token bounce granules (protected)
    .equ TOKBUF_PAGES,               4
    .equ SHARED_OFF,                 0x20000    // granules shared with the host

    .text
    .global _start
_start:
    adr     x19, _start                 // x19 = RAM base
    add     x22, x19, #HOSTCALL_OFF     // x22 = RsiHostCall

    // 1. RSI version and realm configuration
    mov     x27, #1
    ldr     x0, =RSI_VERSION
    mov     x1, #0x10000
    smc     #0
    cbnz    x0, fail

    mov     x27, #2
    add     x20, x19, #CONFIG_OFF
    mov     x0, x20
    mov     x1, #4096
    bl      zero
    ldr     x0, =RSI_REALM_CONFIG
    mov     x1, x20
    smc     #0
    cbnz    x0, fail
    ldr     x21, [x20]                  // ipa_width
    sub     x1, x21, #1
    mov     x2, #1
    lsl     x21, x2, x1                 // x21 = unprotected IPA bit

    // 2. REM extends
rem_loop:
    mov     x27, #3
    mov     x0, #HC_GET_REM
    bl      host_call
    cbnz    x0, fail
    ldr     x1, [x22, #8]               // gprs[0] = REM index, 0 = no more
    cbz     x1, rem_done
    ldr     x2, [x22, #16]              // gprs[1] = size
    ldp     x3, x4, [x22, #24]          // gprs[2..9] = value
    ldp     x5, x6, [x22, #40]
    ldp     x7, x8, [x22, #56]
    ldp     x9, x10, [x22, #72]
    mov     x27, #4
    ldr     x0, =RSI_MEASUREMENT_EXTEND
    smc     #0
    cbnz    x0, fail
    b       rem_loop
rem_done:

    // 3. challenge -> token init
    mov     x27, #5
    mov     x0, #HC_GET_CHALLENGE
    bl      host_call
    cbnz    x0, fail
    ldp     x1, x2, [x22, #8]
    ldp     x3, x4, [x22, #24]
    ldp     x5, x6, [x22, #40]
    ldp     x7, x8, [x22, #56]
    mov     x27, #6
    ldr     x0, =RSI_TOKEN_INIT
    smc     #0
    cbnz    x0, fail

    // 4. continue until the whole token is in the bounce granules
    add     x23, x19, #TOKBUF_OFF       // x23 = first bounce granule
    mov     x24, #0                     // x24 = token length so far
    mov     x25, x23                    // x25 = current granule
granule_loop:
    mov     x26, #0                     // x26 = offset in the granule
continue_loop:
    mov     x27, #7
    ldr     x0, =RSI_TOKEN_CONTINUE
    mov     x1, x25
    mov     x2, x26
    mov     x3, #4096
    sub     x3, x3, x26
    smc     #0
    add     x26, x26, x1
    add     x24, x24, x1
    cbz     x0, token_done
    cmp     x0, #RSI_INCOMPLETE
    b.ne    fail
    cmp     x26, #4096
    b.lo    continue_loop
    add     x25, x25, #4096
    mov     x27, #8
    add     x1, x23, #(TOKBUF_PAGES * 4096)
    cmp     x25, x1
    b.hs    fail
    b       granule_loop
token_done:

    // 5. share ceil(len / 4096) granules and copy the token out through the alias
    add     x25, x19, #SHARED_OFF       // x25 = shared base (protected IPA)
    add     x26, x24, #4095
    and     x26, x26, #0xfffffffffffff000
    add     x26, x25, x26               // x26 = shared top
    mov     x28, x25
share_loop:
    mov     x27, #9
    ldr     x0, =RSI_IPA_STATE_SET
    mov     x1, x28
    mov     x2, x26
    mov     x3, #0                      // RIPAS EMPTY
    mov     x4, #1                      // CHANGE_DESTROYED
    smc     #0
    cbnz    x0, fail
    mov     x27, #10
    mov     x0, x2                      // RsiResponse: must be ACCEPT
    cbnz    x2, fail
    mov     x28, x1
    cmp     x28, x26
    b.lo    share_loop

    orr     x1, x25, x21                // destination: the unprotected alias
    mov     x0, x23                     // source: the bounce granules
    mov     x2, #0
copy_loop:
    ldr     x3, [x0, x2]
    str     x3, [x1, x2]
    add     x2, x2, #8
    cmp     x2, x24
    b.lo    copy_loop

    // 6. hand the token to the host, then power off
    mov     x27, #11
    bl      clear_host_call
    str     x25, [x22, #8]
    str     x24, [x22, #16]
    mov     x0, #HC_TOKEN
    bl      host_call_keep
    cbnz    x0, fail
    b       power_off

fail:
    mov     x26, x0                     // x0 = the failing status
    bl      clear_host_call
    str     x27, [x22, #8]
    str     x26, [x22, #16]
    mov     x0, #HC_FAIL
    bl      host_call_keep
power_off:
    ldr     x0, =PSCI_SYSTEM_OFF
    smc     #0
    b       power_off

// host_call(x0 = imm): zero the structure, set imm, RSI_HOST_CALL; x0 = RSI status
host_call:
    mov     x9, x0
    mov     x10, x30
    bl      clear_host_call
    mov     x0, x9
    mov     x30, x10
// host_call_keep(x0 = imm): keep the gprs already written
host_call_keep:
    strh    w0, [x22]
    ldr     x0, =RSI_HOST_CALL
    mov     x1, x22
    smc     #0
    ret

clear_host_call:
    mov     x0, x22
    mov     x1, #256
// zero(x0 = base, x1 = size, a multiple of 16)
zero:
    add     x1, x0, x1
1:  stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    1b
    ret

    .ltorg
