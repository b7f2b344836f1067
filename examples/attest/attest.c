/* attest: an app asks the kernel for its realm's CCA token through configfs-tsm, and
 * extends a REM through the tsm rtmr group.
 *
 *   attest report CHALLENGE-HEX     the token for that challenge (32..64 bytes), base64 on stdout
 *   attest extend INDEX DATA-HEX    extend REM[INDEX-1] (INDEX 1..4) with up to 64 bytes
 *
 * Several commands may follow one another (`attest extend 1 aa extend 1 bb report HEX`);
 * they run in order and the first failure ends the run.
 * Errors name the file and the errno text and exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TSM "/sys/kernel/config/tsm"

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "attest: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

static int unhex(const char *hex, unsigned char *out, size_t max)
{
	size_t n = strlen(hex);
	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int byte;
		if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
			return -1;
		out[i] = (unsigned char)byte;
	}
	return (int)(n / 2);
}

#define DIR_MAX 128

/* The hex argument into buf (at most 64 bytes), then mkdir GROUP/attest-PID, a configfs
 * item of this process's own: the length, -2 for a bad argument, -1 if mkdir failed. */
static int begin(const char *group, const char *hex, unsigned char *buf, const char *what, char *dir)
{
	int len = unhex(hex, buf, 64);
	if (len < 0) {
		fprintf(stderr, "attest: the %s must be hex, at most 64 bytes\n", what);
		return -2;
	}
	snprintf(dir, DIR_MAX, TSM "/%s/attest-%d", group, (int)getpid());
	if (mkdir(dir, 0700) < 0) {
		fail("mkdir", dir);
		return -1;
	}
	return len;
}

static int write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, data, len);
	int saved = errno;
	if (close(fd) < 0 && n >= 0)
		return -1;
	errno = saved;
	return n == (ssize_t)len ? 0 : -1;
}

/* Write DIR/NAME; 0, or 1 after a message. */
static int write_attr(const char *dir, const char *name, const void *data, size_t len)
{
	char path[DIR_MAX + 32];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return write_file(path, data, len) < 0 ? fail("write", path) : 0;
}

static void base64_out(const unsigned char *data, size_t len)
{
	static const char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t col = 0;
	for (size_t i = 0; i < len; i += 3) {
		unsigned long v = (unsigned long)data[i] << 16;
		if (i + 1 < len)
			v |= (unsigned long)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		char quad[4] = {table[v >> 18 & 63], table[v >> 12 & 63],
				i + 1 < len ? table[v >> 6 & 63] : '=', i + 2 < len ? table[v & 63] : '='};
		fwrite(quad, 1, 4, stdout);
		if ((col += 4) == 76) {
			putchar('\n');
			col = 0;
		}
	}
	if (col)
		putchar('\n');
}

static int report(const char *hex)
{
	unsigned char challenge[64];
	char dir[DIR_MAX], path[DIR_MAX + 32];
	int len = begin("report", hex, challenge, "challenge", dir);
	if (len < 0)
		return -len;
	if (write_attr(dir, "inblob", challenge, (size_t)len))
		return 1;
	snprintf(path, sizeof path, "%s/outblob", dir);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail("open", path);
	static unsigned char token[32768];
	size_t total = 0;
	ssize_t n;
	while ((n = read(fd, token + total, sizeof token - total)) > 0)
		total += (size_t)n;
	if (n < 0)
		return fail("read", path);
	close(fd);
	rmdir(dir);
	base64_out(token, total);
	return 0;
}

static int extend(const char *index, const char *hex)
{
	unsigned char data[64];
	char dir[DIR_MAX], path[DIR_MAX + 32];
	int len = begin("rtmr", hex, data, "data", dir);
	if (len < 0)
		return -len;
	if (write_attr(dir, "index", index, strlen(index)) || write_attr(dir, "data", data, (size_t)len))
		return 1;
	snprintf(path, sizeof path, "%s/status", dir);
	char status[32] = "";
	int fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, status, sizeof status - 1) < 0)
		return fail("read", path);
	close(fd);
	rmdir(dir);
	if (atoi(status) != 0) {
		fprintf(stderr, "attest: extension failed: status %s", status);
		return 1;
	}
	printf("extended REM%d\n", atoi(index) - 1);
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1, status = 0;
	if (argc < 2)
		goto usage;
	while (i < argc && status == 0) {
		if (i + 1 < argc && strcmp(argv[i], "report") == 0) {
			status = report(argv[i + 1]);
			i += 2;
		} else if (i + 2 < argc && strcmp(argv[i], "extend") == 0) {
			status = extend(argv[i + 1], argv[i + 2]);
			i += 3;
		} else {
			goto usage;
		}
	}
	return status;
usage:
	fprintf(stderr, "usage: attest [report CHALLENGE-HEX | extend INDEX DATA-HEX]...\n");
	return 2;
}
