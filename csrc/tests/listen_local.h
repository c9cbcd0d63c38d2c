/* listen_local.h - a listening TCP socket on 127.0.0.1 at a port the kernel
 * picks, and reading one HTTP request, for the C tests' little local servers (test_patroni.c,
 * test_patroni_watch.c).  The socket, its port in *port; -1 (and port 0)
 * on failure. */
#ifndef NC_TEST_LISTEN_LOCAL_H
#define NC_TEST_LISTEN_LOCAL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

static inline int listen_local(int *port)
{
    *port = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 8) < 0
        || getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Read an HTTP request from c into req (cap bytes, NUL-terminated) up to
 * its blank line, or until the peer stops sending; the bytes read. */
static inline size_t read_request(int c, char *req, size_t cap)
{
    size_t n = 0;
    req[0] = '\0';
    while (n < cap - 1) {
        ssize_t k = recv(c, req + n, cap - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    return n;
}

#endif
