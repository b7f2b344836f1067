/* The five copies Linux refuses with EFAULT: into a read-only page, a PROT_NONE page and
 * the program's own code, from a PROT_NONE page, and into an unmapped page. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void show(const char *what, long r) {
    printf("%s: %ld%s%s\n", what, r, r < 0 ? " " : "", r < 0 ? strerror(errno) : "");
}

int main(void) {
    char *ro = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = open("/tmp/faults.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    char buf[8192];
    memset(buf, 'x', sizeof buf);
    write(fd, buf, sizeof buf);
    mprotect(ro, 4096, PROT_READ);
    lseek(fd, 0, SEEK_SET);
    show("read into a read-only page", read(fd, ro, 16));
    char *none = mmap(0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("read into a PROT_NONE page", read(fd, none, 16));
    show("read into the program's code", read(fd, (void *)main, 16));
    show("write from a PROT_NONE page", write(fd, none, 16));
    show("read into an unmapped page", read(fd, (void *)16, 16));
    printf("code intact: %d\n", *(unsigned *)main != 0x78787878);
    printf("offset after faults: %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    return 0;
}
