/*
 * http.c — the HTTP side of the example servers; the interface and the
 * answers it gives are described in http.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_HEAD 8192         /* largest request head we read */
#define CLIENT_TIMEOUT_SEC 5  /* a silent client holds a worker at most this long */

/* ---- I/O helpers ------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads until the end of the request head ("\r\n\r\n"). Returns its length
 * (NUL-terminated in buf), 0 if the client sent nothing, -1 on error or when
 * the head does not fit in buf. */
static int read_head(int fd, char *buf, size_t size)
{
    size_t used = 0;
    while (used + 1 < size) {
        ssize_t n = recv(fd, buf + used, size - 1 - used, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return used == 0 ? 0 : -1;
        used += (size_t)n;
        buf[used] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return (int)used;
    }
    return -1;
}

/* Closes a connection without losing the response: closing a socket with
 * unread input makes the kernel send a reset, which can destroy the answer
 * before the client reads it. So: send FIN, then read and drop what the client
 * still sends, until it closes (bounded by size and by a short timeout). */
static void close_gently(int fd)
{
    char sink[4096];
    size_t drained = 0;
    struct timeval linger = {1, 0};
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &linger, sizeof linger);
    while (drained < 1024 * 1024) {
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        drained += (size_t)n;
    }
    close(fd);
}

/* ---- HTTP ---------------------------------------------------------------- */

static void respond(int fd, const char *status, const char *extra_headers,
                    const char *content_type, const char *body)
{
    char out[MAX_HEAD];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     status, content_type, strlen(body), extra_headers, body);
    if (n > 0 && (size_t)n < sizeof out)
        (void)send_all(fd, out, (size_t)n);
}

/* Finds header `name` (case-insensitive) in the header lines that follow the
 * request line. Returns a pointer to its value (leading blanks skipped) and
 * sets *len (trailing blanks dropped); NULL when absent. */
static const char *find_header(const char *head, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line && line[2] != '\r' && line[2] != '\0') {
        const char *start = line + 2;
        const char *end = strstr(start, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - start) > name_len && start[name_len] == ':' &&
            strncasecmp(start, name, name_len) == 0) {
            const char *v = start + name_len + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            *len = (size_t)(end - v);
            return v;
        }
        line = end;
    }
    return NULL;
}

/* The rate-limit key of a request: "key:<X-API-Key>" or "ip:<client IP>". */
static size_t request_key(int fd, const char *head, char *key, size_t size)
{
    size_t len = 0;
    const char *api_key = find_header(head, "X-API-Key", &len);
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    char ip[INET6_ADDRSTRLEN] = "unknown";

    if (api_key && len > 0) {
        if (len > size - 5)
            len = size - 5; /* head is <= 8 KiB and key is as large: no-op */
        memcpy(key, "key:", 4);
        memcpy(key + 4, api_key, len);
        return 4 + len;
    }
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) {
        if (peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, ip, sizeof ip);
        else if (peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, ip, sizeof ip);
    }
    return (size_t)snprintf(key, size, "ip:%s", ip);
}

static void serve_home(rl_limiter *limiter, http_check_error_fn on_check_error, int fd,
                       const char *head)
{
    char key[MAX_HEAD + 8];
    char headers[512];
    char body[96];
    rl_decision d;
    size_t key_len = request_key(fd, head, key, sizeof key);
    int rc = rl_check(limiter, key, key_len, 1, &d);
    int64_t n;

    if (rc != RL_OK && on_check_error)
        on_check_error(); /* d is filled all the same: obey it */

    n = rl_format_headers(&d, 0, headers, sizeof headers);
    if (n < 0 || (size_t)n >= sizeof headers)
        headers[0] = '\0'; /* cannot happen with 512 bytes; serve without them */

    if (d.allowed) {
        respond(fd, "200 OK", headers, "text/plain", "ok");
    } else {
        snprintf(body, sizeof body, "{\"error\":\"rate_limited\",\"retry_after_ms\":%" PRIu64 "}",
                 d.retry_after_ms);
        respond(fd, "429 Too Many Requests", headers, "application/json", body);
    }
}

/* Splits the request line "METHOD SP TARGET SP HTTP/1.x" into method and path
 * (the target without its query string). Returns 0, or -1 if malformed. */
static int parse_request_line(const char *head, char *method, size_t method_size,
                              char *path, size_t path_size)
{
    const char *eol = strstr(head, "\r\n");
    const char *sp1, *sp2, *query;
    size_t method_len, path_len;

    if (!eol)
        return -1;
    sp1 = memchr(head, ' ', (size_t)(eol - head));
    if (!sp1)
        return -1;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(eol - sp2 - 1)))
        return -1;
    if ((size_t)(eol - sp2 - 1) != 8 ||
        (strncmp(sp2 + 1, "HTTP/1.1", 8) != 0 && strncmp(sp2 + 1, "HTTP/1.0", 8) != 0))
        return -1;
    query = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    method_len = (size_t)(sp1 - head);
    path_len = (size_t)((query ? query : sp2) - sp1 - 1);
    if (method_len == 0 || method_len >= method_size || path_len == 0 ||
        path_len >= path_size || sp1[1] != '/')
        return -1;
    memcpy(method, head, method_len);
    method[method_len] = '\0';
    memcpy(path, sp1 + 1, path_len);
    path[path_len] = '\0';
    return 0;
}

static void handle_request(rl_limiter *limiter, http_check_error_fn on_check_error, int fd)
{
    char head[MAX_HEAD + 1];
    char method[16], path[MAX_HEAD];
    struct timeval timeout = {CLIENT_TIMEOUT_SEC, 0};
    int len;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

    len = read_head(fd, head, sizeof head);
    if (len == 0)
        return; /* connected and left */
    if (len < 0 || parse_request_line(head, method, sizeof method, path, sizeof path) < 0) {
        respond(fd, "400 Bad Request", "", "text/plain", "bad request\n");
        return;
    }

    if (strcmp(path, "/") != 0)
        respond(fd, "404 Not Found", "", "text/plain", "not found\n");
    else if (strcmp(method, "GET") != 0)
        respond(fd, "405 Method Not Allowed", "Allow: GET\r\n", "text/plain",
                "method not allowed\n");
    else
        serve_home(limiter, on_check_error, fd, head);
}

void http_serve_connection(int fd, rl_limiter *limiter, http_check_error_fn on_check_error)
{
    handle_request(limiter, on_check_error, fd);
    close_gently(fd);
}

int http_accept(int listen_fd)
{
    int flags, fd = accept(listen_fd, NULL, NULL);
    if (fd < 0)
        return -1;
    /* accepted sockets may inherit O_NONBLOCK (BSD): serve them blocking */
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

/* ---- listening socket ---------------------------------------------------- */

int http_listen(const char *prog, const char *addr, long port, long *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    int fd, one = 1, flags;

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
        fprintf(stderr, "%s: --bind %s: not an IPv4 or IPv6 address\n", prog, addr);
        return -1;
    }

    fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", prog, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, ss_len) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "%s: %s port %ld: %s\n", prog, addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        fprintf(stderr, "%s: fcntl: %s\n", prog, strerror(errno));
        close(fd);
        return -1;
    }
    ss_len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &ss_len);
    *bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}


void http_print_listening(const char *addr, long port)
{
    int v6 = strchr(addr, ':') != NULL;
    printf("listening on %s%s%s:%ld\n", v6 ? "[" : "", addr, v6 ? "]" : "", port);
    fflush(stdout);
}

int http_parse_number(const char *s, long min, long max, long *out)
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
