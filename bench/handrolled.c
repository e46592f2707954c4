/*
 * handrolled.c — the rate limiter a C tutorial teaches, written honestly:
 * what a careful programmer following one would ship, no slower on purpose.
 *
 *   - fixed window: each key has {count, window_start}; a new window starts
 *     when `window_seconds` have passed since the current one began;
 *   - a chained hash table with a fixed number of buckets (sized so that the
 *     benchmark's 100,000 keys give chains of length < 1 on average), keys
 *     strdup'ed, djb2 string hash, strcmp to compare;
 *   - one pthread mutex for the whole table; the hash is computed before
 *     taking it;
 *   - time(NULL) for the clock (second resolution, wall clock; the cheapest
 *     call there is).
 *
 * What it does not do (and libratelimit does): bound memory (every key ever
 * seen stays forever), resist chosen-key collisions (djb2 is unkeyed), use a
 * monotonic clock, count anything finer than a second, several rates, costs,
 * retry-after, or let two threads work at the same time.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include "handrolled.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TABLE_SIZE 131072 /* buckets */

typedef struct entry {
    char *key;
    unsigned long count;
    time_t window_start;
    struct entry *next;
} entry;

struct hr_limiter {
    pthread_mutex_t lock;
    unsigned long max_requests;
    long window_seconds;
    entry *buckets[TABLE_SIZE];
};

static unsigned long hash(const char *str)
{
    unsigned long h = 5381;
    int c;
    while ((c = (unsigned char)*str++))
        h = ((h << 5) + h) + (unsigned long)c; /* h * 33 + c */
    return h;
}

hr_limiter *hr_limiter_new(unsigned long max_requests, long window_seconds)
{
    hr_limiter *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    pthread_mutex_init(&rl->lock, NULL);
    rl->max_requests = max_requests;
    rl->window_seconds = window_seconds;
    return rl;
}

int hr_allow(hr_limiter *rl, const char *key)
{
    unsigned long idx = hash(key) % TABLE_SIZE;
    time_t now = time(NULL);
    entry *e;
    int allowed;

    pthread_mutex_lock(&rl->lock);
    for (e = rl->buckets[idx]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            break;
    if (!e) {
        e = malloc(sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            free(e);
            pthread_mutex_unlock(&rl->lock);
            return 1; /* out of memory: fail open */
        }
        e->count = 0;
        e->window_start = now;
        e->next = rl->buckets[idx];
        rl->buckets[idx] = e;
    }
    if (now - e->window_start >= rl->window_seconds) {
        e->window_start = now;
        e->count = 0;
    }
    allowed = e->count < rl->max_requests;
    if (allowed)
        e->count++;
    pthread_mutex_unlock(&rl->lock);
    return allowed;
}

void hr_limiter_free(hr_limiter *rl)
{
    size_t i;
    if (!rl)
        return;
    for (i = 0; i < TABLE_SIZE; i++) {
        entry *e = rl->buckets[i];
        while (e) {
            entry *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}
