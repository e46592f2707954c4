/*
 * tight.c — the fixed-window limiter of handrolled.c without its avoidable
 * costs, as a C programmer who cares about speed would write it:
 *
 *   - each key's {request_count, window_start} and the key itself live in
 *     one 64-byte slot (47 key bytes, 1 length byte, 8 + 8 bytes of state)
 *     of one open-addressing table, 64-byte aligned: a hit touches one cache
 *     line and no pointer;
 *   - the table has a power-of-two number of slots, at least twice the keys
 *     it is created for (load factor <= 0.5), linear probing;
 *   - FNV-1a (64-bit) over the key's bytes, computed before taking the lock,
 *     as is time(NULL) (second resolution, wall clock);
 *   - one pthread mutex around the table.
 *
 * Keys longer than TL_KEY_MAX bytes (or empty) are refused (-1), and so is a new key
 * once the table holds the keys it was sized for: it never grows, never
 * evicts, and has no deletion (so no tombstones). Like handrolled.c it does
 * not resist chosen-key collisions (FNV-1a is unkeyed), use a monotonic
 * clock, count finer than a second, or let two threads work at once.
 */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */

#include "tight.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    char key[TL_KEY_MAX];
    unsigned char len; /* 0: empty slot (keys are 1..TL_KEY_MAX bytes) */
    unsigned long request_count;
    time_t window_start;
} slot;

/* One slot, one cache line (on LP64), 64-byte aligned in the table. */
typedef char slot_is_one_cache_line[sizeof(slot) == 64 || sizeof(long) != 8 ? 1 : -1];

struct tl_limiter {
    pthread_mutex_t lock;
    unsigned long max_requests;
    long window_seconds;
    size_t mask;     /* slots - 1 */
    size_t max_keys; /* at most slots / 2 */
    size_t used;
    slot *slots;
};

static uint64_t fnv1a(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

tl_limiter *tl_limiter_new(unsigned long max_requests, long window_seconds, size_t max_keys)
{
    tl_limiter *rl;
    void *mem;
    size_t slots = 2;
    while (slots < 2 * max_keys) {
        if (slots > ((size_t)-1 / sizeof(slot)) / 4)
            return NULL;
        slots *= 2;
    }
    rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    if (posix_memalign(&mem, 64, slots * sizeof(slot)) != 0) {
        free(rl);
        return NULL;
    }
    memset(mem, 0, slots * sizeof(slot));
    pthread_mutex_init(&rl->lock, NULL);
    rl->max_requests = max_requests;
    rl->window_seconds = window_seconds;
    rl->mask = slots - 1;
    rl->max_keys = max_keys;
    rl->slots = mem;
    return rl;
}

int tl_allow(tl_limiter *rl, const char *key, size_t len)
{
    uint64_t h;
    time_t now;
    size_t i;
    slot *s;
    int allowed;

    /* The empty key would look like an empty slot: refused. */
    if (len == 0 || len > TL_KEY_MAX)
        return -1;
    h = fnv1a(key, len);
    now = time(NULL);

    pthread_mutex_lock(&rl->lock);
    for (i = (size_t)h & rl->mask;; i = (i + 1) & rl->mask) {
        s = &rl->slots[i];
        if (s->len == len && memcmp(s->key, key, len) == 0)
            break;
        if (s->len == 0) { /* not there: take this empty slot */
            if (rl->used == rl->max_keys) {
                pthread_mutex_unlock(&rl->lock);
                return -1;
            }
            rl->used++;
            memcpy(s->key, key, len);
            s->len = (unsigned char)len;
            s->request_count = 0;
            s->window_start = now;
            break;
        }
    }
    if (now - s->window_start >= rl->window_seconds) {
        s->window_start = now;
        s->request_count = 0;
    }
    allowed = s->request_count < rl->max_requests;
    if (allowed)
        s->request_count++;
    pthread_mutex_unlock(&rl->lock);
    return allowed;
}

void tl_limiter_free(tl_limiter *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl->slots);
    free(rl);
}
