/* Demand paging: map N MiB and write one byte per page, timed between the two marks. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t n = (size_t)atoi(argc > 1 ? argv[1] : "4") << 20;
    char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("touch start\n");
    fflush(stdout);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    printf("touch done\n");
    return 0;
}
