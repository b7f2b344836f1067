/* Write argv[1] bytes to stdout one write(2) at a time: each is a console MMIO access (a
   REC exit in a realm, a trap to the kernel process's engine in every environment). */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    for (long i = 0; i < n; i++)
        if (write(1, "x", 1) != 1)
            return 1;
    return 0;
}
