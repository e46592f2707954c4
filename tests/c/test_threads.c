/*
 * test_threads.c — one rl_limiter shared by many threads.
 *
 * Threads count what they see; main CHECKs the totals (CHECK itself is not
 * thread-safe). rl_last_error is per thread.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#include <pthread.h>

#define THREADS 8

struct worker {
    rl_limiter *lim;
    char key[32];
    int checks;
    int allowed;
    int limited;
    int errors;
    int bad_decisions;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    rl_decision d;
    int i;
    for (i = 0; i < w->checks; i++) {
        memset(&d, 0xAB, sizeof d);
        if (rl_check(w->lim, w->key, strlen(w->key), 1, &d) != RL_OK)
            w->errors++;
        if (d.allowed == 1 && d.retry_after_ms == 0)
            w->allowed++;
        else if (d.allowed == 0 && d.retry_after_ms > 0)
            w->limited++;
        else
            w->bad_decisions++;
    }
    return NULL;
}

static void run(struct worker *w)
{
    pthread_t t[THREADS];
    int i;
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_join(t[i], NULL), 0);
}

/* 8 threads, one key, rate=1000/hour (one unit back every 3.6 s, far longer
 * than the test): exactly 1000 of 2000 checks pass. */
static void test_one_key(void)
{
    rl_limiter *lim = create("rate=1000/hour");
    struct worker w[THREADS];
    int i, allowed = 0, limited = 0, errors = 0, bad = 0;
    rl_stats s;

    if (!lim)
        return;
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++) {
        w[i].lim = lim;
        strcpy(w[i].key, "shared");
        w[i].checks = 250;
    }
    run(w);
    for (i = 0; i < THREADS; i++) {
        allowed += w[i].allowed;
        limited += w[i].limited;
        errors += w[i].errors;
        bad += w[i].bad_decisions;
    }
    CHECK_EQ(allowed, 1000);
    CHECK_EQ(limited, 1000);
    CHECK_EQ(errors, 0);
    CHECK_EQ(bad, 0);
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.allowed, 1000);
    CHECK_EQ(s.limited, 1000);
    rl_destroy(lim);
}

/* 8 threads, a key each: they don't interfere; each gets exactly its quota. */
static void test_distinct_keys(void)
{
    rl_limiter *lim = create("rate=100/minute");
    struct worker w[THREADS];
    int i;

    if (!lim)
        return;
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++) {
        w[i].lim = lim;
        snprintf(w[i].key, sizeof w[i].key, "thread-%d", i);
        w[i].checks = 150;
    }
    run(w);
    for (i = 0; i < THREADS; i++) {
        CHECK_EQ(w[i].allowed, 100);
        CHECK_EQ(w[i].limited, 50);
        CHECK_EQ(w[i].errors, 0);
        CHECK_EQ(w[i].bad_decisions, 0);
    }
    rl_destroy(lim);
}

/* Several limiters created, used and destroyed by threads at once. */
struct own {
    char config[CFG_LEN]; /* made by main: CFG() is not thread-safe */
    int ok;
};

static void *own_limiter(void *arg)
{
    struct own *o = arg;
    int round;
    for (round = 0; round < 20; round++) {
        rl_limiter *lim = NULL;
        rl_decision d;
        char key[16];
        int i, allowed = 0;
        if (rl_create(o->config, &lim) != RL_OK)
            return NULL;
        /* a key per round, in case a shared backend outlives the handle */
        snprintf(key, sizeof key, "k%d", round);
        for (i = 0; i < 20; i++)
            if (rl_check(lim, key, strlen(key), 1, &d) == RL_OK && d.allowed)
                allowed++;
        rl_destroy(lim);
        if (allowed != 10)
            return NULL;
    }
    o->ok = 1;
    return NULL;
}

static void test_limiter_per_thread(void)
{
    pthread_t t[THREADS];
    static struct own o[THREADS];
    int i;
    for (i = 0; i < THREADS; i++) {
        snprintf(o[i].config, sizeof o[i].config, "%s", CFG("rate=10/minute"));
        o[i].ok = 0;
    }
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, own_limiter, &o[i]), 0);
    for (i = 0; i < THREADS; i++) {
        CHECK_EQ(pthread_join(t[i], NULL), 0);
        CHECK_EQ(o[i].ok, 1);
    }
}

/* rl_last_error belongs to the calling thread. */
static void *fresh_thread_error(void *arg)
{
    const char **out = arg;
    /* copy: the pointer is valid only until this thread's next rl_* call */
    static char copy[256];
    snprintf(copy, sizeof copy, "%s", rl_last_error());
    *out = copy;
    return NULL;
}

static void test_last_error_is_per_thread(void)
{
    rl_limiter *lim = NULL;
    const char *seen = NULL;
    pthread_t t;

    CHECK_EQ(rl_create(CFG("rate=5/s burts=1"), &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "burts");
    CHECK_EQ(pthread_create(&t, NULL, fresh_thread_error, &seen), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK(seen != NULL);
    CHECK_STR(seen, "");
    /* and the other thread did not clear this one's */
    CHECK_CONTAINS(rl_last_error(), "burts");
}

int main(void)
{
    test_one_key();
    test_distinct_keys();
    test_limiter_per_thread();
    test_last_error_is_per_thread();
    return CHECK_SUMMARY();
}
