/*
 * test_describe.c — rl_describe: snprintf semantics, NULL arguments, the
 * canonical text, and that the text makes an equivalent limiter again;
 * passwords masked; hostile configuration strings (1 MiB, quotes,
 * newlines, control characters).
 *
 * Limiters made with create() honour RL_TEST_BACKEND_CONFIG (check.h), so
 * the same checks run on every backend.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#define MIB (1024 * 1024)

/* The description of `lim`, in a static buffer (empty on failure). */
static const char *described(rl_limiter *lim)
{
    static char text[4096];
    int64_t n = rl_describe(lim, text, sizeof text);
    if (!CHECK(n > 0 && (size_t)n < sizeof text))
        text[0] = '\0';
    return text;
}

static void test_snprintf_semantics(void)
{
    rl_limiter *lim = create("rate=5/s");
    char whole[4096], cut[16], one[1];
    int64_t n;

    if (!lim)
        return;
    n = rl_describe(lim, NULL, 0); /* NULL buf with 0 length: the length */
    CHECK(n > 20);
    CHECK_STR(rl_last_error(), "");
    CHECK_EQ(rl_describe(lim, whole, sizeof whole), n);
    CHECK_EQ(strlen(whole), n);
    CHECK(strncmp(whole, "rate=5/s algorithm=token_bucket burst=5 ", 40) == 0);
    CHECK_CONTAINS(whole, " on_error=allow dry_run=off");
    CHECK(strchr(whole, '\n') == NULL && strstr(whole, "  ") == NULL);

    /* a 1-byte buffer: just the NUL, and the length needed */
    one[0] = 'x';
    CHECK_EQ(rl_describe(lim, one, 1), n);
    CHECK_EQ(one[0], '\0');

    /* a short buffer: its first buf_len - 1 bytes and a NUL, nothing past it */
    memset(cut, 'Z', sizeof cut);
    CHECK_EQ(rl_describe(lim, cut, 8), n);
    CHECK(memcmp(cut, whole, 7) == 0);
    CHECK_EQ(cut[7], '\0');
    CHECK_EQ(cut[8], 'Z');

    /* exactly n bytes is one too few; n + 1 is enough */
    {
        char *exact = malloc((size_t)n + 2);
        if (CHECK(exact != NULL)) {
            exact[n] = 'Z';
            exact[n + 1] = 'Z';
            CHECK_EQ(rl_describe(lim, exact, (size_t)n), n);
            CHECK_EQ(strlen(exact), n - 1);
            CHECK_EQ(exact[n + 1], 'Z');
            CHECK_EQ(rl_describe(lim, exact, (size_t)n + 1), n);
            CHECK_STR(exact, whole);
            CHECK_EQ(exact[n + 1], 'Z');
            free(exact);
        }
    }

    /* NULL arguments */
    CHECK_EQ(rl_describe(lim, NULL, 5), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "buf");
    strcpy(cut, "junk");
    CHECK_EQ(rl_describe(NULL, cut, sizeof cut), RL_ERR_NULL);
    CHECK_EQ(cut[0], '\0'); /* the empty string on an error */
    CHECK_CONTAINS(rl_last_error(), "lim");
    CHECK_EQ(rl_describe(NULL, NULL, 0), RL_ERR_NULL);
    CHECK_EQ(rl_describe(lim, whole, sizeof whole), n);
    CHECK_STR(rl_last_error(), "");
    rl_destroy(lim);
}

/* The text makes a limiter that describes itself the same way and decides
 * the same (with shm: it opens the same region). */
static void test_round_trip(void)
{
    const char *configs[] = {
        "rate=100/minute",
        "rate=5/10s,1000/hour algorithm=sliding_window on_error=deny",
        "rate=7/250ms algorithm=fixed_window dry_run=on",
        "rate=3/60000ms burst=9 dry_run=off",
        "rate=0000000000000000000004/2d,9/24h",
        "rate=4/s top=0",
        "rate=4/s top=1024 dry_run=on",
    };
    size_t i;
    for (i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        rl_limiter *lim = create(configs[i]), *again = NULL;
        char text[4096];
        rl_decision d;
        int rc;
        if (!lim)
            continue;
        strcpy(text, described(lim));
        CHECK(strstr(text, "backend=") != NULL);
        rc = rl_create(text, &again);
        if (strstr(text, ":***@")) {
            /* a password (RL_TEST_BACKEND_CONFIG's url) is masked: refused */
            CHECK_EQ(rc, RL_ERR_CONFIG);
            CHECK_CONTAINS(rl_last_error(), "***");
        } else if (CHECK_EQ(rc, RL_OK)) {
            CHECK_STR(described(again), text);
            /* the same limits: a key spent through one is spent in both
             * when they share state (shm, redis), and fresh otherwise */
            CHECK_EQ(check(again, "k", 0, &d), RL_OK);
            CHECK_EQ(d.allowed, 1);
            rl_destroy(again);
        } else {
            fprintf(stderr, "    rl_create(\"%s\"): %s\n", text, rl_last_error());
        }
        rl_destroy(lim);
    }
    /* what the canonical form looks like */
    {
        rl_limiter *lim = create("rate=100/minute,5000/d dry_run=on on_error=deny");
        if (lim) {
            const char *t = described(lim);
            CHECK(strncmp(t, "rate=100/min,5000/d algorithm=token_bucket ", 43) == 0);
            CHECK_CONTAINS(t, " top=32 backend="); /* top right after capacity, on every backend */
            CHECK_CONTAINS(t, " on_error=deny dry_run=on");
            rl_destroy(lim);
        }
    }
}

/* A url password never appears; the masked text is refused, not used. */
static void test_password_is_masked(void)
{
    rl_limiter *lim = NULL, *again = (rl_limiter *)&lim;
    const char *t;
    CHECK_EQ(rl_create("rate=5/s backend=redis url=redis://alice:Zq7xS3cret@127.0.0.1:1", &lim), RL_OK);
    if (!lim)
        return;
    t = described(lim);
    CHECK_CONTAINS(t, "url=redis://alice:***@127.0.0.1:1");
    CHECK(strstr(t, "Zq7x") == NULL);
    CHECK_EQ(rl_create(t, &again), RL_ERR_CONFIG);
    CHECK(again == NULL);
    CHECK_CONTAINS(rl_last_error(), "***");
    CHECK_CONTAINS(rl_last_error(), "rl_describe");
    rl_destroy(lim);
    /* a password that really is *** can be percent-encoded */
    CHECK_EQ(rl_create("rate=5/s backend=redis url=redis://u:%2A%2A%2A@127.0.0.1:1", &lim), RL_OK);
    rl_destroy(lim);
}

/* Strings a caller might pass: huge, quoted, multi-line, with controls. */
static void test_hostile_strings(void)
{
    char *big = malloc(MIB + 256);
    rl_limiter *lim = NULL;
    int64_t n;
    char one[1];

    if (!CHECK(big != NULL))
        return;
    /* 1 MiB of leading zeros is still the number 5 (rl_create directly:
     * CFG() keeps 4 KiB) */
    strcpy(big, "rate=");
    memset(big + 5, '0', MIB);
    strcpy(big + 5 + MIB, "5/s");
    if (CHECK_EQ(rl_create(big, &lim), RL_OK)) {
        CHECK(strncmp(described(lim), "rate=5/s algorithm=token_bucket burst=5 ", 40) == 0);
        rl_destroy(lim);
    }
    /* 1 MiB of junk: refused, with a short message */
    memset(big, 'x', MIB);
    strcpy(big + MIB, "=1 rate=5/s");
    CHECK_EQ(rl_create(big, &lim), RL_ERR_CONFIG);
    CHECK(strlen(rl_last_error()) < 400);
    /* a 1 MiB prefix is described whole (snprintf semantics) */
    n = (int64_t)sprintf(big, "rate=5/s backend=redis url=redis://127.0.0.1:1 prefix=");
    memset(big + n, 'p', MIB);
    big[n + MIB] = '\0';
    if (CHECK_EQ(rl_create(big, &lim), RL_OK)) {
        n = rl_describe(lim, NULL, 0);
        CHECK(n > MIB && n < MIB + 200);
        CHECK_EQ(rl_describe(lim, one, 1), n);
        CHECK_EQ(one[0], '\0');
        rl_destroy(lim);
    }
    free(big);

    /* quotes are just characters; newlines, tabs and CRs separate tokens */
    if (CHECK_EQ(rl_create("rate=5/s\nbackend=redis\r\nurl=redis://127.0.0.1:1\tprefix=\"q\"'x':", &lim), RL_OK)) {
        CHECK_CONTAINS(described(lim), " prefix=\"q\"'x': ");
        rl_destroy(lim);
    }
    /* control characters are refused, and not echoed raw */
    CHECK_EQ(rl_create("rate=5/s backend=redis url=redis://127.0.0.1:1 prefix=a\033[2Jb", &lim), RL_ERR_CONFIG);
    CHECK(strchr(rl_last_error(), '\033') == NULL);
    CHECK_CONTAINS(rl_last_error(), "control");
    CHECK_EQ(rl_create("rate=5/s\v", &lim), RL_ERR_CONFIG);
    CHECK(lim == NULL);
}

int main(void)
{
    test_snprintf_semantics();
    test_round_trip();
    test_password_is_masked();
    test_hostile_strings();
    return CHECK_SUMMARY();
}
