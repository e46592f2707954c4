/*
 * test_attach.c — `backend=shm name=/x` without `rate=`: attaching to an
 * existing region with the configuration stored in it.
 *
 * An attach shares the creator's state and reports its limits (rl_describe);
 * it accepts only the keys that are each handle's own (timeout_ms, on_error,
 * dry_run); there being no region is RL_ERR_IO naming it; a garbage object,
 * or a region of another layout version, is refused clearly; workers that
 * attach while the creator is still setting the region up wait for it.
 *
 * Every region here has an explicit name, so this runs the same whatever
 * RL_TEST_BACKEND_CONFIG says.
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

static void make_name(const char *tag)
{
    snprintf(name, sizeof name, "/rl-cattach-%ld-%s", (long)getpid(), tag);
    (void)rl_shm_unlink(name);
}

/* rl_create(config with every %s replaced by the name). */
static int create_fmt(const char *fmt, rl_limiter **lim)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, fmt, name);
    *lim = (rl_limiter *)&name; /* must be set to NULL on failure */
    return rl_create(cfg, lim);
}

static const char *described(rl_limiter *lim)
{
    static char ring[2][1024];
    static int next;
    char *text = ring[next++ % 2];
    int64_t n = rl_describe(lim, text, sizeof ring[0]);
    if (!CHECK(n > 0 && (size_t)n < sizeof ring[0]))
        text[0] = '\0';
    return text;
}

static void test_attach_shares_the_region(void)
{
    rl_limiter *creator, *attached, *again;
    rl_decision d;
    char want[1024];

    make_name("share");
    if (!CHECK_EQ(create_fmt("rate=2/hour,50/d algorithm=sliding_window capacity=100 mode=0640 top=7 "
                             "backend=shm name=%s", &creator), RL_OK))
        return;
    CHECK_EQ(rl_check(creator, "k", 1, 1, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);

    if (CHECK_EQ(create_fmt("backend=shm name=%s", &attached), RL_OK)) {
        /* the same limits, the same state */
        CHECK_EQ(rl_check(attached, "k", 1, 0, &d), RL_OK);
        CHECK_EQ(d.limit, 2);
        CHECK_EQ(d.remaining, 1);
        CHECK_EQ(d.window_ms, 3600000);
        /* described with the region's limits, its top and its object's
         * mode: the same text as the creator's */
        snprintf(want, sizeof want,
                 "rate=2/h,50/d algorithm=sliding_window capacity=100 top=7 backend=shm name=%s mode=0640 "
                 "timeout_ms=1000 on_error=allow dry_run=off", name);
        CHECK_STR(described(attached), want);
        CHECK_STR(described(creator), want);
        /* and that text opens the same region again */
        if (CHECK_EQ(rl_create(want, &again), RL_OK)) {
            CHECK_EQ(rl_check(again, "k", 1, 1, &d), RL_OK);
            CHECK_EQ(d.allowed, 1);
            CHECK_EQ(rl_check(attached, "k", 1, 1, &d), RL_OK);
            CHECK_EQ(d.allowed, 0);
            rl_destroy(again);
        }
        rl_destroy(attached);
    }

    /* the handle's own keys are accepted, and are its own */
    if (CHECK_EQ(create_fmt("name=%s timeout_ms=5 on_error=deny dry_run=on backend=shm", &attached), RL_OK)) {
        CHECK_CONTAINS(described(attached), " timeout_ms=5 on_error=deny dry_run=on");
        CHECK_EQ(rl_check(attached, "k", 1, 1, &d), RL_OK);
        CHECK_EQ(d.allowed, 1); /* dry run: a would-be denial */
        CHECK(d.retry_after_ms > 0);
        rl_destroy(attached);
    }
    rl_destroy(creator);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

static void expect_config_error(const char *fmt, const char *token)
{
    rl_limiter *lim;
    CHECK_EQ(create_fmt(fmt, &lim), RL_ERR_CONFIG);
    CHECK(lim == NULL);
    CHECK_CONTAINS(rl_last_error(), token);
}

static void test_bad_combinations(void)
{
    rl_limiter *creator;
    make_name("keys");
    /* refused whether or not the region exists: checked before any I/O */
    if (!CHECK_EQ(create_fmt("rate=5/s backend=shm name=%s", &creator), RL_OK))
        return;
    expect_config_error("backend=shm name=%s algorithm=fixed_window", "\"algorithm=fixed_window\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s burst=5", "\"burst=5\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s capacity=100", "\"capacity=100\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s mode=0660", "\"mode=0660\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s top=7", "\"top=7\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s top=0", "\"top=0\" needs \"rate=\"");
    expect_config_error("backend=shm name=%s url=redis://h:1", "url");
    expect_config_error("backend=shm name=%s prefix=x", "prefix");
    expect_config_error("backend=shm name=%s dry_run=yes", "dry_run=yes");
    expect_config_error("backend=shm name=%s timeout_ms=0", "timeout_ms=0");
    expect_config_error("backend=shm", "name=");
    /* no rate and no shm: nothing to attach to */
    expect_config_error("name=%s", "rate");
    expect_config_error("backend=redis url=redis://127.0.0.1:1", "rate");
    rl_destroy(creator);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

static void test_missing_and_bad_names(void)
{
    rl_limiter *lim;
    make_name("missing");
    CHECK_EQ(create_fmt("backend=shm name=%s", &lim), RL_ERR_IO);
    CHECK(lim == NULL);
    CHECK_CONTAINS(rl_last_error(), name);
    CHECK_CONTAINS(rl_last_error(), "No such file");
    /* an attach creates nothing */
    CHECK_EQ(rl_shm_unlink(name), RL_ERR_IO);

    lim = (rl_limiter *)&name;
    CHECK_EQ(rl_create("backend=shm name=rl-no-slash", &lim), RL_ERR_CONFIG);
    CHECK(lim == NULL);
    CHECK_CONTAINS(rl_last_error(), "name=rl-no-slash");
    CHECK_EQ(rl_create("backend=shm name=/a/b", &lim), RL_ERR_CONFIG);
    CHECK_CONTAINS(rl_last_error(), "name=/a/b");
}

/* Writes `len` bytes of `byte` as /dev/shm/<name>. */
static int write_garbage(size_t len, int byte)
{
    char path[128];
    char buf[4096];
    size_t done = 0;
    int fd;
    snprintf(path, sizeof path, "/dev/shm/%s", name + 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (!CHECK(fd >= 0))
        return 0;
    memset(buf, byte, sizeof buf);
    while (done < len) {
        size_t n = len - done < sizeof buf ? len - done : sizeof buf;
        if (!CHECK(write(fd, buf, n) == (ssize_t)n))
            break;
        done += n;
    }
    close(fd);
    return 1;
}

static void refused(int want, const char *why)
{
    rl_limiter *lim;
    CHECK_EQ(create_fmt("backend=shm name=%s", &lim), want);
    CHECK(lim == NULL);
    CHECK_CONTAINS(rl_last_error(), name);
    CHECK_CONTAINS(rl_last_error(), why);
    CHECK_CONTAINS(rl_last_error(), "rl_shm_unlink");
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

static void test_garbage_objects(void)
{
    rl_limiter *lim;
    int fd;
    make_name("garbage");
    if (write_garbage(1 << 16, 'x'))
        refused(RL_ERR_INCOMPATIBLE, "not a libratelimit region");
    if (write_garbage(100, 0xA5))
        refused(RL_ERR_INCOMPATIBLE, "too small");
    if (write_garbage(0, 0)) /* a creator that never sized it: waited for, 2 s */
        refused(RL_ERR_INCOMPATIBLE, "empty");
    /* a creator that died before finishing: never ready */
    if (write_garbage(1 << 16, 0))
        refused(RL_ERR_IO, "not ready");

    /* a region of another layout version */
    if (CHECK_EQ(create_fmt("rate=5/s capacity=10 backend=shm name=%s", &lim), RL_OK)) {
        rl_destroy(lim);
        fd = shm_open(name, O_RDWR, 0);
        if (CHECK(fd >= 0)) {
            uint32_t v = 999; /* layout version: a u32 at offset 8 (src/store/shm/layout.rs) */
            CHECK(pwrite(fd, &v, sizeof v, 8) == (ssize_t)sizeof v);
            close(fd);
        }
        refused(RL_ERR_INCOMPATIBLE, "version 999");
    }
}

/* Workers that attach (retrying while there is no region yet) at the same
 * time as one creates it: each gets the creator's region, whole, however far
 * the creator had got; together they admit exactly the quota. */
static void test_attach_while_the_creator_starts(void)
{
    enum { WORKERS = 6, QUOTA = 40 };
    pid_t pids[WORKERS];
    rl_limiter *creator = NULL, *lim;
    rl_decision d;
    rl_stats st;
    int i, admitted = 0;

    make_name("race");
    for (i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            int rc, n = 0, k;
            do {
                rc = create_fmt("backend=shm name=%s", &lim);
            } while (rc == RL_ERR_IO && strstr(rl_last_error(), "no shm region") != NULL);
            if (rc != RL_OK) {
                fprintf(stderr, "worker %d: %d %s\n", i, rc, rl_last_error());
                _exit(100);
            }
            for (k = 0; k < 20; k++)
                if (rl_check(lim, "shared", 6, 1, &d) == RL_OK && d.allowed)
                    n++;
            rl_destroy(lim);
            _exit(n);
        }
        CHECK(pids[i] > 0);
    }
    test_sleep_ms(20);
    CHECK_EQ(create_fmt("rate=40/1000d capacity=10 backend=shm name=%s", &creator), RL_OK);
    for (i = 0; i < WORKERS; i++) {
        int status = 0;
        if (pids[i] > 0 && CHECK(waitpid(pids[i], &status, 0) == pids[i]) && CHECK(WIFEXITED(status))) {
            CHECK(WEXITSTATUS(status) <= 20);
            admitted += WEXITSTATUS(status) <= 20 ? WEXITSTATUS(status) : 0;
        }
    }
    CHECK_EQ(admitted, QUOTA);
    if (creator && CHECK_EQ(rl_stats_get(creator, &st), RL_OK)) {
        CHECK_EQ(st.allowed, QUOTA);
        CHECK_EQ(st.limited, WORKERS * 20 - QUOTA);
    }
    rl_destroy(creator);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

int main(void)
{
    test_attach_shares_the_region();
    test_bad_combinations();
    test_missing_and_bad_names();
    test_garbage_objects();
    test_attach_while_the_creator_starts();
    return CHECK_SUMMARY();
}
