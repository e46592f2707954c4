/*
 * lim_shm.h — libratelimit with backend=shm through its C API: the same
 * rl_check() call as lim_ratelimit.h, on a region of POSIX shared memory
 * that pre-forked worker processes share.
 *
 * Config: lim_ratelimit.h's (`rate=1000000000/minute capacity=400000`: token
 * bucket, burst 1e9, never denies at the speeds measured; denying cases
 * `rate=1/h`) with `backend=shm name=/rl-bench-<pid>-<n>`: 32 bytes of slots
 * per key, 12.8 MB. A fresh region per case.
 *
 * The region's name is removed (rl_shm_unlink) right after rl_create: the
 * handle, and the copies of it that forked children inherit, keep working on
 * the region's memory (see rl_shm_unlink in ratelimit.h), which the system
 * frees at the last rl_destroy / process exit. So a runner that is killed or
 * fails half-way leaves nothing behind in /dev/shm.
 *
 * LIMITER_PROCESSES makes bench/driver.c run the 2-process cases as well:
 * the parent creates the handle, inserts the keys, then fork()s two children
 * that check through the inherited handle (the pre-fork server's model).
 */
#ifndef LIM_SHM_H
#define LIM_SHM_H

#define LIMITER_NAME "libratelimit (shm)"
#define LIMITER_PROCESSES 1
#define RL_BENCH_OWN_NEW
#include "lim_ratelimit.h" /* limiter_check, limiter_free */

#include <unistd.h>

static limiter *limiter_new(int denying)
{
    static unsigned n;
    char name[64], config[128];
    rl_limiter *lim = NULL;
    snprintf(name, sizeof name, "/rl-bench-%ld-%u", (long)getpid(), n++);
    snprintf(config, sizeof config, "%s backend=shm name=%s", denying ? RL_BENCH_DENYING_RATE : RL_BENCH_CONFIG,
             name);
    if (rl_create(config, &lim) != RL_OK) {
        fprintf(stderr, "rl_create(\"%s\"): %s\n", config, rl_last_error());
        return NULL;
    }
    if (rl_shm_unlink(name) != RL_OK) {
        fprintf(stderr, "rl_shm_unlink(\"%s\"): %s\n", name, rl_last_error());
        rl_destroy(lim);
        return NULL;
    }
    return lim;
}

#endif
