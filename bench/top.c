/*
 * top.c — what the rl_top tracking costs a check: one thread, the allowed
 * and the denied path, on backend=memory and backend=shm, with whatever
 * extra configuration the command line gives (bench/top.sh runs it with
 * "top=0", "top=32", and against the library from before rl_top with
 * nothing, interleaved, and prints the medians side by side).
 *
 * Usage: bench_top ITERS [EXTRA-CONFIG]
 * Prints one line per case:  <backend> TAB <case> TAB <ns per check>
 *
 * Cases (keys from keys.h, 32 hex characters):
 *   allowed, hot key     rate=1000000000/s, key 0 every time
 *   allowed, 1k keys     the same, round-robin over 1,000 keys
 *   allowed, 100k keys   the same, round-robin over 100,000 keys (each stored first)
 *   denied, hot key      rate=1/hour, key 0 exhausted first: every check denied
 *   denied, 1k keys      rate=1/hour, round-robin over 1,000 exhausted keys
 * Exits 1 if an "allowed" check was denied or a "denied" one allowed.
 * Calls nothing but rl_create/rl_check/rl_destroy/rl_shm_unlink, so the
 * same binary runs against an older libratelimit.so (LD_LIBRARY_PATH).
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"

static char (*keys)[KEY_LEN + 1];
static const char *extra = "";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static rl_limiter *make(const char *backend, const char *rate)
{
    static unsigned n;
    char config[256], name[64];
    rl_limiter *lim = NULL;
    snprintf(name, sizeof name, "/rl-bench-top-%ld-%u", (long)getpid(), n++);
    if (strcmp(backend, "shm") == 0)
        snprintf(config, sizeof config, "rate=%s backend=shm name=%s %s", rate, name, extra);
    else
        snprintf(config, sizeof config, "rate=%s %s", rate, extra);
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "rl_create(\"%s\"): %s\n", config, rl_last_error());
        exit(1);
    }
    if (strcmp(backend, "shm") == 0)
        rl_shm_unlink(name); /* the handle keeps the region */
    return lim;
}

/* Times `iters` checks over keys[0 .. nkeys) round-robin; every one must
 * come out `want_allowed`. */
static double run(rl_limiter *lim, size_t nkeys, long iters, int want_allowed)
{
    rl_decision d;
    long i, bad = 0;
    size_t k = 0;
    double t0, t1;
    t0 = now_ns();
    for (i = 0; i < iters; i++) {
        rl_check(lim, keys[k], KEY_LEN, 1, &d);
        bad += (int)d.allowed != want_allowed;
        if (++k == nkeys)
            k = 0;
    }
    t1 = now_ns();
    if (bad) {
        fprintf(stderr, "bench_top: %ld checks not %s\n", bad, want_allowed ? "allowed" : "denied");
        exit(1);
    }
    return (t1 - t0) / (double)iters;
}

int main(int argc, char **argv)
{
    const char *backends[] = {"memory", "shm"};
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    size_t b, i;
    rl_decision d;

    (void)shuffle; /* keys.h's, for the other benchmarks */
    if (argc > 2)
        extra = argv[2];
    keys = malloc((size_t)MANY_KEYS * sizeof *keys);
    if (!keys)
        return 1;
    for (i = 0; i < MANY_KEYS; i++)
        make_key(keys[i], i);
    for (b = 0; b < 2; b++) {
        rl_limiter *lim = make(backends[b], "1000000000/s");
        run(lim, 1, iters / 10, 1); /* warm-up */
        printf("%s\tallowed, hot key\t%.2f\n", backends[b], run(lim, 1, iters, 1));
        run(lim, 1000, 1000, 1);
        printf("%s\tallowed, 1k keys\t%.2f\n", backends[b], run(lim, 1000, iters, 1));
        run(lim, MANY_KEYS, MANY_KEYS, 1); /* store every key */
        printf("%s\tallowed, 100k keys\t%.2f\n", backends[b], run(lim, MANY_KEYS, iters, 1));
        rl_destroy(lim);

        lim = make(backends[b], "1/hour");
        for (i = 0; i < 1000; i++)
            rl_check(lim, keys[i], KEY_LEN, 1, &d); /* spend each key's one unit */
        run(lim, 1, iters / 10, 0);
        printf("%s\tdenied, hot key\t%.2f\n", backends[b], run(lim, 1, iters, 0));
        printf("%s\tdenied, 1k keys\t%.2f\n", backends[b], run(lim, 1000, iters, 0));
        rl_destroy(lim);
    }
    free(keys);
    return 0;
}
