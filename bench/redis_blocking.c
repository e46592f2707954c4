/*
 * redis_blocking.c — the fastest a client whose callers block can be: 8
 * threads, each on its own TCP connection to Redis, each sending one command
 * and waiting for its reply before the next (a write and reads until the
 * reply is whole, nothing else: no library, no pool, no parsing beyond
 * finding the reply's end). libratelimit's rl_check with backend=redis is
 * such a client: each caller waits for its own answer. redis-benchmark is
 * not: one thread drives all its connections, and handles every reply ready
 * at each wake-up. Run by bench/redis.sh beside both.
 *
 * Usage: redis_blocking PORT ITERATIONS-PER-THREAD COMMAND [ARG...]
 * Prints: "requests=N<TAB>rps=R". An error reply stops it (exit 1).
 */
#define _POSIX_C_SOURCE 200809L

#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

#define THREADS 8 /* = CLIENTS in bench/redis.sh */

static int port;
static char *request;
static size_t request_len;
static long iters;
static pthread_barrier_t start;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_local(void)
{
    int one = 1;
    int fd = connect_loopback(port);
    if (fd < 0)
        die("connect");
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        die("setsockopt");
    return fd;
}

/* The length of the RESP reply at the start of buf[0..len), 0 if it is not
 * whole yet; -1 for an error reply or one this reader does not know. */
static long reply_end(const char *buf, size_t len, size_t at)
{
    const char *eol;
    long n, i, end;
    if (at >= len)
        return 0;
    eol = memchr(buf + at, '\n', len - at);
    if (!eol)
        return 0;
    end = (long)(eol - buf) + 1;
    switch (buf[at]) {
    case ':':
    case '+':
        return end;
    case '$':
        n = atol(buf + at + 1);
        if (n < 0)
            return end;
        return (size_t)end + (size_t)n + 2 <= len ? end + n + 2 : 0;
    case '*':
        n = atol(buf + at + 1);
        for (i = 0; i < n; i++) {
            long e = reply_end(buf, len, (size_t)end);
            if (e <= 0)
                return e;
            end = e;
        }
        return end;
    default:
        return -1;
    }
}

/* The whole request, however the socket takes it. */
static void send_request(int fd)
{
    const char *p = request;
    size_t left = request_len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n <= 0)
            die("write");
        p += n;
        left -= (size_t)n;
    }
}

/* One request and its whole reply. */
static void call(int fd)
{
    char reply[4096];
    size_t got = 0;
    long end = 0;
    send_request(fd);
    while (end == 0) {
        ssize_t n = read(fd, reply + got, sizeof reply - got);
        if (n <= 0)
            die("read");
        got += (size_t)n;
        end = reply_end(reply, got, 0);
        if (end == 0 && got == sizeof reply)
            end = -1;
    }
    if (end < 0 || (size_t)end != got) {
        fprintf(stderr, "redis_blocking: unexpected reply: %.*s\n", (int)got, reply);
        exit(1);
    }
}

struct worker {
    double t0, t1;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    int fd = connect_local();
    long i;
    pthread_barrier_wait(&start); /* connected; every request is timed */
    w->t0 = now_s();
    for (i = 0; i < iters; i++)
        call(fd);
    w->t1 = now_s();
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t tid[THREADS];
    struct worker w[THREADS];
    double t0, t1;
    int t, n;

    if (argc < 4 || (port = atoi(argv[1])) <= 0 || (iters = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: %s PORT ITERATIONS-PER-THREAD COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    /* The command in RESP: *argc, then $len and each argument. */
    for (t = 3, n = 16; t < argc; t++)
        n += 32 + (int)strlen(argv[t]);
    request = malloc((size_t)n);
    if (!request)
        die("malloc");
    request_len = (size_t)sprintf(request, "*%d\r\n", argc - 3);
    for (t = 3; t < argc; t++)
        request_len += (size_t)sprintf(request + request_len, "$%lu\r\n%s\r\n", (unsigned long)strlen(argv[t]), argv[t]);
    if (pthread_barrier_init(&start, NULL, THREADS) != 0)
        die("pthread_barrier_init");
    for (t = 0; t < THREADS; t++)
        if (pthread_create(&tid[t], NULL, run, &w[t]) != 0)
            die("pthread_create");
    for (t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);
    t0 = w[0].t0;
    t1 = w[0].t1;
    for (t = 1; t < THREADS; t++) {
        t0 = w[t].t0 < t0 ? w[t].t0 : t0;
        t1 = w[t].t1 > t1 ? w[t].t1 : t1;
    }
    printf("requests=%ld\trps=%.0f\n", iters * THREADS, (double)(iters * THREADS) / (t1 - t0));
    free(request);
    return 0;
}
