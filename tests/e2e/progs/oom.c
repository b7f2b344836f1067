/* Touch anonymous memory 1 MiB at a time until the realm's RAM runs out. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(void) {
    for (int mib = 1;; mib++) {
        char *p = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        memset(p, 1, 1 << 20);
        if (mib % 16 == 0) {
            printf("%d MiB\n", mib);
            fflush(stdout);
        }
    }
}
