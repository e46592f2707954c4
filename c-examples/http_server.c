/*
 * http_server.c — a small threaded HTTP server rate-limited by libratelimit.
 *
 *   build/http_server --port P --config "CONFIG" [--bind ADDR] [--threads N]
 *
 * One rl_limiter is shared by a fixed pool of worker threads that all accept
 * on one listening socket. Each connection carries one request, answered by
 * http_serve_connection() (http.c, shared with prefork_server.c):
 *
 *   GET /        200 "ok", or 429 with a JSON body once the caller's quota
 *                is spent; both carry the rl_format_headers() lines
 *   other paths  404          other methods on /  405
 *   malformed    400          (request head larger than 8 KiB included)
 *
 * A request is keyed by its X-API-Key header when present, else by the client
 * IP. The two are kept in separate namespaces ("key:..." and "ip:..."), so a
 * client cannot spend someone else's IP quota by sending it as an API key.
 *
 * Shutdown: SIGINT/SIGTERM are blocked in every thread; the main thread waits
 * for them with sigwait(), then closes the write end of a pipe that every
 * worker polls next to the listening socket. The workers finish the request
 * in hand, return, and are joined; then rl_destroy() and exit 0.
 *
 * Exit status: 0 after a signal, 2 for bad arguments or a bad config, 1 when
 * the socket cannot be set up.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 256

struct server {
    rl_limiter *limiter; /* shared by all workers: the library is thread-safe */
    int listen_fd;       /* non-blocking, so that workers racing for a
                            connection never block in accept() */
    int stop_fd;         /* read end of the stop pipe: readable (EOF) = stop */
};

/* ---- logging of limiter errors: the first one in full, then a count ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int logged_error;

static void log_check_error(void)
{
    /* rl_last_error() is this thread's, valid until its next rl_* call */
    const char *msg = rl_last_error();
    pthread_mutex_lock(&log_lock);
    if (!logged_error) {
        logged_error = 1;
        fprintf(stderr, "http_server: rl_check: %s (obeying the decision it returned; "
                        "further errors are only counted)\n", msg);
    }
    pthread_mutex_unlock(&log_lock);
}

static void *worker(void *arg)
{
    struct server *srv = arg;
    struct pollfd fds[2];

    fds[0].fd = srv->listen_fd;
    fds[0].events = POLLIN;
    fds[1].fd = srv->stop_fd;
    fds[1].events = POLLIN;
    for (;;) {
        int fd;
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("http_server: poll");
            return NULL;
        }
        if (fds[1].revents)
            return NULL; /* stop pipe closed */
        if (!(fds[0].revents & POLLIN))
            continue;
        fd = http_accept(srv->listen_fd);
        if (fd < 0)
            continue; /* another worker took it (EAGAIN), or the client left */
        http_serve_connection(fd, srv->limiter, log_check_error);
    }
}

/* ---- setup --------------------------------------------------------------- */

static int usage(const char *msg)
{
    fprintf(stderr,
            "http_server: %s\n"
            "usage: http_server --port P --config \"CONFIG\" [--bind ADDR] [--threads N]\n"
            "  e.g. http_server --port 8080 --config \"rate=100/minute\"\n",
            msg);
    return 2;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *bind_addr = "127.0.0.1";
    long port = -1, threads = 4, bound_port = 0;
    struct server srv;
    pthread_t tids[MAX_THREADS];
    int stop_pipe[2];
    sigset_t stop_signals;
    rl_stats stats;
    int i, rc, sig = 0;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc)
            return usage("missing value after the last option");
        if (strcmp(opt, "--port") == 0) {
            if (http_parse_number(argv[++i], 0, 65535, &port) < 0)
                return usage("--port wants a number from 0 to 65535");
        } else if (strcmp(opt, "--config") == 0) {
            config = argv[++i];
        } else if (strcmp(opt, "--bind") == 0) {
            bind_addr = argv[++i];
        } else if (strcmp(opt, "--threads") == 0) {
            if (http_parse_number(argv[++i], 1, MAX_THREADS, &threads) < 0)
                return usage("--threads wants a number from 1 to 256");
        } else {
            return usage("unknown option");
        }
    }
    if (port < 0 || config == NULL)
        return usage("--port and --config are required");

    /* Block the stop signals before any thread exists (the library's
     * included), so that only sigwait() below sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    rc = rl_create(config, &srv.limiter);
    if (rc != RL_OK) {
        /* rl_last_error() first: it is valid until the next rl_* call */
        fprintf(stderr, "http_server: bad config: %s\n", rl_last_error());
        return 2;
    }

    srv.listen_fd = http_listen("http_server", bind_addr, port, &bound_port);
    if (srv.listen_fd < 0 || pipe(stop_pipe) < 0) {
        if (srv.listen_fd >= 0)
            perror("http_server: pipe");
        rl_destroy(srv.limiter);
        return 1;
    }
    srv.stop_fd = stop_pipe[0];

    for (i = 0; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, worker, &srv) != 0) {
            fprintf(stderr, "http_server: cannot start thread %d\n", i);
            threads = i;
            break;
        }
    }

    if (threads > 0) {
        http_print_listening(bind_addr, bound_port);
        while (sigwait(&stop_signals, &sig) != 0) {
        }
    }

    /* Stop: EOF on the pipe wakes every worker; each finishes its request. */
    close(stop_pipe[1]);
    for (i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    close(stop_pipe[0]);
    close(srv.listen_fd);

    if (rl_stats_get(srv.limiter, &stats) == RL_OK)
        fprintf(stderr,
                "http_server: stopped by signal %d: %" PRIu64 " allowed, %" PRIu64
                " limited, %" PRIu64 " errors\n",
                sig, stats.allowed, stats.limited, stats.errors);
    rl_destroy(srv.limiter);
    return threads > 0 ? 0 : 1;
}
