/*
 * test_config.c — rl_create / rl_destroy / rl_strerror / rl_version /
 * rl_last_error, driven only through <ratelimit.h>.
 *
 * Every config goes through CFG() (check.h), which appends
 * $RL_TEST_BACKEND_CONFIG, so the same checks run against any backend.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */

#include <ratelimit.h>

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* rl_create must fail with RL_ERR_CONFIG, leave *out NULL, and leave an error
 * message naming the offending token: it must contain one of `names`
 * (a NULL-terminated list: the key or the bad value, whichever the library
 * chooses to quote). */
static void expect_config_error_(const char *config, const char *const *names,
                                 const char *file, int line)
{
    rl_limiter *lim = (rl_limiter *)(void *)&lim; /* any non-NULL junk */
    int rc = rl_create(CFG(config), &lim);
    const char *msg = rl_last_error();
    int named = 0;
    const char *const *n;

    for (n = names; *n; n++)
        if (msg && strstr(msg, *n))
            named = 1;
    if (!check_impl_(rc == RL_ERR_CONFIG && lim == NULL && msg && *msg && named,
                     "config rejected, naming the token", file, line)) {
        fprintf(stderr, "    config \"%s\": rc=%d out=%p last_error=\"%s\"\n", config, rc,
                (void *)lim, msg ? msg : "(null)");
        fprintf(stderr, "    expected RL_ERR_CONFIG (%d), out NULL, and one of:", RL_ERR_CONFIG);
        for (n = names; *n; n++)
            fprintf(stderr, " \"%s\"", *n);
        fprintf(stderr, "\n");
        if (rc == RL_OK)
            rl_destroy(lim);
    }
}
#define BAD(config, ...)                                                      \
    do {                                                                      \
        static const char *const names_[] = {__VA_ARGS__, NULL};              \
        expect_config_error_((config), names_, __FILE__, __LINE__);           \
    } while (0)

/* rl_create must succeed; returns the handle (NULL on failure). */
static rl_limiter *expect_ok_(const char *config, const char *file, int line)
{
    rl_limiter *lim = NULL;
    int rc = rl_create(CFG(config), &lim);
    if (!check_impl_(rc == RL_OK && lim != NULL, "config accepted", file, line))
        fprintf(stderr, "    config \"%s\": rc=%d last_error=\"%s\"\n", config, rc,
                rl_last_error());
    else
        check_impl_(rl_last_error()[0] == '\0', "rl_last_error() is \"\" after success",
                    file, line);
    return rc == RL_OK ? lim : NULL;
}
#define GOOD(config) expect_ok_((config), __FILE__, __LINE__)

/* Creates `config`, peeks a fresh key, checks limit and window_ms. */
static void expect_rate_(const char *config, uint64_t limit, uint64_t window_ms,
                         const char *file, int line)
{
    rl_limiter *lim = expect_ok_(config, file, line);
    rl_decision d;
    if (!lim)
        return;
    memset(&d, 0xAB, sizeof d);
    if (check_impl_(rl_check(lim, "k", 1, 0, &d) == RL_OK, "peek ok", file, line)) {
        if (!check_impl_(d.limit == limit && d.window_ms == window_ms && d.allowed == 1,
                         "limit and window_ms of the deciding rate", file, line))
            fprintf(stderr,
                    "    config \"%s\": limit %" PRIu64 " window_ms %" PRIu64
                    " allowed %u; want %" PRIu64 ", %" PRIu64 ", 1\n",
                    config, d.limit, d.window_ms, d.allowed, limit, window_ms);
    }
    rl_destroy(lim);
}
#define RATE(config, limit, window_ms) \
    expect_rate_((config), (limit), (window_ms), __FILE__, __LINE__)

static void test_create_null_args(void)
{
    rl_limiter *lim = (rl_limiter *)(void *)&lim;

    CHECK_EQ(rl_create(CFG("rate=5/s"), NULL), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');

    CHECK_EQ(rl_create(NULL, &lim), RL_ERR_NULL);
    CHECK(lim == NULL);
    CHECK(rl_last_error()[0] != '\0');

    /* rl_destroy(NULL) is a no-op */
    rl_destroy(NULL);
    CHECK(1);
}

static void test_config_errors(void)
{
    /* unknown, repeated, missing keys */
    BAD("rate=5/s burts=5", "burts");
    BAD("rate=5/s rate=6/s", "rate");
    BAD("rate=5/s algorithm=fixed_window algorithm=sliding_window", "algorithm");
    BAD("burst=5", "rate");
    if (test_backend_is("shm")) {
        /* backend=shm name=... alone attaches to an existing region: there is none */
        rl_limiter *lim = NULL;
        CHECK_EQ(rl_create(CFG(""), &lim), RL_ERR_IO);
        CHECK_CONTAINS(rl_last_error(), "no shm region");
        CHECK_EQ(rl_create(CFG("   \t\n "), &lim), RL_ERR_IO);
        CHECK(lim == NULL);
    } else {
        BAD("", "rate");
        BAD("   \t\n ", "rate");
    }

    /* bad rates */
    BAD("rate=abc", "abc", "rate");
    BAD("rate=0/s", "0/s", "rate");
    BAD("rate=5/0s", "5/0s", "0s", "rate");
    BAD("rate=5/fortnight", "fortnight", "rate");
    BAD("rate=5/", "5/", "rate");
    BAD("rate=/s", "/s", "rate");
    BAD("rate=5/s,", "5/s,", "rate");
    BAD("rate=,5/s", ",5/s", "rate");
    BAD("rate=5", "5", "rate");
    BAD("rate=-5/s", "-5", "rate");
    BAD("rate=5/-1s", "-1s", "rate");
    BAD("rate=5/s/s", "5/s/s", "rate");
    BAD("rate=5/1.5s", "1.5s", "rate");
    BAD("rate=99999999999999999999999/s", "99999999999999999999999", "rate");

    /* other bad values */
    BAD("rate=5/s algorithm=leaky_bucket", "leaky_bucket", "algorithm");
    BAD("rate=5/s,100/minute burst=20", "burst");
    BAD("rate=5/s burst=0", "burst");
    BAD("rate=5/s burst=abc", "abc", "burst");
    BAD("rate=5/s backend=bogus", "bogus", "backend");
    BAD("rate=5/s on_error=maybe", "maybe", "on_error");
    BAD("rate=5/s capacity=0", "capacity");
    BAD("rate=5/s capacity=lots", "lots", "capacity");
    BAD("rate=5/s timeout_ms=abc", "abc", "timeout_ms");
    BAD("rate=5/s timeout_ms=-1", "-1", "timeout_ms");
    /* 8 and 9 are not octal digits */
    BAD("rate=5/s mode=0999", "0999", "mode");
    BAD("rate=5/s mode=rw", "rw", "mode");

    /* malformed tokens */
    BAD("rate=5/s burst", "burst");
    BAD("rate", "rate");
    BAD("rate=5 /s", "/s");
    BAD("rate=5/s algorithm=", "algorithm");
    BAD("rate=", "rate");
    BAD("rate=5/s =5", "=5");
}

static void test_config_valid(void)
{
    rl_limiter *lim;
    const char *const valid[] = {
        "rate=100/minute",
        "rate=5/10s",
        "rate=10/s,1000/hour",
        "rate=5/s algorithm=token_bucket",
        "rate=5/s algorithm=fixed_window",
        "rate=5/s algorithm=sliding_window",
        "rate=10/s,1000/hour algorithm=fixed_window",
        "rate=10/s,1000/hour algorithm=sliding_window",
        "rate=5/s burst=20",
        "rate=5/s algorithm=token_bucket burst=1",
        "  rate=5/s\t\talgorithm=fixed_window \n capacity=1000\n",
        "\n\trate=5/s\n",
        "rate=5/s capacity=1",
        /* assumption: on_error is accepted with every backend (memory never
         * fails, so it simply never applies there) */
        "rate=5/s on_error=allow",
        "rate=5/s on_error=deny",
        NULL,
    };
    const char *const *c;

    for (c = valid; *c; c++) {
        /* backend=redis refuses capacity= (Redis bounds its own memory) */
        if (test_backend_is("redis") && strstr(*c, "capacity=")) {
            printf("skipped with backend=redis: a valid config with capacity=\n");
            continue;
        }
        lim = GOOD(*c);
        rl_destroy(lim);
    }

    /* every unit, with and without N; window_ms follows */
    RATE("rate=7/ms", 7, 1);
    RATE("rate=7/250ms", 7, 250);
    RATE("rate=7/s", 7, 1000);
    RATE("rate=7/sec", 7, 1000);
    RATE("rate=7/second", 7, 1000);
    RATE("rate=7/10s", 7, 10000);
    RATE("rate=7/m", 7, 60000);
    RATE("rate=7/min", 7, 60000);
    RATE("rate=7/minute", 7, 60000);
    RATE("rate=7/5min", 7, 300000);
    RATE("rate=7/h", 7, 3600000);
    RATE("rate=7/hour", 7, 3600000);
    RATE("rate=7/2h", 7, 7200000);
    RATE("rate=7/d", 7, 86400000);
    RATE("rate=7/day", 7, 86400000);
    RATE("rate=7/1day", 7, 86400000);
    RATE("rate=100/minute", 100, 60000);
    RATE("rate=5/10s", 5, 10000);
    /* burst is the bucket capacity: that is the rate's limit */
    RATE("rate=5/s burst=20", 20, 1000);
    /* several rates: a fresh key has remaining = limit in each; the deciding
     * rate is the one with the least remaining: 10/s */
    RATE("rate=10/s,1000/hour", 10, 1000);
    RATE("rate=1000/hour,10/s", 10, 1000);
    RATE("rate=3/s algorithm=fixed_window", 3, 1000);
    RATE("rate=3/s algorithm=sliding_window", 3, 1000);
}

static void test_strerror_version(void)
{
    const int codes[] = {RL_OK,          RL_ERR_NULL,         RL_ERR_CONFIG,
                         RL_ERR_IO,      RL_ERR_BACKEND,      RL_ERR_INCOMPATIBLE,
                         RL_ERR_INVALID, RL_ERR_PANIC};
    const size_t n = sizeof codes / sizeof codes[0];
    size_t i, j;

    CHECK_EQ(RL_OK, 0);
    for (i = 0; i < n; i++) {
        const char *s = rl_strerror(codes[i]);
        CHECK(s != NULL && s[0] != '\0');
        /* a static string: the same pointer every time */
        CHECK(s == rl_strerror(codes[i]));
        if (i > 0)
            CHECK(codes[i] < 0);
        for (j = 0; j < i; j++) {
            CHECK(codes[i] != codes[j]);
            /* assumption: each code has its own text */
            CHECK(s && rl_strerror(codes[j]) && strcmp(s, rl_strerror(codes[j])) != 0);
        }
    }
    CHECK(rl_strerror(-12345) != NULL && rl_strerror(-12345)[0] != '\0');
    CHECK(rl_strerror(12345) != NULL && rl_strerror(12345)[0] != '\0');
    CHECK(rl_strerror(INT32_MIN) != NULL && rl_strerror(INT32_MIN)[0] != '\0');

    CHECK(rl_version() != NULL && rl_version()[0] != '\0');
}

static void test_last_error_lifecycle(void)
{
    rl_limiter *lim = NULL;
    rl_decision d;

    /* a failure names the problem ... */
    CHECK_EQ(rl_create(CFG("rate=5/s burts=5"), &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "burts");
    /* ... rl_strerror / rl_version / rl_last_error do not clear it ... */
    (void)rl_strerror(RL_ERR_CONFIG);
    (void)rl_version();
    CHECK_CONTAINS(rl_last_error(), "burts");
    CHECK_CONTAINS(rl_last_error(), "burts");
    /* ... and any other successful call does */
    CHECK_EQ(rl_create(CFG("rate=5/s"), &lim), RL_OK);
    CHECK_STR(rl_last_error(), "");

    if (lim) {
        CHECK_EQ(rl_check(NULL, "k", 1, 1, &d), RL_ERR_NULL);
        CHECK(rl_last_error()[0] != '\0');
        CHECK_EQ(rl_check(lim, "k", 1, 1, &d), RL_OK);
        CHECK_STR(rl_last_error(), "");

        CHECK_EQ(rl_reset(NULL, "k", 1), RL_ERR_NULL);
        CHECK(rl_last_error()[0] != '\0');
        CHECK_EQ(rl_reset(lim, "k", 1), RL_OK);
        CHECK_STR(rl_last_error(), "");

        CHECK_EQ(rl_stats_get(NULL, NULL), RL_ERR_NULL);
        CHECK(rl_last_error()[0] != '\0');
        CHECK(rl_sweep(lim) >= 0);
        CHECK_STR(rl_last_error(), "");

        CHECK(rl_sweep(NULL) < 0);
        CHECK(rl_last_error()[0] != '\0');
        CHECK(rl_format_headers(&d, 0, NULL, 0) > 0);
        CHECK_STR(rl_last_error(), "");

        CHECK(rl_format_headers(NULL, 0, NULL, 0) < 0);
        CHECK(rl_last_error()[0] != '\0');
        rl_destroy(lim);
        /* assumption: rl_destroy is an rl_* call like the others and clears it */
        CHECK_STR(rl_last_error(), "");
    }
}

/* A Redis password never reaches rl_last_error(): not from the config parser
 * (a repeated or misspelt key quoting the URL), not from the URL parser, not
 * from a failed connection. Each message still names the problem. */
#define SECRET "Zq7xSecretPW"
static void expect_no_secret_(const char *what, const char *msg, const char *file, int line)
{
    if (!check_impl_(msg && !strstr(msg, "Zq7x") && !strstr(msg, "SecretPW") &&
                         !strstr(msg, "%53ecret"),
                     "rl_last_error() does not contain the password", file, line))
        fprintf(stderr, "    %s: last_error=\"%s\"\n", what, msg ? msg : "(null)");
}
#define NO_SECRET(what, msg) expect_no_secret_((what), (msg), __FILE__, __LINE__)

static void test_credentials_never_in_messages(void)
{
    static const struct {
        const char *config;
        const char *says;
    } bad[] = {
        {"rate=5/s backend=redis url=redis://:" SECRET "@h:notaport", "bad port \"notaport\""},
        {"rate=5/s backend=redis url=redis://alice:" SECRET "@h:notaport", "alice:***@h"},
        {"rate=5/s backend=redis url=redis://" SECRET "@h:0", "bad port"},
        {"rate=5/s backend=redis url=redis://:Zq7x%53ecretPW@h:1/x", "not a number"},
        {"rate=5/s backend=redis url=redis://:Zq7x@SecretPW@h:99999", "bad port"},
        {"rate=5/s backend=redis url=redis://:Zq7x?SecretPW@h:1", "query strings"},
        {"rate=5/s backend=redis url=redis+cluster://u:" SECRET "@a:1,b:x", "bad port \"x\""},
        {"rate=5/s backend=redis url=redis://:" SECRET "@a:1,b:2", "redis+cluster://"},
        {"rate=5/s backend=redis url=redis:/:" SECRET "@h:1", "expected redis://"},
        {"rate=5/s backend=redis url=redis://:" SECRET "@h:1 url=redis://:" SECRET "@h:2",
         "given twice"},
        {"rate=5/s backend=redis ulr=redis://:" SECRET "@h:1", "unknown key \"ulr\""},
        {"rate=5/s backend=redis redis://:" SECRET "@h:1", "not key=value"},
    };
    size_t i;
    rl_limiter *lim;
    rl_decision d;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *names[2];
        names[0] = bad[i].says;
        names[1] = NULL;
        expect_config_error_(bad[i].config, names, __FILE__, __LINE__);
        NO_SECRET(bad[i].config, rl_last_error());
    }

    /* A valid URL whose server refuses the connection: the backend error
     * (and the fail-fast one that follows repeated failures) hide it too. */
    lim = NULL;
    if (!CHECK_EQ(rl_create("rate=5/s backend=redis url=redis://alice:" SECRET
                            "@127.0.0.1:1 timeout_ms=200 on_error=deny",
                            &lim),
                  RL_OK))
        return;
    for (i = 0; i < 5; i++) {
        memset(&d, 0xAB, sizeof d);
        CHECK_EQ(rl_check(lim, "k", 1, 1, &d), RL_ERR_BACKEND);
        CHECK_EQ(d.allowed, 0);
        CHECK_CONTAINS(rl_last_error(), "redis");
        NO_SECRET("a refused connection", rl_last_error());
    }
    rl_destroy(lim);
}

/* The mode a region object was created with, or 0 if it does not exist. */
static unsigned region_mode(const char *name)
{
    struct stat st;
    unsigned mode = 0;
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0 && fstat(fd, &st) == 0)
        mode = (unsigned)(st.st_mode & 07777);
    if (fd >= 0)
        close(fd);
    return mode;
}

/* mode= is octal with a leading 0, and never lets others write (API.md v1). */
static void test_modes(void)
{
    static const struct {
        const char *mode;
        const char *says;
    } bad[] = {
        {"777", "leading 0"}, {"600", "leading 0"},  {"0777", "o+w"},
        {"0602", "o+w"},      {"0666", "o+w"},       {"0002", "o+w"},
        {"01777", "leading 0"}, {"0o600", "leading 0"}, {"0", "leading 0"},
    };
    static const unsigned good[] = {0600, 0660, 0640, 0644, 0604};
    char name[64], config[160], token[32], mode[8];
    size_t i;
    rl_limiter *lim;

    snprintf(name, sizeof name, "/rl-test-config-mode-%ld", (long)getpid());
    (void)rl_shm_unlink(name);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *names[3];
        snprintf(config, sizeof config, "rate=5/s backend=shm name=%s mode=%s", name, bad[i].mode);
        snprintf(token, sizeof token, "\"mode=%s\"", bad[i].mode);
        names[0] = token;
        names[1] = NULL;
        expect_config_error_(config, names, __FILE__, __LINE__);
        CHECK_CONTAINS(rl_last_error(), bad[i].says);
        /* refused before anything is created */
        CHECK_EQ(region_mode(name), 0);
    }
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(mode, sizeof mode, "0%o", good[i]);
        snprintf(config, sizeof config, "rate=5/s backend=shm name=%s mode=%s", name, mode);
        lim = GOOD(config);
        if (!lim)
            continue;
        if (!CHECK_EQ(region_mode(name), good[i]))
            fprintf(stderr, "    mode=%s\n", mode);
        rl_destroy(lim);
        CHECK_EQ(rl_shm_unlink(name), RL_OK);
    }
}

/* Messages quote at most a bounded prefix of a token, control bytes escaped. */
static void test_quoting_is_bounded(void)
{
    enum { HUGE = 1 << 20 };
    char *config = malloc(HUGE + 64);
    rl_limiter *lim = NULL;
    const char *msg;
    if (!CHECK(config != NULL))
        return;
    strcpy(config, "rate=5/s algorithm=");
    memset(config + strlen(config), 'x', HUGE);
    config[19 + HUGE] = '\0';
    CHECK_EQ(rl_create(config, &lim), RL_ERR_CONFIG);
    msg = rl_last_error();
    CHECK_CONTAINS(msg, "\"algorithm=xxxx");
    CHECK(strlen(msg) < 400);
    /* rl_shm_unlink quotes a bad name the same way */
    config[0] = '/';
    memset(config + 1, 'x', HUGE);
    config[HUGE] = '\x07';
    config[HUGE + 1] = '\0';
    CHECK_EQ(rl_shm_unlink(config), RL_ERR_INVALID);
    msg = rl_last_error();
    CHECK_CONTAINS(msg, "\"/xxxx");
    CHECK(strlen(msg) < 400);
    free(config);

    CHECK_EQ(rl_create("rate=5/s backend=mem\x1b[2Jory", &lim), RL_ERR_CONFIG);
    msg = rl_last_error();
    CHECK_CONTAINS(msg, "\\x1b[2J");
    CHECK(strchr(msg, '\x1b') == NULL);
}

int main(void)
{
    test_create_null_args();
    test_config_errors();
    test_config_valid();
    test_strerror_version();
    test_last_error_lifecycle();
    test_credentials_never_in_messages();
    test_modes();
    test_quoting_is_bounded();
    return CHECK_SUMMARY();
}
