/*
 * llm_server.c — an LLM-style completion endpoint limited the way LLM APIs
 * are: requests per period, tokens per period (known only after the model
 * has answered), and requests in flight, each per API key.
 *
 *   build/llm_server --port P [--bind ADDR] --requests "CONFIG" \
 *       --tokens "CONFIG" --concurrency "CONFIG"
 *       [--max-connections N] [--header-timeout S] [--keepalive-timeout S]
 *   e.g. build/llm_server --port 8080 --requests "rate=60/minute" \
 *       --tokens "rate=10000/minute" --concurrency "concurrency=4 lease=30s"
 *
 * POST /v1/completions, Authorization: Bearer KEY, body
 * {"prompt":"...","max_tokens":N} (c-examples/llm/body.h: strict JSON; the
 * prompt counts as the UTF-8 bytes it decodes to, escapes decoded).
 * prompt_tokens = ceil(prompt bytes / 4). Optional request headers:
 * X-Completion-Tokens (what the "model" will produce, capped at max_tokens;
 * default max_tokens / 2) and X-Latency-Ms (how long it "generates"; default
 * 0, at most 60000). 200: {"usage":{"prompt_tokens":P,"completion_tokens":C,
 * "total_tokens":T}}.
 *
 * ---- The three limiters, in this order, all or nothing ----
 *
 * The key of all three is the bearer token's bytes, as sent (any bytes).
 * (So on one Redis, give each limiter its own prefix=, e.g. "rq:", "tk:",
 * "cc:": key names there carry the rate, so only limiters of the same prefix
 * and the same rate would share a key's state, but a prefix each rules it
 * out.)
 *
 *   1. requests:    rl_check(cost 1)
 *   2. tokens:      rl_check(cost prompt_tokens + max_tokens): the RESERVATION,
 *                   the most the request can use (skipped when it is 0)
 *   3. concurrency: rl_acquire(): a lease on one of the key's in-flight slots
 *
 * A request denied by one limiter keeps nothing taken from the others: a
 * denial at 2 refunds step 1 (rl_adjust(requests, -1)); a denial at 3 refunds
 * steps 2 and 1 (rl_adjust(tokens, -reservation), rl_adjust(requests, -1)).
 * The rate limiters come first and the lease last, so that a lease, the
 * scarcest thing (a few slots, held for the whole generation), is never held,
 * even for a moment, by a request another limiter denies. A rate refund gives
 * back what rl_check took (never more than a fresh key has; with a window,
 * only units of the current window: a rollback that straddles a window's end
 * leaves the units in the window before, which a sliding window still
 * weighs for one more period). Between a charge and its
 * rollback, microseconds apart, a concurrent request of the same key sees the
 * units taken: at the very edge of a quota it may be denied where a strictly
 * atomic check of all three would have let it pass. Only what was taken is
 * rolled back: not what an rl_* error allowed (on_error=allow takes nothing),
 * nor a would-be denial under dry_run=on (allowed, with a retry_after_ms).
 * The 429 names the limiter that denied: "requests", "tokens" or
 * "concurrency".
 *
 * Then it "generates" (waits X-Latency-Ms, renewing the lease with rl_renew
 * every half lease, so a generation longer than the lease keeps its slot; a
 * renewal that finds the lease expired, after a stall longer than a lease,
 * carries on without one, as a stream already under way would),
 * then SETTLES: rl_adjust(tokens, used - reservation), where used =
 * prompt_tokens + completion_tokens (a refund here, as completion_tokens <=
 * max_tokens; a real model that ran over would charge the excess the same
 * way), and rl_release() frees the slot. Both happen on every path once the
 * reservation and the lease are taken, including a stop (SIGTERM) during the
 * generation, which answers 503 and settles as if nothing was generated.
 *
 * A reservation larger than the tokens limit itself (rl_check says
 * retry_after_ms = UINT64_MAX: it can never pass) is a 400, not a 429: no
 * waiting would let it through, and a client that retries 429s would retry
 * it for ever.
 *
 * ---- Headers on every response ----
 *
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}: the deciding rate's
 * limit, the units left, and the time until it is full again, as a Go-style
 * duration (llm/duration.h: "1s", "6m0s", "250ms"). On a 200 they describe
 * the key after this request; the tokens after its SETTLEMENT (what it
 * really used, not its reservation). On a 429, after the rollback. On any
 * other response: a peek (rl_adjust with delta 0) of the bearer's key when
 * the request has a well-formed one, else of the empty key, which no request
 * can ever charge (an empty bearer is a 401), so those headers show the
 * configured limits, full. A 429 also has Retry-After: retry_after_ms in
 * whole seconds, rounded up (for concurrency, until the earliest held lease
 * would expire: an upper bound, as leases are usually released sooner).
 *
 * ---- Errors, and what they hold ----
 *
 * Nothing is charged and no lease is taken before a request is known good:
 * 404 (another path), 405 (another method; Allow: POST), 401 (Authorization
 * missing, empty, or not "Bearer TOKEN"), 411 (no Content-Length, or a
 * Transfer-Encoding: chunked bodies are refused), 413 (Content-Length over
 * 1 MiB: refused from the head, the body never read), 400 (malformed head,
 * bad X-* header, bad JSON, missing prompt, bad max_tokens), 408 (head or
 * body not complete within the header timeout).
 *
 * A failing rl_* call (a backend down) fills a decision all the same (its
 * on_error): the server obeys it and logs rl_last_error() to stderr (at
 * most 5 lines a second; the others are counted in the next line).
 *
 * ---- Connections ----
 *
 * One thread per connection, at most --max-connections (256; lowered to fit
 * the open-file limit, which is raised to its hard limit) at once, each
 * on a blocking socket waited on with poll() against deadlines: a request
 * head must be complete within --header-timeout (5 s) of its first byte (or
 * of the connection), its body within that again; an idle keep-alive
 * connection is closed after --keepalive-timeout (5 s); a response the client
 * does not read is dropped after the header timeout (SO_SNDTIMEO). At the
 * cap, a new connection evicts the oldest one that has not finished a
 * request head (silent, slowloris, idle keep-alive), so such clients delay
 * others by one eviction, not by a timeout; only when every thread is busy
 * with a complete request (generating) do new connections wait in the
 * backlog. A thread is the natural shape here: the generation blocks, as a
 * call to a model would.
 *
 * Shutdown: SIGINT/SIGTERM are blocked in every thread; a signal thread
 * waits for them with sigwait() and closes the write end of a pipe that
 * every poll() watches: the acceptor stops, idle and half-read connections
 * close, generations stop early (503, settled, released), and the threads
 * are joined before rl_destroy(). Exit 0 after a signal, 2 for bad
 * arguments or configs, 1 when the socket or threads cannot be set up.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "http/http.h"
#include "http/request.h"
#include "llm/body.h"
#include "llm/duration.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PROG "llm_server"
#define MAX_BODY (1024 * 1024)  /* the largest request body read: 1 MiB */
#define MAX_LATENCY_MS 60000    /* X-Latency-Ms is capped at this */
#define LINGER_MS 2000          /* closing after an error: drain the client this long */
#define LINGER_MAX_BYTES (64L * 1024 * 1024)
#define THREAD_STACK (512 * 1024)
#define LOG_PER_SECOND 5
#define COMPLETIONS_PATH "/v1/completions"

/* ---- the server ------------------------------------------------------------ */

enum slot_state {
    SLOT_FREE,    /* no thread */
    SLOT_WAITING, /* its connection has not finished a request head: may be evicted */
    SLOT_BUSY,    /* its connection is in the middle of a request */
    SLOT_DONE     /* its thread has ended: join it before reuse */
};

struct server;

struct slot {
    struct server *srv;
    pthread_t tid;
    int has_thread; /* written by the acceptor only */
    enum slot_state state;
    int fd;
    long long since_ms; /* when it entered SLOT_WAITING */
};

struct server {
    rl_limiter *requests, *tokens, *concurrency;
    int listen_fd;
    int stop_fd; /* readable (EOF) once the server must stop */
    long long header_timeout_ms, keepalive_timeout_ms;
    long max_conns;
    pthread_mutex_t lock; /* slots, active */
    pthread_cond_t freed;
    struct slot *slots;
    long active;
};

/* What happened, for the stop summary. */
static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long count_ok, count_limited[3], count_errors;

static void count(unsigned long *counter)
{
    pthread_mutex_lock(&counts_lock);
    (*counter)++;
    pthread_mutex_unlock(&counts_lock);
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int stopping(const struct server *srv)
{
    struct pollfd p;
    p.fd = srv->stop_fd;
    p.events = POLLIN;
    return poll(&p, 1, 0) > 0;
}

/* ---- logging rl_* errors ---------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static long long log_second;
static int log_lines;
static unsigned long log_dropped;

/* Called right after an rl_* call returned rc < 0, before any other rl_*
 * call in this thread, so rl_last_error() still describes it. */
static void log_rl_error(const char *call, const char *limiter, int rc)
{
    char msg[256];
    long long second = monotonic_ms() / 1000;
    snprintf(msg, sizeof msg, "%s", rl_last_error());
    count(&count_errors);
    pthread_mutex_lock(&log_lock);
    if (second != log_second) {
        log_second = second;
        log_lines = 0;
    }
    if (log_lines < LOG_PER_SECOND) {
        log_lines++;
        fprintf(stderr, PROG ": %s(%s): %s: %s (obeying the decision it returned", call, limiter, rl_strerror(rc),
                msg);
        if (log_dropped)
            fprintf(stderr, "; %lu more errors not logged", log_dropped);
        fprintf(stderr, ")\n");
        log_dropped = 0;
    } else {
        log_dropped++;
    }
    pthread_mutex_unlock(&log_lock);
}

/* rl_adjust(delta 0): the key's state, charging nothing. */
static void peek(rl_limiter *lim, const char *name, const void *key, size_t key_len, rl_decision *d)
{
    int rc = rl_adjust(lim, key, key_len, 0, d);
    if (rc < 0)
        log_rl_error("rl_adjust", name, rc);
}

/* rl_adjust(delta): a refund (< 0) or a charge (> 0); *d describes the key after. */
static void adjust(rl_limiter *lim, const char *name, const void *key, size_t key_len, int64_t delta,
                   rl_decision *d)
{
    int rc = rl_adjust(lim, key, key_len, delta, d);
    if (rc < 0)
        log_rl_error("rl_adjust", name, rc);
}

static void release(struct server *srv, const void *key, size_t key_len, uint64_t lease)
{
    int rc;
    if (lease == 0)
        return; /* none taken (an rl_acquire error that allowed without a lease) */
    rc = rl_release(srv->concurrency, key, key_len, lease);
    if (rc < 0)
        log_rl_error("rl_release", "concurrency", rc);
}

/* ---- a connection ------------------------------------------------------------- */

struct conn {
    struct server *srv;
    struct slot *slot;
    int fd;
    int keep10;    /* an HTTP/1.0 request asked for keep-alive: say "Connection: keep-alive" */
    size_t in_len; /* bytes in in[] */
    char in[HTTP_MAX_HEAD];
};

/* Waits until fd is readable or deadline_ms passes or the server stops.
 * 1: readable (or closed), 0: the deadline passed, -1: stopping. */
static int wait_readable(const struct server *srv, int fd, long long deadline_ms)
{
    for (;;) {
        struct pollfd p[2];
        long long left = deadline_ms - monotonic_ms();
        int n;
        if (left <= 0)
            return 0;
        p[0].fd = fd;
        p[0].events = POLLIN;
        p[1].fd = srv->stop_fd;
        p[1].events = POLLIN;
        p[0].revents = p[1].revents = 0;
        n = poll(p, 2, left > 1000000 ? 1000000 : (int)left);
        if (n < 0 && errno != EINTR)
            return 0;
        if (p[1].revents)
            return -1;
        if (p[0].revents)
            return 1;
    }
}

/* Sends all of buf (SO_SNDTIMEO bounds each wait). 0, or -1. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Closes gracefully after a response: our side shut, then what the client
 * still sends drained (so that closing does not send an RST that could
 * destroy the response before the client reads it), for at most LINGER_MS
 * and LINGER_MAX_BYTES. The fd itself is closed by the thread's end. */
static void linger_close(const struct conn *c)
{
    long long deadline = monotonic_ms() + LINGER_MS;
    long drained = 0;
    char sink[4096];
    shutdown(c->fd, SHUT_WR);
    while (drained < LINGER_MAX_BYTES && wait_readable(c->srv, c->fd, deadline) == 1) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
        if (n > 0)
            drained += (long)n;
    }
}

static void set_slot_state(struct conn *c, enum slot_state state)
{
    pthread_mutex_lock(&c->srv->lock);
    c->slot->state = state;
    if (state == SLOT_WAITING)
        c->slot->since_ms = monotonic_ms();
    pthread_mutex_unlock(&c->srv->lock);
}

enum head_result { HEAD_OK, HEAD_CLOSED, HEAD_TIMEOUT, HEAD_STOP, HEAD_BAD, HEAD_TOO_LARGE };

/* Reads until in[] holds a complete request head (its length in *head_len).
 * first: the connection's first request (the header timeout runs from now);
 * else the connection is idle until a byte comes (keep-alive timeout), then
 * the header timeout runs from that byte. */
static enum head_result read_head(struct conn *c, int first, size_t *head_len)
{
    struct server *srv = c->srv;
    struct http_scanner scan;
    long long deadline;
    int started = first || c->in_len > 0;

    deadline = monotonic_ms() + (started ? srv->header_timeout_ms : srv->keepalive_timeout_ms);
    http_scan_reset(&scan);
    for (;;) {
        ssize_t n;
        int w;
        if (c->in_len > 0) {
            /* Empty lines before a request line are ignored (RFC 9112 2.2). */
            while (scan.pos == 0 && c->in_len >= 2 && c->in[0] == '\r' && c->in[1] == '\n') {
                memmove(c->in, c->in + 2, c->in_len - 2);
                c->in_len -= 2;
            }
            if (!(scan.pos == 0 && c->in_len == 1 && c->in[0] == '\r') && c->in_len > 0) {
                switch (http_scan(&scan, c->in, c->in_len)) {
                case HTTP_SCAN_DONE:
                    *head_len = scan.head_len;
                    return HEAD_OK;
                case HTTP_SCAN_BAD:
                    return HEAD_BAD;
                case HTTP_SCAN_TOO_LARGE:
                    return HEAD_TOO_LARGE;
                case HTTP_SCAN_MORE:
                    break;
                }
            }
        }
        w = wait_readable(srv, c->fd, deadline);
        if (w < 0)
            return HEAD_STOP;
        if (w == 0)
            return c->in_len > 0 ? HEAD_TIMEOUT : HEAD_CLOSED; /* not a byte: just close */
        n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return HEAD_CLOSED;
        if (!started) {
            started = 1;
            deadline = monotonic_ms() + srv->header_timeout_ms;
        }
        c->in_len += (size_t)n;
    }
}

/* ---- what a request carries ----------------------------------------------- */

/* Case-insensitive comparison of p[0..len) with the lower-case word w. */
static int equals_word(const char *p, size_t len, const char *w)
{
    size_t i;
    if (strlen(w) != len)
        return 0;
    for (i = 0; i < len; i++) {
        char ch = p[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != w[i])
            return 0;
    }
    return 1;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

struct field {
    const char *value; /* blanks trimmed; NULL when absent */
    size_t len;
    int count;
};

/* The headers llm_server reads beyond what http_parse_head() did. */
struct headers {
    struct field authorization, content_length, transfer_encoding, expect, completion_tokens, latency_ms,
        connection;
};

/* Walks the header lines of a head http_parse_head() accepted (so every
 * line is "name:value" and ends with CRLF). */
static void read_headers(const char *head, size_t head_len, struct headers *h)
{
    const char *end = head + head_len, *p = memchr(head, '\r', head_len);
    memset(h, 0, sizeof *h);
    for (p += 2; p < end; ) {
        const char *eol = memchr(p, '\r', (size_t)(end - p)), *colon, *v, *ve;
        struct field *f = NULL;
        if (!eol || eol == p)
            break;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon)
            break;
        v = colon + 1;
        while (v < eol && is_blank(*v))
            v++;
        ve = eol;
        while (ve > v && is_blank(ve[-1]))
            ve--;
        if (equals_word(p, (size_t)(colon - p), "authorization"))
            f = &h->authorization;
        else if (equals_word(p, (size_t)(colon - p), "content-length"))
            f = &h->content_length;
        else if (equals_word(p, (size_t)(colon - p), "transfer-encoding"))
            f = &h->transfer_encoding;
        else if (equals_word(p, (size_t)(colon - p), "expect"))
            f = &h->expect;
        else if (equals_word(p, (size_t)(colon - p), "x-completion-tokens"))
            f = &h->completion_tokens;
        else if (equals_word(p, (size_t)(colon - p), "x-latency-ms"))
            f = &h->latency_ms;
        else if (equals_word(p, (size_t)(colon - p), "connection"))
            f = &h->connection;
        if (f) {
            f->count++;
            if (!f->value || f == &h->connection) { /* Connection: the last one wins below */
                f->value = v;
                f->len = (size_t)(ve - v);
            }
        }
        p = eol + 2;
    }
}

/* "Bearer TOKEN" (the scheme case-insensitive, then blanks): the token's
 * bytes, as sent, up to the value's end. 0, or -1 when missing or empty. */
static int bearer(const struct headers *h, const char **key, size_t *key_len)
{
    const struct field *f = &h->authorization;
    const char *p, *end;
    if (f->count != 1 || f->len < 7 || !equals_word(f->value, 6, "bearer") || !is_blank(f->value[6]))
        return -1;
    p = f->value + 7;
    end = f->value + f->len;
    while (p < end && is_blank(*p))
        p++;
    if (p == end)
        return -1;
    *key = p;
    *key_len = (size_t)(end - p);
    return 0;
}

/* A header's value as a whole decimal number of at most 9 digits (so no
 * overflow); values larger than cap are cap. 0, or -1 when not a number. */
static int header_number(const struct field *f, long cap, long *out)
{
    long v = 0;
    size_t i;
    if (f->len == 0 || f->count != 1)
        return -1;
    for (i = 0; i < f->len; i++) {
        if (f->value[i] < '0' || f->value[i] > '9')
            return -1;
        if (v <= cap)
            v = v * 10 + (f->value[i] - '0');
    }
    *out = v > cap ? cap : v;
    return 0;
}

/* Whether the Connection header lists token (e.g. "close"). */
static int connection_has(const struct field *f, const char *token)
{
    const char *p = f->value, *end = f->value ? f->value + f->len : NULL;
    while (p && p < end) {
        const char *t;
        while (p < end && (is_blank(*p) || *p == ','))
            p++;
        t = p;
        while (p < end && !is_blank(*p) && *p != ',')
            p++;
        if (equals_word(t, (size_t)(p - t), token))
            return 1;
    }
    return 0;
}

/* ---- responses ---------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* The six x-ratelimit-* lines. */
static void ratelimit_headers(const rl_decision *req, const rl_decision *tok, char *out, size_t cap)
{
    char req_reset[LLM_DURATION_SIZE], tok_reset[LLM_DURATION_SIZE];
    llm_format_duration(req->reset_ms, req_reset);
    llm_format_duration(tok->reset_ms, tok_reset);
    snprintf(out, cap,
             "x-ratelimit-limit-requests: %" PRIu64 "\r\n"
             "x-ratelimit-remaining-requests: %" PRIu64 "\r\n"
             "x-ratelimit-reset-requests: %s\r\n"
             "x-ratelimit-limit-tokens: %" PRIu64 "\r\n"
             "x-ratelimit-remaining-tokens: %" PRIu64 "\r\n"
             "x-ratelimit-reset-tokens: %s\r\n",
             req->limit, req->remaining, req_reset, tok->limit, tok->remaining, tok_reset);
}

/* Writes a whole response. extra: more header lines (CRLF-terminated) or
 * "". Returns 0, or -1 when the client is gone. */
static int respond(struct conn *c, int status, const char *extra, const rl_decision *req,
                   const rl_decision *tok, const char *body, int closing)
{
    char rl[512], out[4096];
    int n;
    ratelimit_headers(req, tok, rl, sizeof rl);
    n = snprintf(out, sizeof out,
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "%s%s%s"
                 "\r\n"
                 "%s",
                 status, reason(status), strlen(body), rl, extra,
                 closing ? "Connection: close\r\n" : c->keep10 ? "Connection: keep-alive\r\n" : "", body);
    if (n < 0 || (size_t)n >= sizeof out)
        return -1; /* cannot happen: the parts are bounded well under 4 KiB */
    return send_all(c->fd, out, (size_t)n);
}

/* An error response with {"error":{"type":TYPE,"code":CODE,"message":MSG,
 * "param":PARAM}} (param null when NULL), the headers from peeks of the key
 * (the empty key when key is NULL). message and param are constants of
 * this program: no quote or backslash. */
static int respond_error(struct conn *c, int status, const char *extra, const char *key, size_t key_len,
                         const char *type, const char *code, const char *message, const char *param, int closing)
{
    rl_decision req, tok;
    char body[1024];
    if (!key) {
        key = "";
        key_len = 0;
    }
    peek(c->srv->requests, "requests", key, key_len, &req);
    peek(c->srv->tokens, "tokens", key, key_len, &tok);
    snprintf(body, sizeof body,
             "{\"error\":{\"type\":\"%s\",\"code\":\"%s\",\"message\":\"%s\",\"param\":%s%s%s}}\n", type, code,
             message, param ? "\"" : "", param ? param : "null", param ? "\"" : "");
    return respond(c, status, extra, &req, &tok, body, closing);
}

static uint64_t seconds_up(uint64_t ms)
{
    return ms / 1000 + (ms % 1000 != 0);
}

/* 429: which limiter denied (d its decision), with Retry-After. */
static int respond_limited(struct conn *c, const char *type, const rl_decision *d, uint64_t needed,
                           const rl_decision *req, const rl_decision *tok, int closing)
{
    char extra[64], body[512];
    uint64_t retry = seconds_up(d->retry_after_ms);
    if (retry == 0)
        retry = 1; /* denied: never "retry now" */
    snprintf(extra, sizeof extra, "Retry-After: %" PRIu64 "\r\n", retry);
    snprintf(body, sizeof body,
             "{\"error\":{\"type\":\"%s\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached for "
             "%s: limit %" PRIu64 ", remaining %" PRIu64 ", this request needs %" PRIu64
             ". Try again in %" PRIu64 " s.\"}}\n",
             type, type, d->limit, d->remaining, needed, retry);
    return respond(c, 429, extra, req, tok, body, closing);
}

/* ---- a completion -------------------------------------------------------------- */

/* "Generates" for latency_ms, renewing the lease every half lease (when
 * there is one). 0 when done, -1 when the server is stopping. */
static int generate(struct server *srv, const char *key, size_t key_len, uint64_t lease, uint64_t lease_ms,
                    long latency_ms)
{
    long long now = monotonic_ms(), done = now + latency_ms;
    long long every = lease != 0 && lease_ms > 1 ? (long long)(lease_ms / 2) : 0;
    long long next_renew = every ? now + every : done;
    while ((now = monotonic_ms()) < done) {
        struct pollfd p;
        long long until = next_renew < done ? next_renew : done;
        p.fd = srv->stop_fd;
        p.events = POLLIN;
        p.revents = 0;
        if (until > now && poll(&p, 1, (int)(until - now)) > 0)
            return -1;
        if (every && monotonic_ms() >= next_renew && monotonic_ms() < done) {
            int rc = rl_renew(srv->concurrency, key, key_len, lease);
            if (rc < 0)
                log_rl_error("rl_renew", "concurrency", rc);
            next_renew += every;
        }
    }
    return 0;
}

/* The request is well-formed: limit it, generate, settle, answer. */
static int complete(struct conn *c, const char *key, size_t key_len, const struct llm_body *body,
                    long completion_header, long latency_ms, int closing)
{
    struct server *srv = c->srv;
    rl_decision req, tok, conc;
    uint64_t prompt_tokens = (body->prompt_bytes + 3) / 4; /* ceil(bytes / 4) */
    uint64_t max_tokens = (uint64_t)body->max_tokens;
    uint64_t reservation = prompt_tokens + max_tokens; /* prompt <= 1 MiB: no overflow */
    uint64_t reserved = 0, completion, used, lease = 0;
    int requests_charged = 0, rc;
    char out[256];

    /* 1. requests: cost 1 */
    rc = rl_check(srv->requests, key, key_len, 1, &req);
    if (rc < 0)
        log_rl_error("rl_check", "requests", rc);
    if (!req.allowed) {
        peek(srv->tokens, "tokens", key, key_len, &tok);
        count(&count_limited[0]);
        return respond_limited(c, "requests", &req, 1, &req, &tok, closing);
    }
    /* What to roll back is what was taken: nothing after an error that
     * allowed (on_error), nor after a would-be denial of dry_run=on
     * (allowed, with a retry_after_ms). */
    requests_charged = rc == RL_OK && req.retry_after_ms == 0;

    /* 2. tokens: reserve prompt_tokens + max_tokens */
    if (reservation > 0) {
        rc = rl_check(srv->tokens, key, key_len, reservation, &tok);
        if (rc < 0)
            log_rl_error("rl_check", "tokens", rc);
    } else {
        rc = -1; /* nothing to reserve: a request of 0 tokens is never denied for tokens */
        peek(srv->tokens, "tokens", key, key_len, &tok);
        tok.allowed = 1;
    }
    if (!tok.allowed) {
        if (requests_charged)
            adjust(srv->requests, "requests", key, key_len, -1, &req); /* roll back 1 */
        if (tok.retry_after_ms == UINT64_MAX) {
            /* more than the limit itself: no wait lets it through */
            char msg[512];
            snprintf(msg, sizeof msg,
                     "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"tokens_exceed_limit\","
                     "\"message\":\"prompt_tokens + max_tokens = %" PRIu64 " is more than the tokens limit (%" PRIu64
                     "): lower max_tokens\",\"param\":\"max_tokens\"}}\n",
                     reservation, tok.limit);
            return respond(c, 400, "", &req, &tok, msg, closing);
        }
        count(&count_limited[1]);
        return respond_limited(c, "tokens", &tok, reservation, &req, &tok, closing);
    }
    if (reservation > 0 && rc == RL_OK && tok.retry_after_ms == 0)
        reserved = reservation;

    /* 3. concurrency: a lease on one of the key's slots */
    rc = rl_acquire(srv->concurrency, key, key_len, &lease, &conc);
    if (rc < 0)
        log_rl_error("rl_acquire", "concurrency", rc);
    if (!conc.allowed) {
        if (reserved)
            adjust(srv->tokens, "tokens", key, key_len, -(int64_t)reserved, &tok); /* roll back 2 */
        if (requests_charged)
            adjust(srv->requests, "requests", key, key_len, -1, &req); /* roll back 1 */
        count(&count_limited[2]);
        return respond_limited(c, "concurrency", &conc, 1, &req, &tok, closing);
    }
    /* (allowed by on_error after an error: lease is 0 unless one was taken) */

    /* generate */
    completion = completion_header >= 0 ? (uint64_t)completion_header : max_tokens / 2;
    if (completion > max_tokens)
        completion = max_tokens;
    if (generate(srv, key, key_len, lease, conc.window_ms, latency_ms) < 0) {
        /* stopping: settle as if nothing was generated, free the slot, 503 */
        adjust(srv->tokens, "tokens", key, key_len, (int64_t)prompt_tokens - (int64_t)reserved, &tok);
        release(srv, key, key_len, lease);
        respond(c, 503, "", &req, &tok,
                "{\"error\":{\"type\":\"server_error\",\"code\":\"shutting_down\","
                "\"message\":\"the server is stopping\"}}\n",
                1);
        return -1;
    }

    /* settle: charge what was used, give back the rest of the reservation */
    used = prompt_tokens + completion;
    adjust(srv->tokens, "tokens", key, key_len, (int64_t)used - (int64_t)reserved, &tok);
    release(srv, key, key_len, lease);

    count(&count_ok);
    snprintf(out, sizeof out,
             "{\"usage\":{\"prompt_tokens\":%" PRIu64 ",\"completion_tokens\":%" PRIu64 ",\"total_tokens\":%" PRIu64
             "}}\n",
             prompt_tokens, completion, used);
    return respond(c, 200, "", &req, &tok, out, closing);
}

/* Reads body_len bytes of body (what already sits in in[] after the head
 * first). 0, or the status to answer (408), or -1 when the client left or
 * the server stops. */
static int read_body(struct conn *c, size_t head_len, char *body, size_t body_len)
{
    size_t have = c->in_len - head_len, got;
    long long deadline = monotonic_ms() + c->srv->header_timeout_ms;
    if (have > body_len)
        have = body_len;
    memcpy(body, c->in + head_len, have);
    /* keep what follows the body (a pipelined request) */
    memmove(c->in, c->in + head_len + have, c->in_len - head_len - have);
    c->in_len -= head_len + have;
    for (got = have; got < body_len;) {
        ssize_t n;
        int w = wait_readable(c->srv, c->fd, deadline);
        if (w < 0)
            return -1;
        if (w == 0)
            return 408;
        n = recv(c->fd, body + got, body_len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Answers one request whose head is in[0..head_len). Returns 1 to keep the
 * connection for another request, 0 to close it. */
static int handle(struct conn *c, size_t head_len)
{
    struct http_request hr;
    struct headers h;
    const char *key = NULL;
    size_t key_len = 0;
    int rc, closing, has_body;
    uint64_t content_length = 0;
    long completion = -1, latency = 0;
    char *body;
    struct llm_body parsed;
    struct llm_body_error err;

    rc = http_parse_head(c->in, head_len, &hr);
    if (rc != 0) {
        respond_error(c, rc, "", NULL, 0, "invalid_request_error",
                      rc == 505 ? "http_version_not_supported" : "bad_request",
                      rc == 505 ? "HTTP/1.0 and HTTP/1.1 only" : "a malformed request head", NULL, 1);
        return 0;
    }
    read_headers(c->in, head_len, &h);
    if (bearer(&h, &key, &key_len) < 0)
        key = NULL;
    if (h.content_length.value) {
        size_t i;
        for (i = 0; i < h.content_length.len && h.content_length.value[i] >= '0' &&
                    h.content_length.value[i] <= '9'; i++) {
            if (content_length <= MAX_BODY)
                content_length = content_length * 10 + (uint64_t)(h.content_length.value[i] - '0');
        }
    }
    has_body = h.transfer_encoding.value != NULL || content_length > 0;
    /* a body left unread ends the connection; so does the client's wish */
    closing = connection_has(&h.connection, "close") ||
              (hr.minor_version == 0 && !connection_has(&h.connection, "keep-alive"));
    c->keep10 = hr.minor_version == 0 && !closing;

    if (hr.path_len != strlen(COMPLETIONS_PATH) || memcmp(hr.path, COMPLETIONS_PATH, hr.path_len) != 0) {
        respond_error(c, 404, "", key, key_len, "invalid_request_error", "not_found",
                      "no such path: POST /v1/completions only", NULL, closing || has_body);
        return !(closing || has_body);
    }
    if (hr.method_len != 4 || memcmp(hr.method, "POST", 4) != 0) {
        respond_error(c, 405, "Allow: POST\r\n", key, key_len, "invalid_request_error", "method_not_allowed",
                      "/v1/completions takes POST only", NULL, closing || has_body);
        return !(closing || has_body);
    }
    if (!key) {
        respond_error(c, 401, "WWW-Authenticate: Bearer\r\n", NULL, 0, "invalid_request_error",
                      "invalid_api_key",
                      h.authorization.count > 1 ? "more than one Authorization header"
                                                : "an API key is needed: Authorization: Bearer KEY",
                      NULL, 1);
        return 0;
    }
    if (h.transfer_encoding.value || !h.content_length.value) {
        respond_error(c, 411, "", key, key_len, "invalid_request_error", "length_required",
                      "send the body with a Content-Length (chunked bodies are not accepted)", NULL, 1);
        return 0;
    }
    if (content_length > MAX_BODY) {
        respond_error(c, 413, "", key, key_len, "invalid_request_error", "request_too_large",
                      "the body is larger than 1 MiB", NULL, 1);
        return 0;
    }
    if (h.completion_tokens.value && header_number(&h.completion_tokens, LLM_MAX_TOKENS, &completion) < 0) {
        respond_error(c, 400, "", key, key_len, "invalid_request_error", "invalid_header",
                      "X-Completion-Tokens must be a whole number", "X-Completion-Tokens", 1);
        return 0;
    }
    if (h.latency_ms.value && header_number(&h.latency_ms, MAX_LATENCY_MS, &latency) < 0) {
        respond_error(c, 400, "", key, key_len, "invalid_request_error", "invalid_header",
                      "X-Latency-Ms must be a whole number of milliseconds", "X-Latency-Ms", 1);
        return 0;
    }

    /* Read the body: the client waiting for "100 Continue" gets it first. */
    if (hr.minor_version == 1 && h.expect.value && equals_word(h.expect.value, h.expect.len, "100-continue") &&
        c->in_len == head_len) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send_all(c->fd, cont, sizeof cont - 1) < 0)
            return 0;
    }
    body = malloc(content_length > 0 ? (size_t)content_length : 1);
    if (!body) {
        respond_error(c, 503, "", key, key_len, "server_error", "out_of_memory", "try again later", NULL, 1);
        return 0;
    }
    /* key points into in[], which read_body() rearranges: keep a copy */
    {
        char keybuf[HTTP_MAX_HEAD];
        memcpy(keybuf, key, key_len);
        key = keybuf;
        rc = read_body(c, head_len, body, (size_t)content_length);
        if (rc != 0) {
            free(body);
            if (rc == 408)
                respond_error(c, 408, "", key, key_len, "invalid_request_error", "timeout",
                              "the body did not arrive in time", NULL, 1);
            return 0;
        }
        rc = llm_body_parse(body, (size_t)content_length, &parsed, &err);
        free(body);
        if (rc < 0) {
            respond_error(c, 400, "", key, key_len, "invalid_request_error",
                          err.param ? "invalid_value" : "invalid_json", err.message, err.param, closing);
            return !closing;
        }
        if (complete(c, key, key_len, &parsed, completion, latency, closing) < 0)
            return 0;
    }
    return !closing;
}

static void serve_connection(struct conn *c)
{
    int first = 1;
    for (;;) {
        size_t head_len = 0;
        enum head_result r;
        set_slot_state(c, SLOT_WAITING);
        c->keep10 = 0;
        r = read_head(c, first, &head_len);
        first = 0;
        if (r != HEAD_OK) {
            if (r == HEAD_BAD || r == HEAD_TOO_LARGE || r == HEAD_TIMEOUT) {
                int status = r == HEAD_BAD ? 400 : r == HEAD_TOO_LARGE ? 431 : 408;
                set_slot_state(c, SLOT_BUSY);
                if (respond_error(c, status, "", NULL, 0, "invalid_request_error", "bad_request",
                                  status == 400   ? "a malformed request head"
                                  : status == 431 ? "the request head is larger than 8 KiB"
                                                  : "the request head did not arrive in time",
                                  NULL, 1) == 0)
                    linger_close(c);
            }
            return;
        }
        set_slot_state(c, SLOT_BUSY);
        if (!handle(c, head_len)) {
            if (!stopping(c->srv))
                linger_close(c);
            return;
        }
        if (stopping(c->srv))
            return;
    }
}

static void *connection_thread(void *arg)
{
    struct slot *slot = arg;
    struct server *srv = slot->srv;
    struct conn *c = malloc(sizeof *c);
    if (c) {
        c->srv = srv;
        c->slot = slot;
        c->fd = slot->fd;
        c->keep10 = 0;
        c->in_len = 0;
        serve_connection(c);
        free(c);
    }
    pthread_mutex_lock(&srv->lock);
    close(slot->fd); /* under the lock: the acceptor may be about to shutdown() it */
    slot->fd = -1;
    slot->state = SLOT_DONE;
    srv->active--;
    pthread_cond_signal(&srv->freed);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* ---- accepting ------------------------------------------------------------------ */

/* At the cap: shuts down the oldest connection that has not finished a
 * request head, so that its thread ends. Called with srv->lock held. */
static void evict_one(struct server *srv)
{
    struct slot *oldest = NULL;
    long i;
    for (i = 0; i < srv->max_conns; i++) {
        struct slot *s = &srv->slots[i];
        if (s->state == SLOT_WAITING && s->fd >= 0 && (!oldest || s->since_ms < oldest->since_ms))
            oldest = s;
    }
    if (oldest) {
        shutdown(oldest->fd, SHUT_RDWR);
        oldest->state = SLOT_BUSY; /* being closed: not a candidate again */
    }
}

static void accept_loop(struct server *srv, pthread_attr_t *attr)
{
    for (;;) {
        struct pollfd p[2];
        struct slot *slot = NULL;
        long i;
        int fd, one = 1;
        struct timeval tv;

        p[0].fd = srv->listen_fd;
        p[0].events = POLLIN;
        p[1].fd = srv->stop_fd;
        p[1].events = POLLIN;
        p[0].revents = p[1].revents = 0;
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return;
        if (p[1].revents)
            return;
        if (!p[0].revents)
            continue;

        pthread_mutex_lock(&srv->lock);
        if (srv->active >= srv->max_conns) {
            struct timespec until;
            evict_one(srv);
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 100 * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&srv->freed, &srv->lock, &until);
            pthread_mutex_unlock(&srv->lock);
            continue; /* the new connection waits in the backlog meanwhile */
        }
        pthread_mutex_unlock(&srv->lock);

        fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct pollfd s;
                s.fd = srv->stop_fd;
                s.events = POLLIN;
                poll(&s, 1, 100); /* out of descriptors: try again shortly */
            }
            continue; /* EAGAIN: another client took it, or it left */
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        tv.tv_sec = (time_t)(srv->header_timeout_ms / 1000);
        tv.tv_usec = 0;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

        pthread_mutex_lock(&srv->lock);
        for (i = 0; i < srv->max_conns && !slot; i++)
            if (srv->slots[i].state == SLOT_FREE || srv->slots[i].state == SLOT_DONE)
                slot = &srv->slots[i];
        if (slot && slot->has_thread) {
            pthread_join(slot->tid, NULL); /* it has ended: only its return is left */
            slot->has_thread = 0;
        }
        if (slot) {
            slot->fd = fd;
            slot->state = SLOT_WAITING;
            slot->since_ms = monotonic_ms();
            if (pthread_create(&slot->tid, attr, connection_thread, slot) == 0) {
                slot->has_thread = 1;
                srv->active++;
            } else {
                slot->state = SLOT_FREE;
                slot->fd = -1;
                close(fd);
            }
        } else {
            close(fd); /* cannot happen: active < max_conns */
        }
        pthread_mutex_unlock(&srv->lock);
    }
}

/* ---- main ------------------------------------------------------------------------- */

static int stop_pipe_w = -1;
static int stop_signal;

static void *signal_thread(void *arg)
{
    const sigset_t *set = arg;
    int sig = 0;
    while (sigwait(set, &sig) != 0) {
    }
    stop_signal = sig;
    close(stop_pipe_w); /* every poll() on the read end wakes */
    return NULL;
}

static int usage(const char *msg)
{
    fprintf(stderr,
            PROG ": %s\n"
                 "usage: " PROG " --port P [--bind ADDR] --requests CONFIG --tokens CONFIG --concurrency CONFIG\n"
                 "          [--max-connections N] [--header-timeout S] [--keepalive-timeout S]\n",
            msg);
    return 2;
}

static int parse_number(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Creates a limiter from the option's config and checks that it can do its
 * part: settle (rl_adjust, a rate limiter) or lease (rl_release, a
 * concurrency limiter). A backend error here is not fatal: a server must be
 * able to start while Redis is down. */
static int create(const char *option, const char *config, int concurrency, rl_limiter **out)
{
    rl_decision d;
    int rc;
    if (rl_create(config, out) != RL_OK) {
        fprintf(stderr, PROG ": %s: bad config: %s\n", option, rl_last_error());
        return -1;
    }
    rc = concurrency ? rl_release(*out, "", 0, 1) : rl_adjust(*out, "", 0, 0, &d);
    if (rc == RL_ERR_INVALID) {
        /* the library says why: a limiter of the other kind, or a backend
         * that cannot settle or lease */
        fprintf(stderr, PROG ": %s: %s\n", option, rl_last_error());
        rl_destroy(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *requests_config = NULL, *tokens_config = NULL, *concurrency_config = NULL, *bind_addr = NULL;
    long port = -1, max_conns = 256, header_timeout = 5, keepalive_timeout = 5, i;
    struct http_cli cli;
    struct server srv;
    int listen_fd, stop_pipe[2], status = 1;
    long bound_port;
    sigset_t stop_signals;
    pthread_t sig_tid;
    pthread_attr_t attr;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *val;
        if (i + 1 >= argc)
            return usage("missing value after the last option");
        val = argv[++i];
        if (strcmp(opt, "--port") == 0) {
            if (parse_number(val, 0, 65535, &port) < 0)
                return usage("--port wants a number from 0 to 65535");
        } else if (strcmp(opt, "--bind") == 0) {
            unsigned char addr[16];
            if (inet_pton(AF_INET, val, addr) != 1 && inet_pton(AF_INET6, val, addr) != 1)
                return usage("--bind wants an IPv4 or IPv6 address");
            bind_addr = val;
        } else if (strcmp(opt, "--requests") == 0) {
            requests_config = val;
        } else if (strcmp(opt, "--tokens") == 0) {
            tokens_config = val;
        } else if (strcmp(opt, "--concurrency") == 0) {
            concurrency_config = val;
        } else if (strcmp(opt, "--max-connections") == 0) {
            if (parse_number(val, 1, 4096, &max_conns) < 0)
                return usage("--max-connections wants a number from 1 to 4096");
        } else if (strcmp(opt, "--header-timeout") == 0) {
            if (parse_number(val, 1, 3600, &header_timeout) < 0)
                return usage("--header-timeout wants whole seconds from 1 to 3600");
        } else if (strcmp(opt, "--keepalive-timeout") == 0) {
            if (parse_number(val, 1, 3600, &keepalive_timeout) < 0)
                return usage("--keepalive-timeout wants whole seconds from 1 to 3600");
        } else {
            return usage("unknown option");
        }
    }
    if (port < 0)
        return usage("--port is required");
    if (!requests_config || !tokens_config || !concurrency_config)
        return usage("--requests, --tokens and --concurrency are required");

    memset(&cli, 0, sizeof cli);
    cli.listen_addr[0] = bind_addr ? bind_addr : "127.0.0.1";
    cli.listen_port[0] = port;
    cli.listen_count = 1;
    /* the open-file limit raised to its hard limit, and the cap fitted in it */
    cli.max_connections = max_conns;
    http_fit_fd_limit(&cli, 1);
    max_conns = cli.max_connections;

    /* Block the stop signals before any thread exists (the library's
     * included), so that only the signal thread sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&srv, 0, sizeof srv);
    if (create("--requests", requests_config, 0, &srv.requests) < 0)
        return 2;
    if (create("--tokens", tokens_config, 0, &srv.tokens) < 0) {
        rl_destroy(srv.requests);
        return 2;
    }
    if (create("--concurrency", concurrency_config, 1, &srv.concurrency) < 0) {
        rl_destroy(srv.requests);
        rl_destroy(srv.tokens);
        return 2;
    }

    srv.slots = calloc((size_t)max_conns, sizeof *srv.slots);
    if (!srv.slots || http_listen_all(PROG, &cli, &listen_fd, &bound_port) < 0 || pipe(stop_pipe) < 0) {
        if (!srv.slots)
            fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    for (i = 0; i < max_conns; i++) {
        srv.slots[i].srv = &srv;
        srv.slots[i].fd = -1;
    }
    srv.listen_fd = listen_fd;
    srv.stop_fd = stop_pipe[0];
    stop_pipe_w = stop_pipe[1];
    srv.header_timeout_ms = header_timeout * 1000LL;
    srv.keepalive_timeout_ms = keepalive_timeout * 1000LL;
    srv.max_conns = max_conns;
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.freed, NULL);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);

    if (pthread_create(&sig_tid, NULL, signal_thread, &stop_signals) != 0) {
        fprintf(stderr, PROG ": cannot start the signal thread\n");
        close(listen_fd);
        goto out;
    }
    http_print_listening(&cli, &bound_port);

    accept_loop(&srv, &attr);
    if (!stopping(&srv)) {
        /* not a signal: poll() failed; stop as if one had come */
        fprintf(stderr, PROG ": poll: %s; stopping\n", strerror(errno));
        pthread_kill(sig_tid, SIGTERM);
    }

    /* Stopping: every connection thread watches the pipe; wait for them. */
    close(listen_fd);
    for (i = 0; i < max_conns; i++) {
        if (srv.slots[i].has_thread) {
            pthread_join(srv.slots[i].tid, NULL);
            srv.slots[i].has_thread = 0;
        }
    }
    pthread_join(sig_tid, NULL);
    close(stop_pipe[0]);
    pthread_attr_destroy(&attr);
    pthread_mutex_destroy(&srv.lock);
    pthread_cond_destroy(&srv.freed);
    fprintf(stderr,
            PROG ": stopped by signal %d: %lu completed, %lu limited (requests %lu, tokens %lu, concurrency %lu), "
                 "%lu limiter errors\n",
            stop_signal, count_ok, count_limited[0] + count_limited[1] + count_limited[2], count_limited[0],
            count_limited[1], count_limited[2], count_errors);
    status = stop_signal != 0 ? 0 : 1;
out:
    free(srv.slots);
    rl_destroy(srv.requests);
    rl_destroy(srv.tokens);
    rl_destroy(srv.concurrency);
    return status;
}
