/*
 * test_top.c — rl_top: the keys denied most (RL_TOP_LIMITED, exact
 * Space-Saving bounds) and checked most (RL_TOP_ACTIVE, sampled on memory
 * and shm), the config key top=N, keys longer than 64 bytes, bad arguments;
 * and, with shm, the region-wide ranking: 4 processes each hammering its own
 * offender key on one region, listed together by one handle.
 *
 * Runs on whatever RL_TEST_BACKEND_CONFIG names (memory by default); the
 * 4-process part always uses a region of its own (skipped on redis, whose
 * rl_top is per handle).
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#include <sys/types.h>
#include <sys/wait.h>

#define CAP 64

static int is_redis(void)
{
    return test_backend_is("redis");
}

static int key_is(const rl_top_entry *e, const char *key)
{
    size_t n = strlen(key);
    return e->key_len == n && memcmp(e->key, key, n) == 0 && !e->truncated;
}

/* The entry of `key` among `n`, or NULL. */
static const rl_top_entry *find(const rl_top_entry *e, int64_t n, const char *key)
{
    int64_t i;
    for (i = 0; i < n; i++)
        if (key_is(&e[i], key))
            return &e[i];
    return NULL;
}

/* `count - error <= truth <= count`, the promise of every entry. */
static int within(const rl_top_entry *e, uint64_t truth)
{
    return e != NULL && e->error <= e->count && e->count - e->error <= truth && truth <= e->count;
}

static void hit(rl_limiter *lim, const char *key, int times)
{
    rl_decision d;
    int i;
    for (i = 0; i < times; i++)
        CHECK_EQ(check(lim, key, 1, &d), RL_OK);
}

static void test_limited_and_active(void)
{
    rl_limiter *lim = create("rate=2/hour");
    rl_top_entry e[CAP];
    rl_stats s;
    int64_t n;
    int i;

    if (!lim)
        return;
    /* Nothing denied yet: an empty ranking. */
    CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, e, CAP), 0);
    hit(lim, "bad", 10); /* 8 denied */
    hit(lim, "meh", 3);  /* 1 denied */
    hit(lim, "good", 2); /* none */
    memset(e, 0xAB, sizeof e);
    n = rl_top(lim, RL_TOP_LIMITED, e, CAP);
    CHECK_EQ(n, 2);
    CHECK_STR(rl_last_error(), "");
    if (n == 2) {
        CHECK(key_is(&e[0], "bad"));
        CHECK_EQ(e[0].count, 8);
        CHECK_EQ(e[0].error, 0);
        CHECK(key_is(&e[1], "meh"));
        CHECK_EQ(e[1].count, 1);
        CHECK_EQ(e[1].error, 0);
    }
    /* cap limits what is written; the rest of out is untouched */
    memset(e, 0xAB, sizeof e);
    CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, e, 1), 1);
    CHECK(key_is(&e[0], "bad"));
    CHECK_EQ(e[1].count, 0xABABABABABABABABull);
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.limited, 9);

    /* All checks: sampled on memory and shm (one in 64 of a shard, weight
     * 64), exact on redis. 3200 checks of one key rank it first, within a
     * sample's step of the truth. */
    for (i = 0; i < 3200; i++) {
        rl_decision d;
        CHECK_EQ(rl_check(lim, "hot", 3, 0, &d), RL_OK); /* peeks are checks too */
    }
    n = rl_top(lim, RL_TOP_ACTIVE, e, CAP);
    CHECK(n >= 1);
    if (n >= 1) {
        CHECK(key_is(&e[0], "hot"));
        CHECK(e[0].count + 64 >= 3200 && e[0].count <= 3200 + 64);
        if (is_redis())
            CHECK(within(find(e, n, "bad"), 10));
    }
    rl_destroy(lim);
}

/* Keys longer than 64 bytes: the first 64 kept, truncated set, and two
 * long keys sharing their first 64 bytes are two entries. */
static void test_long_keys(void)
{
    rl_limiter *lim = create("rate=1/hour");
    rl_top_entry e[CAP];
    char a[100], b[70];
    rl_decision d;
    int64_t n, i;
    int seen_a = 0, seen_b = 0;

    if (!lim)
        return;
    memset(a, 'x', sizeof a);
    memset(b, 'x', sizeof b);
    for (i = 0; i < 5; i++)
        CHECK_EQ(rl_check(lim, a, sizeof a, 1, &d), RL_OK); /* 4 denied */
    for (i = 0; i < 3; i++)
        CHECK_EQ(rl_check(lim, b, sizeof b, 1, &d), RL_OK); /* 2 denied */
    CHECK_EQ(rl_check(lim, "a\0b", 3, 1, &d), RL_OK);
    CHECK_EQ(rl_check(lim, "a\0b", 3, 1, &d), RL_OK); /* binary, 1 denied */
    n = rl_top(lim, RL_TOP_LIMITED, e, CAP);
    CHECK_EQ(n, 3);
    for (i = 0; i < n; i++) {
        CHECK(e[i].key_len <= 64);
        if (e[i].truncated) {
            CHECK_EQ(e[i].key_len, 64);
            CHECK(memcmp(e[i].key, a, 64) == 0);
            seen_a += e[i].count == 4;
            seen_b += e[i].count == 2;
        } else {
            CHECK_EQ(e[i].key_len, 3);
            CHECK(memcmp(e[i].key, "a\0b", 3) == 0);
            CHECK_EQ(e[i].count, 1);
        }
    }
    CHECK_EQ(seen_a, 1);
    CHECK_EQ(seen_b, 1);
    rl_destroy(lim);
}

/* top=N: how many keys are kept; top=0 turns tracking off. */
static void test_top_config(void)
{
    rl_limiter *lim;
    rl_top_entry e[CAP];
    int64_t n;
    char key[16];
    int i;

    lim = create("rate=1/hour top=0");
    if (lim) {
        hit(lim, "bad", 5);
        CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, e, CAP), 0);
        CHECK_EQ(rl_top(lim, RL_TOP_ACTIVE, e, CAP), 0);
        CHECK_STR(rl_last_error(), "");
        rl_destroy(lim);
    }

    /* One counter (and one shard: capacity=100; redis takes no capacity):
     * Space-Saving's rule shows. Redis records the denials per process
     * part, and memory and shm record those they answered from the
     * over-limit cache in a batch (a's last 4 after b's), so either key may
     * hold the counter, within its bounds. */
    lim = create(is_redis() ? "rate=1/hour top=1" : "rate=1/hour top=1 capacity=100");
    if (lim) {
        hit(lim, "a", 6); /* 5 denied */
        hit(lim, "b", 2); /* 1 denied */
        n = rl_top(lim, RL_TOP_LIMITED, e, CAP);
        CHECK_EQ(n, 1);
        if (n == 1)
            CHECK(key_is(&e[0], "a") ? within(&e[0], 5) : within(&e[0], 1));
        rl_destroy(lim);
    }

    /* top=4 among 40 denied keys, one of them heavy: at most 4 entries,
     * the heavy one first, every entry within its bounds. */
    lim = create("rate=1/hour top=4");
    if (lim) {
        for (i = 0; i < 40; i++) {
            snprintf(key, sizeof key, "k%d", i);
            hit(lim, key, 3); /* 2 denied each */
        }
        hit(lim, "heavy", 101); /* 100 denied */
        n = rl_top(lim, RL_TOP_LIMITED, e, CAP);
        CHECK(n >= 1 && n <= 4);
        if (n >= 1) {
            CHECK(key_is(&e[0], "heavy"));
            CHECK(within(&e[0], 100));
        }
        for (i = 1; i < n; i++)
            CHECK(e[i].count >= 2 && e[i].count <= e[i - 1].count);
        rl_destroy(lim);
    }

    CHECK_EQ(rl_create(CFG("rate=1/s top=1025"), &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "top=1025");
    CHECK_EQ(rl_create(CFG("rate=1/s top=x"), &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "top=x");
}

static void test_bad_arguments(void)
{
    rl_limiter *lim = create("rate=1/hour");
    rl_top_entry e[2];

    CHECK_EQ(rl_top(NULL, RL_TOP_LIMITED, e, 2), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "lim");
    if (!lim)
        return;
    hit(lim, "bad", 3);
    CHECK_EQ(rl_top(lim, 0, e, 2), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "which");
    CHECK_EQ(rl_top(lim, 3, e, 2), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "which");
    CHECK_EQ(rl_top(lim, 3, NULL, 0), RL_ERR_INVALID); /* which is checked first */
    CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, NULL, 2), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "out");
    /* cap 0: nothing written, 0 returned, out may be NULL */
    CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, NULL, 0), 0);
    CHECK_STR(rl_last_error(), "");
    CHECK_EQ(rl_top(lim, RL_TOP_ACTIVE, e, 0), 0);
    CHECK_EQ(rl_top(lim, RL_TOP_LIMITED, e, 2), 1);
    rl_destroy(lim);
}

/* ---- region-wide (shm): 4 processes, one offender key each ------------ */

#define PROCS 4

static char name[64];
static char config[256];

static void worker(int p)
{
    rl_limiter *lim = NULL;
    char key[32];
    int j;
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "worker %d: rl_create: %s\n", p, rl_last_error());
        _exit(1);
    }
    snprintf(key, sizeof key, "offender-%d", p);
    for (j = 0; j < 1000 + 100 * p; j++) {
        rl_decision d;
        if (rl_check(lim, key, strlen(key), 1, &d) != RL_OK)
            _exit(2);
        if (j % 20 == 0) { /* a crowd of minor offenders: 2 denials each */
            int k;
            snprintf(key, sizeof key, "minor-%d-%d", p, j);
            for (k = 0; k < 3; k++)
                if (rl_check(lim, key, strlen(key), 1, &d) != RL_OK)
                    _exit(2);
            snprintf(key, sizeof key, "offender-%d", p);
        }
    }
    rl_destroy(lim);
    _exit(0);
}

static void test_region_wide(void)
{
    rl_limiter *lim = NULL;
    rl_top_entry e[CAP];
    rl_stats s;
    pid_t pids[PROCS];
    int64_t n;
    int p, status, active[PROCS] = {0};
    char key[32];

    snprintf(name, sizeof name, "/rl-ctest-%ld-top", (long)getpid());
    /* capacity=1000: 2 shards of 32 counters for ~200 denied keys, so the
     * sketches evict and the bounds matter */
    snprintf(config, sizeof config, "rate=1/hour capacity=1000 backend=shm name=%s", name);
    (void)rl_shm_unlink(name);
    if (!CHECK_EQ(rl_create(config, &lim), RL_OK))
        return;
    fflush(stdout);
    fflush(stderr);
    for (p = 0; p < PROCS; p++) {
        pids[p] = fork();
        if (pids[p] == 0)
            worker(p);
        CHECK(pids[p] > 0);
    }
    for (p = 0; p < PROCS; p++) {
        if (pids[p] > 0) {
            CHECK(waitpid(pids[p], &status, 0) == pids[p]);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    /* offender p: 999 + 100p denied; minors: 2 each, 50 + 5p per process */
    CHECK_EQ(s.limited, 4 * 999 + 600 + 2 * (4 * 50 + 30));
    n = rl_top(lim, RL_TOP_LIMITED, e, CAP);
    CHECK_EQ(n, 32); /* the top=32 highest of the region */
    for (p = 0; p < PROCS && n >= PROCS; p++) {
        /* highest first: offender-3, -2, -1, -0, each within its bounds,
         * each above total / 32 */
        snprintf(key, sizeof key, "offender-%d", PROCS - 1 - p);
        CHECK(key_is(&e[p], key));
        CHECK(within(&e[p], 999 + 100 * (uint64_t)(PROCS - 1 - p)));
    }
    /* all checks: the four offenders lead, in some order */
    n = rl_top(lim, RL_TOP_ACTIVE, e, PROCS);
    CHECK_EQ(n, PROCS);
    for (p = 0; p < n; p++) {
        int q;
        for (q = 0; q < PROCS; q++) {
            snprintf(key, sizeof key, "offender-%d", q);
            if (key_is(&e[p], key))
                active[q]++;
        }
    }
    for (p = 0; p < PROCS; p++)
        CHECK_EQ(active[p], 1);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* top= is part of a region's configuration (the sketches live in it): a
 * region made with another top is refused, naming both. */
static void test_region_top_must_match(void)
{
    rl_limiter *lim = NULL, *other = NULL;
    snprintf(name, sizeof name, "/rl-ctest-%ld-topcfg", (long)getpid());
    (void)rl_shm_unlink(name);
    snprintf(config, sizeof config, "rate=5/s backend=shm name=%s", name);
    if (!CHECK_EQ(rl_create(config, &lim), RL_OK))
        return;
    snprintf(config, sizeof config, "rate=5/s top=8 backend=shm name=%s", name);
    CHECK_EQ(rl_create(config, &other), RL_ERR_INCOMPATIBLE);
    CHECK(other == NULL);
    CHECK_CONTAINS(rl_last_error(), "top=32");
    CHECK_CONTAINS(rl_last_error(), "top=8");
    snprintf(config, sizeof config, "rate=5/s top=32 backend=shm name=%s", name);
    CHECK_EQ(rl_create(config, &other), RL_OK); /* the default, spelled out */
    rl_destroy(other);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* A handle that attaches by name (no rate=) takes top from the region, and
 * ranks what the region's other handles counted; top= itself needs rate=. */
static void test_attach_takes_top_from_the_region(void)
{
    rl_limiter *lim = NULL, *attached = NULL;
    rl_top_entry e[CAP];
    char text[1024];
    rl_decision d;
    int i;
    snprintf(name, sizeof name, "/rl-ctest-%ld-topattach", (long)getpid());
    (void)rl_shm_unlink(name);
    snprintf(config, sizeof config, "rate=1/hour top=3 backend=shm name=%s", name);
    if (!CHECK_EQ(rl_create(config, &lim), RL_OK))
        return;
    for (i = 0; i < 5; i++)
        CHECK_EQ(rl_check(lim, "hot", 3, 1, &d), RL_OK);
    snprintf(config, sizeof config, "backend=shm name=%s top=3", name);
    CHECK_EQ(rl_create(config, &attached), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "\"top=3\" needs \"rate=\"");
    snprintf(config, sizeof config, "backend=shm name=%s", name);
    if (CHECK_EQ(rl_create(config, &attached), RL_OK)) {
        CHECK(rl_describe(attached, text, sizeof text) > 0);
        CHECK_CONTAINS(text, " capacity=100000 top=3 backend=shm ");
        CHECK_EQ(rl_top(attached, RL_TOP_LIMITED, e, CAP), 1);
        CHECK(key_is(&e[0], "hot"));
        CHECK_EQ(e[0].count, 4);
        rl_destroy(attached);
    }
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

int main(void)
{
    test_limited_and_active();
    test_long_keys();
    test_top_config();
    test_bad_arguments();
    if (!is_redis()) {
        test_region_wide();
        test_region_top_must_match();
        test_attach_takes_top_from_the_region();
    }
    return CHECK_SUMMARY();
}
