/*
 * test_version.c — the header's RL_VERSION_MAJOR/MINOR/PATCH are what
 * rl_version() returns at run time (API.md v1), and the header's
 * declarations link against the library.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"

int main(void)
{
    char expected[64];

    snprintf(expected, sizeof expected, "%u.%u.%u", (unsigned)RL_VERSION_MAJOR,
             (unsigned)RL_VERSION_MINOR, (unsigned)RL_VERSION_PATCH);
    CHECK_STR(rl_version(), expected);
    /* usable in #if, as version checks are written */
#if RL_VERSION_MAJOR < 0 || RL_VERSION_MINOR < 0 || RL_VERSION_PATCH < 0
    CHECK(0);
#endif
    return CHECK_SUMMARY();
}
