/*
 * test_http_request.c — the example servers' request-head reader
 * (c-examples/http/request.c): what each head is answered, and that reading
 * a head byte by byte, in random pieces, or all at once gives the same
 * answer, for well-formed heads and for every mutation of them tried.
 * Built with ASan/UBSan by `make test-examples`, so that a read past a head
 * is an error too.
 */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

/* What a server answers to a head: the scan result, then (when DONE) the
 * parse status (0 = served). Each head is copied to a heap buffer of its
 * exact size, so that ASan sees any read past it. */
struct verdict {
    enum http_scan_result scan;
    size_t head_len;
    int status;
    struct http_request req;
};

/* The copy judged last: it lives until the next judge(), so that the
 * pointers of a verdict's request stay valid until then. */
static char *judged;

/* Feeds text[0..len) in pieces of the given sizes (cycled; none: all at
 * once). */
static struct verdict judge(const char *text, size_t len, const size_t *pieces, size_t n_pieces)
{
    struct verdict v;
    struct http_scanner s;
    char *buf;
    size_t have = 0, k = 0;

    free(judged);
    judged = buf = malloc(len ? len : 1);
    if (!buf) {
        perror("malloc");
        exit(2);
    }

    memcpy(buf, text, len);
    memset(&v, 0, sizeof v);
    http_scan_reset(&s);
    v.scan = HTTP_SCAN_MORE;
    while (v.scan == HTTP_SCAN_MORE && have < len) {
        size_t step = n_pieces ? pieces[k++ % n_pieces] : len;
        have = have + step > len ? len : have + step;
        v.scan = http_scan(&s, buf, have);
    }
    if (v.scan == HTTP_SCAN_DONE) {
        v.head_len = s.head_len;
        v.status = http_parse_head(buf, s.head_len, &v.req);
    }
    return v;
}

static struct verdict judge_str(const char *text, size_t len)
{
    return judge(text, len, NULL, 0);
}

#define S(lit) lit, sizeof(lit) - 1

/* A head the servers serve (status 0). */
static struct http_request served(const char *text, size_t len)
{
    struct verdict v = judge_str(text, len);
    EXPECT(v.scan == HTTP_SCAN_DONE && v.status == 0, "not served (scan %d, status %d): %.*s", (int)v.scan,
           v.status, (int)len, text);
    return v.req;
}

static void status_is(int want, const char *text, size_t len, const char *why)
{
    struct verdict v = judge_str(text, len);
    int got = v.scan == HTTP_SCAN_BAD ? 400 : v.scan == HTTP_SCAN_TOO_LARGE ? 431 : v.scan == HTTP_SCAN_MORE ? -1
                                                                                                                : v.status;
    EXPECT(got == want, "%s: want %d, got %d", why, want, got);
}

static int field_is(const char *p, size_t len, const char *want)
{
    return p && len == strlen(want) && memcmp(p, want, len) == 0;
}

static void test_served_heads(void)
{
    struct http_request r;

    r = served(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT(field_is(r.method, r.method_len, "GET") && field_is(r.path, r.path_len, "/"), "GET /");
    EXPECT(r.minor_version == 1 && r.keep_alive && !r.has_body && r.api_key == NULL, "1.1 defaults");

    r = served(S("GET /x?y=/z HTTP/1.1\r\nHost: a\r\nX-API-Key: \t k e y \t\r\n\r\n"));
    EXPECT(field_is(r.path, r.path_len, "/x"), "the query is not part of the path");
    EXPECT(field_is(r.api_key, r.api_key_len, "k e y"), "the key's outer blanks go, inner ones stay");

    r = served(S("get / HTTP/1.1\r\nhOsT: a\r\nx-api-KEY: k\r\n\r\n"));
    EXPECT(field_is(r.method, r.method_len, "get"), "methods are case-sensitive: kept as sent");
    EXPECT(field_is(r.api_key, r.api_key_len, "k"), "header names are case-insensitive");

    r = served(S("GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    EXPECT(field_is(r.path, r.path_len, "/p"), "absolute-form keeps the path");
    r = served(S("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    EXPECT(field_is(r.path, r.path_len, "/"), "absolute-form without a path is /");

    r = served(S("GET / HTTP/1.0\r\n\r\n"));
    EXPECT(r.minor_version == 0 && !r.keep_alive, "HTTP/1.0 closes and needs no Host");
    r = served(S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    EXPECT(r.keep_alive, "HTTP/1.0 keep-alive on request");
    r = served(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"));
    EXPECT(!r.keep_alive, "Connection: close in a list");
    r = served(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"));
    EXPECT(r.keep_alive, "'closed' is not 'close'");

    r = served(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"));
    EXPECT(r.has_body && !r.keep_alive, "a body closes the connection");
    r = served(S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
    EXPECT(!r.has_body && r.keep_alive, "Content-Length: 0 is no body");
    r = served(S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"));
    EXPECT(r.has_body, "equal Content-Lengths are one");
    r = served(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    EXPECT(r.has_body && !r.keep_alive, "chunked is a body");

    r = served(S("GET / HTTP/1.1\r\nHost: a\r\nX-Bin: \x80\xff\t\r\n\r\n"));
    EXPECT(r.keep_alive, "obs-text and HTAB in a value are allowed");
}

static void test_refused_heads(void)
{
    char big[HTTP_MAX_HEAD + 64];

    status_is(400, S("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n"), "NUL in a name");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n"), "NUL in a value");
    status_is(400, S("GET / HTTP/1.1\nHost: a\n\n"), "bare LF");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"), "bare CR");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n"), "a control byte");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n"), "DEL");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nX-API-Key : k\r\n\r\n"), "blank before the colon");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nX-API-Key\t: k\r\n\r\n"), "tab before the colon");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"), "obs-fold");
    status_is(400, S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), "a first header line that folds");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n"), "empty name");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nX(y): v\r\n\r\n"), "a name with a delimiter");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n"), "no colon");
    status_is(400, S("GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 without Host");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), "two Hosts");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: a\r\nx-api-key: b\r\n\r\n"), "two keys");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), "negative length");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n"), "length with a letter");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
              "length overflows");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,2\r\n\r\n"), "unequal length list");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
              "two unequal lengths");
    status_is(400, S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"), "empty length");
    status_is(400, S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
              "length and chunked");
    status_is(400, S("garbage\r\n\r\n"), "no request line");
    status_is(400, S("GET /\r\n\r\n"), "no version");
    status_is(400, S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), "two spaces");
    status_is(400, S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), "a space after the version");
    status_is(400, S("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), "a relative target");
    status_is(400, S("GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n"), "a broken absolute target");
    status_is(400, S("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), "a delimiter in the method");
    status_is(400, S("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n"), "a non-ASCII target");
    status_is(400, S("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), "a three-digit version");
    status_is(400, S("GET / http/1.1\r\nHost: a\r\n\r\n"), "a lower-case version");
    status_is(400, S("\r\n"), "an empty line alone");
    status_is(505, S("GET / HTTP/2.0\r\n\r\n"), "HTTP/2.0");
    status_is(505, S("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), "HTTP/1.2");
    status_is(505, S("GET / HTTP/0.9\r\n\r\n"), "HTTP/0.9");
    status_is(-1, S("GET / HTTP/1.1\r\nHost: a\r\n"), "an unfinished head waits");

    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    status_is(431, big, sizeof big, "a head over HTTP_MAX_HEAD");
    memcpy(big + HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
    memcpy(big + 16, "Host: a\r\nX: ", 12);
    status_is(0, big, HTTP_MAX_HEAD, "a head of exactly HTTP_MAX_HEAD");
}

/* The same head read in any pieces gets the same verdict. */
static int same(const struct verdict *a, const struct verdict *b)
{
    if (a->scan != b->scan || a->head_len != b->head_len || a->status != b->status)
        return 0;
    return a->status != 0 || a->scan != HTTP_SCAN_DONE ||
           (a->req.keep_alive == b->req.keep_alive && a->req.has_body == b->req.has_body &&
            a->req.path_len == b->req.path_len && a->req.api_key_len == b->req.api_key_len);
}

static void test_pieces_and_mutations(void)
{
    static const char *const seeds[] = {
        "GET /?a=b HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\nConnection: close\r\n\r\n",
        "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    static const char noise[] = {'\0', '\r', '\n', ' ', '\t', ':', ',', '/', '?', 'a', '0', (char)0x80, (char)0xff};
    size_t one[] = {1}, odd[] = {3, 1, 7, 2};
    unsigned seed = 12345;
    int i, round;

    for (i = 0; i < (int)(sizeof seeds / sizeof *seeds); i++) {
        for (round = 0; round < 20000; round++) {
            char text[256];
            size_t len = strlen(seeds[i]);
            int m, mutations = round == 0 ? 0 : 1 + (int)(seed % 3);
            struct verdict whole, bytes, chunks;

            memcpy(text, seeds[i], len);
            for (m = 0; m < mutations; m++) {
                size_t at;
                seed = seed * 1103515245u + 12345u;
                at = (seed >> 8) % len;
                seed = seed * 1103515245u + 12345u;
                if (seed % 4 == 0 && len > 1) { /* drop a byte */
                    memmove(text + at, text + at + 1, len - at - 1);
                    len--;
                } else if (seed % 4 == 1 && len < sizeof text) { /* insert one */
                    memmove(text + at + 1, text + at, len - at);
                    text[at] = noise[(seed >> 8) % sizeof noise];
                    len++;
                } else { /* replace one */
                    text[at] = noise[(seed >> 8) % sizeof noise];
                }
            }
            whole = judge(text, len, NULL, 0);
            bytes = judge(text, len, one, 1);
            chunks = judge(text, len, odd, 4);
            EXPECT(same(&whole, &bytes) && same(&whole, &chunks),
                   "seed %d round %d: byte-by-byte or chunked reading disagrees with reading at once", i, round);
            if (round == 0)
                EXPECT(whole.scan == HTTP_SCAN_DONE && whole.status == 0, "seed %d is served", i);
            if (failures > 20)
                return;
        }
    }
}

int main(void)
{
    test_served_heads();
    test_refused_heads();
    test_pieces_and_mutations();
    free(judged);
    if (failures) {
        fprintf(stderr, "test_http_request: %d failures\n", failures);
        return 1;
    }
    printf("test_http_request: ok\n");
    return 0;
}
