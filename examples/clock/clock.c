/* clock: the POSIX clocks a program sees — wall time, monotonic progress, resolution. */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

int main(void)
{
	struct timespec mono0, mono1, real, res;
	struct timeval tv;
	clock_gettime(CLOCK_MONOTONIC, &mono0);
	long calls = 0;
	do {
		clock_gettime(CLOCK_MONOTONIC, &mono1);
		calls++;
	} while ((mono1.tv_sec - mono0.tv_sec) * 1000000000L + (mono1.tv_nsec - mono0.tv_nsec) < 20000000L);
	clock_gettime(CLOCK_REALTIME, &real);
	gettimeofday(&tv, NULL);
	clock_getres(CLOCK_MONOTONIC, &res);
	printf("realtime %lld\n", (long long)real.tv_sec);
	printf("gettimeofday %lld\n", (long long)tv.tv_sec);
	printf("resolution %ld ns\n", res.tv_nsec);
	printf("monotonic calls in 20 ms: %ld\n", calls);
	return 0;
}
