/*
 * request.c — reading HTTP/1.x request heads; see request.h.
 */
#include "request.h"

#include <stdint.h>
#include <string.h>

/* ---- scanning: is the head complete, or already hopeless? ---------------- */

void http_scan_reset(struct http_scanner *s)
{
    memset(s, 0, sizeof *s);
}

enum http_scan_result http_scan(struct http_scanner *s, const char *buf, size_t len)
{
    while (s->pos < len && s->pos < HTTP_MAX_HEAD) {
        unsigned char c = (unsigned char)buf[s->pos++];
        if (s->after_cr) {
            /* CR must start CRLF; CRLF after an empty line ends the head */
            if (c != '\n')
                return HTTP_SCAN_BAD;
            s->after_cr = 0;
            if (s->line_len == 0) {
                s->head_len = s->pos;
                return HTTP_SCAN_DONE;
            }
            s->line_len = 0;
        } else if (c == '\r') {
            s->after_cr = 1;
        } else if (c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f) {
            /* a bare LF, a NUL or another control byte: not HTTP */
            return HTTP_SCAN_BAD;
        } else {
            s->line_len++;
        }
    }
    return s->pos >= HTTP_MAX_HEAD ? HTTP_SCAN_TOO_LARGE : HTTP_SCAN_MORE;
}

/* ---- parsing a complete head ------------------------------------------- */

/* RFC 9110 tchar: the bytes of a method or a header name. */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Case-insensitive comparison of p[0..len) with the lower-case word w. */
static int equals_word(const char *p, size_t len, const char *w)
{
    size_t i;
    if (strlen(w) != len)
        return 0;
    for (i = 0; i < len; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return 0;
    }
    return 1;
}

/* The end of the line that starts at p: its CR (the scan guarantees CRLF). */
static const char *line_end(const char *p, const char *end)
{
    const char *cr = memchr(p, '\r', (size_t)(end - p));
    return cr ? cr : end;
}

/* "METHOD SP target SP HTTP/d.d": fills method, path and minor_version.
 * The target is origin-form (/path?query) or absolute-form
 * (http://host/path?query, of which only the path is kept). */
static int parse_request_line(const char *p, const char *eol, struct http_request *req)
{
    const char *target, *target_end, *path, *v;

    req->method = p;
    while (p < eol && is_tchar((unsigned char)*p))
        p++;
    req->method_len = (size_t)(p - req->method);
    if (req->method_len == 0 || p == eol || *p != ' ')
        return 400;

    target = ++p;
    while (p < eol && (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f)
        p++;
    target_end = p;
    if (target == target_end || p == eol || *p != ' ')
        return 400;

    v = p + 1;
    if (eol - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return 400;
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return 505;
    req->minor_version = v[7] - '0';

    path = target;
    if (*target != '/') {
        /* absolute-form: skip "scheme://authority" */
        const char *scheme_end = memchr(target, ':', (size_t)(target_end - target));
        if (!scheme_end || target_end - scheme_end < 3 || memcmp(scheme_end, "://", 3) != 0)
            return 400;
        path = memchr(scheme_end + 3, '/', (size_t)(target_end - scheme_end - 3));
        if (!path) {
            req->path = "/";
            req->path_len = 1;
            return 0;
        }
    }
    req->path = path;
    {
        const char *query = memchr(path, '?', (size_t)(target_end - path));
        req->path_len = (size_t)((query ? query : target_end) - path);
    }
    return 0;
}

/* A Content-Length value: 1#DIGIT, a list only of equal numbers (RFC 9110
 * 8.6). Returns 0 and sets *out, or -1. */
static int parse_content_length(const char *p, const char *end, uint64_t *out)
{
    int seen = 0;
    uint64_t first = 0;
    while (p < end) {
        uint64_t n = 0;
        const char *digits = p;
        while (p < end && *p >= '0' && *p <= '9') {
            if (n > (UINT64_MAX - 9) / 10)
                return -1;
            n = n * 10 + (uint64_t)(*p++ - '0');
        }
        if (p == digits || (seen && n != first))
            return -1;
        first = n;
        seen = 1;
        while (p < end && is_blank(*p))
            p++;
        if (p < end) {
            if (*p++ != ',')
                return -1;
            while (p < end && is_blank(*p))
                p++;
            if (p == end)
                return -1;
        }
    }
    if (!seen)
        return -1;
    *out = first;
    return 0;
}

/* Looks for "close" and "keep-alive" in a Connection value (a token list). */
static void parse_connection(const char *p, const char *end, int *close, int *keep_alive)
{
    while (p < end) {
        const char *tok;
        while (p < end && (is_blank(*p) || *p == ','))
            p++;
        tok = p;
        while (p < end && !is_blank(*p) && *p != ',')
            p++;
        if (equals_word(tok, (size_t)(p - tok), "close"))
            *close = 1;
        else if (equals_word(tok, (size_t)(p - tok), "keep-alive"))
            *keep_alive = 1;
    }
}

int http_parse_head(const char *head, size_t head_len, struct http_request *req)
{
    const char *end = head + head_len;
    const char *p = head, *eol = line_end(p, end);
    int rc, hosts = 0, api_keys = 0, chunked_or_te = 0, close = 0, keep_alive = 0;
    int content_length_seen = 0;
    uint64_t content_length = 0;

    memset(req, 0, sizeof *req);
    rc = parse_request_line(p, eol, req);
    if (rc != 0)
        return rc;

    for (p = eol + 2; p < end; p = eol + 2) {
        const char *name = p, *name_end, *value, *value_end;
        eol = line_end(p, end);
        if (eol == p)
            break; /* the empty line that ends the head */
        if (is_blank(*p))
            return 400; /* obs-fold: a continuation line */
        while (p < eol && is_tchar((unsigned char)*p))
            p++;
        name_end = p;
        if (name_end == name || p == eol || *p != ':')
            return 400; /* no name, a bad byte in it, or blanks before the colon */
        value = p + 1;
        while (value < eol && is_blank(*value))
            value++;
        value_end = eol;
        while (value_end > value && is_blank(value_end[-1]))
            value_end--;

        if (equals_word(name, (size_t)(name_end - name), "host")) {
            hosts++;
        } else if (equals_word(name, (size_t)(name_end - name), "x-api-key")) {
            api_keys++;
            req->api_key = value;
            req->api_key_len = (size_t)(value_end - value);
        } else if (equals_word(name, (size_t)(name_end - name), "connection")) {
            parse_connection(value, value_end, &close, &keep_alive);
        } else if (equals_word(name, (size_t)(name_end - name), "content-length")) {
            uint64_t n;
            if (parse_content_length(value, value_end, &n) < 0 ||
                (content_length_seen && n != content_length))
                return 400;
            content_length = n;
            content_length_seen = 1;
        } else if (equals_word(name, (size_t)(name_end - name), "transfer-encoding")) {
            chunked_or_te = 1;
        }
    }

    if (hosts > 1 || (hosts == 0 && req->minor_version == 1) || api_keys > 1)
        return 400;
    if (chunked_or_te && content_length_seen)
        return 400; /* RFC 9112 6.3: a request smuggling attempt, or a broken client */
    req->has_body = chunked_or_te || content_length > 0;
    if (req->has_body)
        req->keep_alive = 0;
    else if (req->minor_version == 1)
        req->keep_alive = !close;
    else
        req->keep_alive = keep_alive && !close;
    return 0;
}
