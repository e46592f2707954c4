/*
 * test_multi_rate.c — several rates on one limiter (token bucket).
 *
 * From API.md: cost is taken all-or-nothing from EVERY rate (a denied check
 * consumes nothing anywhere); the decision reports one rate: when allowed the
 * one with the least remaining, when denied the one that denied (the longest
 * retry_after_ms if several did); limit and window_ms are that rate's.
 *
 * Each scenario is built so that no tie between rates needs breaking (API.md
 * does not say how ties are broken) and so that the slow rate cannot recover
 * during the test's sleeps.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#define EXPECT(d, allowed_, index_, limit_, remaining_, window_)                     \
    do {                                                                             \
        CHECK_EQ((d).allowed, (allowed_));                                           \
        CHECK_EQ((d).rate_index, (index_));                                          \
        CHECK_EQ((d).limit, (limit_));                                               \
        CHECK_EQ((d).remaining, (remaining_));                                       \
        CHECK_EQ((d).window_ms, (window_));                                          \
        if ((allowed_))                                                              \
            CHECK_EQ((d).retry_after_ms, 0);                                         \
        else                                                                         \
            CHECK((d).retry_after_ms > 0);                                           \
    } while (0)

/*
 * rate=3/s,5/minute — rate 0: 3 units, one back every 333 ms;
 *                     rate 1: 5 units, one back every 12 s.
 * A check denied by rate 0 takes nothing from rate 1.
 */
static void test_denied_by_first_consumes_nothing_in_second(void)
{
    rl_limiter *lim = create("rate=3/s,5/minute");
    rl_decision d;

    if (!lim)
        return;
    /* remaining after each: rate 0: 2,1,0; rate 1: 4,3,2 -> rate 0 decides */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 1, 0, 3, 2, 1000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 1, 0, 3, 1, 1000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 1, 0, 3, 0, 1000);

    /* rate 0 is empty, rate 1 has 2: denied by rate 0 */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 0, 3, 0, 1000);
    CHECK(d.retry_after_ms <= 334);

    /* after > 1 s rate 0 is full again (3); rate 1 must still have 2 */
    test_sleep_ms(1100);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 2, rate 1: 1 */
    EXPECT(d, 1, 1, 5, 1, 60000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 0 */
    EXPECT(d, 1, 1, 5, 0, 60000);

    /* now rate 1 denies (rate 0 would allow): about 12 s to wait */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 1, 5, 0, 60000);
    CHECK(d.retry_after_ms > 1000 && d.retry_after_ms <= 12000);

    rl_destroy(lim);
}

/*
 * rate=3/minute,2/s — rate 0: 3 units, one back every 20 s;
 *                     rate 1: 2 units, one back every 500 ms.
 * A check denied by rate 1 takes nothing from rate 0.
 */
static void test_denied_by_second_consumes_nothing_in_first(void)
{
    rl_limiter *lim = create("rate=3/minute,2/s");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 2, rate 1: 1 */
    EXPECT(d, 1, 1, 2, 1, 1000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 0 */
    EXPECT(d, 1, 1, 2, 0, 1000);

    /* rate 1 is empty, rate 0 has 1: denied by rate 1 */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 1, 2, 0, 1000);
    CHECK(d.retry_after_ms <= 500);

    /* after > 1 s rate 1 is full again; rate 0 must still have its 1 unit */
    test_sleep_ms(1100);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 0, rate 1: 1 */
    EXPECT(d, 1, 0, 3, 0, 60000);

    /* now rate 0 denies (rate 1 would allow): about 19 s to wait */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 0, 3, 0, 60000);
    CHECK(d.retry_after_ms > 1000 && d.retry_after_ms <= 20000);

    rl_destroy(lim);
}

/*
 * rate=2/s,3/minute (the example of the brief) — rate 0: 2 units, one back
 * every 500 ms; rate 1: 3 units, one back every 20 s.
 */
static void test_two_per_second_three_per_minute(void)
{
    rl_limiter *lim = create("rate=2/s,3/minute");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 2 */
    EXPECT(d, 1, 0, 2, 1, 1000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 0, rate 1: 1 */
    EXPECT(d, 1, 0, 2, 0, 1000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* denied by rate 0 */
    EXPECT(d, 0, 0, 2, 0, 1000);
    CHECK(d.retry_after_ms <= 500);

    /* after > 1 s: rate 0 full (2), rate 1 still 1 */
    test_sleep_ms(1100);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 0 */
    EXPECT(d, 1, 1, 3, 0, 60000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* denied by rate 1 only */
    EXPECT(d, 0, 1, 3, 0, 60000);
    CHECK(d.retry_after_ms > 1000 && d.retry_after_ms <= 20000);

    /* a peek reports the rate with the least remaining: rate 1 (0 < 1) */
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    EXPECT(d, 1, 1, 3, 0, 60000);

    rl_destroy(lim);
}

/* When both rates deny, the one with the longer retry_after_ms decides. */
static void test_both_deny_longest_wait_decides(void)
{
    rl_limiter *lim = create("rate=1/s,1/minute");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0); /* both are at 0: which one reports is a tie */

    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 1, 1, 0, 60000);
    CHECK(d.retry_after_ms > 1000 && d.retry_after_ms <= 60000);

    /* the same with the rates in the other order */
    rl_destroy(lim);
    lim = create("rate=1/minute,1/s");
    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    EXPECT(d, 0, 0, 1, 0, 60000);
    CHECK(d.retry_after_ms > 1000 && d.retry_after_ms <= 60000);
    rl_destroy(lim);
}

/* cost across rates: cost > one rate's capacity can never pass, and takes
 * nothing from the other rate. */
static void test_cost_across_rates(void)
{
    rl_limiter *lim = create("rate=10/s,5/minute");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 6, &d), RL_OK); /* fits rate 0 (10), never rate 1 (5) */
    EXPECT(d, 0, 1, 5, 5, 60000);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);

    CHECK_EQ(check(lim, "k", 0, &d), RL_OK); /* rate 0: 10, rate 1: 5 */
    EXPECT(d, 1, 1, 5, 5, 60000);

    CHECK_EQ(check(lim, "k", 4, &d), RL_OK); /* rate 0: 6, rate 1: 1 */
    EXPECT(d, 1, 1, 5, 1, 60000);
    CHECK_EQ(check(lim, "k", 2, &d), RL_OK); /* denied by rate 1 */
    EXPECT(d, 0, 1, 5, 1, 60000);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 12000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 5, rate 1: 0 */
    EXPECT(d, 1, 1, 5, 0, 60000);

    rl_destroy(lim);
}

int main(void)
{
    test_denied_by_first_consumes_nothing_in_second();
    test_denied_by_second_consumes_nothing_in_first();
    test_two_per_second_three_per_minute();
    test_both_deny_longest_wait_decides();
    test_cost_across_rates();
    return CHECK_SUMMARY();
}
