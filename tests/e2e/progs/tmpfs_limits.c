/* What a RAM file system gives when files outgrow RAM (tmpfs: at most half of RAM; sparse
 * files take no memory for their holes; MAX_LFS_FILESIZE). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    int fd = open("/tmp/sparse", O_RDWR | O_CREAT | O_TRUNC, 0644);
    printf("pwrite at 4 GiB: %ld\n", (long)pwrite(fd, "x", 1, 4L << 30));
    struct stat st;
    fstat(fd, &st);
    printf("size %lld, blocks %lld\n", (long long)st.st_size, (long long)st.st_blocks);
    char c = 1;
    printf("read in the hole: %ld %d\n", (long)pread(fd, &c, 1, 1L << 30), c);
    printf("SEEK_DATA from 0: %lld\n", (long long)lseek(fd, 0, SEEK_DATA));
    long r = pwrite(fd, "x", 1, 0x7fffffffffffffffL);
    printf("pwrite at 2^63-1: %ld %s\n", r, r < 0 ? strerror(errno) : "");
    static char mib[1 << 20];
    memset(mib, 7, sizeof mib);
    int fill = open("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    long total = 0;
    for (;;) {
        long n = write(fill, mib, sizeof mib);
        if (n < 0) {
            printf("fill: %s after %ld MiB\n", strerror(errno), total >> 20);
            break;
        }
        total += n;
    }
    unlink("/tmp/fill");
    close(fill);
    fill = open("/tmp/fill2", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    printf("space back after unlink: %ld\n", (long)write(fill, mib, sizeof mib));
    return 0;
}
