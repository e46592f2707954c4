/*
 * test_adjust.c — rl_adjust: settling a cost after the fact (an LLM call
 * reserved prompt + max_tokens with rl_check, then used more or fewer).
 *
 * On every algorithm and on two rates at once: reserve with rl_check(cost=R),
 * settle with rl_adjust(actual - R); a charge past the limit is debt, paid
 * back by time (token bucket: debt / rate), with a retry_after_ms that says
 * so; a refund never goes past a fresh key; 0 is a peek; INT64_MIN/INT64_MAX
 * saturate; `*out` describes the key afterwards, `allowed` being whether a
 * cost-1 check would pass. Then the argument rules, a concurrency limiter
 * (RL_ERR_INVALID), hostile keys, and 8 threads, then 4 forked processes,
 * settling on one key (the processes on an shm region of their own when the
 * backend is memory).
 *
 * Timing: the value scenarios use long periods (a token bucket of 10/hour
 * gives a unit back every 6 minutes; windows of 1000 days, aligned to the
 * epoch, end months from now), so nothing moves while they run. The
 * scenarios that wait for a debt to be paid use periods of 1 s or less and
 * sleep retry_after_ms plus a margin of 40 ms or more.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#include <pthread.h>
#include <sys/types.h>
#include <sys/wait.h>

/* The three algorithms, each with a 10-unit quota that does not move while a
 * scenario runs. */
static const char *const LONG_RATES[] = {
    "rate=10/hour algorithm=token_bucket",
    "rate=10/1000d algorithm=fixed_window",
    "rate=10/1000d algorithm=sliding_window",
};
#define N_ALGOS (sizeof LONG_RATES / sizeof LONG_RATES[0])

/* A year in ms: "far away" for a retry_after (INT64_MAX units of debt; with
 * backend=redis, whose timestamps are Lua doubles, it tops out at 2^51 ms,
 * some 70 years). */
#define YEAR_MS (365ULL * 86400 * 1000)

static int adj(rl_limiter *lim, const char *key, int64_t delta, rl_decision *d)
{
    memset(d, 0xAB, sizeof *d);
    return rl_adjust(lim, key, strlen(key), delta, d);
}

/* A decision that says "a cost-1 check would pass now". */
static int says_allowed(const rl_decision *d)
{
    return CHECK_EQ(d->allowed, 1) & CHECK_EQ(d->retry_after_ms, 0);
}

/* ---- reserve, then settle -------------------------------------------- */

/* rate=10: reserve 8, use 3; reserve 7, use 11 (debt 4); refund; refund
 * far more than was ever spent. */
static void test_reserve_then_settle(const char *config)
{
    rl_limiter *lim = create(config);
    int tb = strstr(config, "token_bucket") != NULL;
    rl_decision d;

    if (!lim)
        return;

    /* reserve 8 of 10 */
    CHECK_EQ(check(lim, "k", 8, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 2);

    /* used 3: refund 5 */
    CHECK_EQ(adj(lim, "k", 3 - 8, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 10);
    CHECK_EQ(d.remaining, 7);
    CHECK(d.reset_ms > 0);
    CHECK_STR(rl_last_error(), "");
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 7);

    /* 0 is a peek: twice, nothing moves */
    CHECK_EQ(adj(lim, "k", 0, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 7);
    CHECK_EQ(adj(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 7);
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 7);

    /* reserve the other 7, use 11: 4 units of debt */
    CHECK_EQ(check(lim, "k", 7, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(adj(lim, "k", 11 - 7, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.limit, 10);
    if (tb) {
        /* the debt of 4 and the unit asked for: 5 x 6 min */
        CHECK(d.retry_after_ms > 5 * 360000 - 1000 && d.retry_after_ms <= 5 * 360000);
        /* back to full: 14 x 6 min */
        CHECK(d.reset_ms > 14 * 360000 - 1000 && d.reset_ms <= 14 * 360000);
    } else {
        /* windows: the excess counts until the current window ends */
        CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 1000ULL * 86400 * 1000 * 2);
        CHECK(d.reset_ms >= d.retry_after_ms || strstr(config, "sliding"));
    }
    /* and a check is denied, saying when it can pass */
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    if (tb)
        CHECK(d.retry_after_ms > 5 * 360000 - 1000 && d.retry_after_ms <= 5 * 360000);
    else
        CHECK(d.retry_after_ms > 0);

    /* refund the 4 of debt: empty, not in debt */
    CHECK_EQ(adj(lim, "k", -4, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    if (tb)
        CHECK(d.retry_after_ms > 360000 - 1000 && d.retry_after_ms <= 360000);
    /* one more unit back: a cost-1 check passes */
    CHECK_EQ(adj(lim, "k", -1, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 1);

    /* a refund never goes past a fresh key */
    CHECK_EQ(adj(lim, "k", -1000, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(d.reset_ms, 0);
    CHECK_EQ(check(lim, "k", 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* other keys never noticed */
    CHECK_EQ(check(lim, "other", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 10);

    rl_destroy(lim);
}

/* A key never seen: a refund leaves it fresh; a charge is charged. */
static void test_unseen_keys(const char *config)
{
    rl_limiter *lim = create(config);
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(adj(lim, "new-refund", -3, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.limit, 10);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(d.reset_ms, 0);
    CHECK_EQ(check(lim, "new-refund", 1, &d), RL_OK);
    CHECK_EQ(d.remaining, 9);

    CHECK_EQ(adj(lim, "new-peek", 0, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(d.reset_ms, 0);

    CHECK_EQ(adj(lim, "new-charge", 3, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 7);
    CHECK(d.reset_ms > 0);
    CHECK_EQ(check(lim, "new-charge", 7, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(check(lim, "new-charge", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* charged past the quota on its first sight */
    CHECK_EQ(adj(lim, "new-debt", 25, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK(d.retry_after_ms > 0);
    rl_destroy(lim);
}

/* INT64_MAX puts a key in deep debt; the result is sane. */
static void check_deep_debt(rl_limiter *lim, const char *key, int tb, const rl_decision *after)
{
    rl_decision d;
    CHECK_EQ(after->allowed, 0);
    CHECK_EQ(after->remaining, 0);
    CHECK_EQ(after->limit, 10);
    CHECK(after->retry_after_ms > 0);
    if (tb) {
        CHECK(after->retry_after_ms > 10 * YEAR_MS);
        CHECK(after->reset_ms >= after->retry_after_ms);
    }
    CHECK_EQ(check(lim, key, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    if (tb)
        CHECK(d.retry_after_ms > 10 * YEAR_MS);
    /* a peek is still allowed (zero units always fit), with nothing left */
    CHECK_EQ(check(lim, key, 0, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
}

/* INT64_MIN makes a key fresh, however deep its debt. */
static void check_made_fresh(rl_limiter *lim, const char *key, const char *config, int charges)
{
    rl_decision d;
    CHECK_EQ(adj(lim, key, INT64_MIN, &d), RL_OK);
    if (!says_allowed(&d) | !CHECK_EQ(d.remaining, 10) | !CHECK_EQ(d.reset_ms, 0))
        fprintf(stderr, "    %s: INT64_MIN after %d x INT64_MAX: not fresh\n", config, charges);
    CHECK_EQ(check(lim, key, 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(check(lim, key, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
}

/* INT64_MAX puts a key deep in debt, INT64_MIN makes it fresh ("they
 * saturate"); no crash, no wrap-around, decisions one can obey. */
static void test_extreme_deltas(const char *config)
{
    rl_limiter *lim = create(config);
    int tb = strstr(config, "token_bucket") != NULL;
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(adj(lim, "x1", INT64_MAX, &d), RL_OK);
    check_deep_debt(lim, "x1", tb, &d);
    check_made_fresh(lim, "x1", config, 1);

    /* charged INT64_MAX twice: saturated, still one INT64_MIN from fresh */
    CHECK_EQ(adj(lim, "x2", INT64_MAX, &d), RL_OK);
    CHECK_EQ(adj(lim, "x2", INT64_MAX, &d), RL_OK);
    check_deep_debt(lim, "x2", tb, &d);
    check_made_fresh(lim, "x2", config, 2);

    /* INT64_MIN twice on a key never seen: fresh */
    CHECK_EQ(adj(lim, "y", INT64_MIN, &d), RL_OK);
    CHECK_EQ(adj(lim, "y", INT64_MIN, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(d.reset_ms, 0);
    /* INT64_MAX - 1 charged, then INT64_MAX refunded: fresh */
    CHECK_EQ(adj(lim, "y", INT64_MAX - 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(adj(lim, "y", -INT64_MAX, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 10);

    rl_destroy(lim);
}

/* `*out` after an adjust says whether a cost-1 check would pass. */
static void test_out_predicts_a_check(const char *config)
{
    static const int64_t DELTAS[] = {3, 7, -1, 1, -2, 0, 5, -20, 10, -1, 0, -3, 12, INT64_MIN, 9, 1};
    rl_limiter *lim = create(config);
    rl_decision a, c;
    size_t i;

    if (!lim)
        return;
    for (i = 0; i < sizeof DELTAS / sizeof DELTAS[0]; i++) {
        CHECK_EQ(adj(lim, "p", DELTAS[i], &a), RL_OK);
        CHECK_EQ(check(lim, "p", 1, &c), RL_OK);
        if (!CHECK_EQ(a.allowed, c.allowed))
            fprintf(stderr, "    %s: after the delta #%zu (%" PRId64 ")\n", config, i, DELTAS[i]);
        CHECK_EQ(a.retry_after_ms == 0, a.allowed);
        /* what remained then is what the check saw */
        if (c.allowed) {
            CHECK_EQ(c.remaining + 1, a.remaining);
            CHECK_EQ(adj(lim, "p", -1, &a), RL_OK); /* undo the check */
        } else {
            CHECK_EQ(c.remaining, a.remaining);
            CHECK(c.retry_after_ms > 0 && c.retry_after_ms <= a.retry_after_ms);
        }
    }
    rl_destroy(lim);
}

/* rl_stats: an adjust is neither an allowed nor a limited check. */
static void test_not_counted_in_stats(void)
{
    rl_limiter *lim = create("rate=10/hour");
    rl_decision d;
    rl_stats s;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "s", 5, &d), RL_OK);
    CHECK_EQ(adj(lim, "s", 20, &d), RL_OK);
    CHECK_EQ(adj(lim, "s", -3, &d), RL_OK);
    CHECK_EQ(adj(lim, "t", 0, &d), RL_OK);
    CHECK_EQ(check(lim, "s", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.allowed, 1);
    CHECK_EQ(s.limited, 1);
    CHECK_EQ(s.errors, 0);
    rl_destroy(lim);
}

/* dry_run=on: an adjust is applied as when enforcing, and a key in debt is
 * reported allowed with retry_after_ms > 0 (a would-be 429). */
static void test_dry_run(void)
{
    rl_limiter *lim = create("rate=10/hour dry_run=on");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(adj(lim, "k", 30, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(d.retry_after_ms > 20 * 360000 - 1000 && d.retry_after_ms <= 21 * 360000);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(d.retry_after_ms > 20 * 360000 - 1000);
    CHECK_EQ(adj(lim, "k", -25, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.retry_after_ms, 0);
    CHECK_EQ(d.remaining, 5);
    rl_destroy(lim);
}

/* ---- debts paid back by time ----------------------------------------- */

/* Token bucket rate=10/s (a unit every 100 ms): reserve 10, use 15. The
 * debt of 5 plus the unit asked for: a cost-1 check passes in 600 ms. */
static void test_token_bucket_debt_paid_back(void)
{
    rl_limiter *lim = create("rate=10/s");
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(check(lim, "d", 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(adj(lim, "d", 15 - 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK(d.retry_after_ms > 550 && d.retry_after_ms <= 600);
    CHECK(d.reset_ms > 1450 && d.reset_ms <= 1500); /* 15 units to full */
    CHECK_EQ(check(lim, "d", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 550 && d.retry_after_ms <= 600);

    /* 300 ms later: still 300 ms to go (the debt is not forgiven early) */
    test_sleep_ms(300);
    CHECK_EQ(check(lim, "d", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 300);
    test_sleep_ms((unsigned)d.retry_after_ms + 50);
    CHECK_EQ(check(lim, "d", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    rl_destroy(lim);
}

/* Waits, if need be, so that the current window of `lim` (probed with a
 * throw-away key) has at least 150 ms left; as test_windows.c's align(). */
static void align(rl_limiter *lim, const char *probe_key, int sliding)
{
    rl_decision d;
    uint64_t left;
    if (check(lim, probe_key, 1, &d) != RL_OK)
        return;
    left = d.reset_ms;
    if (sliding && left >= d.window_ms)
        left -= d.window_ms;
    if (left < 150)
        test_sleep_ms((unsigned)left + 20);
}

/* Windows of 400 ms: reserve 2 of 5, use 12. The excess counts in the
 * current window: fixed: the next window is fresh; sliding: the 12 weigh on
 * the next window too, so the wait is longer than the current window. */
static void test_window_debt_paid_back(int sliding)
{
    const char *config = sliding ? "rate=5/400ms algorithm=sliding_window" : "rate=5/400ms algorithm=fixed_window";
    rl_limiter *lim = create(config);
    rl_decision d;
    uint64_t window_left;

    if (!lim)
        return;
    align(lim, "probe", sliding);
    CHECK_EQ(check(lim, "w", 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    window_left = sliding ? d.reset_ms - d.window_ms : d.reset_ms;
    CHECK_EQ(adj(lim, "w", 12 - 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK(d.retry_after_ms > 0);
    if (sliding) {
        /* 12 in this window: in the next one, 12 x (1 - e/p) + 1 <= 5 needs
         * e >= 2/3 p: the current window's end plus ~267 ms */
        CHECK(d.retry_after_ms > window_left + 200 && d.retry_after_ms <= window_left + 400);
    } else {
        CHECK(d.retry_after_ms <= window_left);
        CHECK(d.retry_after_ms + 50 >= window_left);
    }
    CHECK_EQ(check(lim, "w", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    test_sleep_ms((unsigned)d.retry_after_ms + 40);
    CHECK_EQ(check(lim, "w", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    rl_destroy(lim);
}

/* Sliding window: a refund takes back only units counted in the current
 * window; those of the previous window were spent in a window that ended. */
static void test_sliding_refund_only_current_window(void)
{
    rl_limiter *lim = create("rate=10/s algorithm=sliding_window");
    rl_decision d;

    if (!lim)
        return;
    align(lim, "probe", 1);
    CHECK_EQ(check(lim, "r", 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    /* into the next window, by 20 ms */
    test_sleep_ms((unsigned)(d.reset_ms - d.window_ms) + 20);
    CHECK_EQ(adj(lim, "r", -10, &d), RL_OK);
    /* 10 x (1 - elapsed/1000) still weighs: with elapsed under 300 ms, 7 or more */
    CHECK(d.remaining <= 3);
    CHECK_EQ(check(lim, "r", 0, &d), RL_OK);
    CHECK(d.remaining <= 3);
    rl_destroy(lim);
}

/* ---- two rates ------------------------------------------------------- */

/* rate=10/s,100/hour: a settle charges and refunds EVERY rate; the decision
 * is that of the rate with least remaining, or the longest retry_after. */
static void test_multi_rate(void)
{
    rl_limiter *lim = create("rate=10/s,100/hour");
    rl_decision d;

    if (!lim)
        return;
    /* reserve 8, use 3 */
    CHECK_EQ(check(lim, "m", 8, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.remaining, 2);
    CHECK_EQ(adj(lim, "m", -5, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.rate_index, 0);
    CHECK(d.remaining >= 7 && d.remaining <= 8); /* 7, or 8 if 100 ms went by */

    /* a charge of 150: 10/s is 143 in debt (14.4 s), 100/hour 53 (31.8 min):
     * the hour decides, with the longer wait */
    CHECK_EQ(adj(lim, "m", 150, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 1);
    CHECK_EQ(d.limit, 100);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 3600000);
    /* (153 - 100 + 1) x 36 s, less the little time gone */
    CHECK(d.retry_after_ms > 54 * 36000 - 2000 && d.retry_after_ms <= 54 * 36000);
    CHECK_EQ(check(lim, "m", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 1);

    /* refund 100: the hour has 47 left (153 - 100 = 53 used), the second
     * is still 43 in debt: it decides now */
    CHECK_EQ(adj(lim, "m", -100, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.limit, 10);
    CHECK(d.retry_after_ms > 3000 && d.retry_after_ms <= 4400); /* 4.4 s, less the time gone */

    /* refund all: both fresh, never more than full */
    CHECK_EQ(adj(lim, "m", INT64_MIN, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.rate_index, 0);
    CHECK_EQ(d.remaining, 10);
    CHECK_EQ(check(lim, "m", 10, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);

    /* a key never seen, charged 80: the second is 70 in debt (7.1 s to a
     * unit), the hour has 20 left: the second decides */
    CHECK_EQ(adj(lim, "m2", 80, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 0);
    CHECK(d.retry_after_ms > 7000 && d.retry_after_ms <= 7100);
    /* 25 more: the hour is 5 in debt (6 x 36 s to a unit), the second 95
     * (9.6 s): the hour decides, so the 80 were charged to it too */
    CHECK_EQ(adj(lim, "m2", 25, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.rate_index, 1);
    CHECK(d.retry_after_ms > 6 * 36000 - 2000 && d.retry_after_ms <= 6 * 36000);
    rl_destroy(lim);
}

/* ---- errors ---------------------------------------------------------- */

static void test_arguments(void)
{
    rl_limiter *lim = create("rate=5/hour");
    rl_decision d;

    if (!lim)
        return;
    /* NULL limiter: RL_ERR_NULL, and *out a denial */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_adjust(NULL, "k", 1, -1, &d), RL_ERR_NULL);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    CHECK(rl_last_error()[0] != '\0');

    /* NULL out */
    CHECK_EQ(rl_adjust(lim, "k", 1, 3, NULL), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');

    /* NULL key with key_len > 0 */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_adjust(lim, NULL, 1, 3, &d), RL_ERR_NULL);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    CHECK_EQ(d.limit, 5);
    CHECK(rl_last_error()[0] != '\0');

    /* none of them charged anything */
    CHECK_EQ(check(lim, "k", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);
    CHECK_EQ(rl_check(lim, NULL, 0, 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);

    /* NULL key with key_len 0 is the empty key, as for rl_check */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_adjust(lim, NULL, 0, 2, &d), RL_OK);
    says_allowed(&d);
    CHECK_EQ(d.remaining, 3);
    CHECK_STR(rl_last_error(), "");
    CHECK_EQ(rl_check(lim, "", 0, 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 3);
    rl_destroy(lim);
}

/* rl_adjust on a concurrency limiter: RL_ERR_INVALID, a denial, and a
 * message that says what is wrong. */
static void test_concurrency_limiter(void)
{
    rl_limiter *lim = create("concurrency=2 lease=10s");
    rl_decision d;
    uint64_t lease = 0;

    if (!lim)
        return;
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_adjust(lim, "k", 1, -1, &d), RL_ERR_INVALID);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    CHECK_CONTAINS(rl_last_error(), "rl_adjust");
    CHECK_CONTAINS(rl_last_error(), "concurrency");
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_adjust(lim, "k", 1, INT64_MAX, &d), RL_ERR_INVALID);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_adjust(lim, "k", 1, 0, &d), RL_ERR_INVALID);
    CHECK_EQ(d.allowed, 0);
    /* and it took no place */
    CHECK_EQ(rl_acquire(lim, "k", 1, &lease, &d), RL_OK);
    CHECK_EQ(d.remaining, 1);
    rl_destroy(lim);
}

/* Keys are bytes: NULs inside, 1 MiB long. */
static void test_hostile_keys(void)
{
    rl_limiter *lim = create("rate=5/hour");
    const size_t big = (size_t)1 << 20;
    unsigned char *a, *b;
    rl_decision d;

    if (!lim)
        return;
    CHECK_EQ(rl_adjust(lim, "a\0b", 3, 2, &d), RL_OK);
    CHECK_EQ(d.remaining, 3);
    CHECK_EQ(rl_adjust(lim, "a\0c", 3, 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);
    CHECK_EQ(rl_adjust(lim, "a", 1, 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 5);
    CHECK_EQ(rl_check(lim, "a\0b", 3, 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 3);

    a = malloc(big);
    b = malloc(big);
    CHECK(a != NULL && b != NULL);
    if (a && b) {
        memset(a, 0, big); /* all NULs */
        memcpy(b, a, big);
        b[big - 1] = 1;
        CHECK_EQ(rl_adjust(lim, a, big, 4, &d), RL_OK);
        CHECK_EQ(d.remaining, 1);
        CHECK_EQ(rl_adjust(lim, a, big, 4, &d), RL_OK);
        CHECK_EQ(d.allowed, 0);
        CHECK_EQ(rl_adjust(lim, b, big, 0, &d), RL_OK);
        CHECK_EQ(d.remaining, 5);
        CHECK_EQ(rl_check(lim, a, big, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 0);
        CHECK_EQ(rl_adjust(lim, a, big, INT64_MIN, &d), RL_OK);
        CHECK_EQ(d.remaining, 5);
        CHECK_EQ(rl_adjust(lim, a, big - 1, 0, &d), RL_OK); /* a prefix: another key */
        CHECK_EQ(d.remaining, 5);
    }
    free(a);
    free(b);
    rl_destroy(lim);
}

/* ---- threads --------------------------------------------------------- */

#define THREADS 8

struct settler {
    rl_limiter *lim;
    int requests;
    int admitted;
    int denied;
    int errors;
    int bad;
};

/* Each request reserves 10 and uses 1 (refunds 9): it nets one unit. */
static void *settle(void *arg)
{
    struct settler *s = arg;
    rl_decision d;
    int i;
    for (i = 0; i < s->requests; i++) {
        if (rl_check(s->lim, "shared", 6, 10, &d) != RL_OK) {
            s->errors++;
        } else if (d.allowed) {
            s->admitted++;
            if (rl_adjust(s->lim, "shared", 6, -9, &d) != RL_OK)
                s->errors++;
        } else if (d.retry_after_ms > 0) {
            s->denied++;
        } else {
            s->bad++;
        }
    }
    return NULL;
}

/* 8 threads on one key of rate=1000/hour (a unit back every 3.6 s, longer
 * than the test), each request reserving 10 and settling at 1.
 *
 * The key holds 1000 - (requests settled) - 10 x (requests reserved, not yet
 * settled) units. Round 1, 100 requests per thread: a check finds at least
 * 1000 - 799 - 7 x 10 = 131 units, so all 800 are admitted. Round 2, 100
 * more each: some are denied while others hold reservations, and how many
 * pass depends on the interleaving; so main then drains the key alone,
 * request by request, until one is denied. With nothing reserved a request
 * passes while 10 units are left, and each takes one: 991 admitted in all
 * (1000 - 991 = 9 < 10), and 9 units left. */
static void test_threads_settle_on_one_key(void)
{
    rl_limiter *lim = create("rate=1000/hour");
    struct settler s[THREADS];
    pthread_t t[THREADS];
    int i, round, admitted[2] = {0, 0}, errors = 0, bad = 0, drained = 0;
    rl_decision d;

    if (!lim)
        return;
    for (round = 0; round < 2; round++) {
        memset(s, 0, sizeof s);
        for (i = 0; i < THREADS; i++) {
            s[i].lim = lim;
            s[i].requests = 100;
        }
        for (i = 0; i < THREADS; i++)
            CHECK_EQ(pthread_create(&t[i], NULL, settle, &s[i]), 0);
        for (i = 0; i < THREADS; i++)
            CHECK_EQ(pthread_join(t[i], NULL), 0);
        for (i = 0; i < THREADS; i++) {
            admitted[round] += s[i].admitted;
            errors += s[i].errors;
            bad += s[i].bad;
        }
    }
    CHECK_EQ(admitted[0], 800);
    CHECK(admitted[1] <= 191);
    CHECK_EQ(errors, 0);
    CHECK_EQ(bad, 0);
    for (;;) {
        if (!CHECK_EQ(check(lim, "shared", 10, &d), RL_OK) || !d.allowed)
            break;
        drained++;
        CHECK_EQ(adj(lim, "shared", -9, &d), RL_OK);
        if (drained > 1000)
            break;
    }
    CHECK_EQ(admitted[0] + admitted[1] + drained, 991);
    CHECK_EQ(check(lim, "shared", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 9);
    rl_destroy(lim);
}

/* ---- processes -------------------------------------------------------- */

#define PROCS 4

/* The same settling by 4 forked processes sharing the key: with backend=shm
 * or redis the limiter CFG() makes (each worker opens the same
 * configuration); with backend=memory an shm region of its own, unlinked at
 * the end. Round 1, 100 requests per process: a check finds at least
 * 1000 - 399 - 3 x 10 = 571 units, so all 400 pass; round 2, 150 more each;
 * then main drains the key alone: 991 in all, 9 units left. */
static char shared_config[CFG_LEN];
static char own_region[64];

static void settle_in_process(int requests, int out)
{
    rl_limiter *lim = NULL;
    struct settler s;
    memset(&s, 0, sizeof s);
    if (rl_create(shared_config, &lim) != RL_OK)
        _exit(1);
    s.lim = lim;
    s.requests = requests;
    settle(&s);
    rl_destroy(lim);
    if (s.errors || s.bad)
        _exit(2);
    (void)!write(out, &s.admitted, sizeof s.admitted);
    _exit(0);
}

static int run_settling_processes(int requests)
{
    int out[2], i, n, sum = 0, status;
    pid_t pids[PROCS];
    if (!CHECK(pipe(out) == 0))
        return 0;
    fflush(stdout);
    fflush(stderr);
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            close(out[0]);
            settle_in_process(requests, out[1]);
        }
        CHECK(pids[i] > 0);
    }
    close(out[1]);
    for (i = 0; i < PROCS; i++)
        if (CHECK(read(out[0], &n, sizeof n) == (ssize_t)sizeof n))
            sum += n;
    close(out[0]);
    for (i = 0; i < PROCS; i++)
        if (pids[i] > 0)
            CHECK(waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return sum;
}

static void test_processes_settle_on_one_key(void)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    int first, second, drained = 0;

    if (test_backend_is("shm") || test_backend_is("redis")) {
        snprintf(shared_config, sizeof shared_config, "%s", CFG("rate=1000/hour"));
        own_region[0] = '\0';
    } else {
        snprintf(own_region, sizeof own_region, "/rl-test-adjust-%ld", (long)getpid());
        (void)rl_shm_unlink(own_region); /* a leftover of an interrupted run */
        snprintf(shared_config, sizeof shared_config, "rate=1000/hour backend=shm name=%s", own_region);
    }
    if (!CHECK_EQ(rl_create(shared_config, &lim), RL_OK))
        return;
    first = run_settling_processes(100);
    second = run_settling_processes(150);
    CHECK_EQ(first, 400);
    CHECK(second <= 591);
    for (;;) {
        if (!CHECK_EQ(check(lim, "shared", 10, &d), RL_OK) || !d.allowed)
            break;
        drained++;
        CHECK_EQ(adj(lim, "shared", -9, &d), RL_OK);
        if (drained > 1000)
            break;
    }
    CHECK_EQ(first + second + drained, 991);
    CHECK_EQ(check(lim, "shared", 0, &d), RL_OK);
    CHECK_EQ(d.remaining, 9);
    rl_destroy(lim);
    if (own_region[0])
        CHECK_EQ(rl_shm_unlink(own_region), RL_OK);
}

int main(void)
{
    size_t i;
    for (i = 0; i < N_ALGOS; i++) {
        test_reserve_then_settle(LONG_RATES[i]);
        test_unseen_keys(LONG_RATES[i]);
        test_extreme_deltas(LONG_RATES[i]);
        test_out_predicts_a_check(LONG_RATES[i]);
    }
    /* two rates: the prediction holds whichever rate is in debt */
    test_out_predicts_a_check("rate=10/hour,15/day");
    test_out_predicts_a_check("rate=10/999d,15/1000d algorithm=fixed_window");
    test_out_predicts_a_check("rate=10/999d,15/1000d algorithm=sliding_window");
    test_not_counted_in_stats();
    test_dry_run();
    test_token_bucket_debt_paid_back();
    test_window_debt_paid_back(0);
    test_window_debt_paid_back(1);
    test_sliding_refund_only_current_window();
    test_multi_rate();
    test_arguments();
    test_concurrency_limiter();
    test_hostile_keys();
    test_threads_settle_on_one_key();
    test_processes_settle_on_one_key();
    return CHECK_SUMMARY();
}
