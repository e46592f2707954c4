/*
 * test_windows.c — algorithm=fixed_window and algorithm=sliding_window.
 *
 * API.md: at most LIMIT units per PERIOD (sliding: the weighted two-window
 * estimate, prev * (1 - elapsed/period) + cur); window alignment is the
 * library's to document. So that a window boundary cannot fall between the
 * few checks of a scenario, each scenario starts with align(): it spends one
 * unit of a throw-away key and, if that key's window ends within 300 ms,
 * sleeps past the end (harmless when windows start at a key's first check).
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

static void align(rl_limiter *lim, const char *probe_key, int sliding)
{
    rl_decision d;
    uint64_t left;
    if (check(lim, probe_key, 1, &d) != RL_OK)
        return;
    /* fixed: reset_ms is the end of the current window; sliding: the unit
     * weighs until the end of the NEXT window, so the current one ends
     * reset_ms - window_ms from now */
    left = d.reset_ms;
    if (sliding && left >= d.window_ms)
        left -= d.window_ms;
    if (left < 300)
        test_sleep_ms((unsigned)left + 30);
}

/* rate=3/s: exactly 3 then denied; passes again once retry_after_ms is over. */
static void test_three_per_second(const char *config, int sliding)
{
    rl_limiter *lim = create(config);
    rl_decision d;
    uint64_t max_wait;
    int i;

    if (!lim)
        return;
    /* fixed: the current window's end; sliding: a unit of the current window
     * still weighs on the estimate during the next window, so the wait can be
     * up to two windows */
    max_wait = sliding ? 2000 : 1000;

    align(lim, "probe", sliding);
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 3);
    CHECK_EQ(d.limit, 3);
    CHECK_EQ(d.window_ms, 1000);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.rate_index, 0);
        CHECK_EQ(d.limit, 3);
        CHECK_EQ(d.remaining, (uint64_t)(2 - i));
        CHECK_EQ(d.window_ms, 1000);
        CHECK_EQ(d.retry_after_ms, 0);
        CHECK(d.reset_ms > 0 && d.reset_ms <= max_wait);
    }
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 3);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 1000);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= max_wait);
    CHECK(d.reset_ms > 0 && d.reset_ms <= max_wait);

    /* the denied check took nothing */
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);

    /* another key is independent */
    CHECK_EQ(check(lim, "other", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 2);

    /* once retry_after_ms is over, the same check passes */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    if (CHECK_EQ(d.allowed, 0) && d.retry_after_ms <= max_wait) {
        test_sleep_ms((unsigned)d.retry_after_ms + 50);
        CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.retry_after_ms, 0);
        CHECK(d.remaining <= 2);
    }

    rl_destroy(lim);
}

static void test_cost(const char *config, int sliding)
{
    rl_limiter *lim = create(config); /* rate=3/s */
    rl_decision d;

    if (!lim)
        return;
    align(lim, "probe", sliding);
    CHECK_EQ(check(lim, "k", 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(check(lim, "k", 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 1);
    CHECK(d.retry_after_ms > 0);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(check(lim, "k", 4, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);
    CHECK_EQ(check(lim, "fresh", 4, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);
    CHECK_EQ(check(lim, "fresh", 3, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    rl_destroy(lim);
}

/*
 * rate=2/s,3/day with windows: the same all-or-nothing rules as the token
 * bucket. (3/day rather than 3/minute: a window boundary of the slow rate must
 * not fall inside the test, and a day boundary almost surely does not.)
 */
static void test_two_rates(const char *config, int sliding)
{
    rl_limiter *lim = create(config);
    rl_decision d;

    if (!lim)
        return;
    align(lim, "probe", sliding);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 2 */
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 0, rate 1: 1 */
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* denied by rate 0 */
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 2);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 1000);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= (sliding ? 2000u : 1000u));

    /* two windows later rate 0 has forgotten everything; rate 1 must still
     * have the 1 unit the denied check did not take */
    test_sleep_ms(2100);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* rate 0: 1, rate 1: 0 */
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.rate_index, 1);
    CHECK_EQ(d.limit, 3);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 86400000);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK); /* denied by rate 1 only */
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 1);
    CHECK_EQ(d.limit, 3);
    CHECK_EQ(d.window_ms, 86400000);
    CHECK(d.retry_after_ms > 2000 && d.retry_after_ms <= 2u * 86400000u);
    rl_destroy(lim);
}

int main(void)
{
    test_three_per_second("rate=3/s algorithm=fixed_window", 0);
    test_three_per_second("rate=3/s algorithm=sliding_window", 1);
    test_cost("rate=3/s algorithm=fixed_window", 0);
    test_cost("rate=3/s algorithm=sliding_window", 1);
    test_two_rates("rate=2/s,3/day algorithm=fixed_window", 0);
    test_two_rates("rate=2/s,3/day algorithm=sliding_window", 1);
    return CHECK_SUMMARY();
}
