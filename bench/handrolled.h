/*
 * handrolled.h — the hand-rolled C rate limiter of the usual tutorials, the
 * baseline column of `make bench`: a fixed window per key, `{count,
 * window_start}` in a chained hash table of strdup'ed string keys (djb2),
 * one pthread mutex around everything, time(NULL) as the clock.
 */
#ifndef HANDROLLED_H
#define HANDROLLED_H

typedef struct hr_limiter hr_limiter;

/* At most `max_requests` per key per window of `window_seconds`. */
hr_limiter *hr_limiter_new(unsigned long max_requests, long window_seconds);
/* 1 if `key` (a NUL-terminated string) may make one more request now. */
int hr_allow(hr_limiter *rl, const char *key);
void hr_limiter_free(hr_limiter *rl);

#endif
