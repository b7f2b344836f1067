/* getpid N: N trivial system calls (raw getpid), the syscall round-trip benchmark. */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 0;
	long sum = 0;
	for (long i = 0; i < n; i++)
		sum += syscall(SYS_getpid);
	return sum == n * getpid() ? 0 : 1;
}
