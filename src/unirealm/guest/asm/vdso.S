// The unikernel's vDSO: clock_gettime, gettimeofday and clock_getres without a trap.
//
// Mapped into every process right after a read-only data page (vvar) that the kernel fills:
//   vvar + 0x00  mult: nanoseconds per counter tick, << 24
//   vvar + 0x10  CLOCK_REALTIME - CLOCK_MONOTONIC, in nanoseconds (signed)
// Time is CNTVCT_EL0 (readable at EL0: the kernel sets CNTKCTL_EL1.EL0VCTEN) times mult.
// Clocks the counter does not give (process and thread CPU time) fall back to the syscall.

    .equ NR_CLOCK_GETTIME, 113
    .equ NR_CLOCK_GETRES, 114
    .equ NR_GETTIMEOFDAY, 169
    .equ VVAR_MULT, 0x00
    .equ VVAR_REALTIME_OFFSET, 0x10
    .equ MULT_SHIFT, 24

    .text

// x0 = clock id; returns x9 = nanoseconds, or branches to \fallback
.macro clock_ns fallback
    cmp     w0, #7
    b.hi    \fallback
    cmp     w0, #2                      // CLOCK_PROCESS_CPUTIME_ID
    b.eq    \fallback
    cmp     w0, #3                      // CLOCK_THREAD_CPUTIME_ID
    b.eq    \fallback
    adr     x10, __ehdr_start
    sub     x10, x10, #4096             // the vvar page
    isb
    mrs     x11, cntvct_el0
    ldr     x12, [x10, #VVAR_MULT]
    mul     x13, x11, x12
    umulh   x14, x11, x12
    lsr     x9, x13, #MULT_SHIFT
    orr     x9, x9, x14, lsl #(64 - MULT_SHIFT)
    cmp     w0, #0                      // CLOCK_REALTIME
    b.eq    1f
    cmp     w0, #5                      // CLOCK_REALTIME_COARSE
    b.ne    2f
1:  ldr     x13, [x10, #VVAR_REALTIME_OFFSET]
    add     x9, x9, x13
2:
.endm

    .global __kernel_clock_gettime
    .type   __kernel_clock_gettime, %function
__kernel_clock_gettime:
    cbz     x1, 9f
    clock_ns 9f
    movz    x12, #0xca00
    movk    x12, #0x3b9a, lsl #16       // 1e9
    udiv    x13, x9, x12
    msub    x14, x13, x12, x9
    stp     x13, x14, [x1]
    mov     x0, #0
    ret
9:  mov     x8, #NR_CLOCK_GETTIME
    svc     #0
    ret
    .size   __kernel_clock_gettime, . - __kernel_clock_gettime

    .global __kernel_gettimeofday
    .type   __kernel_gettimeofday, %function
__kernel_gettimeofday:
    cbz     x0, 3f
    mov     x15, x0
    mov     x0, #0                      // CLOCK_REALTIME
    clock_ns 9f
    movz    x12, #0xca00
    movk    x12, #0x3b9a, lsl #16
    udiv    x13, x9, x12
    msub    x14, x13, x12, x9
    mov     x12, #1000
    udiv    x14, x14, x12
    stp     x13, x14, [x15]
3:  cbz     x1, 4f
    str     xzr, [x1]                   // struct timezone: UTC, no DST
4:  mov     x0, #0
    ret
9:  mov     x0, x15
    mov     x8, #NR_GETTIMEOFDAY
    svc     #0
    ret
    .size   __kernel_gettimeofday, . - __kernel_gettimeofday

    .global __kernel_clock_getres
    .type   __kernel_clock_getres, %function
__kernel_clock_getres:
    cmp     w0, #7
    b.hi    9f
    cmp     w0, #2
    b.eq    9f
    cmp     w0, #3
    b.eq    9f
    cbz     x1, 5f
    adr     x10, __ehdr_start
    sub     x10, x10, #4096
    ldr     x12, [x10, #VVAR_MULT]
    lsr     x12, x12, #MULT_SHIFT       // one counter tick in nanoseconds
    stp     xzr, x12, [x1]
5:  mov     x0, #0
    ret
9:  mov     x8, #NR_CLOCK_GETRES
    svc     #0
    ret
    .size   __kernel_clock_getres, . - __kernel_clock_getres

// The return from a signal handler (x30 of a handler without SA_RESTORER): rt_sigreturn
// with SP at the frame. The nop before it lets an unwinder look up the PC before the
// symbol, as Linux's vDSO does.
    nop
    .global __kernel_rt_sigreturn
    .type   __kernel_rt_sigreturn, %function
__kernel_rt_sigreturn:
    mov     x8, #139                    // rt_sigreturn
    svc     #0
    .size   __kernel_rt_sigreturn, . - __kernel_rt_sigreturn
