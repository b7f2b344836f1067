/* console_burst N [echo] [mark]: writes N bytes of a known pattern to stdout (one write() per
   call, resumed on short writes; with `mark`, one "#" written alone first, so a benchmark
   can time the burst from its start), then copies stdin to stdout with `echo`, or else only
   counts it; ends with one line "in=<bytes> sum=<hash>" so a test can compare every byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(1, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoul(argv[1], 0, 0) : 0;
    int echo = 0, mark = 0;
    for (int i = 2; i < argc; i++) {
        echo |= strcmp(argv[i], "echo") == 0;
        mark |= strcmp(argv[i], "mark") == 0;
    }
    char *buf = malloc(n + 1);
    if (!buf)
        return 2;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + (i * 7 + i / 97) % 26);
    if ((mark && write_all("#", 1)) || write_all(buf, n))
        return 3;
    unsigned long long sum = 1469598103934665603ULL, count = 0;
    static char in[65536];
    ssize_t r;
    while ((r = read(0, in, sizeof in)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            sum = (sum ^ (unsigned char)in[i]) * 1099511628211ULL;
        count += (unsigned long long)r;
        if (echo && write_all(in, (size_t)r))
            return 4;
    }
    if (r < 0)
        return 5;
    char line[80];
    int len = snprintf(line, sizeof line, "in=%llu sum=%016llx\n", count, sum);
    return write_all(line, (size_t)len) ? 6 : 0;
}
