/*
 * listen.c — the listening sockets and the descriptor budget; see http.h.
 */
#define _GNU_SOURCE

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Descriptors a process needs beside its connections: stdio, listening
 * sockets, epoll, the stop pipe or signalfd, the shm region, a few spare. */
#define OWN_FDS 64

static int listen_one(const char *prog, const char *addr, long port, long *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    int fd, one = 1;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        ss_len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        fprintf(stderr, "%s: %s: not an IPv4 or IPv6 address\n", prog, addr);
        return -1;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", prog, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, ss_len) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "%s: %s port %ld: %s\n", prog, addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    ss_len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &ss_len);
    *bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

int http_listen_all(const char *prog, const struct http_cli *cli, int *fds, long *ports)
{
    int i;
    for (i = 0; i < cli->listen_count; i++) {
        fds[i] = listen_one(prog, cli->listen_addr[i], cli->listen_port[i], &ports[i]);
        if (fds[i] < 0) {
            while (i-- > 0)
                close(fds[i]);
            return -1;
        }
    }
    return 0;
}

void http_print_listening(const struct http_cli *cli, const long *ports)
{
    int i;
    for (i = 0; i < cli->listen_count; i++) {
        int v6 = strchr(cli->listen_addr[i], ':') != NULL;
        printf("listening on %s%s%s:%ld\n", v6 ? "[" : "", cli->listen_addr[i], v6 ? "]" : "", ports[i]);
    }
    fflush(stdout);
}

void http_fit_fd_limit(struct http_cli *cli, long loops)
{
    struct rlimit rl;
    long fit;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 100000000)
        return;
    fit = ((long)rl.rlim_cur - OWN_FDS) / loops;
    if (fit < 1)
        fit = 1;
    if (cli->max_connections > fit)
        cli->max_connections = fit;
}
