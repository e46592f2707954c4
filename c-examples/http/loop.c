/*
 * loop.c — one event loop of an example server: non-blocking connections
 * on epoll, each a small state machine with a deadline. See http.h for what
 * a client sees; this comment is how it is done.
 *
 * Deadlines. A connection is always in exactly one phase, and every phase
 * has one fixed timeout, so the connections of a phase, appended to its list
 * as they enter it, are already in deadline order: expiring is looking at
 * the heads of five lists, entering a phase is O(1), and a deadline is never
 * pushed back by a client that sends (or reads) a byte at a time.
 *
 *   FRESH   connected; first request head not complete   header timeout
 *   IDLE    keep-alive, between requests                  keep-alive timeout
 *   HEAD    a later request head begun, not complete      header timeout
 *   WRITE   a response waiting for the client to read it  header timeout
 *   LINGER  closing: our side shut, draining the client   LINGER_MS
 *
 * Staying in a phase keeps its deadline: a head dripped over many reads, or
 * a response taken a byte at a time, still has one deadline in all.
 *
 * Memory. A connection is one allocation: its input buffer (a request head
 * is at most HTTP_MAX_HEAD; pipelined requests wait there) and its output
 * buffer (room for a few responses; a connection whose client does not read
 * stops being read, so a client cannot make the server buffer without end).
 *
 * Capacity. At max_connections, a new connection evicts the oldest FRESH or
 * IDLE one, as nginx reuses its idle connections: a flood of silent
 * connections cannot lock out clients that talk, nor can clients too slow to
 * finish their first request head. If none can go (every connection has
 * finished a request and is in the middle of another), the loop stops
 * accepting until one closes: new connections wait in the backlog, or are
 * taken by other loops (threads, workers). Before a FRESH or IDLE candidate
 * is closed, its socket is peeked: one with a request waiting is served, not
 * evicted. The limit of the scheme: a flood larger than max_connections that
 * reconnects as fast as it is evicted leaves each new connection only about
 * max_connections accepts to get its request in; a client whose request
 * arrives later than that is closed unanswered. The cure is a cap well above
 * the flood, which the 4096 default is for such floods on loopback.
 *
 * Closing. Closing a socket that has unread input sends RST, which can
 * destroy a response the client has not read yet. So a connection that
 * closes after a response shuts down its write side first and reads what the
 * client still sends (LINGER) until it closes, LINGER_MAX_BYTES have come,
 * or LINGER_MS have passed.
 *
 * A connection closed while a batch of events is being handled may still
 * have an event later in the same batch: its memory is freed only after the
 * batch (the dead list), and its fd is -1 meanwhile.
 */
#define _GNU_SOURCE

#include "http.h"
#include "request.h"
#include "site.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef EPOLLEXCLUSIVE
#define EPOLLEXCLUSIVE 0 /* before Linux 4.5: every loop wakes for a connection; one gets it */
#endif

#define OUT_CAP (2 * HTTP_MAX_RESPONSE) /* answered pipelined requests waiting to be sent */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES 65536
#define ACCEPT_BATCH 32        /* connections taken per wake-up: leave some to other loops */
#define ACCEPT_PAUSE_MS 100    /* out of descriptors or memory: try again after this */
#define ROOM_TRIES 8           /* connections found unread, and served, before one is evicted */
#define MAX_EVENTS 256

/* What an epoll event points at. */
enum watch_kind { WATCH_LISTEN, WATCH_STOP, WATCH_CONN };
struct watch {
    enum watch_kind kind;
    int fd;
};

enum phase { FRESH, IDLE, HEAD, WRITE, LINGER, PHASES, NO_PHASE = PHASES };

struct conn {
    struct watch w;   /* first: an epoll pointer to it is a pointer to the conn */
    enum phase phase;
    struct conn *prev, *next; /* in the list of its phase; next: in the dead list */
    long long deadline_ms;
    uint32_t events;  /* what epoll watches on it */
    int closing;      /* close once the output is sent */
    int eof;          /* the client has shut its side */
    unsigned long served; /* responses written on this connection */
    size_t in_start, in_len; /* input not yet answered: in[in_start, in_len) */
    struct http_scanner scan; /* of the head starting at in[in_start] */
    size_t out_len, out_sent;
    size_t lingered;  /* bytes read and dropped in LINGER */
    size_t peer_key_len;
    char peer_key[3 + INET6_ADDRSTRLEN]; /* "ip:<address>" */
    char in[HTTP_MAX_HEAD];
    char out[OUT_CAP];
};

struct list {
    struct conn *head, *tail;
};

struct loop {
    const char *prog;
    const struct http_loop_options *opt;
    struct http_site site;
    struct limited_log limited_log;
    int epfd;
    struct watch listen[HTTP_MAX_LISTEN];
    struct watch stop;
    long long timeout_ms[PHASES];
    struct list phases[PHASES];
    struct conn *dead; /* closed during this batch: freed after it */
    long count;        /* open connections */
    int accepting;     /* the listening sockets are in epoll */
    long long accept_resume_ms; /* paused accepting: resume then (0: when a connection closes) */
    int stopping;
    long long stop_deadline_ms;
    long long now_ms;
    int said_out_of_fds; /* EMFILE is reported once */
};

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- phases and their lists ------------------------------------------------- */

static void set_accepting(struct loop *l, int on);
static void readable(struct loop *l, struct conn *c);

static void unlink_conn(struct loop *l, struct conn *c)
{
    struct list *list;
    if (c->phase == NO_PHASE)
        return;
    list = &l->phases[c->phase];
    if (c->prev)
        c->prev->next = c->next;
    else
        list->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        list->tail = c->prev;
    c->prev = c->next = NULL;
    c->phase = NO_PHASE;
}

/* Moves c to phase p with a new deadline; staying in p keeps the old one. */
static void enter(struct loop *l, struct conn *c, enum phase p)
{
    struct list *list = &l->phases[p];
    if (c->phase == p)
        return;
    unlink_conn(l, c);
    c->phase = p;
    c->deadline_ms = l->now_ms + l->timeout_ms[p];
    c->prev = list->tail;
    c->next = NULL;
    if (list->tail)
        list->tail->next = c;
    else
        list->head = c;
    list->tail = c;
    if (p == IDLE && !l->accepting && !l->stopping && l->accept_resume_ms == 0)
        set_accepting(l, 1); /* paused for want of room: c may now make some */
}

/* Makes epoll watch c for events (EPOLLIN or EPOLLOUT). */
static void watch(struct loop *l, struct conn *c, uint32_t events)
{
    struct epoll_event ev;
    if (c->events == events)
        return;
    ev.events = events;
    ev.data.ptr = &c->w;
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->w.fd, &ev) == 0)
        c->events = events;
}

/* ---- accepting ------------------------------------------------------------- */

static void set_accepting(struct loop *l, int on)
{
    int i;
    if (l->accepting == on)
        return;
    for (i = 0; i < l->opt->listen_count; i++) {
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLEXCLUSIVE;
        ev.data.ptr = &l->listen[i];
        /* EPOLLEXCLUSIVE cannot be modified, only added and deleted */
        epoll_ctl(l->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, l->listen[i].fd, &ev);
    }
    l->accepting = on;
}

static void pause_accepting(struct loop *l, long long resume_ms)
{
    set_accepting(l, 0);
    l->accept_resume_ms = resume_ms;
}

static void close_conn(struct loop *l, struct conn *c)
{
    if (c->w.fd < 0)
        return;
    unlink_conn(l, c);
    close(c->w.fd); /* also takes it out of epoll */
    c->w.fd = -1;
    c->next = l->dead;
    l->dead = c;
    l->count--;
    if (!l->accepting && !l->stopping && l->accept_resume_ms == 0)
        set_accepting(l, 1);
}

static void free_dead(struct loop *l)
{
    while (l->dead) {
        struct conn *c = l->dead;
        l->dead = c->next;
        free(c);
    }
}

/* The connection that has waited longest without a request in progress
 * beyond its first (FRESH or IDLE): the one to close when room is needed.
 * NULL when every connection is busy. */
static struct conn *eviction_candidate(const struct loop *l)
{
    struct conn *fresh = l->phases[FRESH].head, *idle = l->phases[IDLE].head;
    if (fresh && idle)
        return fresh->deadline_ms - l->timeout_ms[FRESH] <= idle->deadline_ms - l->timeout_ms[IDLE] ? fresh : idle;
    return fresh ? fresh : idle;
}

/* Makes room for one more connection by closing the oldest FRESH or IDLE
 * one (eviction_candidate). A candidate whose client has sent bytes we have
 * not read yet is not idle, only unread: it is served instead, and the next
 * candidate tried, at most ROOM_TRIES times; then the oldest goes anyway.
 * (A flood of connections reconnecting as fast as they are evicted would
 * otherwise evict a client whose request is already in the socket.)
 * Returns 0 when no connection can be closed. */
static int make_room(struct loop *l)
{
    int tries;
    for (tries = 0; tries < ROOM_TRIES; tries++) {
        struct conn *c = eviction_candidate(l);
        char byte;
        if (l->count < l->opt->max_connections)
            return 1; /* serving one closed it */
        if (!c)
            return 0;
        if (recv(c->w.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
            close_conn(l, c); /* nothing waiting (or the client left) */
            return 1;
        }
        readable(l, c);
    }
    if (l->count < l->opt->max_connections)
        return 1;
    if (!eviction_candidate(l))
        return 0;
    close_conn(l, eviction_candidate(l));
    return 1;
}

static void set_peer_key(struct conn *c, const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN] = "unknown";
    int n;
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
    n = snprintf(c->peer_key, sizeof c->peer_key, "ip:%s", ip);
    c->peer_key_len = n > 0 && (size_t)n < sizeof c->peer_key ? (size_t)n : 0;
}

static void accept_ready(struct loop *l, int listen_fd)
{
    int i;
    for (i = 0; i < ACCEPT_BATCH && l->accepting; i++) {
        struct sockaddr_storage ss;
        socklen_t ss_len = sizeof ss;
        struct epoll_event ev;
        struct conn *c;
        int one = 1, fd;

        if (l->count >= l->opt->max_connections && !eviction_candidate(l)) {
            /* Every connection is busy: leave new ones in the backlog (or
             * to other loops) until one of ours ends. */
            pause_accepting(l, 0);
            return;
        }
        fd = accept4(listen_fd, (struct sockaddr *)&ss, &ss_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!l->said_out_of_fds) {
                    l->said_out_of_fds = 1;
                    fprintf(stderr, "%s: accept: %s (pausing accepts for %d ms at a time)\n", l->prog,
                            strerror(errno), ACCEPT_PAUSE_MS);
                }
                pause_accepting(l, l->now_ms + ACCEPT_PAUSE_MS);
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
                continue;
            return; /* EAGAIN: none left (or another loop took it) */
        }
        if (l->count >= l->opt->max_connections && !make_room(l)) {
            close(fd); /* every connection turned out busy */
            pause_accepting(l, 0);
            return;
        }
        c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            pause_accepting(l, l->now_ms + ACCEPT_PAUSE_MS);
            return;
        }
        memset(c, 0, offsetof(struct conn, in)); /* the buffers need no clearing */
        c->w.kind = WATCH_CONN;
        c->w.fd = fd;
        c->phase = NO_PHASE;
        c->events = EPOLLIN;
        set_peer_key(c, &ss);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ev.events = EPOLLIN;
        ev.data.ptr = &c->w;
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        l->count++;
        enter(l, c, FRESH);
    }
}

/* ---- requests and responses -------------------------------------------------- */

enum progress { NEED_INPUT, OUT_FULL, CLOSING };

/* A response was written: c leaves its phase, and the next one it enters
 * (after the response is sent, or while it is) starts a new deadline. */
static void answered(struct loop *l, struct conn *c)
{
    unlink_conn(l, c);
}

static void answer_error(struct loop *l, struct conn *c, int status)
{
    c->out_len += http_site_error(status, c->out + c->out_len);
    c->closing = 1;
    answered(l, c);
}

/* Answers the complete requests waiting in c->in, in order, while the
 * output buffer has room for another response. */
static enum progress answer_requests(struct loop *l, struct conn *c)
{
    for (;;) {
        struct http_request req;
        size_t avail;
        int rc;

        if (c->closing)
            return CLOSING;
        if (OUT_CAP - c->out_len < HTTP_MAX_RESPONSE)
            return OUT_FULL;
        /* Empty lines before a request line are ignored (RFC 9112 2.2). */
        if (c->scan.pos == 0) {
            while (c->in_len - c->in_start >= 2 && c->in[c->in_start] == '\r' && c->in[c->in_start + 1] == '\n')
                c->in_start += 2;
            if (c->in_len - c->in_start == 1 && c->in[c->in_start] == '\r')
                return NEED_INPUT; /* the LF is on its way */
        }
        avail = c->in_len - c->in_start;
        if (avail == 0) {
            c->in_start = c->in_len = 0;
            return NEED_INPUT;
        }
        switch (http_scan(&c->scan, c->in + c->in_start, avail)) {
        case HTTP_SCAN_MORE:
            return NEED_INPUT;
        case HTTP_SCAN_BAD:
            answer_error(l, c, 400);
            continue;
        case HTTP_SCAN_TOO_LARGE:
            answer_error(l, c, 431);
            continue;
        case HTTP_SCAN_DONE:
            break;
        }
        rc = http_parse_head(c->in + c->in_start, c->scan.head_len, &req);
        if (rc != 0) {
            answer_error(l, c, rc);
            continue;
        }
        c->closing = !req.keep_alive || l->stopping;
        c->out_len +=
            http_site_answer(&l->site, &req, c->peer_key, c->peer_key_len, c->closing, l->now_ms, c->out + c->out_len);
        c->served++;
        answered(l, c);
        c->in_start += c->scan.head_len;
        http_scan_reset(&c->scan);
    }
}

/* Sends what is in c->out. Returns 1 when all of it is sent, 0 when the
 * client must read first (c is then in WRITE), -1 when c was closed. */
static int flush(struct loop *l, struct conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->w.fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            enter(l, c, WRITE);
            watch(l, c, EPOLLOUT);
            return 0;
        } else {
            close_conn(l, c);
            return -1;
        }
    }
    c->out_len = c->out_sent = 0;
    return 1;
}

/* Answers what can be answered, sends it, and puts c in the phase that
 * fits what is left: called whenever c's input grew or its output drained. */
static void serve(struct loop *l, struct conn *c)
{
    enum progress p;
    do {
        p = answer_requests(l, c);
        if (flush(l, c) <= 0)
            return;
    } while (p == OUT_FULL);

    if (p == CLOSING) {
        if (c->eof || l->stopping) {
            close_conn(l, c);
            return;
        }
        shutdown(c->w.fd, SHUT_WR);
        c->in_start = c->in_len = 0;
        c->lingered = 0;
        enter(l, c, LINGER);
        watch(l, c, EPOLLIN);
        return;
    }
    /* NEED_INPUT */
    if (c->eof) {
        close_conn(l, c); /* what is left is a request the client will not finish */
        return;
    }
    if (c->served > 0)
        enter(l, c, c->in_len > c->in_start ? HEAD : IDLE);
    watch(l, c, EPOLLIN);
}

static void drain_lingering(struct loop *l, struct conn *c)
{
    char sink[4096];
    for (;;) {
        ssize_t n = recv(c->w.fd, sink, sizeof sink, 0);
        if (n > 0) {
            c->lingered += (size_t)n;
            if (c->lingered > LINGER_MAX_BYTES)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* the client closed, or an error */
    }
    close_conn(l, c);
}

static void readable(struct loop *l, struct conn *c)
{
    ssize_t n;
    if (c->phase == LINGER) {
        drain_lingering(l, c);
        return;
    }
    if (c->in_start > 0) { /* answered requests are gone: move the rest to the front */
        memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
        c->in_len -= c->in_start;
        c->in_start = 0;
    }
    n = recv(c->w.fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
    if (n > 0) {
        c->in_len += (size_t)n;
    } else if (n == 0) {
        c->eof = 1;
    } else {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            close_conn(l, c);
        return;
    }
    serve(l, c);
}

/* ---- deadlines ---------------------------------------------------------------- */

/* c's phase deadline has passed. */
static void expire(struct loop *l, struct conn *c)
{
    switch (c->phase) {
    case FRESH:
    case HEAD:
        if (c->in_len > c->in_start) {
            /* a head begun and not finished in time: say so, then close */
            c->in_start = c->in_len = 0;
            answer_error(l, c, 408);
            serve(l, c);
            return;
        }
        break; /* not a byte of a request: just close */
    default:
        break;
    }
    close_conn(l, c);
}

static void expire_all(struct loop *l)
{
    int p;
    for (p = 0; p < PHASES; p++) {
        struct conn *c;
        while ((c = l->phases[p].head) != NULL && c->deadline_ms <= l->now_ms)
            expire(l, c);
    }
    if (!l->accepting && !l->stopping && l->accept_resume_ms != 0 && l->accept_resume_ms <= l->now_ms) {
        l->accept_resume_ms = 0;
        set_accepting(l, 1);
    }
}

/* Milliseconds until the next deadline, for epoll_wait (-1: none). */
static int next_wait_ms(const struct loop *l)
{
    long long next = -1;
    int p;
    for (p = 0; p < PHASES; p++)
        if (l->phases[p].head && (next < 0 || l->phases[p].head->deadline_ms < next))
            next = l->phases[p].head->deadline_ms;
    if (!l->accepting && l->accept_resume_ms != 0 && (next < 0 || l->accept_resume_ms < next))
        next = l->accept_resume_ms;
    if (l->stopping && (next < 0 || l->stop_deadline_ms < next))
        next = l->stop_deadline_ms;
    if (next < 0)
        return -1;
    return next <= l->now_ms ? 0 : next - l->now_ms > 60000 ? 60000 : (int)(next - l->now_ms);
}

/* ---- stopping ------------------------------------------------------------------- */

static void begin_stop(struct loop *l)
{
    int p;
    struct epoll_event ev;
    l->stopping = 1;
    l->stop_deadline_ms = l->now_ms + HTTP_STOP_GRACE_MS;
    set_accepting(l, 0);
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->stop.fd, &ev);
    /* Nothing is in flight on these: close them now. */
    for (p = 0; p < PHASES; p++) {
        if (p == WRITE)
            continue;
        while (l->phases[p].head)
            close_conn(l, l->phases[p].head);
    }
    /* Responses being written finish first, then the connection closes. */
    {
        struct conn *c;
        for (c = l->phases[WRITE].head; c; c = c->next)
            c->closing = 1;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

static void handle(struct loop *l, struct epoll_event *ev)
{
    struct watch *w = ev->data.ptr;
    struct conn *c;
    if (w->kind == WATCH_LISTEN) {
        if (!l->stopping)
            accept_ready(l, w->fd);
        return;
    }
    if (w->kind == WATCH_STOP) {
        if (!l->stopping)
            begin_stop(l);
        return;
    }
    c = (struct conn *)w;
    if (c->w.fd < 0)
        return; /* closed earlier in this batch */
    if (c->events & EPOLLOUT) {
        if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            if (flush(l, c) == 1)
                serve(l, c);
        }
    } else if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        readable(l, c);
    }
}

int http_serve(const char *prog, const struct http_loop_options *opt)
{
    struct epoll_event events[MAX_EVENTS], ev;
    struct loop l;
    int i, p;

    memset(&l, 0, sizeof l);
    l.prog = prog;
    l.opt = opt;
    l.site.limiter = opt->limiter;
    l.site.on_check_error = opt->on_check_error;
    limited_log_init(&l.limited_log, prog);
    l.site.limited_log = &l.limited_log;
    l.timeout_ms[FRESH] = opt->header_timeout_ms;
    l.timeout_ms[IDLE] = opt->keepalive_timeout_ms;
    l.timeout_ms[HEAD] = opt->header_timeout_ms;
    l.timeout_ms[WRITE] = opt->header_timeout_ms;
    l.timeout_ms[LINGER] = LINGER_MS;
    l.now_ms = monotonic_ms();
    for (i = 0; i < opt->listen_count && i < HTTP_MAX_LISTEN; i++) {
        l.listen[i].kind = WATCH_LISTEN;
        l.listen[i].fd = opt->listen_fds[i];
    }
    l.stop.kind = WATCH_STOP;
    l.stop.fd = opt->stop_fd;

    l.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l.epfd < 0) {
        fprintf(stderr, "%s: epoll_create1: %s\n", prog, strerror(errno));
        return -1;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &l.stop;
    if (epoll_ctl(l.epfd, EPOLL_CTL_ADD, opt->stop_fd, &ev) < 0) {
        fprintf(stderr, "%s: epoll_ctl: %s\n", prog, strerror(errno));
        close(l.epfd);
        return -1;
    }
    set_accepting(&l, 1);

    while (!l.stopping || (l.count > 0 && l.now_ms < l.stop_deadline_ms)) {
        int n = epoll_wait(l.epfd, events, MAX_EVENTS, next_wait_ms(&l));
        l.now_ms = monotonic_ms();
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "%s: epoll_wait: %s\n", prog, strerror(errno));
            break;
        }
        for (i = 0; i < n; i++)
            handle(&l, &events[i]);
        expire_all(&l);
        free_dead(&l);
    }

    for (p = 0; p < PHASES; p++)
        while (l.phases[p].head)
            close_conn(&l, l.phases[p].head);
    free_dead(&l);
    set_accepting(&l, 0);
    close(l.epfd);
    return 0;
}
