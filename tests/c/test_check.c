/*
 * test_check.c — rl_check: argument rules, keys (empty, huge, binary), the
 * token bucket (GCRA) with one rate, cost and peek.
 *
 * Timing: nothing here depends on a check being fast except "a few checks in a
 * row happen well within one emission interval" (>= 200 ms), and every sleep
 * has a margin of 50 ms or more.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

/* Is this decision one the caller can obey? (allowed is 0 or 1) */
static int obeyable(const rl_decision *d)
{
    return d->allowed == 0 || d->allowed == 1;
}

static void test_arguments(void)
{
    rl_limiter *lim = create("rate=5/s");
    rl_decision d;

    if (!lim)
        return;

    /* NULL limiter: RL_ERR_NULL, and *out is still filled */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(NULL, "k", 1, 1, &d), RL_ERR_NULL);
    CHECK(obeyable(&d));
    CHECK(rl_last_error()[0] != '\0');

    /* NULL out */
    CHECK_EQ(rl_check(lim, "k", 1, 1, NULL), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');
    /* assumption: a call that fails its argument checks consumes nothing */
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);

    /* NULL key with key_len > 0: RL_ERR_NULL, *out filled */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, NULL, 3, 1, &d), RL_ERR_NULL);
    CHECK(obeyable(&d));
    CHECK(rl_last_error()[0] != '\0');

    /* NULL key with key_len 0 is the empty key */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, NULL, 0, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 4);
    CHECK_STR(rl_last_error(), "");

    rl_destroy(lim);
}

static void test_keys(void)
{
    rl_limiter *lim = create("rate=1/minute");
    rl_decision d;
    const size_t big = (size_t)1 << 20;
    unsigned char *a, *b;
    unsigned char all[256];
    char buf[8];
    size_t i;

    if (!lim)
        return;

    /* the empty key, however spelled: NULL/0, ""/0, "xyz"/0 */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, NULL, 0, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, "", 0, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_check(lim, "xyz", 0, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* 1 MiB keys differing only in the last byte are independent */
    a = malloc(big);
    b = malloc(big);
    CHECK(a != NULL && b != NULL);
    if (a && b) {
        memset(a, 'k', big);
        memcpy(b, a, big);
        b[big - 1] = 'l';
        CHECK_EQ(rl_check(lim, a, big, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(rl_check(lim, a, big, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 0);
        CHECK_EQ(rl_check(lim, b, big, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(rl_check(lim, b, big, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 0);
        /* and a prefix of them is another key again */
        CHECK_EQ(rl_check(lim, a, big - 1, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
    }
    free(a);
    free(b);

    /* binary keys with embedded NULs: "a\0b" vs "a\0c", "a" vs "a\0" */
    CHECK_EQ(rl_check(lim, "a\0b", 3, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_check(lim, "a\0c", 3, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_check(lim, "a\0b", 3, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_check(lim, "a\0c", 3, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    CHECK_EQ(rl_check(lim, "a", 1, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_check(lim, "a\0", 2, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_check(lim, "a", 1, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_check(lim, "a\0", 2, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* every byte value */
    for (i = 0; i < sizeof all; i++)
        all[i] = (unsigned char)(255 - i);
    CHECK_EQ(rl_check(lim, all, sizeof all, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_check(lim, all, sizeof all, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* the key's bytes matter, not its address: the library must not keep the
     * caller's pointer */
    memcpy(buf, "key-1", 6);
    CHECK_EQ(rl_check(lim, buf, 5, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    buf[4] = '2';
    CHECK_EQ(rl_check(lim, buf, 5, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    buf[4] = '1';
    CHECK_EQ(rl_check(lim, buf, 5, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_check(lim, "key-1", 5, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    rl_destroy(lim);
}

/* rate=5/s, burst 5: one unit comes back every 200 ms. */
static void test_token_bucket(void)
{
    rl_limiter *lim = create("rate=5/s");
    rl_decision d;
    int i;

    if (!lim)
        return;

    for (i = 0; i < 5; i++) {
        CHECK_EQ(check(lim, "tb", 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.rate_index, 0);
        CHECK_EQ(d.limit, 5);
        CHECK_EQ(d.remaining, (uint64_t)(4 - i));
        CHECK_EQ(d.window_ms, 1000);
        CHECK_EQ(d.retry_after_ms, 0);
        /* back to full after (i+1) * 200 ms, minus the little time gone */
        CHECK(d.reset_ms > 0 && d.reset_ms <= (uint64_t)(i + 1) * 200);
    }
    CHECK_EQ(check(lim, "tb", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 5);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 1000);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 200);
    CHECK(d.reset_ms > 0 && d.reset_ms <= 1000);
    CHECK(d.reset_ms >= d.retry_after_ms);

    /* another key is untouched */
    CHECK_EQ(check(lim, "tb2", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 4);

    /* one unit is back after 200 ms */
    test_sleep_ms(250);
    CHECK_EQ(check(lim, "tb", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(d.remaining <= 1); /* 0, unless this thread slept 150 ms too long */
    CHECK_EQ(d.retry_after_ms, 0);

    rl_destroy(lim);

    /* burst=10 with rate=1/s: 10 at once, then one per second */
    lim = create("rate=1/s burst=10");
    if (!lim)
        return;
    for (i = 0; i < 10; i++) {
        CHECK_EQ(check(lim, "b", 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.limit, 10);
        CHECK_EQ(d.remaining, (uint64_t)(9 - i));
        CHECK_EQ(d.window_ms, 1000);
    }
    CHECK_EQ(check(lim, "b", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.limit, 10);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 1000);
    /* a full bucket of 10 refills at 1/s */
    CHECK(d.reset_ms > 9000 && d.reset_ms <= 10000);
    rl_destroy(lim);
}

/* rate=10/minute: one unit back every 6 s. */
static void test_cost(void)
{
    rl_limiter *lim = create("rate=10/minute");
    rl_decision d;

    if (!lim)
        return;

    CHECK_EQ(check(lim, "c", 3, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 7);
    CHECK_EQ(check(lim, "c", 3, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 4);
    CHECK_EQ(check(lim, "c", 3, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);

    /* 2 units do not fit in 1: denied, and nothing is taken */
    CHECK_EQ(check(lim, "c", 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(d.limit, 10);
    CHECK_EQ(d.window_ms, 60000);
    /* one more unit is needed: at most 6 s away */
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 6000);
    CHECK_EQ(check(lim, "c", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 1);

    /* 1 unit still fits */
    CHECK_EQ(check(lim, "c", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);

    /* more than the bucket holds can never pass */
    CHECK_EQ(check(lim, "big", 11, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);
    CHECK_EQ(d.limit, 10);
    CHECK_EQ(check(lim, "big", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(check(lim, "big", UINT64_MAX, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);
    CHECK_EQ(check(lim, "c", 11, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);

    /* exactly the capacity fits a fresh key */
    CHECK_EQ(check(lim, "big", 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(check(lim, "big", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    rl_destroy(lim);
}

static void test_peek(void)
{
    rl_limiter *lim = create("rate=5/s");
    rl_decision d;
    int i;

    if (!lim)
        return;

    /* a fresh key: full, nothing to wait for */
    CHECK_EQ(check(lim, "p", 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 5);
    CHECK_EQ(d.remaining, 5);
    CHECK_EQ(d.window_ms, 1000);
    CHECK_EQ(d.retry_after_ms, 0);
    CHECK_EQ(d.reset_ms, 0); /* already back to its full quota */

    /* peeks consume nothing */
    for (i = 0; i < 100; i++)
        CHECK_EQ(check(lim, "p", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);
    for (i = 0; i < 5; i++) {
        CHECK_EQ(check(lim, "p", 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(check(lim, "p", 0, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.remaining, (uint64_t)(4 - i));
    }

    /* an exhausted key: a peek of zero units still fits */
    CHECK_EQ(check(lim, "p", 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.retry_after_ms, 0);
    CHECK(d.reset_ms > 0 && d.reset_ms <= 1000);
    CHECK_EQ(check(lim, "p", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(check(lim, "p", 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);

    rl_destroy(lim);
}

int main(void)
{
    test_arguments();
    test_keys();
    test_token_bucket();
    test_cost();
    test_peek();
    return CHECK_SUMMARY();
}
