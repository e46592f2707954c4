/*
 * test_metrics.c — rl_metrics: every metric with the values of known checks
 * (and those of rl_stats_get), # HELP/# TYPE lines, the caller's labels on
 * every sample, the top limited keys with hostile bytes escaped, snprintf
 * semantics (NULL buf with 0, a 1-byte buffer, every short size), and bad
 * arguments: NULL lim, bad labels, unknown flags.
 *
 * Runs on whatever RL_TEST_BACKEND_CONFIG names (memory by default):
 * ratelimit_capacity only on memory and shm, ratelimit_local_denials_total
 * only on redis. scripts/metrics_parse.py checks the same text with a real
 * Prometheus parser (make test-metrics).
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

static int is_redis(void)
{
    return test_backend_is("redis");
}

/* The text of rl_metrics, in a buffer it fits (malloc'd), or NULL. */
static char *metrics(rl_limiter *lim, const char *labels, uint32_t flags)
{
    int64_t need = rl_metrics(lim, labels, flags, NULL, 0);
    char *buf;
    if (!CHECK(need > 0)) {
        fprintf(stderr, "    rl_metrics = %" PRId64 ": %s\n", need, rl_last_error());
        return NULL;
    }
    buf = malloc((size_t)need * 2 + 1);
    if (!CHECK(buf != NULL))
        return NULL;
    CHECK_EQ(rl_metrics(lim, labels, flags, buf, (size_t)need * 2 + 1), need);
    CHECK_EQ(strlen(buf), need);
    return buf;
}

/* How many lines of `text` are exactly `line`. */
static int count_lines(const char *text, const char *line)
{
    size_t n = strlen(line);
    int found = 0;
    const char *p = text;
    while (p && *p) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            found++;
        p = end ? end + 1 : NULL;
    }
    return found;
}

/* CHECK that `text` has exactly one line "SERIES VALUE". */
#define HAS_SAMPLE(text, series, value) has_sample_((text), (series), (value), __LINE__)
static void has_sample_(const char *text, const char *series, uint64_t value, int line)
{
    char want[512];
    snprintf(want, sizeof want, "%s %" PRIu64, series, value);
    if (!CHECK(count_lines(text, want) == 1))
        fprintf(stderr, "    (line %d) no line \"%s\" in:\n%s\n", line, want, text);
}

/* CHECK that the family NAME has its # HELP and # TYPE lines. */
static void has_family(const char *text, const char *name, const char *type)
{
    char want[256];
    const char *help;
    snprintf(want, sizeof want, "# TYPE %s %s", name, type);
    CHECK_EQ(count_lines(text, want), 1);
    snprintf(want, sizeof want, "# HELP %s ", name);
    help = strstr(text, want);
    CHECK(help != NULL && (help == text || help[-1] == '\n'));
}

static void test_every_metric(void)
{
    /* capacity= belongs to memory and shm; redis refuses it. */
    rl_limiter *lim = create(is_redis() ? "rate=2/hour" : "rate=2/hour capacity=50");
    rl_decision d;
    rl_stats s;
    char *text;
    int i;

    if (!lim)
        return;
    for (i = 0; i < 5; i++)
        CHECK_EQ(check(lim, "bad", 1, &d), RL_OK); /* 2 allowed, 3 denied */
    for (i = 0; i < 3; i++)
        CHECK_EQ(check(lim, "meh", 1, &d), RL_OK); /* 2 allowed, 1 denied */
    CHECK_EQ(check(lim, "good", 1, &d), RL_OK);    /* allowed */
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.allowed, 5);
    CHECK_EQ(s.limited, 4);

    text = metrics(lim, "zone=\"api\",instance=\"a \\\"b\\\" \\\\ \\n\"", RL_METRICS_TOP_KEYS);
    if (text) {
#define L "zone=\"api\",instance=\"a \\\"b\\\" \\\\ \\n\""
        has_family(text, "ratelimit_checks_total", "counter");
        HAS_SAMPLE(text, "ratelimit_checks_total{" L ",decision=\"allowed\"}", 5);
        HAS_SAMPLE(text, "ratelimit_checks_total{" L ",decision=\"limited\"}", 4);
        has_family(text, "ratelimit_errors_total", "counter");
        HAS_SAMPLE(text, "ratelimit_errors_total{" L "}", 0);
        has_family(text, "ratelimit_keys", "gauge");
        HAS_SAMPLE(text, "ratelimit_keys{" L "}", is_redis() ? 0 : 3);
        has_family(text, "ratelimit_evictions_total", "counter");
        HAS_SAMPLE(text, "ratelimit_evictions_total{" L "}", 0);
        if (is_redis()) {
            CHECK(strstr(text, "ratelimit_capacity") == NULL);
            has_family(text, "ratelimit_local_denials_total", "counter");
            HAS_SAMPLE(text, "ratelimit_local_denials_total{" L "}", s.local_denials);
        } else {
            has_family(text, "ratelimit_capacity", "gauge");
            HAS_SAMPLE(text, "ratelimit_capacity{" L "}", 50);
            CHECK(strstr(text, "local_denials") == NULL);
        }
        has_family(text, "ratelimit_top_limited", "gauge");
        HAS_SAMPLE(text, "ratelimit_top_limited{" L ",key=\"bad\"}", 3);
        HAS_SAMPLE(text, "ratelimit_top_limited{" L ",key=\"meh\"}", 1);
        CHECK(strstr(text, "key=\"good\"") == NULL);
        /* highest first */
        CHECK(strstr(text, "key=\"bad\"") < strstr(text, "key=\"meh\""));
        CHECK(text[strlen(text) - 1] == '\n');
#undef L
        free(text);
    }

    /* No labels, no top keys: bare names where no label is left. */
    text = metrics(lim, NULL, 0);
    if (text) {
        HAS_SAMPLE(text, "ratelimit_checks_total{decision=\"limited\"}", 4);
        HAS_SAMPLE(text, "ratelimit_errors_total", 0);
        HAS_SAMPLE(text, "ratelimit_keys", is_redis() ? 0 : 3);
        CHECK(strstr(text, "top_limited") == NULL);
        free(text);
    }
    text = metrics(lim, "", 0); /* "" is no labels too */
    if (text) {
        HAS_SAMPLE(text, "ratelimit_errors_total", 0);
        free(text);
    }
    rl_destroy(lim);
}

/* Keys with quotes, newlines, braces, backslashes, NULs, bytes >= 0x80
 * become label values that cannot end early, in the one encoding. */
static void test_hostile_keys(void)
{
    rl_limiter *lim = create("rate=1/hour");
    static const char inject[] = "\"} 1\nfake_metric 2";
    static const char binary[] = "a\\b\0\xff}";
    rl_decision d;
    char *text;
    int i;

    if (!lim)
        return;
    for (i = 0; i < 3; i++)
        CHECK_EQ(rl_check(lim, inject, sizeof inject - 1, 1, &d), RL_OK); /* 2 denied */
    for (i = 0; i < 2; i++)
        CHECK_EQ(rl_check(lim, binary, sizeof binary - 1, 1, &d), RL_OK); /* 1 denied */
    text = metrics(lim, NULL, RL_METRICS_TOP_KEYS);
    if (text) {
        /* the key's text "\"} 1\x0afake_metric 2", escaped for the format */
        HAS_SAMPLE(text, "ratelimit_top_limited{key=\"\\\"} 1\\\\x0afake_metric 2\"}", 2);
        /* a\b NUL 0xff }: "a\\b\x00\xff}", escaped for the format */
        HAS_SAMPLE(text, "ratelimit_top_limited{key=\"a\\\\\\\\b\\\\x00\\\\xff}\"}", 1);
        CHECK(strstr(text, "\nfake_metric") == NULL);
        free(text);
    }
    rl_destroy(lim);
}

/* snprintf semantics: NULL buf with 0 asks the length; every shorter
 * buffer gets the text's first buf_len - 1 bytes and a NUL, nothing past. */
static void test_snprintf_semantics(void)
{
    rl_limiter *lim = create("rate=1/hour");
    rl_decision d;
    char *whole;
    char one = 'x';
    int64_t need;
    size_t len;

    if (!lim)
        return;
    check(lim, "k", 1, &d);
    check(lim, "k", 1, &d);
    need = rl_metrics(lim, "a=\"1\"", RL_METRICS_TOP_KEYS, NULL, 0);
    CHECK(need > 100);
    CHECK_STR(rl_last_error(), "");
    whole = metrics(lim, "a=\"1\"", RL_METRICS_TOP_KEYS);
    if (whole && need > 0) {
        CHECK_EQ(strlen(whole), need);
        /* a 1-byte buffer: just the NUL */
        CHECK_EQ(rl_metrics(lim, "a=\"1\"", RL_METRICS_TOP_KEYS, &one, 1), need);
        CHECK_EQ(one, 0);
        for (len = 1; len <= (size_t)need + 1; len++) {
            char *buf = malloc(len + 4);
            if (!CHECK(buf != NULL))
                break;
            memset(buf, '#', len + 4);
            CHECK_EQ(rl_metrics(lim, "a=\"1\"", RL_METRICS_TOP_KEYS, buf, len), need);
            CHECK_EQ(strlen(buf), len - 1 < (size_t)need ? len - 1 : (size_t)need);
            CHECK(strncmp(buf, whole, len - 1) == 0);
            CHECK(buf[len] == '#' && buf[len + 3] == '#'); /* under ASan: any write past len traps too */
            free(buf);
        }
    }
    free(whole);
    rl_destroy(lim);
}

static void test_bad_arguments(void)
{
    rl_limiter *lim = create("rate=1/hour");
    static const char *const bad[] = {
        "a=b",          "a=\"x",        "1a=\"x\"",       "__x=\"y\"",     "a=\"1\",a=\"2\"",
        "decision=\"x\"", "key=\"x\"",  "a=\"1\",",       "a=\"1\",,b=\"2\"", "a=\"1\" ,b=\"2\"",
        "a=\"1\"x",     "a = \"1\"",    "a=\"\\t\"",      "a=\"new\nline\"", ",",
        "a=\"\xff\"",   "a=\"1\"}\nfake 1",
    };
    char buf[64];
    size_t i;

    if (!lim)
        return;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(buf, '#', sizeof buf);
        if (!CHECK_EQ(rl_metrics(lim, bad[i], 0, buf, sizeof buf), RL_ERR_INVALID))
            fprintf(stderr, "    labels \"%s\" accepted\n", bad[i]);
        CHECK_CONTAINS(rl_last_error(), "labels");
        CHECK_EQ(buf[0], 0); /* the empty string on an error */
    }
    CHECK_EQ(rl_metrics(lim, "a=b", 0, NULL, 0), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "double-quoted");
    CHECK_EQ(rl_metrics(lim, "__x=\"y\"", 0, NULL, 0), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "__x");

    CHECK_EQ(rl_metrics(lim, NULL, 2, buf, sizeof buf), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "flags");
    CHECK_EQ(rl_metrics(lim, NULL, RL_METRICS_TOP_KEYS | 0x80000000u, NULL, 0), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "flags");

    memset(buf, '#', sizeof buf);
    CHECK_EQ(rl_metrics(NULL, NULL, 0, buf, sizeof buf), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "lim");
    CHECK_EQ(buf[0], 0);
    CHECK_EQ(rl_metrics(NULL, NULL, 0, NULL, 0), RL_ERR_NULL);
    CHECK_EQ(rl_metrics(lim, NULL, 0, NULL, 10), RL_ERR_NULL);
    CHECK_CONTAINS(rl_last_error(), "buf");
    /* and a good call clears the last error */
    CHECK(rl_metrics(lim, NULL, 0, NULL, 0) > 0);
    CHECK_STR(rl_last_error(), "");
    rl_destroy(lim);
}

int main(void)
{
    test_every_metric();
    test_hostile_keys();
    test_snprintf_semantics();
    test_bad_arguments();
    return CHECK_SUMMARY();
}
