/*
 * helpers.h — the limiter helpers the C tests share, on top of check.h:
 *
 *   create("rate=5/s")          rl_create(CFG(config)): the limiter, or NULL
 *                               after a failed CHECK that prints the config
 *                               and rl_last_error().
 *   check(lim, "key", cost, &d) rl_check with a NUL-terminated key; the
 *                               decision is pre-filled with junk (0xAB) so
 *                               that a field the library forgot to fill shows.
 *
 * Include after <ratelimit.h> and "check.h".
 */
#ifndef RL_TEST_HELPERS_H
#define RL_TEST_HELPERS_H

#include <ratelimit.h>

#include "check.h"

static inline rl_limiter *create(const char *config)
{
    rl_limiter *lim = NULL;
    int rc = rl_create(CFG(config), &lim);
    if (!CHECK(rc == RL_OK && lim != NULL))
        fprintf(stderr, "    rl_create(\"%s\") = %d: %s\n", CFG(config), rc, rl_last_error());
    return lim;
}

static inline int check(rl_limiter *lim, const char *key, uint64_t cost, rl_decision *d)
{
    memset(d, 0xAB, sizeof *d);
    return rl_check(lim, key, strlen(key), cost, d);
}

#endif /* RL_TEST_HELPERS_H */
