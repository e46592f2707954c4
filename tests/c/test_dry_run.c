/*
 * test_dry_run.c — `dry_run=on`: every decision computed and recorded as when
 * enforcing, but reported allowed, with `retry_after_ms > 0` marking a
 * would-be 429; rl_format_headers writes no Retry-After for it; and dry_run
 * is no part of an shm region's identity: a live region switched from dry
 * run to enforcing decides exactly as if it had enforced all along.
 *
 * The first tests honour RL_TEST_BACKEND_CONFIG (every backend); the switch
 * uses shm regions of its own.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

/* The costs a sequence of checks asks for, on keys "k0".."k2". */
static const uint64_t COSTS[] = {1, 1, 2, 1, 0, 9, 1, 3, 1, 1, 0, 2, 1, 1};
#define STEPS (sizeof COSTS / sizeof COSTS[0])

static uint64_t diff(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

/* How far apart (ms) the two limiters' clock readings may be: the checks
 * run one after the other, and a loaded machine may preempt in between. */
#define SLACK_MS 50

/* `dry` (from a dry-run limiter) describes the same decision as `real`
 * (from an enforcing one fed the same checks): all fields equal except
 * `allowed`, which is 1, and the times, which may differ by the moment
 * between the two checks. */
static int same_decision(const rl_decision *dry, const rl_decision *real, int dry_run)
{
    int ok = CHECK_EQ(dry->allowed, dry_run ? 1 : real->allowed);
    ok &= CHECK_EQ(dry->retry_after_ms > 0, real->allowed == 0);
    ok &= CHECK_EQ(dry->rate_index, real->rate_index);
    ok &= CHECK_EQ(dry->limit, real->limit);
    ok &= CHECK_EQ(dry->remaining, real->remaining);
    ok &= CHECK_EQ(dry->window_ms, real->window_ms);
    ok &= CHECK(diff(dry->reset_ms, real->reset_ms) <= SLACK_MS);
    ok &= CHECK(dry->retry_after_ms == real->retry_after_ms ||
                (real->retry_after_ms != UINT64_MAX && diff(dry->retry_after_ms, real->retry_after_ms) <= SLACK_MS));
    return ok;
}

/* Runs COSTS[from..to) through both limiters; every decision compared. */
static void run_both(rl_limiter *dry, rl_limiter *real, size_t from, size_t to, int dry_run)
{
    size_t i;
    for (i = from; i < to; i++) {
        char key[8];
        rl_decision a, b;
        snprintf(key, sizeof key, "k%u", (unsigned)(i % 3));
        CHECK_EQ(check(dry, key, COSTS[i], &a), RL_OK);
        CHECK_EQ(check(real, key, COSTS[i], &b), RL_OK);
        if (!same_decision(&a, &b, dry_run))
            fprintf(stderr, "    step %u (key %s, cost %" PRIu64 ")\n", (unsigned)i, key, COSTS[i]);
    }
}

static void test_dry_run_decides_as_enforcing(void)
{
    const char *configs[] = {
        "rate=3/hour,5/day",
        "rate=4/1000d algorithm=fixed_window",
        "rate=4/1000d,2/hour algorithm=sliding_window",
    };
    size_t i;
    char cfg[128];
    for (i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        rl_limiter *dry, *real;
        rl_stats a, b;
        snprintf(cfg, sizeof cfg, "%s dry_run=on", configs[i]);
        dry = create(cfg);
        real = create(configs[i]);
        if (dry && real) {
            run_both(dry, real, 0, STEPS, 1);
            /* recorded the same: would-be denials count in `limited` */
            CHECK_EQ(rl_stats_get(dry, &a), RL_OK);
            CHECK_EQ(rl_stats_get(real, &b), RL_OK);
            CHECK_EQ(a.allowed, b.allowed);
            CHECK_EQ(a.limited, b.limited);
            CHECK(a.limited > 0);
            CHECK_EQ(a.keys, b.keys);
        }
        rl_destroy(dry);
        rl_destroy(real);
    }
}

static void test_headers_of_a_would_be_denial(void)
{
    rl_limiter *lim = create("rate=1/hour dry_run=on");
    rl_decision d;
    char buf[512];
    if (!lim)
        return;
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(check(lim, "k", 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 3600000);
    CHECK_EQ(d.remaining, 0);
    /* served, so no Retry-After; the rate-limit fields say how things are */
    CHECK(rl_format_headers(&d, 0, buf, sizeof buf) > 0);
    CHECK_CONTAINS(buf, "X-RateLimit-Remaining: 0\r\n");
    CHECK(strstr(buf, "Retry-After") == NULL);
    CHECK_EQ(rl_format_headers(&d, RL_HEADERS_RETRY_AFTER, buf, sizeof buf), 0);
    CHECK_STR(buf, "");
    /* a cost that can never pass: UINT64_MAX, still allowed */
    CHECK_EQ(check(lim, "other", 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.retry_after_ms, UINT64_MAX);
    rl_destroy(lim);
}

/* on_error=deny in a dry run: allowed, marked; argument errors still deny. */
static void test_errors_in_a_dry_run(void)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    /* nothing listens on port 1: every check is a backend error */
    if (CHECK_EQ(rl_create("rate=5/s backend=redis url=redis://127.0.0.1:1 timeout_ms=50 on_error=deny dry_run=on",
                           &lim), RL_OK)) {
        CHECK_EQ(check(lim, "k", 1, &d), RL_ERR_BACKEND);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.retry_after_ms, 1000);
        rl_destroy(lim);
    }
    lim = create("rate=5/s dry_run=on");
    if (lim) {
        memset(&d, 0xAB, sizeof d);
        CHECK_EQ(rl_check(lim, NULL, 3, 1, &d), RL_ERR_NULL);
        CHECK_EQ(d.allowed, 0);
        CHECK_EQ(d.retry_after_ms, 1000);
        rl_destroy(lim);
    }
}

/* Two regions fed the same checks, one through a dry-run handle, one
 * enforcing; then the dry-run handle is replaced by an enforcing one (by
 * attach, and again with the full configuration) on the same live region:
 * from then on both regions decide identically, allowed included. */
static void test_switching_a_region_to_enforcing(void)
{
    const char *configs[] = {
        "rate=3/hour,5/day",
        "rate=4/1000d algorithm=fixed_window capacity=50",
        "rate=4/1000d,2/hour algorithm=sliding_window",
    };
    size_t i;
    for (i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        char a[64], b[64], cfg[256];
        rl_limiter *dry = NULL, *real = NULL, *switched = NULL, *full = NULL;
        rl_stats sa, sb;
        snprintf(a, sizeof a, "/rl-cdry-%ld-%u-a", (long)getpid(), (unsigned)i);
        snprintf(b, sizeof b, "/rl-cdry-%ld-%u-b", (long)getpid(), (unsigned)i);
        (void)rl_shm_unlink(a);
        (void)rl_shm_unlink(b);
        snprintf(cfg, sizeof cfg, "%s backend=shm name=%s dry_run=on", configs[i], a);
        CHECK_EQ(rl_create(cfg, &dry), RL_OK);
        snprintf(cfg, sizeof cfg, "%s backend=shm name=%s", configs[i], b);
        CHECK_EQ(rl_create(cfg, &real), RL_OK);
        if (dry && real) {
            run_both(dry, real, 0, STEPS / 2, 1);
            rl_destroy(dry);
            dry = NULL;
            /* enforcing now, on the live region: attached by name... */
            snprintf(cfg, sizeof cfg, "backend=shm name=%s", a);
            CHECK_EQ(rl_create(cfg, &switched), RL_OK);
            if (switched) {
                run_both(switched, real, STEPS / 2, STEPS, 0);
                /* ...and with the full configuration: the same region */
                snprintf(cfg, sizeof cfg, "%s backend=shm name=%s dry_run=off", configs[i], a);
                if (CHECK_EQ(rl_create(cfg, &full), RL_OK))
                    run_both(full, real, 0, STEPS, 0);
                CHECK_EQ(rl_stats_get(switched, &sa), RL_OK);
                CHECK_EQ(rl_stats_get(real, &sb), RL_OK);
                CHECK_EQ(sa.allowed, sb.allowed);
                CHECK_EQ(sa.limited, sb.limited);
                CHECK_EQ(sa.keys, sb.keys);
            }
        }
        rl_destroy(full);
        rl_destroy(switched);
        rl_destroy(dry);
        rl_destroy(real);
        CHECK_EQ(rl_shm_unlink(a), RL_OK);
        CHECK_EQ(rl_shm_unlink(b), RL_OK);
    }
}

int main(void)
{
    test_dry_run_decides_as_enforcing();
    test_headers_of_a_would_be_denial();
    test_errors_in_a_dry_run();
    test_switching_a_region_to_enforcing();
    return CHECK_SUMMARY();
}
