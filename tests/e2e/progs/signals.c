/* Signal delivery as Linux arm64 does it, one line of output per behaviour; run under
 * qemu-aarch64-static and on the unikernel, the two outputs must be equal.
 * "signals abort" ends with abort() instead (status 128 + SIGABRT). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static volatile sig_atomic_t count, got_signo, got_code, got_pid, blocked_inside, order_len;
static volatile uintptr_t got_addr, local_addr;
static char order[64];
static sigjmp_buf jump;
static int pipe_w = -1;

static void on(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = flags | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) { perror("sigaction"); exit(1); }
}

static void record(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_signo = si->si_signo;
    got_code = si->si_code;
    got_pid = si->si_pid;
    count++;
    (void)sig;
}

static void is_blocked(int sig, siginfo_t *si, void *uc) {
    sigset_t now;
    (void)si; (void)uc;
    sigprocmask(SIG_BLOCK, NULL, &now);
    blocked_inside = sigismember(&now, sig);
    count++;
}

static void where(int sig, siginfo_t *si, void *uc) {
    int local;
    stack_t ss;
    (void)sig; (void)si; (void)uc;
    local_addr = (uintptr_t)&local;
    sigaltstack(NULL, &ss);
    blocked_inside = ss.ss_flags;
}

static void note(char c) { if (order_len < 63) order[order_len++] = c; }
static void inner(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; note('2'); }
static void outer(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    note('['); raise(SIGUSR2); note(']');
}

static void alarm_plain(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; count++; }
static void alarm_feed(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    count++;
    if (write(pipe_w, "x", 1) != 1) _exit(9);
}

static void fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_signo = sig;
    got_code = si->si_code;
    got_addr = (uintptr_t)si->si_addr;
    siglongjmp(jump, 1);
}

static void skip(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    got_signo = sig;
    got_addr = (uintptr_t)si->si_addr == uc->uc_mcontext.pc;
    uc->uc_mcontext.pc += 4;  /* return past the instruction */
}

static uint64_t get_fpcr(void) { uint64_t v; __asm__ volatile("mrs %0, fpcr" : "=r"(v)); return v; }
static void set_fpcr(uint64_t v) { __asm__ volatile("msr fpcr, %0" :: "r"(v)); }
#define RMODE_UP (1u << 22)
#define RMODE_ZERO (3u << 22)

static void clobber_fp(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    set_fpcr(RMODE_ZERO);
    __asm__ volatile("movi v16.16b, #0x5a\n\tmovi v31.16b, #0xa5" ::: "v16", "v31");
    count++;
}

static void arm_timer(long usec) {
    struct itimerval it = {{0, 0}, {usec / 1000000, usec % 1000000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void test_siginfo(void) {
    on(SIGUSR1, record, 0);
    count = 0;
    raise(SIGUSR1);
    printf("raise: handler ran %d signo %d code %d pid %s\n", count, got_signo, got_code,
           got_pid == getpid() ? "self" : "other");
    kill(getpid(), SIGUSR1);
    printf("kill: signo %d code %d\n", got_signo, got_code);
    for (int i = 0; i < 5; i++) raise(SIGUSR1);
    printf("global after 7 signals: %d\n", count);
}

static void test_block_pending(void) {
    sigset_t set, pending;
    on(SIGUSR2, record, 0);
    count = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR2);
    raise(SIGUSR2);  /* a standard signal is pending once */
    sigpending(&pending);
    printf("blocked: ran %d pending %d\n", count, sigismember(&pending, SIGUSR2));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    sigpending(&pending);
    printf("unblocked: ran %d pending %d\n", count, sigismember(&pending, SIGUSR2));
}

static void test_flags(void) {
    struct sigaction old;
    on(SIGUSR1, is_blocked, SA_RESETHAND);
    count = 0;
    raise(SIGUSR1);
    sigaction(SIGUSR1, NULL, &old);
    printf("resethand: ran %d blocked inside %d now default %d\n", count, blocked_inside,
           old.sa_handler == SIG_DFL);
    on(SIGUSR1, is_blocked, SA_NODEFER);
    raise(SIGUSR1);
    printf("nodefer: blocked inside %d\n", blocked_inside);
    on(SIGUSR1, outer, 0);
    on(SIGUSR2, inner, 0);
    order_len = 0;
    raise(SIGUSR1);
    order[order_len] = 0;
    printf("nested: %s\n", order);
}

static void test_altstack(void) {
    static char stack[65536];
    stack_t ss = {.ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0}, old;
    if (sigaltstack(&ss, NULL) != 0) { perror("sigaltstack"); exit(1); }
    on(SIGUSR1, where, SA_ONSTACK);
    raise(SIGUSR1);
    int on_alt = local_addr >= (uintptr_t)stack && local_addr < (uintptr_t)stack + sizeof stack;
    printf("altstack: handler on it %d flags inside %d\n", on_alt, blocked_inside);
    on(SIGUSR1, where, 0);
    raise(SIGUSR1);
    on_alt = local_addr >= (uintptr_t)stack && local_addr < (uintptr_t)stack + sizeof stack;
    printf("no SA_ONSTACK: handler on it %d\n", on_alt);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, &old);
    ss.ss_size = 1024;
    ss.ss_flags = 0;
    int small = sigaltstack(&ss, NULL);
    printf("altstack old flags %d size ok %d; too small %d %s\n", old.ss_flags, old.ss_size == sizeof stack,
           small, small ? strerror(errno) : "");
}

static void test_timers(void) {
    sigset_t none;
    on(SIGALRM, alarm_plain, 0);
    count = 0;
    arm_timer(30000);
    pause();
    printf("setitimer+pause: ran %d\n", count);
    alarm(7);
    printf("alarm left %u\n", alarm(0));
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    printf("disarmed %d\n", it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0);
    sigemptyset(&none);
    arm_timer(20000);
    int r = sigsuspend(&none);
    printf("sigsuspend: %d %s ran %d\n", r, strerror(errno), count);
    struct timespec req = {2, 0}, rem = {0, 0};
    arm_timer(20000);
    r = nanosleep(&req, &rem);
    printf("nanosleep: %d %s rem ok %d\n", r, strerror(errno), rem.tv_sec == 1 || (rem.tv_sec == 0 && rem.tv_nsec > 0));
}

static void test_eintr_restart(void) {
    int fds[2];
    char c = 0;
    if (pipe(fds) != 0) { perror("pipe"); exit(1); }
    pipe_w = fds[1];
    on(SIGALRM, alarm_plain, 0);
    arm_timer(20000);
    errno = 0;
    ssize_t n = read(fds[0], &c, 1);
    printf("read without SA_RESTART: %zd %s\n", n, strerror(errno));
    on(SIGALRM, alarm_feed, SA_RESTART);
    arm_timer(20000);
    n = read(fds[0], &c, 1);
    printf("read with SA_RESTART: %zd '%c'\n", n, c);
    close(fds[0]);
    on(SIGPIPE, record, 0);
    errno = 0;
    n = write(fds[1], "y", 1);
    printf("sigpipe: write %zd %s signo %d\n", n, strerror(errno), got_signo);
    close(fds[1]);
}

static void test_faults(void) {
    volatile int *volatile unmapped = (volatile int *)16;
    on(SIGSEGV, fault, 0);
    if (sigsetjmp(jump, 1) == 0) {
        *unmapped = 1;
        printf("no fault\n");
    }
    printf("segv: signo %d code %d addr %#lx\n", got_signo, got_code, (unsigned long)got_addr);
    char *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sigsetjmp(jump, 1) == 0) {
        page[8] = 1;
        printf("no fault\n");
    }
    printf("segv on a read-only page: code %d addr ok %d\n", got_code, got_addr == (uintptr_t)page + 8);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("siglongjmp restored the mask: %d\n", !sigismember(&now, SIGSEGV));
    on(SIGTRAP, skip, 0);
    got_signo = 0;
    __asm__ volatile("brk #7");
    printf("brk: signo %d si_addr is pc %d\n", got_signo, (int)got_addr);
    on(SIGILL, skip, 0);
    got_signo = 0;
    __asm__ volatile(".inst 0x00000000");  /* udf #0 */
    printf("udf: signo %d si_addr is pc %d\n", got_signo, (int)got_addr);
}

static void test_fp(void) {
    uint64_t lo = 0, hi = 0;
    on(SIGUSR1, clobber_fp, 0);
    set_fpcr(RMODE_UP);
    __asm__ volatile(
        "movz x9, #0x1234\n\tmovk x9, #0x5678, lsl #16\n\tfmov d16, x9\n\tmov v16.d[1], x9\n\t"
        "mov x0, %2\n\tmov x1, %3\n\tmov x2, %4\n\tmov x8, #131\n\tsvc #0\n\t"  /* tgkill */
        "mov %0, v16.d[0]\n\tmov %1, v16.d[1]"
        : "=r"(lo), "=r"(hi)
        : "r"((long)getpid()), "r"((long)syscall(SYS_gettid)), "r"((long)SIGUSR1)
        : "x0", "x1", "x2", "x8", "x9", "v16", "memory");
    printf("fp across a handler: v16 %#lx %#lx rounding kept %d\n", (unsigned long)lo, (unsigned long)hi,
           get_fpcr() == RMODE_UP);
    set_fpcr(0);
}

static void test_sigtimedwait(void) {
    sigset_t set;
    siginfo_t si;
    struct timespec ts = {0, 10000000};
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    int sig = sigtimedwait(&set, &si, &ts);
    printf("sigtimedwait: %d pid %s\n", sig, si.si_pid == getpid() ? "self" : "other");
    errno = 0;
    sig = sigtimedwait(&set, &si, &ts);
    printf("sigtimedwait again: %d %s\n", sig, strerror(errno));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static void child_term(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; _exit(3); }

static void test_child(void) {
    int fds[2], status = 0;
    char c;
    if (pipe(fds) != 0) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        on(SIGTERM, child_term, 0);
        if (write(fds[1], "r", 1) != 1) _exit(8);
        for (;;) pause();
    }
    if (read(fds[0], &c, 1) != 1) exit(1);
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    printf("child's SIGTERM handler: exited %d status %d\n", WIFEXITED(status), WEXITSTATUS(status));
    close(fds[0]);
    close(fds[1]);
}

static volatile sig_atomic_t chld_code, chld_status, chld_pid;
static void on_chld(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_pid = si->si_pid;
}

static void test_sigchld(void) {
    int status = 0;
    on(SIGCHLD, on_chld, SA_RESTART);
    pid_t pid = fork();
    if (pid == 0) _exit(5);
    pid_t got = waitpid(pid, &status, 0);  /* SA_RESTART: the wait goes on after the handler */
    printf("sigchld: waitpid ok %d code %d status %d pid ok %d\n", got == pid, chld_code, chld_status,
           chld_pid == pid);
    signal(SIGCHLD, SIG_DFL);
}

static void test_killed_child(void) {
    int status = 0;
    on(SIGCHLD, on_chld, SA_RESTART);
    chld_code = chld_status = 0;
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGUSR1, SIG_DFL);
        raise(SIGUSR1);  /* the default action: terminate */
        _exit(1);
    }
    pid_t got = waitpid(pid, &status, 0);
    printf("killed child: waitpid ok %d exited %d signaled %d termsig %d core %d; sigchld code %d status %d\n",
           got == pid, WIFEXITED(status), WIFSIGNALED(status), WTERMSIG(status), WCOREDUMP(status) != 0,
           chld_code, chld_status);
    pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        *(volatile int *)8 = 1;
        _exit(1);
    }
    waitpid(pid, &status, 0);
    printf("segfaulting child: exited %d signaled %d termsig %d\n", WIFEXITED(status), WIFSIGNALED(status),
           WTERMSIG(status));
    pid = fork();
    if (pid == 0) _exit(300);  /* the low 8 bits */
    waitpid(pid, &status, 0);
    printf("exiting child: exited %d status %d signaled %d\n", WIFEXITED(status), WEXITSTATUS(status),
           WIFSIGNALED(status));
    signal(SIGCHLD, SIG_DFL);
}

static int thread_pipe[2];
static volatile int thread_result, thread_errno, thread_waited;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int ready_flag, go_flag;

static void *reader(void *arg) {
    char c;
    (void)arg;
    pthread_mutex_lock(&lock);
    ready_flag = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    ssize_t n = read(thread_pipe[0], &c, 1);
    thread_result = (int)n;
    thread_errno = errno;
    return NULL;
}

static void *waiter(void *arg) {
    sigset_t set;
    int sig = 0;
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigwait(&set, &sig);
    thread_waited = sig;
    return NULL;
}

static void *cond_waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    ready_flag = 2;
    pthread_cond_signal(&cond);
    while (!go_flag) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void wait_ready(int value) {
    pthread_mutex_lock(&lock);
    while (ready_flag != value) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
}

static void test_threads(void) {
    pthread_t t;
    sigset_t set;
    struct timespec pause_ts = {0, 20000000};
    if (pipe(thread_pipe) != 0) exit(1);
    on(SIGUSR1, alarm_plain, 0);
    count = 0;
    ready_flag = 0;
    pthread_create(&t, NULL, reader, NULL);
    wait_ready(1);
    nanosleep(&pause_ts, NULL);  /* let it block in its read */
    pthread_kill(t, SIGUSR1);
    pthread_join(t, NULL);
    printf("thread read interrupted: %d %s handler ran %d\n", thread_result, strerror(thread_errno), count);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);  /* the new thread inherits the mask */
    pthread_create(&t, NULL, waiter, NULL);
    nanosleep(&pause_ts, NULL);
    kill(getpid(), SIGUSR2);  /* to the process: the thread in sigwait takes it */
    pthread_join(t, NULL);
    printf("sigwait in a thread got %d\n", thread_waited);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    count = 0;
    pthread_create(&t, NULL, cond_waiter, NULL);
    wait_ready(2);
    nanosleep(&pause_ts, NULL);
    pthread_kill(t, SIGUSR1);  /* a handler in the middle of a condvar wait */
    nanosleep(&pause_ts, NULL);
    pthread_mutex_lock(&lock);
    go_flag = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(t, NULL);
    printf("condvar wait survived a handler: ran %d\n", count);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "abort") == 0) {
        printf("aborting\n");
        abort();
    }
    test_siginfo();
    test_block_pending();
    test_flags();
    test_altstack();
    test_timers();
    test_eintr_restart();
    test_faults();
    test_fp();
    test_sigtimedwait();
    test_child();
    test_sigchld();
    test_killed_child();
    test_threads();
    printf("done\n");
    return 0;
}
