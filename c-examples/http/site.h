/*
 * site.h — what the example servers answer (routing and rate limiting),
 * apart from how requests arrive (loop.c). See http.h for the routes.
 */
#ifndef RL_EXAMPLE_HTTP_SITE_H
#define RL_EXAMPLE_HTTP_SITE_H

#include <stddef.h>

#include "http.h"
#include "limited_log.h"
#include "request.h"

/* The largest response the site writes (headers and body). */
#define HTTP_MAX_RESPONSE 2048

struct http_site {
    rl_limiter *limiter;
    http_check_error_fn on_check_error; /* may be NULL */
    struct limited_log *limited_log;    /* keys that become limited; may be NULL */
};

/* Writes the response to req into out, of at least HTTP_MAX_RESPONSE bytes,
 * and returns its length. peer_key is the caller's "ip:<address>" key, used
 * when the request has no X-API-Key. closing: the connection closes after
 * this response (it then says "Connection: close"). now_ms: the loop's
 * monotonic clock, for the limited log. */
size_t http_site_answer(const struct http_site *site, const struct http_request *req, const char *peer_key,
                        size_t peer_key_len, int closing, long long now_ms, char *out);

/* Writes an error response (400, 408, 431, 505) that closes the connection
 * into out, of at least HTTP_MAX_RESPONSE bytes; returns its length. */
size_t http_site_error(int status, char *out);

#endif /* RL_EXAMPLE_HTTP_SITE_H */
