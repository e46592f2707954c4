/*
 * request.h — reading HTTP/1.x request heads (RFC 9112), binary-safe.
 *
 * Two steps. While bytes arrive, http_scan() looks at each byte once and
 * says as soon as it can whether the head is complete, or can never be a
 * valid head (a NUL or other control byte, a bare LF or CR): a bad request is
 * answered at once, not after a timeout. Once the head is complete,
 * http_parse_head() reads the request line and the headers the servers use.
 * Neither step needs the head to be NUL-terminated or copies it.
 */
#ifndef RL_EXAMPLE_HTTP_REQUEST_H
#define RL_EXAMPLE_HTTP_REQUEST_H

#include <stddef.h>

/* The largest request head (request line, headers, final empty line) read. */
#define HTTP_MAX_HEAD 8192

enum http_scan_result {
    HTTP_SCAN_MORE,      /* no complete head yet: wait for more bytes */
    HTTP_SCAN_DONE,      /* a complete head: its length is in the scanner */
    HTTP_SCAN_BAD,       /* a byte no head may contain: answer 400 */
    HTTP_SCAN_TOO_LARGE  /* HTTP_MAX_HEAD bytes and no end yet: answer 431 */
};

/* Where the scan of one request head stands. Zero it (http_scan_reset)
 * before the first byte of each request. */
struct http_scanner {
    size_t pos;      /* bytes examined so far */
    size_t line_len; /* bytes of the current line, CR excluded */
    int after_cr;    /* the last byte examined was CR */
    size_t head_len; /* set with HTTP_SCAN_DONE: the head's length in bytes */
};

void http_scan_reset(struct http_scanner *s);

/* Goes on scanning the request head that starts at buf[0], of which len
 * bytes have arrived (len only grows between calls for one request). */
enum http_scan_result http_scan(struct http_scanner *s, const char *buf, size_t len);

/* What the servers need from a complete request head. Pointers point into
 * the head passed to http_parse_head(). */
struct http_request {
    const char *method;
    size_t method_len;
    const char *path; /* the target without its query string */
    size_t path_len;
    int minor_version; /* HTTP/1.<minor_version>: 0 or 1 */
    const char *api_key; /* the X-API-Key value, blanks trimmed; NULL if absent */
    size_t api_key_len;
    int keep_alive; /* the connection may stay open after the response */
    int has_body;   /* Content-Length > 0 or a Transfer-Encoding: the body is
                       not read, so the connection must close after it */
};

/* Parses a complete head of head_len bytes (as found by http_scan). Returns
 * 0 and fills *req, or the status to answer: 400 (malformed: request line,
 * header syntax, whitespace before a colon, obs-fold, HTTP/1.1 without Host,
 * repeated Host or X-API-Key, bad or conflicting Content-Length) or 505 (a
 * well-formed version other than HTTP/1.0 and HTTP/1.1). */
int http_parse_head(const char *head, size_t head_len, struct http_request *req);

#endif /* RL_EXAMPLE_HTTP_REQUEST_H */
