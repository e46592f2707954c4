/*
 * check.h — a tiny assertion kit for the C tests of libratelimit.
 *
 *   CHECK(cond)          counts a pass, or prints "file:line: CHECK(cond) failed"
 *                        and counts a failure; execution goes on either way.
 *   CHECK_EQ(a, b)       like CHECK(a == b) for integers, and prints both values.
 *   CHECK_STR(a, b)      like CHECK(strcmp(a, b) == 0), and prints both strings.
 *   CHECK_CONTAINS(h, n) CHECK that string h contains n, printing h.
 *   CHECK_SUMMARY()      prints "N passed, N failed"; returns the exit status.
 *
 * Test support shared by every test program:
 *
 *   CFG("rate=5/s")      the config string to give rl_create: the argument, plus
 *                        " " and the environment variable RL_TEST_BACKEND_CONFIG
 *                        when it is set (e.g. "backend=shm name=/rl-test-{n}").
 *                        Every "{n}" in that variable becomes a string unique to
 *                        this process and call (pid.counter), so that each limiter
 *                        of a shared backend gets its own region / key prefix.
 *                        The variable is NOT appended when the argument already
 *                        names a backend ("backend=" in it). Default: memory.
 *                        Put only backend keys in it (backend, name, url, prefix,
 *                        timeout_ms, mode): the tests set rate, algorithm, burst,
 *                        capacity and on_error themselves, and a key given twice
 *                        is a config error. E.g.
 *                          RL_TEST_BACKEND_CONFIG='backend=shm name=/rl-test-{n}'
 *                        (a fixed name would make limiters with different
 *                        rates collide: RL_ERR_INCOMPATIBLE).
 *   test_backend_is(s)   whether RL_TEST_BACKEND_CONFIG mentions "backend=s".
 *   test_sleep_ms(ms)    nanosleep.
 *
 * Header-only and single-threaded by intent: CHECK may be called from several
 * threads only if the caller serialises it (the thread tests count in the
 * threads and CHECK the totals in main).
 */
#ifndef RL_TEST_CHECK_H
#define RL_TEST_CHECK_H

/* Needs POSIX (nanosleep, getpid): a test defines _POSIX_C_SOURCE 200809L on
 * its first line, before <ratelimit.h> pulls in any system header. */
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#error "define _POSIX_C_SOURCE 200809L before including any header"
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int check_passed_;
static int check_failed_;

static inline int check_impl_(int ok, const char *expr, const char *file, int line)
{
    if (ok) {
        check_passed_++;
    } else {
        check_failed_++;
        fprintf(stderr, "%s:%d: CHECK(%s) failed\n", file, line, expr);
        fflush(stderr);
    }
    return ok;
}

static inline int check_eq_impl_(uint64_t a, uint64_t b, const char *ea, const char *eb,
                                 const char *file, int line)
{
    int ok = check_impl_(a == b, "==", file, line);
    if (!ok) {
        fprintf(stderr, "    %s = %" PRIu64 " (%" PRId64 ")\n    %s = %" PRIu64 " (%" PRId64 ")\n",
                ea, a, (int64_t)a, eb, b, (int64_t)b);
    }
    return ok;
}

static inline int check_str_impl_(const char *a, const char *b, const char *ea,
                                  const char *eb, const char *file, int line)
{
    int ok = check_impl_(a != NULL && b != NULL && strcmp(a, b) == 0, "strings equal",
                         file, line);
    if (!ok) {
        fprintf(stderr, "    %s = \"%s\"\n    %s = \"%s\"\n", ea, a ? a : "(null)", eb,
                b ? b : "(null)");
    }
    return ok;
}

static inline int check_contains_impl_(const char *hay, const char *needle, const char *eh,
                                       const char *file, int line)
{
    int ok = check_impl_(hay != NULL && needle != NULL && strstr(hay, needle) != NULL,
                         "contains", file, line);
    if (!ok) {
        fprintf(stderr, "    %s = \"%s\"\n    does not contain \"%s\"\n", eh,
                hay ? hay : "(null)", needle ? needle : "(null)");
    }
    return ok;
}

#define CHECK(cond) check_impl_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)
#define CHECK_EQ(a, b) \
    check_eq_impl_((uint64_t)(a), (uint64_t)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_STR(a, b) check_str_impl_((a), (b), #a, #b, __FILE__, __LINE__)
#define CHECK_CONTAINS(hay, needle) \
    check_contains_impl_((hay), (needle), #hay, __FILE__, __LINE__)

static inline int check_summary_(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    fflush(stdout);
    return check_failed_ == 0 ? 0 : 1;
}
#define CHECK_SUMMARY() check_summary_()

/* ---- test support ------------------------------------------------------ */

static inline const char *test_backend_config(void)
{
    const char *s = getenv("RL_TEST_BACKEND_CONFIG");
    return s ? s : "";
}

static inline int test_backend_is(const char *name)
{
    char want[64];
    snprintf(want, sizeof want, "backend=%s", name);
    return strstr(test_backend_config(), want) != NULL;
}

/* A ring of buffers, so a few CFG() results may be alive at once. */
#define CFG_RING 8
#define CFG_LEN 4096

static inline const char *CFG(const char *base)
{
    static char ring[CFG_RING][CFG_LEN];
    static unsigned next;
    static unsigned serial;
    char *out = ring[next++ % CFG_RING];
    const char *extra = strstr(base, "backend=") ? "" : test_backend_config();
    size_t n = 0;
    const char *p;
    char uniq[64];

    snprintf(uniq, sizeof uniq, "%ld.%u", (long)getpid(), serial++);
    n += (size_t)snprintf(out, CFG_LEN, "%s", base);
    if (*extra) {
        if (n + 1 < CFG_LEN) {
            out[n++] = ' ';
            out[n] = '\0';
        }
        for (p = extra; *p && n + 1 < CFG_LEN; p++) {
            if (strncmp(p, "{n}", 3) == 0) {
                n += (size_t)snprintf(out + n, CFG_LEN - n, "%s", uniq);
                if (n >= CFG_LEN)
                    n = CFG_LEN - 1;
                p += 2;
            } else {
                out[n++] = *p;
                out[n] = '\0';
            }
        }
    }
    return out;
}

static inline void test_sleep_ms(unsigned ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif /* RL_TEST_CHECK_H */
