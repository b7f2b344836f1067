/* httpreply: a minimal HTTP server, as Unikraft's app-httpreply.
 *
 * Listens on 0.0.0.0:8123 and answers every request with "HTTP/1.1 200 OK", a fixed body
 * "Hello, World!\n", its Content-Length and "Connection: close", then closes the
 * connection. With an argument N it exits 0 after N requests; without, it serves for ever.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_PORT 8123
#define BODY "Hello, World!\n"

static const char reply[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 14\r\n"
	"Connection: close\r\n"
	"\r\n"
	BODY;

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until the end of the request head (an empty line), end of stream or an error. */
static void read_request(int fd)
{
	char buf[2048];
	size_t have = 0;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			return;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return;
		if (have == sizeof(buf) - 1) /* keep the tail: the blank line may straddle reads */
			have = 0;
	}
}

int main(int argc, char **argv)
{
	long limit = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
	struct sockaddr_in addr;
	int one = 1;
	int srv;

	signal(SIGPIPE, SIG_IGN);
	srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_ANY);
	addr.sin_port = htons(LISTEN_PORT);
	if (bind(srv, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("bind");
		return 1;
	}
	if (listen(srv, 16) < 0) {
		perror("listen");
		return 1;
	}
	printf("Listening on port %d...\n", LISTEN_PORT);
	fflush(stdout);

	for (long served = 0; limit <= 0 || served < limit;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		int c = accept(srv, (struct sockaddr *)&peer, &plen);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		read_request(c);
		if (write_all(c, reply, sizeof(reply) - 1) < 0)
			perror("write");
		close(c);
		served++;
	}
	printf("served %ld requests\n", limit);
	close(srv);
	return 0;
}
