/*
 * test_shm_region.c — the shm region as an object: permissions, configuration
 * mismatches, garbage objects, rl_shm_unlink.
 *
 * Every object here is refused with a clear rl_last_error() and a NULL
 * handle, never trusted and never a crash: empty, too small, foreign bytes,
 * a bad magic, another layout version, truncated, never finished. A
 * configuration must match in full, however long; a region never tracks
 * more keys than its capacity.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

static char name[64];
static char config[256];

static void make_names(const char *tag, const char *rest)
{
    snprintf(name, sizeof name, "/rl-ctest-%ld-%s", (long)getpid(), tag);
    snprintf(config, sizeof config, "%s backend=shm name=%s", rest, name);
    (void)rl_shm_unlink(name);
}

static int create_with(const char *cfg, rl_limiter **lim)
{
    *lim = (rl_limiter *)&name; /* must be set to NULL on failure */
    return rl_create(cfg, lim);
}

static off_t object_size(void)
{
    struct stat st;
    int fd = shm_open(name, O_RDONLY, 0);
    off_t size = -1;
    if (fd >= 0 && fstat(fd, &st) == 0)
        size = st.st_size;
    if (fd >= 0)
        close(fd);
    return size;
}

static unsigned object_mode(void)
{
    struct stat st;
    int fd = shm_open(name, O_RDONLY, 0);
    unsigned mode = 0;
    if (fd >= 0 && fstat(fd, &st) == 0)
        mode = (unsigned)(st.st_mode & 0777);
    if (fd >= 0)
        close(fd);
    return mode;
}

static void test_modes(void)
{
    rl_limiter *lim;
    umask(022);
    make_names("mode", "rate=5/s");
    CHECK_EQ(create_with(config, &lim), RL_OK);
    CHECK_EQ(object_mode(), 0600);
    rl_destroy(lim);
    CHECK_EQ(object_mode(), 0600); /* rl_destroy never removes the region */
    CHECK_EQ(rl_shm_unlink(name), RL_OK);

    make_names("mode", "rate=5/s mode=0664");
    CHECK_EQ(create_with(config, &lim), RL_OK);
    CHECK_EQ(object_mode(), 0664); /* not narrowed by the umask (022) */
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* Another rate, algorithm, burst or capacity is RL_ERR_INCOMPATIBLE (another top: test_top.c). */
static void test_incompatible_configs(void)
{
    const char *others[] = {
        "rate=6/s capacity=1000",
        "rate=5/2s capacity=1000",
        "rate=5/s capacity=2000",
        "rate=5/s capacity=1000 algorithm=fixed_window",
        "rate=5/s capacity=1000 burst=10",
        "rate=5/s,100/hour capacity=1000",
    };
    rl_limiter *lim, *other;
    char cfg[256];
    size_t i;

    make_names("incompatible", "rate=5/s capacity=1000");
    if (!CHECK_EQ(create_with(config, &lim), RL_OK))
        return;
    for (i = 0; i < sizeof others / sizeof others[0]; i++) {
        snprintf(cfg, sizeof cfg, "%s backend=shm name=%s", others[i], name);
        CHECK_EQ(create_with(cfg, &other), RL_ERR_INCOMPATIBLE);
        CHECK(other == NULL);
        CHECK_CONTAINS(rl_last_error(), name);
        CHECK_CONTAINS(rl_last_error(), "rate=5/s algorithm=token_bucket burst=5 capacity=1000");
    }
    /* the same configuration, written differently, is the same region */
    snprintf(cfg, sizeof cfg, "backend=shm   capacity=1000 name=%s rate=5/second on_error=deny", name);
    CHECK_EQ(create_with(cfg, &other), RL_OK);
    rl_destroy(other);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* Eight rates of long numbers, the last period `last` ms: two such
 * configurations agree in the first 255+ characters of their canonical text
 * (all a region header used to keep of it) and differ only after. */
static void long_config(char *buf, size_t len, const char *last)
{
    int i, n = snprintf(buf, len, "rate=");
    for (i = 0; i < 7; i++)
        n += snprintf(buf + n, len - (size_t)n, "100000000000000000/86399999997ms,");
    snprintf(buf + n, len - (size_t)n, "100000000000000000/%sms capacity=1000 backend=shm name=%s", last, name);
}

/* The whole configuration must match, however long. */
static void test_long_configs(void)
{
    rl_limiter *lim, *other;
    char a[600], b[600];

    make_names("long", "rate=5/s");
    long_config(a, sizeof a, "86399999999");
    long_config(b, sizeof b, "86399999998");
    if (!CHECK_EQ(create_with(a, &lim), RL_OK))
        return;
    CHECK_EQ(create_with(b, &other), RL_ERR_INCOMPATIBLE);
    CHECK(other == NULL);
    CHECK_CONTAINS(rl_last_error(), name);
    /* the region keeps its whole text: both are shown in full */
    CHECK_CONTAINS(rl_last_error(), "100000000000000000/86399999998ms algorithm=token_bucket capacity=1000 top=32\"");
    CHECK_CONTAINS(rl_last_error(), "100000000000000000/86399999999ms algorithm=token_bucket capacity=1000 top=32\"");
    /* the same long configuration opens it */
    if (CHECK_EQ(create_with(a, &other), RL_OK))
        rl_destroy(other);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* Processes sharing one handle insert distinct keys far past capacity, while
 * the parent reads rl_stats_get: `keys` never exceeds capacity, and every key
 * is either tracked or counted in `evictions`. */
static void test_keys_within_capacity(void)
{
    enum { PROCS = 4, CAPACITY = 2100, PER_PROC = 3 * CAPACITY };
    rl_limiter *lim;
    rl_stats st;
    pid_t pids[PROCS];
    uint64_t worst = 0;
    int i, running = PROCS;
    char cfg[256];

    make_names("keys", "rate=1/1000d");
    snprintf(cfg, sizeof cfg, "rate=1/1000d capacity=%d backend=shm name=%s", CAPACITY, name);
    if (!CHECK_EQ(create_with(cfg, &lim), RL_OK))
        return;
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            rl_decision d;
            char key[32];
            int k, bad = 0;
            for (k = 0; k < PER_PROC; k++) {
                int len = snprintf(key, sizeof key, "p%d-key-%d", i, k);
                if (rl_check(lim, key, (size_t)len, 1, &d) != RL_OK || !d.allowed)
                    bad = 1;
            }
            _exit(bad);
        }
        CHECK(pids[i] > 0);
    }
    while (running > 0) {
        if (CHECK_EQ(rl_stats_get(lim, &st), RL_OK) && st.keys > worst)
            worst = st.keys;
        for (i = 0; i < PROCS; i++) {
            int status;
            if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                pids[i] = 0;
                running--;
            }
        }
        test_sleep_ms(1);
    }
    CHECK(worst <= CAPACITY);
    if (CHECK_EQ(rl_stats_get(lim, &st), RL_OK)) {
        CHECK(st.keys <= CAPACITY);
        CHECK_EQ(st.keys + st.evictions, (uint64_t)PROCS * PER_PROC);
        CHECK_EQ(st.allowed, (uint64_t)PROCS * PER_PROC);
    }
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* Writes `len` bytes of `byte` as the whole object `name`. */
static void make_object(size_t len, int byte)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char buf[4096];
    size_t done = 0;
    if (!CHECK(fd >= 0))
        return;
    memset(buf, byte, sizeof buf);
    while (done < len) {
        size_t n = len - done < sizeof buf ? len - done : sizeof buf;
        if (!CHECK(write(fd, buf, n) == (ssize_t)n))
            break;
        done += n;
    }
    close(fd);
}

/* Maps a real region and lets `edit` spoil it. */
static void spoil(void (*edit)(unsigned char *, size_t))
{
    off_t size = object_size();
    int fd = shm_open(name, O_RDWR, 0);
    void *p;
    if (!CHECK(fd >= 0 && size > 0))
        return;
    p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (!CHECK(p != MAP_FAILED))
        return;
    edit(p, (size_t)size);
    munmap(p, (size_t)size);
}

static void flip_magic(unsigned char *p, size_t n)
{
    (void)n;
    p[0] ^= 0xff;
}

static void other_version(unsigned char *p, size_t n)
{
    uint32_t v = 999; /* layout version: a u32 at offset 8 (src/store/shm/layout.rs) */
    (void)n;
    memcpy(p + 8, &v, sizeof v);
}

static void zero_all(unsigned char *p, size_t n)
{
    memset(p, 0, n);
}

/* A genuine region's size, for objects that imitate one. */
static off_t real_region(void)
{
    rl_limiter *lim;
    off_t size;
    CHECK_EQ(create_with(config, &lim), RL_OK);
    rl_destroy(lim);
    size = object_size();
    CHECK(size > 0);
    return size;
}

static void refused(int want, const char *why)
{
    rl_limiter *lim;
    CHECK_EQ(create_with(config, &lim), want);
    CHECK(lim == NULL);
    CHECK_CONTAINS(rl_last_error(), name);
    CHECK_CONTAINS(rl_last_error(), why);
    CHECK_CONTAINS(rl_last_error(), "rl_shm_unlink");
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

static void test_garbage_objects(void)
{
    off_t size;
    int fd;

    make_names("garbage", "rate=5/s capacity=1000");

    /* empty (a creator may be a moment from sizing it: refused after the
     * bounded wait) */
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    refused(RL_ERR_INCOMPATIBLE, "empty");

    make_object(100, 'x');
    refused(RL_ERR_INCOMPATIBLE, "too small");

    size = real_region();
    make_object((size_t)size, 0xA5);
    refused(RL_ERR_INCOMPATIBLE, "magic");

    real_region();
    spoil(flip_magic);
    refused(RL_ERR_INCOMPATIBLE, "magic");

    real_region();
    spoil(other_version);
    refused(RL_ERR_INCOMPATIBLE, "version 999");

    size = real_region();
    fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0 && ftruncate(fd, size / 2) == 0);
    if (fd >= 0)
        close(fd);
    refused(RL_ERR_INCOMPATIBLE, "size");

    size = real_region();
    fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0 && ftruncate(fd, size + 4096) == 0);
    if (fd >= 0)
        close(fd);
    refused(RL_ERR_INCOMPATIBLE, "size");

    /* a creator that died before finishing: never ready */
    real_region();
    spoil(zero_all);
    refused(RL_ERR_IO, "not ready");
}

static void test_unlink(void)
{
    rl_limiter *lim, *again;
    rl_decision d;

    CHECK_EQ(rl_shm_unlink(NULL), RL_ERR_NULL);
    CHECK_EQ(rl_shm_unlink("no-slash"), RL_ERR_INVALID);
    CHECK_CONTAINS(rl_last_error(), "no-slash");
    CHECK_EQ(rl_shm_unlink("/a/b"), RL_ERR_INVALID);

    make_names("unlink", "rate=2/hour");
    CHECK_EQ(rl_shm_unlink(name), RL_ERR_IO);
    CHECK_CONTAINS(rl_last_error(), "No such file");

    if (!CHECK_EQ(create_with(config, &lim), RL_OK))
        return;
    CHECK_EQ(rl_check(lim, "k", 1, 2, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
    CHECK_STR(rl_last_error(), "");
    CHECK_EQ(object_size(), -1);
    /* an open handle keeps working on its memory */
    CHECK_EQ(rl_check(lim, "k", 1, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    /* the name now makes a new, empty region */
    if (CHECK_EQ(create_with(config, &again), RL_OK)) {
        CHECK_EQ(rl_check(again, "k", 1, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        rl_destroy(again);
    }
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

static void test_bad_names(void)
{
    rl_limiter *lim;
    CHECK_EQ(create_with("rate=5/s backend=shm", &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "name");
    CHECK_EQ(create_with("rate=5/s backend=shm name=/a/b", &lim), RL_ERR_CONFIG);
    CHECK(lim == NULL);
}

int main(void)
{
    test_modes();
    test_incompatible_configs();
    test_long_configs();
    test_keys_within_capacity();
    test_garbage_objects();
    test_unlink();
    test_bad_names();
    return CHECK_SUMMARY();
}
