/*
 * lim_ratelimit.h — libratelimit through its C API, as an application calls it:
 * rl_check() on a handle from rl_create(), linked with -lratelimit (the FFI
 * boundary, panic guard and decision struct included in the cost).
 *
 * Config: `rate=1000000000/minute capacity=400000` (RL_BENCH_CONFIG: token
 * bucket, burst 1e9, so it never denies at the speeds measured; a key is
 * fresh again 60 ns after its check), backend=memory; denying cases
 * `rate=1/h`. bench/layers.rs uses the same two.
 */
#ifndef LIM_RATELIMIT_H
#define LIM_RATELIMIT_H

#include <ratelimit.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef RL_BENCH_CONFIG
#define RL_BENCH_CONFIG "rate=1000000000/minute capacity=400000"
#endif
#define RL_BENCH_DENYING_RATE "rate=1/h"
#ifndef LIMITER_NAME
#define LIMITER_NAME "libratelimit (memory)"
#endif

typedef rl_limiter limiter;

#ifndef RL_BENCH_OWN_NEW /* lim_shm.h makes its own */
static limiter *limiter_new(int denying)
{
    rl_limiter *lim = NULL;
    if (rl_create(denying ? RL_BENCH_DENYING_RATE : RL_BENCH_CONFIG, &lim) != RL_OK)
        fprintf(stderr, "rl_create: %s\n", rl_last_error());
    return lim;
}
#endif

static inline int limiter_check(limiter *lim, const char *key, size_t key_len)
{
    rl_decision d;
    return rl_check(lim, key, key_len, 1, &d) == RL_OK && d.allowed;
}

static void limiter_free(limiter *lim, long denied)
{
    rl_stats s;
    /* The comparison is only fair if no key was dropped, and every denial
     * must be counted. (With shm the region's counters include the checks
     * of forked children.) */
    if (rl_stats_get(lim, &s) != RL_OK || s.evictions || s.limited != (unsigned long long)denied || s.errors) {
        fprintf(stderr, LIMITER_NAME ": unexpected stats: evictions %llu limited %llu errors %llu\n",
                (unsigned long long)s.evictions, (unsigned long long)s.limited,
                (unsigned long long)s.errors);
        exit(1);
    }
    rl_destroy(lim);
}

#endif
