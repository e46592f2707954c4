/*
 * http.h — the HTTP side of the example servers (http_server.c and
 * prefork_server.c), kept in one place so that the examples themselves show
 * only what differs: how the rl_limiter is created and shared (threads or
 * forked workers), argument parsing, signals and shutdown.
 *
 * Every connection carries one request, answered by http_serve_connection():
 *
 *   GET /        200 "ok", or 429 with the JSON body
 *                {"error":"rate_limited","retry_after_ms":N} once the caller's
 *                quota is spent; both carry the rl_format_headers() lines
 *   other paths  404          other methods on /  405 (with Allow: GET)
 *   malformed    400          (request head larger than 8 KiB included)
 *
 * A request is keyed by its X-API-Key header when present and not empty, else
 * by the client IP. The two are kept in separate namespaces ("key:..." and
 * "ip:..."), so a client cannot spend someone else's IP quota by sending it as
 * an API key.
 *
 * Needs POSIX.1-2008: a file including this defines _POSIX_C_SOURCE 200809L
 * first, as the examples do.
 */
#ifndef RL_EXAMPLE_HTTP_H
#define RL_EXAMPLE_HTTP_H

#include <ratelimit.h>

/* Called when rl_check() did not return RL_OK, in the thread that called it
 * and before any other rl_* call, so rl_last_error() still describes the
 * error. The server obeys the decision rl_check() filled in all the same. */
typedef void (*http_check_error_fn)(void);

/* Binds and listens on addr:port (an IPv4 or IPv6 literal; port 0 picks a
 * free one) with a non-blocking socket, so that workers racing for one
 * connection never block in accept(). Returns the socket and sets *bound_port,
 * or prints why it cannot, prefixed by "prog: ", and returns -1. */
int http_listen(const char *prog, const char *addr, long port, long *bound_port);

/* Prints "listening on ADDR:PORT" ("[ADDR]:PORT" for IPv6) to stdout and
 * flushes it: the scripts wait for this line to learn the port. */
void http_print_listening(const char *addr, long port);

/* Accepts one connection on a socket from http_listen(). Returns it, set to
 * blocking I/O, or -1 when there was none to take (another worker took it:
 * EAGAIN) or the client left. */
int http_accept(int listen_fd);

/* Reads one request from connection fd (a client silent for 5 s is given
 * up), answers it as described above, checking GET / against limiter with
 * cost 1, and closes fd without losing the answer. on_check_error may be
 * NULL. Safe to call from several threads on one limiter. */
void http_serve_connection(int fd, rl_limiter *limiter, http_check_error_fn on_check_error);

/* Parses a whole decimal command-line value (a port, a thread or worker
 * count) into *out. Returns 0, or -1 when s is not a number in [min, max]. */
int http_parse_number(const char *s, long min, long max, long *out);

#endif /* RL_EXAMPLE_HTTP_H */
