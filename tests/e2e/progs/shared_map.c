/* MAP_SHARED file mappings, coherent with read() and write() and shared across fork(), as
 * Linux's page cache makes them: run on a file in the directory given (tmpfs or 9p). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char path[256], buf[32] = {0};
    snprintf(path, sizeof path, "%s/shared.dat", argc > 1 ? argv[1] : "/tmp");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(fd, 8192);
    char *m = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memcpy(m + 4096, "stored through the map", 22);
    pread(fd, buf, 22, 4096);
    printf("read sees the map: %s\n", buf);
    pwrite(fd, "written by pwrite", 17, 100);
    printf("map sees pwrite: %.17s\n", m + 100);
    pid_t pid = fork();
    if (pid == 0) {
        memcpy(m, "child", 5);
        _exit(0);
    }
    waitpid(pid, 0, 0);
    printf("parent sees the child: %.5s\n", m);
    char *m2 = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 4096);
    printf("second map: %.22s\n", m2);
    msync(m, 8192, MS_SYNC);
    munmap(m, 8192);
    munmap(m2, 4096);
    close(fd);
    fd = open(path, O_RDONLY);
    memset(buf, 0, sizeof buf);
    read(fd, buf, 5);
    printf("after munmap: %s\n", buf);
    int ro = open(path, O_RDONLY);
    printf("writable shared map of a read-only fd: %s\n",
           mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED ? "refused" : "allowed");
    return 0;
}
