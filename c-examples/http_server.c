/*
 * http_server.c — a small multi-threaded HTTP server rate-limited by
 * libratelimit.
 *
 *   build/http_server --config "CONFIG" --port P [--bind ADDR] [--threads N]
 *   e.g. build/http_server --config "rate=100/minute" --port 8080
 *
 * One rl_limiter is shared by N threads (4 by default), each running its
 * own event loop (http/loop.c) over the same listening sockets: the library
 * is thread-safe, so the threads need no lock of their own. What requests
 * get, the other options (--listen, timeouts, --max-connections) and how slow
 * clients are handled: http/http.h.
 *
 * Shutdown: SIGINT/SIGTERM are blocked in every thread; the main thread waits
 * for them with sigwait(), then closes the write end of a pipe whose read end
 * every loop watches. Each loop stops accepting, finishes the responses it is
 * writing (at most HTTP_STOP_GRACE_MS), closes its connections and returns;
 * the threads are joined, rl_destroy() is called, and the process exits 0.
 *
 * Exit status: 0 after a signal, 2 for bad arguments or a bad config, 1 when
 * the sockets or the threads cannot be set up.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "http/http.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 256

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

static void *run_loop(void *arg)
{
    const struct http_loop_options *options = arg;
    http_serve("http_server", options);
    return NULL;
}

int main(int argc, char **argv)
{
    struct http_cli cli;
    struct http_loop_options options;
    rl_limiter *limiter;
    int listen_fds[HTTP_MAX_LISTEN];
    long ports[HTTP_MAX_LISTEN];
    pthread_t tids[MAX_THREADS];
    int stop_pipe[2];
    sigset_t stop_signals;
    rl_stats stats;
    long threads, i;
    int sig = 0;

    if (http_cli_parse("http_server", argc, argv, "--threads", &cli) < 0)
        return 2;
    threads = cli.count > 0 ? cli.count : 4;
    http_fit_fd_limit(&cli, threads);

    /* Block the stop signals before any thread exists (the library's
     * included), so that only sigwait() below sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if (rl_create(cli.config, &limiter) != RL_OK) {
        /* rl_last_error() first: it is valid until the next rl_* call */
        fprintf(stderr, "http_server: bad config: %s\n", rl_last_error());
        return 2;
    }
    if (http_limiter_checks("http_server", limiter) < 0) {
        rl_destroy(limiter);
        return 2;
    }
    if (http_listen_all("http_server", &cli, listen_fds, ports) < 0) {
        rl_destroy(limiter);
        return 1;
    }
    if (pipe(stop_pipe) < 0) {
        perror("http_server: pipe");
        rl_destroy(limiter);
        return 1;
    }

    options.limiter = limiter;
    options.on_check_error = log_check_error;
    options.listen_fds = listen_fds;
    options.listen_count = cli.listen_count;
    options.stop_fd = stop_pipe[0];
    options.header_timeout_ms = cli.header_timeout_s * 1000;
    options.keepalive_timeout_ms = cli.keepalive_timeout_s * 1000;
    options.max_connections = cli.max_connections;

    for (i = 0; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, run_loop, &options) != 0) {
            fprintf(stderr, "http_server: cannot start thread %ld\n", i);
            threads = i;
            break;
        }
    }

    if (threads > 0 && threads == (cli.count > 0 ? cli.count : 4)) {
        http_print_listening(&cli, ports);
        while (sigwait(&stop_signals, &sig) != 0) {
        }
    }

    /* Stop: EOF on the pipe wakes every loop. */
    close(stop_pipe[1]);
    for (i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    close(stop_pipe[0]);
    for (i = 0; i < cli.listen_count; i++)
        close(listen_fds[i]);

    if (rl_stats_get(limiter, &stats) == RL_OK)
        fprintf(stderr,
                "http_server: stopped by signal %d: %" PRIu64 " allowed, %" PRIu64 " limited, %" PRIu64
                " errors, %" PRIu64 " keys\n",
                sig, stats.allowed, stats.limited, stats.errors, stats.keys);
    rl_destroy(limiter);
    return sig != 0 ? 0 : 1;
}
