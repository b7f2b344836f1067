/* What EL0 may touch of the system registers, as Linux sets EL1's controls for it: the
 * virtual counter, CTR_EL0 and DCZID_EL0 read (CNTKCTL_EL1.EL0VCTEN, SCTLR_EL1.UCT), TPIDR_EL0
 * written and read back, DC ZVA zeroing exactly its DCZID_EL0-sized block (SCTLR_EL1.DZE); an EL1 register read, an
 * EL1 register write and a DAIF write are UNDEFINED at EL0, so each ends in SIGILL, which a
 * handler catches. One line per access. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static sigjmp_buf back;
static volatile int ill_code;  /* ILL_ILLOPC on Linux (do_undefinstr); qemu-user says ILL_ILLOPN */

static void on_ill(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    ill_code = si->si_code;
    siglongjmp(back, 1);
}

#define TRY(name, stmt) do { \
    ill_code = 0; \
    if (sigsetjmp(back, 1) == 0) { stmt; printf("%s: ran\n", name); } \
    else printf("%s: SIGILL\n", name); \
} while (0)

int main(void) {
    struct sigaction sa;
    uint64_t v = 0, t = 0;
    static unsigned char block[8192] __attribute__((aligned(4096)));
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_ill;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGILL, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);
    TRY("cntvct_el0", asm volatile("mrs %0, cntvct_el0" : "=r"(v)));
    TRY("ctr_el0", asm volatile("mrs %0, ctr_el0" : "=r"(v)));
    TRY("dczid_el0", asm volatile("mrs %0, dczid_el0" : "=r"(v)));
    printf("dc zva allowed: %d\n", (int)!(v & 16));
    asm volatile("mrs %0, tpidr_el0" : "=r"(t));
    asm volatile("msr tpidr_el0, %0" :: "r"((uint64_t)0x1234));
    asm volatile("mrs %0, tpidr_el0" : "=r"(v));
    asm volatile("msr tpidr_el0, %0" :: "r"(t));
    printf("tpidr_el0 round trip: %d\n", v == 0x1234);
    asm volatile("mrs %0, dczid_el0" : "=r"(v));
    size_t bs = (size_t)4 << (v & 15), at = 4096 + 8;  /* a block size the CPU names; an unaligned address */
    size_t lo = at & ~(bs - 1), zeroed = 1, kept = 1;
    memset(block, 0xAA, sizeof block);
    asm volatile("dc zva, %0" :: "r"(block + at) : "memory");
    for (size_t i = 0; i < sizeof block; i++) {
        if (i >= lo && i < lo + bs) zeroed &= block[i] == 0;
        else kept &= block[i] == 0xAA;
    }
    printf("dc zva: its block zeroed %d, the rest kept %d\n", (int)zeroed, (int)kept);
    TRY("CurrentEL", asm volatile("mrs %0, CurrentEL" : "=r"(v)));
    TRY("sctlr_el1 read", asm volatile("mrs %0, sctlr_el1" : "=r"(v)));
    TRY("vbar_el1 write", asm volatile("msr vbar_el1, %0" :: "r"((uint64_t)0)));
    TRY("daifset", asm volatile("msr daifset, #2"));
    printf("done\n");
    return 0;
}
