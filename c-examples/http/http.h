/*
 * http.h — the HTTP side of the example servers (http_server.c and
 * prefork_server.c), kept in one place so that the examples themselves show
 * only what differs: how the rl_limiter is created and shared (threads or
 * forked workers), signals and shutdown.
 *
 * Each thread (http_server) or worker process (prefork_server) runs one
 * event loop, http_serve(), as an nginx worker does: non-blocking sockets
 * and epoll, so that thousands of connections, slow or silent ones included,
 * cost memory but never a thread. Every loop accepts from the same listening
 * sockets (EPOLLEXCLUSIVE: a new connection wakes one loop, not all).
 *
 * What a request gets (routing and rate limiting: site.c):
 *
 *   GET|HEAD /         charged cost 1 to the caller's key: 200 "ok", or 429
 *                      with {"error":"rate_limited","retry_after_ms":N} once
 *                      its quota is spent; both carry rl_format_headers()
 *   GET|HEAD /metrics  the limiter's counts (rl_metrics) in Prometheus text
 *                      format 0.0.4; never charged
 *   other methods      405 (Allow: GET, HEAD)      other paths   404
 *
 * The caller's key is "key:<X-API-Key>" when that header is present and not
 * empty, else "ip:<client IP>": two namespaces, so that a client cannot spend
 * someone else's IP quota by sending it as an API key.
 * A key that becomes limited is logged once on stderr (limited_log.h).
 *
 * The connection (loop.c, request.c): HTTP/1.1 keep-alive and pipelining
 * (each request charged on its own), "Connection: close" honoured, HTTP/1.0
 * closed unless it asks for keep-alive. Deadlines are per request, not per
 * read: a request head must be complete within the header timeout (of its
 * first byte; a new connection's first request, of the connect), else 408;
 * a response the client does not read is dropped after the same time; an
 * idle keep-alive connection is closed after the keep-alive timeout. Heads
 * are scanned byte by byte as they arrive: a NUL, a bare LF or CR is a 400 at
 * once; a head over 8 KiB a 431. Every error closes the connection. At
 * max_connections, a new connection evicts the oldest one that is idle or
 * still on its first request head; when every connection is in the middle
 * of a later request, the loop stops accepting until one ends.
 *
 * Needs Linux (epoll, accept4, signalfd) and POSIX.1-2008: a file including
 * this defines _GNU_SOURCE or _POSIX_C_SOURCE 200809L first.
 */
#ifndef RL_EXAMPLE_HTTP_H
#define RL_EXAMPLE_HTTP_H

#include <stddef.h>

#include <ratelimit.h>

#define HTTP_MAX_LISTEN 8 /* --listen may be given this many times */

/* Called when rl_check() did not return RL_OK, in the thread that called it
 * and before any other rl_* call, so rl_last_error() still describes the
 * error. The server obeys the decision rl_check() filled in all the same. */
typedef void (*http_check_error_fn)(void);

/* ---- command line (cli.c) -------------------------------------------------- */

/* What both servers take on their command line:
 *
 *   --config CONFIG            the rl_create() configuration (required)
 *   --port P [--bind ADDR]     one listening socket (ADDR: 127.0.0.1)
 *   --listen ADDR:PORT         one more ([::1]:8080 for IPv6); repeatable
 *   --header-timeout S         5    whole seconds, from 1
 *   --keepalive-timeout S      15
 *   --max-connections N        4096 per thread or worker
 *   COUNT_OPTION N             --threads or --workers, from 1 to 256
 */
struct http_cli {
    const char *config;
    const char *listen_addr[HTTP_MAX_LISTEN]; /* IP literals */
    long listen_port[HTTP_MAX_LISTEN];        /* 0: a free port */
    int listen_count;
    long count; /* threads or workers; -1 when not given */
    long header_timeout_s;
    long keepalive_timeout_s;
    long max_connections;
};

/* Parses argv into *cli (defaults first; count stays -1 when COUNT_OPTION is
 * absent). Returns 0, or -1 after printing "prog: what is wrong" and a usage
 * line to stderr. */
int http_cli_parse(const char *prog, int argc, char **argv, const char *count_option, struct http_cli *cli);

/* Whether the limiter made from --config can answer rl_check(): a
 * concurrency limiter ("concurrency=N") cannot (it hands out leases, see
 * build/llm_server). Returns 0, or -1 after printing why. Touches no
 * backend. */
int http_limiter_checks(const char *prog, rl_limiter *limiter);

/* ---- listening sockets (listen.c) ------------------------------------------ */

/* Binds and listens on every address of cli, with non-blocking close-on-exec
 * sockets (IPv6 ones IPv6-only, so [::] and 0.0.0.0 can both be bound).
 * Fills fds[0..listen_count) and the ports they got (for port 0) in ports[].
 * Returns 0, or -1 after printing why ("prog: ...") and closing them all. */
int http_listen_all(const char *prog, const struct http_cli *cli, int *fds, long *ports);

/* Prints "listening on ADDR:PORT" ("[ADDR]:PORT" for IPv6) to stdout for
 * every socket, and flushes: the scripts wait for these lines. */
void http_print_listening(const struct http_cli *cli, const long *ports);

/* Raises this process's open-file limit to its hard limit, and lowers
 * cli->max_connections so that `loops` loops at that many connections each
 * (plus a few descriptors of the process's own) fit in it. */
void http_fit_fd_limit(struct http_cli *cli, long loops);

/* ---- the event loop (loop.c) ----------------------------------------------- */

struct http_loop_options {
    rl_limiter *limiter;               /* may be shared by every loop */
    http_check_error_fn on_check_error; /* may be NULL */
    const int *listen_fds;             /* from http_listen_all() */
    int listen_count;
    int stop_fd; /* becomes readable when the loop must stop (the read end
                    of a pipe whose write end is closed; a signalfd) */
    long header_timeout_ms;
    long keepalive_timeout_ms;
    long max_connections;
};

/* Serves connections until stop_fd becomes readable. Then it stops
 * accepting, closes idle and half-read connections, lets responses being
 * written finish (at most HTTP_STOP_GRACE_MS), closes the rest and returns 0.
 * Returns -1 (after printing why) only when it cannot start (no memory, no
 * epoll). Call it from one thread per loop; every loop may share the
 * listening sockets and the limiter. */
int http_serve(const char *prog, const struct http_loop_options *options);

#define HTTP_STOP_GRACE_MS 500

#endif /* RL_EXAMPLE_HTTP_H */
