/*
 * header_c89.c — include/ratelimit.h must compile as C89 with -pedantic
 * (no `//` comments, no C99-only constructs), for the hosts still built
 * that way. Compiled with -fsyntax-only by `make test-c`.
 */
#include <ratelimit.h>

typedef int check_rl_ok_is_zero[RL_OK == 0 ? 1 : -1];

int main(void)
{
    rl_decision d;
    rl_stats s;
    int (*check_fn)(rl_limiter *, const void *, size_t, uint64_t, rl_decision *) = rl_check;

    (void)d;
    (void)s;
    (void)check_fn;
    return 0;
}
