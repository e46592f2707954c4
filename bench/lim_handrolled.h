/*
 * lim_handrolled.h — the tutorial limiter (handrolled.c, its own translation
 * unit as in an application) at 1,000,000,000 requests per 1-second window.
 */
#ifndef LIM_HANDROLLED_H
#define LIM_HANDROLLED_H

#include <stddef.h>

#include "handrolled.h"

#define LIMITER_NAME "hand-rolled C"

typedef hr_limiter limiter;

static limiter *limiter_new(int denying)
{
    return denying ? hr_limiter_new(1, 3600) : hr_limiter_new(1000000000UL, 1);
}

static inline int limiter_check(limiter *lim, const char *key, size_t key_len)
{
    (void)key_len; /* the tutorial API takes NUL-terminated strings */
    return hr_allow(lim, key);
}

static void limiter_free(limiter *lim, long denied)
{
    (void)denied; /* it keeps no count */
    hr_limiter_free(lim);
}

#endif
