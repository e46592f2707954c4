/*
 * rlctl — an operator's look into a live limiter, on libratelimit's public
 * C API only (see README.md, "rlctl", and API.md for the fixed interface).
 *
 *   rlctl show NAME                    configuration, then the counts
 *   rlctl top NAME [-n N] [--active]   COUNT<TAB>ERROR<TAB>KEY, most first
 *   rlctl peek NAME KEY                a cost-0 check of KEY
 *   rlctl reset NAME KEY               forget KEY
 *   rlctl metrics NAME                 rl_metrics, labelled zone="NAME"
 *   rlctl unlink NAME                  remove the region (rl_shm_unlink)
 *   rlctl --config "CONFIG" show | peek KEY | reset KEY   any backend
 *
 * NAME is a shm region's name (leading '/'), attached to with the
 * configuration stored in it (`backend=shm name=NAME`, no rate=): rlctl
 * never creates a region. KEY is read, and top writes keys, in the label
 * encoding of rl_metrics: printable ASCII other than '\' as is, '\' as
 * "\\", every other byte as "\xHH" (lower-case hex).
 *
 * Exit status: 0 done; 1 something failed (the message on stderr names it:
 * no such region, not a libratelimit region, another layout version, a
 * name without a leading '/'); 2 bad usage, a KEY that is not valid in the
 * encoding included (the usage on stderr).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ratelimit.h"

#include "keytext.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

/* rl_top keeps at most top=1024 keys per ranking. */
#define TOP_MAX 1024
/* The library's bound on a shm name; longer is refused before rl_create. */
#define NAME_MAX_LEN 200

static const char usage_text[] =
    "usage: rlctl show NAME                   configuration, then allowed limited errors keys capacity evictions\n"
    "       rlctl top NAME [-n N] [--active]  COUNT<TAB>ERROR<TAB>KEY per key, most denied (or checked) first\n"
    "       rlctl peek NAME KEY               a cost-0 check: allowed remaining limit reset_ms retry_after_ms\n"
    "       rlctl reset NAME KEY              forget KEY: its next check starts fresh\n"
    "       rlctl metrics NAME                Prometheus text, every sample labelled zone=\"NAME\"\n"
    "       rlctl unlink NAME                 remove the shm region NAME\n"
    "       rlctl --config \"CONFIG\" show | peek KEY | reset KEY   any backend (e.g. redis)\n"
    "NAME: a live shm region, e.g. /api (attached with the configuration stored in it).\n"
    "KEY: printable ASCII as is, \\ as \\\\, any other byte as \\xHH (lower-case hex), as top prints it.\n"
    "Exit status: 0 done, 1 failed (see the message), 2 bad usage.\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "rlctl: %s\n", why);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

/* ---- keys as text -------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes `text` into `out` (room for strlen(text) bytes); accepts exactly
 * the encodings keytext_encode writes. Returns the key's length, or -1 with *why
 * and *at saying what is wrong where. */
static long decode_key(const char *text, unsigned char *out, const char **why, size_t *at)
{
    size_t i = 0, n = 0;
    while (text[i]) {
        unsigned char c = (unsigned char)text[i];
        if (c != '\\') {
            if (c < 0x20 || c >= 0x7f) {
                *why = "a byte that is not printable ASCII (write it as \\xHH)";
                *at = i;
                return -1;
            }
            out[n++] = c;
            i++;
        } else if (text[i + 1] == '\\') {
            out[n++] = '\\';
            i += 2;
        } else if (text[i + 1] == 'x') {
            int hi = text[i + 2] ? hex_digit(text[i + 2]) : -1;
            int lo = hi >= 0 && text[i + 3] ? hex_digit(text[i + 3]) : -1;
            unsigned char b;
            if (hi < 0 || lo < 0) {
                *why = "\\x not followed by two lower-case hex digits";
                *at = i;
                return -1;
            }
            b = (unsigned char)(hi << 4 | lo);
            if (b >= 0x20 && b < 0x7f) {
                *why = "\\xHH of a printable character (write the character itself, \\ as \\\\)";
                *at = i;
                return -1;
            }
            out[n++] = b;
            i += 4;
        } else {
            *why = text[i + 1] ? "an escape other than \\\\ or \\xHH" : "a lone \\ at the end";
            *at = i;
            return -1;
        }
    }
    return (long)n;
}

/* ---- opening the limiter ------------------------------------------------- */

/* A region name rlctl can put in a configuration string: a leading '/', then
 * printable ASCII without blanks (a blank would end the token, and the rest
 * would be read as more configuration). The library checks the rest. */
static int check_name(const char *name)
{
    size_t i;
    if (name[0] != '/') {
        fprintf(stderr, "rlctl: \"%s\": a region name starts with '/', e.g. /%s\n", name, name);
        return -1;
    }
    for (i = 0; name[i]; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f) {
            fprintf(stderr, "rlctl: \"%s\": a region name is printable ASCII without blanks (byte %zu is 0x%02x)\n",
                    name, i, c);
            return -1;
        }
    }
    if (i > NAME_MAX_LEN) {
        fprintf(stderr, "rlctl: a region name is at most %d characters (this one has %zu)\n", NAME_MAX_LEN, i);
        return -1;
    }
    return 0;
}

/* Whether the shm object `name` exists (0: no; 1: yes or cannot tell). */
static int object_exists(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    return errno != ENOENT;
}

/* Attaches to the live region `name`; on failure says why and returns -1. */
static int attach(const char *name, rl_limiter **lim)
{
    char config[64 + NAME_MAX_LEN];
    const char *why;
    int rc;

    if (check_name(name) < 0)
        return -1;
    snprintf(config, sizeof config, "backend=shm name=%s", name);
    rc = rl_create(config, lim);
    if (rc == RL_OK)
        return 0;
    why = rl_last_error();
    if (rc == RL_ERR_IO && !object_exists(name))
        fprintf(stderr, "rlctl: %s: no such region (%s)\n", name, why);
    else if (rc == RL_ERR_INCOMPATIBLE)
        /* the library's text says which: not a libratelimit region, a
         * region of another layout version, a damaged one */
        fprintf(stderr, "rlctl: %s: cannot attach (rlctl uses libratelimit %s): %s\n", name, rl_version(), why);
    else
        fprintf(stderr, "rlctl: %s: cannot attach: %s: %s\n", name, rl_strerror(rc), why);
    return -1;
}

static int open_config(const char *config, rl_limiter **lim)
{
    int rc = rl_create(config, lim);
    if (rc == RL_OK)
        return 0;
    fprintf(stderr, "rlctl: --config: %s: %s\n", rl_strerror(rc), rl_last_error());
    return -1;
}

static int failed(const char *what, int64_t rc)
{
    fprintf(stderr, "rlctl: %s: %s: %s\n", what, rl_strerror((int)rc), rl_last_error());
    return EXIT_FAILED;
}

/* rl_describe or rl_metrics output, in a buffer grown until it fits (the
 * counts move between two calls). NULL after saying why. */
static char *grown_text(rl_limiter *lim, int metrics, const char *labels, const char *what)
{
    size_t size = 4096;
    int tries;
    for (tries = 0; tries < 8; tries++) {
        char *buf = malloc(size);
        int64_t n;
        if (!buf) {
            fprintf(stderr, "rlctl: %s: out of memory\n", what);
            return NULL;
        }
        n = metrics ? rl_metrics(lim, labels, RL_METRICS_TOP_KEYS, buf, size) : rl_describe(lim, buf, size);
        if (n < 0) {
            failed(what, n);
            free(buf);
            return NULL;
        }
        if ((uint64_t)n < size)
            return buf;
        free(buf);
        size = (size_t)n * 2 + 1;
    }
    fprintf(stderr, "rlctl: %s: the text kept growing\n", what);
    return NULL;
}

/* ---- commands ------------------------------------------------------------- */

/* The value of the sample `ratelimit_capacity` (unlabelled: rlctl asks for
 * none) in rl_metrics' text; 0 when absent (redis has no capacity). */
static uint64_t capacity_of(const char *metrics)
{
    static const char sample[] = "ratelimit_capacity ";
    const char *p = metrics;
    while (p && *p) {
        if (strncmp(p, sample, sizeof sample - 1) == 0)
            return strtoull(p + sizeof sample - 1, NULL, 10);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

static int cmd_show(rl_limiter *lim)
{
    rl_stats s;
    char *config, *metrics;
    int rc;
    uint64_t capacity;

    config = grown_text(lim, 0, NULL, "rl_describe");
    if (!config)
        return EXIT_FAILED;
    rc = rl_stats_get(lim, &s);
    if (rc != RL_OK) {
        free(config);
        return failed("rl_stats_get", rc);
    }
    metrics = grown_text(lim, 1, NULL, "rl_metrics");
    if (!metrics) {
        free(config);
        return EXIT_FAILED;
    }
    capacity = capacity_of(metrics);
    free(metrics);
    printf("%s\n", config);
    free(config);
    printf("allowed: %" PRIu64 "\nlimited: %" PRIu64 "\nerrors: %" PRIu64 "\nkeys: %" PRIu64
           "\ncapacity: %" PRIu64 "\nevictions: %" PRIu64 "\n",
           s.allowed, s.limited, s.errors, s.keys, capacity, s.evictions);
    return 0;
}

static int cmd_top(rl_limiter *lim, size_t cap, uint32_t which)
{
    rl_top_entry *e = NULL;
    int64_t n, i;

    if (cap > 0) {
        e = calloc(cap, sizeof *e);
        if (!e) {
            fprintf(stderr, "rlctl: top: out of memory\n");
            return EXIT_FAILED;
        }
    }
    n = rl_top(lim, which, e, cap);
    if (n < 0) {
        free(e);
        return failed("rl_top", n);
    }
    for (i = 0; i < n; i++) {
        char text[KEYTEXT_SIZE(sizeof e[i].key)];
        keytext_encode(e[i].key, e[i].key_len <= sizeof e[i].key ? e[i].key_len : sizeof e[i].key, text);
        printf("%" PRIu64 "\t%" PRIu64 "\t%s\n", e[i].count, e[i].error, text);
        if (e[i].truncated)
            fprintf(stderr, "rlctl: note: line %" PRId64 ": a key longer than %zu bytes, shown by its first %zu\n",
                    i + 1, sizeof e[i].key, sizeof e[i].key);
    }
    free(e);
    return 0;
}

static int cmd_peek(rl_limiter *lim, const unsigned char *key, size_t len)
{
    rl_decision d;
    int rc = rl_check(lim, key, len, 0, &d);
    if (rc != RL_OK)
        return failed("rl_check (cost 0)", rc);
    printf("allowed: %" PRIu32 "\nremaining: %" PRIu64 "\nlimit: %" PRIu64 "\nreset_ms: %" PRIu64
           "\nretry_after_ms: %" PRIu64 "\n",
           d.allowed, d.remaining, d.limit, d.reset_ms, d.retry_after_ms);
    return 0;
}

static int cmd_reset(rl_limiter *lim, const unsigned char *key, size_t len)
{
    int rc = rl_reset(lim, key, len);
    return rc == RL_OK ? 0 : failed("rl_reset", rc);
}

static int cmd_metrics(rl_limiter *lim, const char *name)
{
    /* zone="NAME", escaped as a Prometheus label value: \ " and newline */
    size_t i, n = 0, len = strlen(name);
    char *labels = malloc(len * 2 + 16), *text;
    if (!labels) {
        fprintf(stderr, "rlctl: metrics: out of memory\n");
        return EXIT_FAILED;
    }
    memcpy(labels, "zone=\"", 6);
    n = 6;
    for (i = 0; i < len; i++) {
        if (name[i] == '\\' || name[i] == '"') {
            labels[n++] = '\\';
            labels[n++] = name[i];
        } else if (name[i] == '\n') {
            labels[n++] = '\\';
            labels[n++] = 'n';
        } else {
            labels[n++] = name[i];
        }
    }
    labels[n++] = '"';
    labels[n] = '\0';
    text = grown_text(lim, 1, labels, "rl_metrics");
    free(labels);
    if (!text)
        return EXIT_FAILED;
    fputs(text, stdout);
    free(text);
    return 0;
}

static int cmd_unlink(const char *name)
{
    int rc;
    if (check_name(name) < 0)
        return EXIT_FAILED;
    rc = rl_shm_unlink(name);
    if (rc == RL_OK)
        return 0;
    if (rc == RL_ERR_IO && !object_exists(name)) {
        fprintf(stderr, "rlctl: %s: no such region (%s)\n", name, rl_last_error());
        return EXIT_FAILED;
    }
    return failed(name, rc);
}

/* ---- arguments ------------------------------------------------------------- */

/* `top` options after NAME, in any order: -n N, --active. */
static int top_options(int argc, char **argv, size_t *cap, uint32_t *which)
{
    int i;
    *cap = TOP_MAX;
    *which = RL_TOP_LIMITED;
    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--active") == 0) {
            *which = RL_TOP_ACTIVE;
        } else if (strcmp(argv[i], "-n") == 0) {
            char *end;
            unsigned long long v;
            if (i + 1 >= argc)
                return usage("top: -n needs a number");
            i++;
            errno = 0;
            v = strtoull(argv[i], &end, 10);
            if (argv[i][0] < '0' || argv[i][0] > '9' || *end || errno)
                return usage("top: -n takes a whole number, e.g. -n 10");
            /* at most top=1024 keys are tracked: more is all of them */
            *cap = v > TOP_MAX ? TOP_MAX : (size_t)v;
        } else {
            fprintf(stderr, "rlctl: top: unknown option \"%s\"\n", argv[i]);
            return usage(NULL);
        }
    }
    return 0;
}

/* The KEY argument decoded into a new buffer (*key; free it), or exit 2. */
static int key_argument(const char *text, unsigned char **key, size_t *len)
{
    const char *why = "";
    size_t at = 0;
    long n;
    *key = malloc(strlen(text) + 1);
    if (!*key) {
        fprintf(stderr, "rlctl: out of memory\n");
        return EXIT_FAILED;
    }
    n = decode_key(text, *key, &why, &at);
    if (n < 0) {
        free(*key);
        *key = NULL;
        fprintf(stderr, "rlctl: KEY \"%s\" is not in the key encoding: %s at byte %zu\n", text, why, at);
        return usage(NULL);
    }
    *len = (size_t)n;
    return 0;
}

static int finish(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "rlctl: writing the output: %s\n", strerror(errno));
        return EXIT_FAILED;
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *cmd, *name = NULL;
    char **rest;
    int nrest, rc;
    rl_limiter *lim = NULL;
    unsigned char *key = NULL;
    size_t key_len = 0, cap = 0;
    uint32_t which = 0;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage_text, stdout);
        return finish(0);
    }
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("rlctl (libratelimit %s)\n", rl_version());
        return finish(0);
    }
    argv++;
    argc--;
    if (argc >= 1 && strcmp(argv[0], "--config") == 0) {
        if (argc < 2)
            return usage("--config needs a configuration string");
        config = argv[1];
        argv += 2;
        argc -= 2;
    }
    if (argc < 1)
        return usage(NULL);
    cmd = argv[0];
    rest = argv + 1;
    nrest = argc - 1;

    if (config) {
        /* --config CONFIG show | peek KEY | reset KEY */
        if (strcmp(cmd, "show") == 0) {
            if (nrest != 0)
                return usage("--config ... show takes no other argument");
        } else if (strcmp(cmd, "peek") == 0 || strcmp(cmd, "reset") == 0) {
            if (nrest != 1)
                return usage("--config ... peek and reset take one KEY");
        } else if (strcmp(cmd, "top") == 0 || strcmp(cmd, "metrics") == 0 || strcmp(cmd, "unlink") == 0) {
            return usage("with --config, only show, peek and reset (top, metrics and unlink take a region NAME)");
        } else {
            fprintf(stderr, "rlctl: unknown command \"%s\"\n", cmd);
            return usage(NULL);
        }
    } else {
        int want;
        if (strcmp(cmd, "show") == 0 || strcmp(cmd, "metrics") == 0 || strcmp(cmd, "unlink") == 0)
            want = 1;
        else if (strcmp(cmd, "peek") == 0 || strcmp(cmd, "reset") == 0)
            want = 2;
        else if (strcmp(cmd, "top") == 0)
            want = -1;
        else {
            fprintf(stderr, "rlctl: unknown command \"%s\"\n", cmd);
            return usage(NULL);
        }
        if (want < 0 ? nrest < 1 : nrest != want) {
            fprintf(stderr, "rlctl: %s takes %s\n", cmd,
                    want == 2 ? "NAME KEY" : want == 1 ? "NAME" : "NAME [-n N] [--active]");
            return usage(NULL);
        }
        name = rest[0];
        rest++;
        nrest--;
        if (want < 0 && (rc = top_options(nrest, rest, &cap, &which)) != 0)
            return rc;
    }
    if (strcmp(cmd, "peek") == 0 || strcmp(cmd, "reset") == 0) {
        rc = key_argument(rest[0], &key, &key_len);
        if (rc != 0)
            return rc;
    }

    if (strcmp(cmd, "unlink") == 0)
        return finish(cmd_unlink(name));

    if ((config ? open_config(config, &lim) : attach(name, &lim)) < 0) {
        free(key);
        return EXIT_FAILED;
    }
    if (strcmp(cmd, "show") == 0)
        rc = cmd_show(lim);
    else if (strcmp(cmd, "top") == 0)
        rc = cmd_top(lim, cap, which);
    else if (strcmp(cmd, "peek") == 0)
        rc = cmd_peek(lim, key, key_len);
    else if (strcmp(cmd, "reset") == 0)
        rc = cmd_reset(lim, key, key_len);
    else
        rc = cmd_metrics(lim, name);
    rl_destroy(lim);
    free(key);
    return finish(rc);
}
