/*
 * redis_driver.c — libratelimit with backend=redis, through the C API, with
 * 8 threads sharing one handle (`make bench`, run by bench/redis.sh).
 *
 * Usage: bench_redis PORT CASE [ITERATIONS-PER-THREAD]
 *   PORT  a throwaway redis-server on 127.0.0.1 (bench/redis.sh starts one)
 *   CASE  "allowed": every thread checks its own 16 keys round-robin,
 *                    `rate=1000000/s` (burst 10^6): nothing is denied, every
 *                    check is one FCALL (EVALSHA before Redis 7)
 *         "denied":  every thread checks the same key, `rate=1/hour`, which
 *                    Redis denied once before the timing starts: every timed
 *                    check is answered by the local over-limit cache
 *
 * Config: `backend=redis url=redis://127.0.0.1:PORT prefix=rl-bench-PID-CASE:
 * timeout_ms=2000` plus the rate above: the pool, the FFI boundary and the
 * decision struct are all in the cost, as an application pays them.
 *
 * Warm-up (untimed): the threads make their first checks at the same time,
 * so the pool holds 8 connections before the timing starts. Then this
 * program reads `INFO commandstats` itself (a plain TCP connection of its
 * own, RESP inline command), runs the timed checks, and reads it again: the
 * difference counts exactly the commands Redis executed for the timed
 * checks, by name — FCALL or EVALSHA/EVAL that clients sent and the commands the
 * script ran inside them (TIME, GET, SET) alike; `info` itself is left out.
 *
 * Prints one line:
 *   libratelimit TAB <case> TAB <checks per second> TAB checks=N TAB
 *   local_denials=N TAB cmds=name:calls:usec,name:calls:usec,...
 * (usec: the server time INFO commandstats reports for those calls).
 * checks per second = all threads' timed checks / wall time (first thread's
 * start to last thread's end). Exits 1 if a check of the "allowed" case was
 * denied, one of the "denied" case allowed, or any check hit an error.
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

#define THREADS 8
#define KEYS_PER_THREAD 16

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_redis: %s\n", what);
    exit(2);
}

/* INFO commandstats now, or exit. */
static void read_info(int port, struct cmdstats *out)
{
    const char *why = commandstats(port, out);
    if (why)
        die(why);
}

/* ---- INFO commandstats ------------------------------------------------- */

static int index_of(const struct cmdstats *s, const char *name)
{
    int i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0)
            return i;
    return -1;
}

/* ---- the threads ------------------------------------------------------- */

struct worker {
    rl_limiter *lim;
    const char (*keys)[KEY_LEN + 1]; /* this thread's keys */
    size_t count;
    long iters;
    long allowed, denied, errors;
    double t0, t1;
};

static pthread_barrier_t warm, go;

static void check_keys(struct worker *w, long n)
{
    size_t k = 0;
    long i;
    for (i = 0; i < n; i++) {
        rl_decision d;
        int rc = rl_check(w->lim, w->keys[k], KEY_LEN, 1, &d);
        if (rc != RL_OK)
            w->errors++;
        else if (d.allowed)
            w->allowed++;
        else
            w->denied++;
        if (++k == w->count)
            k = 0;
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    /* Warm-up: all threads at once, so the pool makes 8 connections. */
    pthread_barrier_wait(&go);
    check_keys(w, (long)w->count * 4);
    w->allowed = w->denied = w->errors = 0;
    pthread_barrier_wait(&warm); /* main reads INFO commandstats */
    pthread_barrier_wait(&go);
    w->t0 = now_ns();
    check_keys(w, w->iters);
    w->t1 = now_ns();
    return NULL;
}

int main(int argc, char **argv)
{
    static char keys[THREADS * KEYS_PER_THREAD][KEY_LEN + 1];
    struct worker w[THREADS];
    pthread_t tid[THREADS];
    struct cmdstats before, after;
    rl_limiter *lim = NULL;
    rl_stats s0, s1;
    char config[256];
    const char *mode;
    long iters, allowed = 0, denied = 0, errors = 0, checks;
    double t0, t1;
    int port, t, i, hot, first = 1;

    if (argc < 3 || (port = atoi(argv[1])) <= 0 ||
        (strcmp(argv[2], "allowed") != 0 && strcmp(argv[2], "denied") != 0)) {
        fprintf(stderr, "usage: %s PORT allowed|denied [iterations-per-thread]\n", argv[0]);
        return 2;
    }
    (void)shuffle; /* keys.h's; the order of 16 keys does not matter here */
    mode = argv[2];
    hot = strcmp(mode, "denied") == 0;
    iters = argc > 3 ? atol(argv[3]) : (hot ? 200000 : 5000);
    if (iters <= 0)
        die("iterations must be positive");
    snprintf(config, sizeof config,
             "rate=%s backend=redis url=redis://127.0.0.1:%d prefix=rl-bench-%ld-%s: timeout_ms=2000",
             hot ? "1/hour" : "1000000/s", port, (long)getpid(), mode);
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "bench_redis: rl_create(\"%s\"): %s\n", config, rl_last_error());
        return 2;
    }
    for (i = 0; i < THREADS * KEYS_PER_THREAD; i++)
        make_key(keys[i], (unsigned long long)i);
    if (hot) {
        /* The one unit of the hour, then Redis's denial: now cached locally. */
        rl_decision d;
        if (rl_check(lim, keys[0], KEY_LEN, 1, &d) != RL_OK || !d.allowed ||
            rl_check(lim, keys[0], KEY_LEN, 1, &d) != RL_OK || d.allowed)
            die("the hot key was not allowed once, then denied (is Redis up?)");
    }
    for (t = 0; t < THREADS; t++) {
        struct worker init = { lim, (const char(*)[KEY_LEN + 1])keys[hot ? 0 : t * KEYS_PER_THREAD],
                               hot ? 1 : KEYS_PER_THREAD, iters, 0, 0, 0, 0, 0 };
        w[t] = init;
    }
    if (pthread_barrier_init(&warm, NULL, THREADS + 1) != 0 || pthread_barrier_init(&go, NULL, THREADS + 1) != 0)
        die("pthread_barrier_init");
    for (t = 0; t < THREADS; t++)
        if (pthread_create(&tid[t], NULL, run, &w[t]) != 0)
            die("pthread_create");
    pthread_barrier_wait(&go);   /* warm-up starts */
    pthread_barrier_wait(&warm); /* warm-up done */
    if (rl_stats_get(lim, &s0) != RL_OK)
        die("rl_stats_get");
    read_info(port, &before);
    pthread_barrier_wait(&go); /* timing starts */
    for (t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);
    read_info(port, &after);
    if (rl_stats_get(lim, &s1) != RL_OK)
        die("rl_stats_get");

    t0 = w[0].t0;
    t1 = w[0].t1;
    for (t = 0; t < THREADS; t++) {
        t0 = w[t].t0 < t0 ? w[t].t0 : t0;
        t1 = w[t].t1 > t1 ? w[t].t1 : t1;
        allowed += w[t].allowed;
        denied += w[t].denied;
        errors += w[t].errors;
    }
    checks = allowed + denied + errors;
    if (errors || s1.errors != s0.errors || (hot ? allowed : denied)) {
        fprintf(stderr, "bench_redis: %s: %ld allowed, %ld denied, %ld errors (%s)\n", mode, allowed,
                denied, errors, rl_last_error());
        return 1;
    }
    printf("libratelimit\t%s\t%.0f\tchecks=%ld\tlocal_denials=%llu\tcmds=", mode,
           (double)checks / ((t1 - t0) / 1e9), checks,
           (unsigned long long)(s1.local_denials - s0.local_denials));
    /* Every command whose count moved (commands new since `before` count from 0). */
    for (i = 0; i < after.n; i++) {
        int b = index_of(&before, after.name[i]);
        unsigned long long d = after.calls[i] - (b < 0 ? 0 : before.calls[b]);
        unsigned long long us = after.usec[i] - (b < 0 ? 0 : before.usec[b]);
        if (d == 0 || strcmp(after.name[i], "info") == 0)
            continue;
        printf("%s%s:%llu:%llu", first ? "" : ",", after.name[i], d, us);
        first = 0;
    }
    printf("\n");
    pthread_barrier_destroy(&warm);
    pthread_barrier_destroy(&go);
    rl_destroy(lim);
    return 0;
}
