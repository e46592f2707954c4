/*
 * site.c — what the example servers answer; see site.h and http.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "site.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Writes a whole response: status line, headers, and body unless head_only
 * (a HEAD request: the same headers, Content-Length included, no body). */
static size_t respond(char *out, const char *status, const char *content_type, const char *extra_headers,
                      int closing, int http10_keep_alive, const char *body, int head_only)
{
    int n = snprintf(out, HTTP_MAX_RESPONSE,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "%s"
                     "%s"
                     "\r\n"
                     "%s",
                     status, content_type, strlen(body),
                     closing ? "Connection: close\r\n" : http10_keep_alive ? "Connection: keep-alive\r\n" : "",
                     extra_headers, head_only ? "" : body);
    /* The parts are bounded (extra_headers < 600 bytes, bodies < 1.5 KiB):
     * never truncated; were it so, the response is cut to a safe 500. */
    if (n < 0 || n >= HTTP_MAX_RESPONSE)
        return http_site_error(500, out);
    return (size_t)n;
}

static const char *reason(int status)
{
    switch (status) {
    case 400: return "400 Bad Request";
    case 408: return "408 Request Timeout";
    case 431: return "431 Request Header Fields Too Large";
    case 505: return "505 HTTP Version Not Supported";
    default: return "500 Internal Server Error";
    }
}

size_t http_site_error(int status, char *out)
{
    const char *line = reason(status);
    int n = snprintf(out, HTTP_MAX_RESPONSE,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "%s\n",
                     line, strlen(line + 4) + 1, line + 4);
    return n > 0 ? (size_t)n : 0;
}

/* GET / : one rl_check of cost 1 against the caller's key. */
static size_t answer_home(const struct http_site *site, const struct http_request *req, const char *peer_key,
                          size_t peer_key_len, int closing, int head_only, long long now_ms, char *out)
{
    char key[4 + HTTP_MAX_HEAD];
    char headers[512];
    char body[96];
    size_t key_len;
    rl_decision d;
    int64_t n;
    int keep10 = !closing && req->minor_version == 0;

    if (req->api_key && req->api_key_len > 0) {
        memcpy(key, "key:", 4);
        memcpy(key + 4, req->api_key, req->api_key_len); /* < HTTP_MAX_HEAD: it is inside the head */
        key_len = 4 + req->api_key_len;
    } else {
        memcpy(key, peer_key, peer_key_len);
        key_len = peer_key_len;
    }

    if (rl_check(site->limiter, key, key_len, 1, &d) != RL_OK && site->on_check_error)
        site->on_check_error(); /* d is filled all the same: obey it */
    if (site->limited_log)
        limited_log_note(site->limited_log, key, key_len, &d, now_ms);

    n = rl_format_headers(&d, 0, headers, sizeof headers);
    if (n < 0 || (size_t)n >= sizeof headers)
        headers[0] = '\0'; /* cannot happen with 512 bytes; serve without them */

    if (d.allowed)
        return respond(out, "200 OK", "text/plain", headers, closing, keep10, "ok", head_only);
    snprintf(body, sizeof body, "{\"error\":\"rate_limited\",\"retry_after_ms\":%" PRIu64 "}", d.retry_after_ms);
    return respond(out, "429 Too Many Requests", "application/json", headers, closing, keep10, body, head_only);
}

/* GET /metrics : the limiter's counts (rl_metrics), never charged. Without
 * RL_METRICS_TOP_KEYS the text is under 1 KiB (no labels here), which fits
 * a response; a scrape that cannot be answered (rl_metrics failed: an shm
 * lock held too long by a stopped worker) is a 500, not made-up zeros,
 * which Prometheus would take for a counter reset. */
static size_t answer_metrics(const struct http_site *site, const struct http_request *req, int closing,
                             int head_only, char *out)
{
    char body[1536];
    int keep10 = !closing && req->minor_version == 0;
    int64_t n = rl_metrics(site->limiter, NULL, 0, body, sizeof body);

    if (n < 0 || (size_t)n >= sizeof body) {
        if (n < 0 && site->on_check_error)
            site->on_check_error();
        return respond(out, "500 Internal Server Error", "text/plain", "", closing, keep10,
                       "metrics unavailable\n", head_only);
    }
    return respond(out, "200 OK", "text/plain; version=0.0.4", "", closing, keep10, body, head_only);
}

static int method_is(const struct http_request *req, const char *m)
{
    return req->method_len == strlen(m) && memcmp(req->method, m, req->method_len) == 0;
}

static int path_is(const struct http_request *req, const char *p)
{
    return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

size_t http_site_answer(const struct http_site *site, const struct http_request *req, const char *peer_key,
                        size_t peer_key_len, int closing, long long now_ms, char *out)
{
    int head_only = method_is(req, "HEAD");
    int readable = head_only || method_is(req, "GET");
    int keep10 = !closing && req->minor_version == 0;

    if (!path_is(req, "/") && !path_is(req, "/metrics"))
        return respond(out, "404 Not Found", "text/plain", "", closing, keep10, "not found\n", head_only);
    if (!readable)
        return respond(out, "405 Method Not Allowed", "text/plain", "Allow: GET, HEAD\r\n", closing, keep10,
                       "method not allowed\n", 0);
    if (path_is(req, "/metrics"))
        return answer_metrics(site, req, closing, head_only, out);
    return answer_home(site, req, peer_key, peer_key_len, closing, head_only, now_ms, out);
}
