/*
 * test_headers.c — rl_format_headers on hand-made decisions (no limiter
 * needed) and on one from rl_check.
 *
 * The header lines are checked one by one plus the total length, so the
 * order of the lines is not assumed (API.md does not fix it).
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"

static rl_decision decision(uint32_t allowed, uint64_t limit, uint64_t remaining,
                            uint64_t reset_ms, uint64_t retry_after_ms, uint64_t window_ms)
{
    rl_decision d;
    memset(&d, 0, sizeof d);
    d.allowed = allowed;
    d.rate_index = 0;
    d.limit = limit;
    d.remaining = remaining;
    d.reset_ms = reset_ms;
    d.retry_after_ms = retry_after_ms;
    d.window_ms = window_ms;
    return d;
}

/* Formats d with flags and checks that the output is exactly the given lines
 * (a NULL-terminated list, each without its CRLF), in any order. */
static void expect_lines_(const rl_decision *d, uint32_t flags, const char *const *lines,
                          const char *file, int line)
{
    char buf[1024], want[128];
    int64_t n;
    size_t total = 0;
    const char *const *l;

    memset(buf, 0x5A, sizeof buf);
    n = rl_format_headers(d, flags, buf, sizeof buf);
    if (!check_impl_(n >= 0 && (size_t)n < sizeof buf && buf[n] == '\0' &&
                         strlen(buf) == (size_t)n,
                     "rl_format_headers returns the length of a NUL-terminated string",
                     file, line)) {
        fprintf(stderr, "    returned %" PRId64 "\n", n);
        return;
    }
    for (l = lines; *l; l++) {
        snprintf(want, sizeof want, "%s\r\n", *l);
        total += strlen(want);
        if (!check_impl_(strstr(buf, want) != NULL, "header line present", file, line))
            fprintf(stderr, "    want \"%s\\r\\n\" in:\n%s", *l, buf);
    }
    if (!check_impl_((size_t)n == total, "no other header lines", file, line))
        fprintf(stderr, "    got (%" PRId64 " bytes, want %zu):\n%s", n, total, buf);
    /* the length query agrees */
    check_impl_(rl_format_headers(d, flags, NULL, 0) == n, "length query agrees", file,
                line);
}
#define EXPECT_LINES(d, flags, ...)                                              \
    do {                                                                         \
        static const char *const lines_[] = {__VA_ARGS__, NULL};                 \
        expect_lines_(&(d), (flags), lines_, __FILE__, __LINE__);                \
    } while (0)

static void expect_nothing_(const rl_decision *d, uint32_t flags, const char *file, int line)
{
    char buf[64];
    memset(buf, 0x5A, sizeof buf);
    check_impl_(rl_format_headers(d, flags, buf, sizeof buf) == 0 && buf[0] == '\0',
                "no header lines, empty string", file, line);
}
#define EXPECT_NOTHING(d, flags) expect_nothing_(&(d), (flags), __FILE__, __LINE__)

static void test_legacy(void)
{
    rl_decision ok = decision(1, 100, 42, 1500, 0, 60000);
    rl_decision no = decision(0, 100, 0, 30000, 1, 60000);

    /* flags 0 = LEGACY | RETRY_AFTER */
    EXPECT_LINES(ok, 0, "X-RateLimit-Limit: 100", "X-RateLimit-Remaining: 42",
                 "X-RateLimit-Reset: 2");
    EXPECT_LINES(no, 0, "X-RateLimit-Limit: 100", "X-RateLimit-Remaining: 0",
                 "X-RateLimit-Reset: 30", "Retry-After: 1");
    EXPECT_LINES(ok, RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER, "X-RateLimit-Limit: 100",
                 "X-RateLimit-Remaining: 42", "X-RateLimit-Reset: 2");
    EXPECT_LINES(no, RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER, "X-RateLimit-Limit: 100",
                 "X-RateLimit-Remaining: 0", "X-RateLimit-Reset: 30", "Retry-After: 1");
    /* LEGACY alone: no Retry-After even when denied */
    EXPECT_LINES(no, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 100", "X-RateLimit-Remaining: 0",
                 "X-RateLimit-Reset: 30");
    /* RETRY_AFTER alone: only when denied */
    EXPECT_LINES(no, RL_HEADERS_RETRY_AFTER, "Retry-After: 1");
    EXPECT_NOTHING(ok, RL_HEADERS_RETRY_AFTER);
}

static void test_rounding(void)
{
    rl_decision d = decision(0, 5, 0, 0, 0, 1000);

    /* Retry-After: whole seconds, rounded up */
    d.retry_after_ms = 1;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 1");
    d.retry_after_ms = 999;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 1");
    d.retry_after_ms = 1000;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 1");
    d.retry_after_ms = 1001;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 2");
    d.retry_after_ms = 59999;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 60");
    d.retry_after_ms = 86400000;
    EXPECT_LINES(d, RL_HEADERS_RETRY_AFTER, "Retry-After: 86400");
    /* retry_after_ms == UINT64_MAX means "never" (cost > capacity): there is
     * no number of seconds to wait, so no Retry-After line is written.
     * (API.md does not spell this case out; this is the behaviour we want.) */
    d.retry_after_ms = UINT64_MAX;
    EXPECT_NOTHING(d, RL_HEADERS_RETRY_AFTER);
    d.reset_ms = 0;
    EXPECT_LINES(d, 0, "X-RateLimit-Limit: 5", "X-RateLimit-Remaining: 0",
                 "X-RateLimit-Reset: 0");

    /* X-RateLimit-Reset: delta seconds, rounded up */
    d = decision(1, 5, 5, 0, 0, 1000);
    EXPECT_LINES(d, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 5", "X-RateLimit-Remaining: 5",
                 "X-RateLimit-Reset: 0");
    d.reset_ms = 1;
    EXPECT_LINES(d, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 5", "X-RateLimit-Remaining: 5",
                 "X-RateLimit-Reset: 1");
    d.reset_ms = 1000;
    EXPECT_LINES(d, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 5", "X-RateLimit-Remaining: 5",
                 "X-RateLimit-Reset: 1");
    d.reset_ms = 1001;
    EXPECT_LINES(d, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 5", "X-RateLimit-Remaining: 5",
                 "X-RateLimit-Reset: 2");

    /* big numbers print in full */
    d = decision(1, UINT64_MAX, UINT64_MAX - 1, 0, 0, 1000);
    EXPECT_LINES(d, RL_HEADERS_LEGACY, "X-RateLimit-Limit: 18446744073709551615",
                 "X-RateLimit-Remaining: 18446744073709551614", "X-RateLimit-Reset: 0");
}

static void test_ietf(void)
{
    rl_decision ok = decision(1, 100, 42, 1500, 0, 60000);
    rl_decision no = decision(0, 100, 0, 41001, 2500, 60000);

    EXPECT_LINES(ok, RL_HEADERS_IETF, "RateLimit-Policy: \"default\";q=100;w=60",
                 "RateLimit: \"default\";r=42;t=2");
    EXPECT_LINES(no, RL_HEADERS_IETF, "RateLimit-Policy: \"default\";q=100;w=60",
                 "RateLimit: \"default\";r=0;t=42");
    EXPECT_LINES(no, RL_HEADERS_IETF | RL_HEADERS_RETRY_AFTER,
                 "RateLimit-Policy: \"default\";q=100;w=60", "RateLimit: \"default\";r=0;t=42",
                 "Retry-After: 3");
    EXPECT_LINES(no, RL_HEADERS_IETF | RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER,
                 "RateLimit-Policy: \"default\";q=100;w=60", "RateLimit: \"default\";r=0;t=42",
                 "X-RateLimit-Limit: 100", "X-RateLimit-Remaining: 0",
                 "X-RateLimit-Reset: 42", "Retry-After: 3");
    ok.window_ms = 1000;
    ok.limit = 5;
    ok.remaining = 5;
    ok.reset_ms = 0;
    EXPECT_LINES(ok, RL_HEADERS_IETF, "RateLimit-Policy: \"default\";q=5;w=1",
                 "RateLimit: \"default\";r=5;t=0");
    ok.window_ms = 86400000;
    EXPECT_LINES(ok, RL_HEADERS_IETF, "RateLimit-Policy: \"default\";q=5;w=86400",
                 "RateLimit: \"default\";r=5;t=0");
}

static void test_snprintf_semantics(void)
{
    rl_decision no = decision(0, 100, 0, 30000, 1, 60000);
    const char *full = NULL;
    char big[512], small[16];
    int64_t n, m;
    size_t i;

    n = rl_format_headers(&no, 0, NULL, 0);
    CHECK(n > 0);
    CHECK_STR(rl_last_error(), "");
    memset(big, 0x5A, sizeof big);
    m = rl_format_headers(&no, 0, big, sizeof big);
    CHECK_EQ(m, n);
    full = big;
    CHECK_EQ(strlen(full), (size_t)n);

    /* exactly n + 1 bytes: fits */
    {
        char *exact = malloc((size_t)n + 2);
        CHECK(exact != NULL);
        if (exact) {
            exact[n + 1] = 'C';
            CHECK_EQ(rl_format_headers(&no, 0, exact, (size_t)n + 1), n);
            CHECK_STR(exact, full);
            CHECK_EQ(exact[n + 1], 'C');
            /* n bytes: one too few; NUL-terminated within the buffer */
            memset(exact, 0x5A, (size_t)n + 2);
            CHECK_EQ(rl_format_headers(&no, 0, exact, (size_t)n), n);
            CHECK_EQ(exact[n - 1], '\0');
            CHECK_EQ(exact[n], 0x5A);
            CHECK_EQ(exact[n + 1], 0x5A);
            free(exact);
        }
    }

    /* a too-small buffer: the full length is returned, the output is
     * NUL-terminated within buf_len, and nothing is written past it */
    memset(small, 0x5A, sizeof small);
    CHECK_EQ(rl_format_headers(&no, 0, small, 10), n);
    CHECK(memchr(small, '\0', 10) != NULL);
    for (i = 10; i < sizeof small; i++)
        CHECK_EQ(small[i], 0x5A);

    memset(small, 0x5A, sizeof small);
    CHECK_EQ(rl_format_headers(&no, 0, small, 1), n);
    CHECK_EQ(small[0], '\0');
    CHECK_EQ(small[1], 0x5A);

    /* buf_len 0: nothing written, even with a real buffer */
    memset(small, 0x5A, sizeof small);
    CHECK_EQ(rl_format_headers(&no, 0, small, 0), n);
    CHECK_EQ(small[0], 0x5A);

    /* NULL decision */
    CHECK(rl_format_headers(NULL, 0, big, sizeof big) < 0);
    CHECK(rl_last_error()[0] != '\0');
    CHECK(rl_format_headers(NULL, 0, NULL, 0) < 0);
}

/* A real decision from rl_check, formatted as a server would. */
static void test_from_check(void)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    char buf[512];
    int i;

    CHECK_EQ(rl_create(CFG("rate=5/10s"), &lim), RL_OK);
    if (!lim)
        return;
    for (i = 0; i < 6; i++)
        CHECK_EQ(rl_check(lim, "h", 1, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(rl_format_headers(&d, 0, buf, sizeof buf) > 0);
    CHECK_CONTAINS(buf, "X-RateLimit-Limit: 5\r\n");
    CHECK_CONTAINS(buf, "X-RateLimit-Remaining: 0\r\n");
    /* one unit per 2 s: Retry-After is 1 or 2, the reset 9 or 10 */
    CHECK(strstr(buf, "Retry-After: 2\r\n") || strstr(buf, "Retry-After: 1\r\n"));
    CHECK(strstr(buf, "X-RateLimit-Reset: 10\r\n") || strstr(buf, "X-RateLimit-Reset: 9\r\n"));
    rl_destroy(lim);
}

int main(void)
{
    test_legacy();
    test_rounding();
    test_ietf();
    test_snprintf_semantics();
    test_from_check();
    return CHECK_SUMMARY();
}
