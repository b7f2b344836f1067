/* Short transfers where Linux makes them: a read() or write() whose buffer runs into a page
 * it may not use moves the bytes before that page and returns their count (tmpfs, pipes). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

int main(void) {
    char *p = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 'a', 3 * 4096);
    mprotect(p + 4096, 4096, PROT_READ);
    mprotect(p + 2 * 4096, 4096, PROT_NONE);
    int fd = open("/tmp/partial.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    printf("write across PROT_NONE: %ld\n", (long)write(fd, p + 4096 + 100, 8192));
    printf("size: %ld\n", (long)lseek(fd, 0, SEEK_END));
    lseek(fd, 0, SEEK_SET);
    printf("read across read-only: %ld\n", (long)read(fd, p + 4096 - 10, 100));
    printf("offset: %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    struct iovec iov[2] = {{p, 16}, {p + 2 * 4096, 16}};
    printf("writev with a PROT_NONE iovec: %ld\n", (long)writev(fd, iov, 2));
    long r = pread(fd, p + 4096, 10, 0);
    printf("pread into read-only: %ld %s\n", r, r < 0 ? strerror(errno) : "");
    return 0;
}
