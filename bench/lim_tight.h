/*
 * lim_tight.h — the tight hand-rolled limiter (tight.c, its own translation
 * unit as in an application) at 1,000,000,000 requests per 1-second window,
 * sized for the bench's largest case (MANY_KEYS = 100,000 keys: 262,144
 * slots of 64 bytes, a 16 MiB table, load factor 0.38).
 */
#ifndef LIM_TIGHT_H
#define LIM_TIGHT_H

#include <stddef.h>

#include "keys.h"
#include "tight.h"

#define LIMITER_NAME "tight hand-rolled C"

typedef tl_limiter limiter;

static limiter *limiter_new(int denying)
{
    return denying ? tl_limiter_new(1, 3600, MANY_KEYS) : tl_limiter_new(1000000000UL, 1, MANY_KEYS);
}

/* Only 1 counts as allowed: a refusal (-1: key too long, table full) is a
 * denial to the driver, which then fails the run. */
static inline int limiter_check(limiter *lim, const char *key, size_t key_len)
{
    return tl_allow(lim, key, key_len) == 1;
}

static void limiter_free(limiter *lim, long denied)
{
    (void)denied; /* it keeps no count */
    tl_limiter_free(lim);
}

#endif
