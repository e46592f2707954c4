/*
 * keys.h — the keys every limiter in `make bench` is checked with.
 *
 * Key i is "api-key-" and i in 8 decimal digits (16 bytes), as in the
 * issue that set the round-2 targets; bench/cases.rs (governor, the floor)
 * makes the very same strings. Keys 0..MANY_KEYS are the
 * "100k keys" case (key 0 is also the hot key); the two threads of
 * "2 threads, own keys" (and the two processes of "2 processes, own keys")
 * take the next THREAD_KEYS keys each.
 *
 * Keys are inserted (untimed warm-up) in index order and then checked, timed,
 * round-robin in a fixed shuffled order (shuffle() below), as traffic
 * would: a limiter whose entries happen to sit in memory in arrival order
 * must not get the prefetcher's help for free.
 */
#ifndef BENCH_KEYS_H
#define BENCH_KEYS_H

#include <stdio.h>

#define KEY_LEN 16
#define MANY_KEYS 100000
#define THREAD_KEYS 1000
#define TOTAL_KEYS (MANY_KEYS + 2 * THREAD_KEYS)

#define CASE_HOT "hot key"
#define CASE_MANY "100k keys"
#define CASE_THREADS_OWN "2 threads, own keys"
#define CASE_THREADS_ONE "2 threads, one key"
#define CASE_PROCS_OWN "2 processes, own keys"
#define CASE_PROCS_ONE "2 processes, one key"
/* A key over its limit (1 per hour), hammered: every timed check is denied. */
#define CASE_DENIED_HOT "denied: hot key"
#define CASE_DENIED_THREADS "denied: 2 threads, one key"

static unsigned long long splitmix64(unsigned long long x)
{
    unsigned long long z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void make_key(char out[KEY_LEN + 1], unsigned long long i)
{
    snprintf(out, KEY_LEN + 1, "api-key-%08llu", i);
}

/* Fisher-Yates with j = splitmix64(SHUFFLE_SEED + i) % (i + 1), i = n-1 .. 1. */
#define SHUFFLE_SEED 0x5EEDULL
static void shuffle(size_t *idx, size_t n)
{
    size_t i, j, t;
    for (i = n; i-- > 1;) {
        j = (size_t)(splitmix64(SHUFFLE_SEED + i) % (i + 1));
        t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

#endif
