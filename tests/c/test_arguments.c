/*
 * test_arguments.c — argument errors never fail open, and never leave an
 * output unwritten: rl_check with a NULL limiter or a NULL key of non-zero
 * length is RL_ERR_NULL with a DENIAL in *out (allowed = 0, retry_after_ms =
 * 1000) whatever on_error says (API.md v1: only backend errors follow
 * on_error); rl_stats_get and rl_format_headers fill their outputs on error.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

static void check_denial(const rl_decision *d, uint64_t limit, uint64_t window_ms)
{
    CHECK_EQ(d->allowed, 0);
    CHECK_EQ(d->retry_after_ms, 1000);
    CHECK_EQ(d->rate_index, 0);
    CHECK_EQ(d->limit, limit);
    CHECK_EQ(d->remaining, 0);
    CHECK_EQ(d->reset_ms, 0);
    CHECK_EQ(d->window_ms, window_ms);
}

static void test_check(const char *config)
{
    rl_limiter *lim = create(config);
    rl_decision d;

    if (!lim)
        return;

    /* a NULL key with key_len > 0 */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, NULL, 3, 1, &d), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "key");
    check_denial(&d, 5, 1000);
    /* even for a peek, which could never be denied otherwise */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, NULL, 1, 0, &d), RL_ERR_NULL);
    check_denial(&d, 5, 1000);

    /* a NULL limiter: nothing is known of its rates */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(NULL, "k", 1, 1, &d), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "lim");
    check_denial(&d, 0, 0);
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(NULL, NULL, 1, 1, &d), RL_ERR_NULL);
    check_denial(&d, 0, 0);

    /* the failed calls consumed nothing: the empty key and "k" are fresh */
    CHECK_EQ(check(lim, "", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);

    rl_destroy(lim);
}

static void test_stats(void)
{
    rl_stats s;

    /* a NULL limiter: *out is zeroed rather than left as it was */
    memset(&s, 0xAB, sizeof s);
    CHECK_EQ(rl_stats_get(NULL, &s), RL_ERR_NULL);
    CHECK_EQ(s.allowed, 0);
    CHECK_EQ(s.limited, 0);
    CHECK_EQ(s.errors, 0);
    CHECK_EQ(s.keys, 0);
    CHECK_EQ(s.evictions, 0);
    CHECK_EQ(s.local_denials, 0);
}

static void test_format_headers(void)
{
    rl_decision d;
    char buf[64];

    memset(&d, 0, sizeof d);
    d.allowed = 1;
    d.limit = 5;
    d.window_ms = 1000;

    /* on an error the buffer holds the empty string, not stale text */
    memcpy(buf, "stale", 6);
    CHECK_EQ(rl_format_headers(NULL, 0, buf, sizeof buf), RL_ERR_NULL);
    CHECK_STR(buf, "");
    memcpy(buf, "stale", 6);
    CHECK_EQ(rl_format_headers(&d, 0x80, buf, sizeof buf), RL_ERR_INVALID);
    CHECK_STR(buf, "");
    /* buf_len 0: nothing is written at all */
    memcpy(buf, "stale", 6);
    CHECK_EQ(rl_format_headers(NULL, 0, buf, 0), RL_ERR_NULL);
    CHECK_STR(buf, "stale");
    CHECK_EQ(rl_format_headers(NULL, 0, NULL, 0), RL_ERR_NULL);
}

int main(void)
{
    test_check("rate=5/s on_error=allow");
    test_check("rate=5/s on_error=deny");
    test_check("rate=5/s");
    test_stats();
    test_format_headers();
    return CHECK_SUMMARY();
}
