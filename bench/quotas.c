/*
 * quotas.c — what the AI-quota calls cost (`make bench`, run by
 * bench/quotas.sh): ns per rl_adjust, and per rl_acquire + rl_release pair,
 * next to rl_check in the same run, through the C API as an application
 * calls them.
 *
 * Usage:
 *   bench_quotas memory|shm [ITERATIONS-PER-THREAD [CASE]]
 *   bench_quotas redis PORT [CALLS]
 *
 * memory / shm: prints one line per case, as bench/driver.c does,
 *     <limiter> TAB <case> TAB <ns per call>
 * for the operations
 *   rl_check                 rl_check(cost 1), `rate=1/s burst=100000000` (never denies)
 *   rl_adjust                rl_adjust, +1 and -1 in turn for each key (a
 *                            charge, then a refund: both write), same rate
 *   rl_acquire+rl_release    one rl_acquire and its rl_release (ns per PAIR),
 *                            `concurrency=4 lease=60s` (at most 2 held: never denied)
 * each in the cases (keys from bench/keys.h)
 *   hot key                  1 thread, one key
 *   100k keys                1 thread, round-robin over 100,000 keys (shuffled)
 *   2 threads, one key       2 threads, the same key
 * Default capacity (100,000 keys). With shm a fresh region per case, its
 * name unlinked right after rl_create (as bench/lim_shm.h). Every key is
 * used once before the timing (untimed). Threaded cases: wall time from the
 * first start to the last end divided by the calls ONE thread made (what a
 * caller waits per call). CASE: run only cases whose name contains it.
 * Exits 1 if a call was denied or failed (the harness measures the
 * allowed path), or rl_stats shows an eviction.
 *
 * redis: one thread, one handle on `backend=redis url=redis://127.0.0.1:PORT
 * prefix=rl-bench-quotas-PID-N: timeout_ms=2000`, the same limits, 16 keys
 * round-robin; for
 * each operation, CALLS (default 20000) timed calls after a warm-up, with
 * `INFO commandstats` read before and after them (a connection of its own)
 * to count the commands Redis ran for them. Prints per operation
 *     libratelimit (redis) TAB <op> TAB <ns per call> TAB calls=N TAB cmds=name:calls,...
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ratelimit.h>

#include "keys.h"
#include "redis_info.h"

enum op { OP_CHECK, OP_ADJUST, OP_LEASE };
static const char *const OP_NAME[] = { "rl_check", "rl_adjust", "rl_acquire+rl_release" };
/* A unit back every second, so a +1 is still unpaid when the -1 after it
 * comes (a pass over 100,000 keys, or 16 calls to Redis, takes far less),
 * and that refund writes too (with `rate=1000000000/s` the bucket refills
 * in a nanosecond and a refund would find a fresh key: no write); a burst
 * of 10^8: never denied here. */
static const char *const OP_CONFIG[] = { "rate=1/s burst=100000000", "rate=1/s burst=100000000", "concurrency=4 lease=60s" };

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_quotas: %s\n", what);
    exit(2);
}

/* INFO commandstats now, or exit. */
static void read_info(int port, struct cmdstats *out)
{
    const char *why = commandstats(port, out);
    if (why)
        die(why);
}

/* One call of `op` on `key`, the `n`th on it; 1 if it went as it must
 * (allowed; a lease released). */
static inline int call(rl_limiter *lim, enum op op, const char *key, size_t len, long n)
{
    rl_decision d;
    uint64_t lease;
    switch (op) {
    case OP_CHECK:
        return rl_check(lim, key, len, 1, &d) == RL_OK && d.allowed;
    case OP_ADJUST:
        return rl_adjust(lim, key, len, (n & 1) ? -1 : 1, &d) == RL_OK && d.allowed;
    case OP_LEASE:
        return rl_acquire(lim, key, len, &lease, &d) == RL_OK && d.allowed && lease != 0 &&
               rl_release(lim, key, len, lease) == 1;
    }
    return 0;
}

/* ---- memory, shm ---------------------------------------------------------- */

static char (*keys)[KEY_LEN + 1];
static char (*shuffled)[KEY_LEN + 1];
static long iters = 2000000;
static const char *only;
static int shm;

struct worker {
    rl_limiter *lim;
    enum op op;
    char (*keys)[KEY_LEN + 1];
    size_t count;
    long iters;
    long failed;
    pthread_barrier_t *start;
    double t0, t1;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    size_t k = 0;
    long i, pass = 0, failed = 0;
    if (w->start)
        pthread_barrier_wait(w->start);
    w->t0 = now_ns();
    for (i = 0; i < w->iters; i++) {
        /* `pass`: how many times round the keys, so each key sees +1, -1, +1... */
        failed += !call(w->lim, w->op, w->keys[k], KEY_LEN, pass);
        if (++k == w->count) {
            k = 0;
            pass++;
        }
    }
    w->t1 = now_ns();
    w->failed = failed;
    return NULL;
}

static rl_limiter *new_limiter(enum op op)
{
    static unsigned n;
    char name[64], config[256];
    rl_limiter *lim = NULL;
    snprintf(name, sizeof name, "/rl-bench-quotas-%ld-%u", (long)getpid(), n++);
    snprintf(config, sizeof config, "%s%s%s", OP_CONFIG[op], shm ? " backend=shm name=" : "", shm ? name : "");
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "bench_quotas: rl_create(\"%s\"): %s\n", config, rl_last_error());
        exit(2);
    }
    if (shm && rl_shm_unlink(name) != RL_OK) {
        fprintf(stderr, "bench_quotas: rl_shm_unlink(\"%s\"): %s\n", name, rl_last_error());
        exit(2);
    }
    return lim;
}

static void run_case(enum op op, const char *what, int threads, size_t count)
{
    char name[128];
    struct worker w[2];
    pthread_t tid[2];
    pthread_barrier_t start;
    rl_limiter *lim;
    rl_stats s;
    double t0, t1;
    int t;

    snprintf(name, sizeof name, "%s, %s", OP_NAME[op], what);
    if (only && !strstr(name, only))
        return;
    lim = new_limiter(op);
    {
        /* every key once, in index order, untimed (an adjust: +1 then -1) */
        struct worker warm = { lim, op, keys, count, (long)(op == OP_ADJUST ? 2 * count : count), 0, NULL, 0, 0 };
        run(&warm);
        if (warm.failed) {
            fprintf(stderr, "bench_quotas: %s: %ld calls failed during warm-up\n", name, warm.failed);
            exit(1);
        }
    }
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (t = 0; t < threads; t++) {
        struct worker init = { lim, op, shuffled, count, iters, 0, threads > 1 ? &start : NULL, 0, 0 };
        w[t] = init;
    }
    if (threads == 1) {
        run(&w[0]);
    } else {
        for (t = 0; t < threads; t++)
            if (pthread_create(&tid[t], NULL, run, &w[t]) != 0)
                die("pthread_create");
        for (t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
    }
    pthread_barrier_destroy(&start);
    t0 = w[0].t0;
    t1 = w[0].t1;
    for (t = 0; t < threads; t++) {
        t0 = w[t].t0 < t0 ? w[t].t0 : t0;
        t1 = w[t].t1 > t1 ? w[t].t1 : t1;
        if (w[t].failed) {
            fprintf(stderr, "bench_quotas: %s: %ld calls denied or failed (%s)\n", name, w[t].failed,
                    rl_last_error());
            exit(1);
        }
    }
    if (rl_stats_get(lim, &s) != RL_OK || s.evictions || s.limited || s.errors) {
        fprintf(stderr, "bench_quotas: %s: unexpected stats: evictions %llu limited %llu errors %llu\n", name,
                (unsigned long long)s.evictions, (unsigned long long)s.limited, (unsigned long long)s.errors);
        exit(1);
    }
    rl_destroy(lim);
    printf("libratelimit (%s)\t%s\t%.1f\n", shm ? "shm" : "memory", name, (t1 - t0) / (double)iters);
    fflush(stdout);
}

static int in_process(int argc, char **argv)
{
    size_t i, *order;
    int op;
    shm = strcmp(argv[1], "shm") == 0;
    if (argc > 2)
        iters = atol(argv[2]);
    if (argc > 3)
        only = argv[3];
    if (iters <= 0)
        die("iterations must be positive");
    keys = malloc(sizeof *keys * MANY_KEYS);
    shuffled = malloc(sizeof *shuffled * MANY_KEYS);
    order = malloc(sizeof *order * MANY_KEYS);
    if (!keys || !shuffled || !order)
        die("out of memory");
    for (i = 0; i < MANY_KEYS; i++) {
        make_key(keys[i], (unsigned long long)i);
        order[i] = i;
    }
    shuffle(order, MANY_KEYS);
    for (i = 0; i < MANY_KEYS; i++)
        memcpy(shuffled[i], keys[order[i]], KEY_LEN + 1);
    for (op = OP_CHECK; op <= OP_LEASE; op++) {
        run_case((enum op)op, CASE_HOT, 1, 1);
        run_case((enum op)op, CASE_MANY, 1, MANY_KEYS);
        run_case((enum op)op, CASE_THREADS_ONE, 2, 1);
    }
    free(order);
    free(shuffled);
    free(keys);
    return 0;
}

/* ---- redis -------------------------------------------------------------- */

#define REDIS_KEYS 16

static unsigned long long calls_of(const struct cmdstats *s, const char *name)
{
    int i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0)
            return s->calls[i];
    return 0;
}

static void redis_op(int port, enum op op, long calls)
{
    static char k[REDIS_KEYS][KEY_LEN + 1];
    char config[256];
    struct cmdstats before, after;
    rl_limiter *lim = NULL;
    double t0, t1;
    long i;
    int j, first = 1;

    for (j = 0; j < REDIS_KEYS; j++)
        make_key(k[j], (unsigned long long)j);
    snprintf(config, sizeof config,
             "%s backend=redis url=redis://127.0.0.1:%d prefix=rl-bench-quotas-%ld-%d: timeout_ms=2000",
             OP_CONFIG[op], port, (long)getpid(), (int)op);
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "bench_quotas: rl_create(\"%s\"): %s\n", config, rl_last_error());
        exit(2);
    }
    /* warm-up: the connection, the scripts loaded, every key made */
    for (i = 0; i < 4 * REDIS_KEYS; i++)
        if (!call(lim, op, k[i % REDIS_KEYS], KEY_LEN, i / REDIS_KEYS)) {
            fprintf(stderr, "bench_quotas: redis %s: a warm-up call failed: %s\n", OP_NAME[op], rl_last_error());
            exit(1);
        }
    read_info(port, &before);
    t0 = now_ns();
    for (i = 0; i < calls; i++)
        if (!call(lim, op, k[i % REDIS_KEYS], KEY_LEN, i / REDIS_KEYS)) {
            fprintf(stderr, "bench_quotas: redis %s: a call failed: %s\n", OP_NAME[op], rl_last_error());
            exit(1);
        }
    t1 = now_ns();
    read_info(port, &after);
    printf("libratelimit (redis)\t%s\t%.0f\tcalls=%ld\tcmds=", OP_NAME[op], (t1 - t0) / (double)calls, calls);
    for (j = 0; j < after.n; j++) {
        unsigned long long n = after.calls[j] - calls_of(&before, after.name[j]);
        if (n == 0 || strcmp(after.name[j], "info") == 0)
            continue;
        printf("%s%s:%llu", first ? "" : ",", after.name[j], n);
        first = 0;
    }
    printf("\n");
    fflush(stdout);
    rl_destroy(lim);
}

int main(int argc, char **argv)
{
    int op, port;
    long calls;
    if (argc >= 2 && (strcmp(argv[1], "memory") == 0 || strcmp(argv[1], "shm") == 0))
        return in_process(argc, argv);
    if (argc >= 3 && strcmp(argv[1], "redis") == 0 && (port = atoi(argv[2])) > 0) {
        calls = argc > 3 ? atol(argv[3]) : 20000;
        if (calls <= 0)
            die("calls must be positive");
        for (op = OP_CHECK; op <= OP_LEASE; op++)
            redis_op(port, (enum op)op, calls);
        return 0;
    }
    fprintf(stderr, "usage: %s memory|shm [iterations-per-thread [case]]\n       %s redis PORT [calls]\n", argv[0],
            argv[0]);
    return 2;
}
