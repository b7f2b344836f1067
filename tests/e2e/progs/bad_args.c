/* Arguments no kernel may trust: each gets Linux's errno, none ends the program. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *what, long r) {
    printf("%s: %ld%s%s\n", what, r, r < 0 ? " " : "", r < 0 ? strerror(errno) : "");
}

int main(void) {
    close(open("/tmp/t", O_CREAT | O_WRONLY, 0644));
    int fd = open("/tmp/t", O_RDWR);
    show("truncate(path, -1)", syscall(SYS_truncate, "/tmp/t", -1L));
    show("ftruncate(fd, -1)", syscall(SYS_ftruncate, fd, -1L));
    char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("mprotect(p, 0, PROT_READ)", mprotect(p, 0, PROT_READ));
    show("mprotect(p + 1, 4096, PROT_READ)", mprotect(p + 1, 4096, PROT_READ));
    show("mprotect(p, -4096, PROT_READ)", mprotect(p, (size_t)-4096, PROT_READ));
    show("mprotect(p, 4096, 0x40)", mprotect(p, 4096, 0x40));
    show("mprotect over a hole", mprotect(p + 4096 * 64, 4096, PROT_READ));
    p[0] = 1;
    show("mmap of 1 TiB, writable", (long)mmap(0, 1UL << 40, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    show("mmap of 1 TiB, PROT_NONE", (long)mmap(0, 1UL << 40, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) > 0);
    show("mmap of -4096 bytes", (long)mmap(0, (size_t)-4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    show("lseek(fd, -1, SEEK_SET)", lseek(fd, -1, SEEK_SET));
    show("pread(fd, buf, 1, -1)", syscall(SYS_pread64, fd, p, 1, -1L));
    return 0;
}
