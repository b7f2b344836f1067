/* pthreads on the unikernel: NTHREADS workers add to a shared total under a mutex, count
 * their own work in a __thread counter, and meet at a condition-variable barrier; one
 * worker sleeps first, one spins on a flag only another thread sets (preemption). The
 * main thread joins them all and checks every result.
 *
 *   pthreads [rounds]     prints the totals, exits 0 only if every check holds
 *   pthreads deadlock     locks a mutex it already holds: never returns (deliberately broken)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#define NTHREADS 6

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long total;
static int arrived;
static int generation;
static atomic_int flag;
static __thread long mine;
static long results[NTHREADS];
static long tids[NTHREADS];
static int rounds = 200;

static void barrier(void)
{
    pthread_mutex_lock(&lock);
    int gen = generation;
    if (++arrived == NTHREADS) {
        arrived = 0;
        generation++;
        pthread_cond_broadcast(&cond);
    } else {
        while (gen == generation)
            pthread_cond_wait(&cond, &lock);
    }
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg)
{
    long id = (long)arg;
    tids[id] = syscall(SYS_gettid);
    if (id == 1) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (id == 2) {
        while (!atomic_load(&flag))
            ; /* only thread 3 sets it: needs preemption */
    }
    if (id == 3)
        atomic_store(&flag, 1);
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        total += id + 1;
        pthread_mutex_unlock(&lock);
        mine += id + 1;
        if (i % 50 == 0)
            sched_yield();
    }
    barrier();
    /* after the barrier every worker has added its share */
    pthread_mutex_lock(&lock);
    long seen = total;
    pthread_mutex_unlock(&lock);
    results[id] = mine;
    return (void *)seen;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "deadlock") == 0) {
        pthread_mutex_lock(&lock);
        puts("locking the mutex a second time");
        fflush(stdout);
        pthread_mutex_lock(&lock);
        puts("unreachable");
        return 0;
    }
    if (argc > 1) {
        char *end;
        rounds = (int)strtol(argv[1], &end, 10);
        if (*end || rounds <= 0) {
            fprintf(stderr, "usage: %s [rounds|deadlock]\n", argv[0]);
            return 2;
        }
    }
    pthread_t th[NTHREADS];
    mine = 1000; /* main's own copy: workers start from 0 */
    for (long i = 0; i < NTHREADS; i++) {
        if (pthread_create(&th[i], NULL, worker, (void *)i) != 0) {
            puts("pthread_create failed");
            return 1;
        }
    }
    long expect = 0;
    for (int i = 0; i < NTHREADS; i++)
        expect += (long)(i + 1) * rounds;
    int ok = 1;
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        if (pthread_join(th[i], &ret) != 0) {
            puts("pthread_join failed");
            return 1;
        }
        if ((long)ret != expect) {
            printf("thread %d saw total %ld, expected %ld\n", i, (long)ret, expect);
            ok = 0;
        }
        if (results[i] != (long)(i + 1) * rounds) {
            printf("thread %d: __thread counter %ld, expected %ld\n", i, results[i], (long)(i + 1) * rounds);
            ok = 0;
        }
        for (int j = 0; j < i; j++)
            if (tids[j] == tids[i] || tids[i] == getpid())
                ok = 0;
    }
    if (mine != 1000) {
        printf("main's __thread counter changed: %ld\n", mine);
        ok = 0;
    }
    printf("threads %d rounds %d total %ld expected %ld\n", NTHREADS, rounds, total, expect);
    for (int i = 0; i < NTHREADS; i++)
        printf("thread %d counted %ld\n", i, results[i]);
    puts(ok && total == expect ? "ok" : "FAILED");
    return ok && total == expect ? 0 : 1;
}
