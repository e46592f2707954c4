/*
 * tight.h — a tighter hand-rolled C rate limiter, the second baseline column
 * of `make bench` (issue 12): the same fixed window per key as handrolled.c,
 * `{request_count, window_start}`, but in ONE open-addressing table with the
 * key stored inline in its slot (no malloc per key, no pointer to chase),
 * FNV-1a, one pthread mutex around the table, time(NULL) as the clock.
 *
 * Keys are byte strings of 1 to TL_KEY_MAX (47) bytes, stored inline; a
 * longer (or empty) key is refused (tl_allow returns -1), not truncated or hashed. The
 * table never grows: it has room for the `max_keys` given at creation, at a
 * load factor of at most 0.5; a new key beyond that is refused (-1) too.
 */
#ifndef TIGHT_H
#define TIGHT_H

#include <stddef.h>

#define TL_KEY_MAX 47 /* bytes of key stored inline (a slot is one 64-byte line) */

typedef struct tl_limiter tl_limiter;

/* At most `max_requests` per key per window of `window_seconds`, for up to
 * `max_keys` distinct keys. NULL if out of memory or max_keys is too large. */
tl_limiter *tl_limiter_new(unsigned long max_requests, long window_seconds, size_t max_keys);
/* 1 if `key` (`len` bytes, need not be NUL-terminated) may make one more
 * request now, 0 if not; -1 if refused: len 0 or > TL_KEY_MAX, or a new key and
 * the table already holds max_keys keys. */
int tl_allow(tl_limiter *rl, const char *key, size_t len);
void tl_limiter_free(tl_limiter *rl);

#endif
