/*
 * test_shm_procs.c — backend=shm across processes: 4 processes x 2 threads on
 * one key admit exactly the quota, whether each process opens the region by
 * name, inherits one handle across fork(), or all of them race to create it;
 * and a key's state outlives the worker that wrote it (even one killed with
 * SIGKILL).
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#define PROCS 4
#define THREADS 2
#define TRIES 500 /* per thread: 4000 checks for a quota of 1000 */

static char name[64];
static char config[256];

static void make_names(const char *tag, const char *rate)
{
    snprintf(name, sizeof name, "/rl-ctest-%ld-%s", (long)getpid(), tag);
    snprintf(config, sizeof config, "rate=%s backend=shm name=%s", rate, name);
    (void)rl_shm_unlink(name); /* a leftover of an earlier, interrupted run */
}

struct job {
    rl_limiter *lim;
    uint64_t admitted;
    int errors;
};

static void *hammer(void *arg)
{
    struct job *j = arg;
    rl_decision d;
    int i;
    for (i = 0; i < TRIES; i++) {
        if (rl_check(j->lim, "shared", 6, 1, &d) != RL_OK)
            j->errors++;
        else if (d.allowed)
            j->admitted++;
    }
    return NULL;
}

/* A worker: waits for the start signal (EOF on `go`), opens the region by
 * name unless it inherited `lim`, runs THREADS threads, reports how many
 * checks were admitted on `out` (UINT64_MAX on error), and exits. */
static void worker(rl_limiter *lim, int go, int out)
{
    struct job jobs[THREADS];
    pthread_t tids[THREADS];
    uint64_t total = 0;
    char c;
    int i, opened = 0, bad = 0;

    while (read(go, &c, 1) < 0 && errno == EINTR) {
    }
    if (!lim) {
        if (rl_create(config, &lim) != RL_OK) {
            fprintf(stderr, "worker %ld: rl_create: %s\n", (long)getpid(), rl_last_error());
            total = UINT64_MAX;
            (void)!write(out, &total, sizeof total);
            _exit(1);
        }
        opened = 1;
    }
    for (i = 0; i < THREADS; i++) {
        jobs[i].lim = lim;
        jobs[i].admitted = 0;
        jobs[i].errors = 0;
        if (pthread_create(&tids[i], NULL, hammer, &jobs[i]) != 0)
            _exit(1);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(tids[i], NULL);
        total += jobs[i].admitted;
        bad += jobs[i].errors;
    }
    if (bad)
        total = UINT64_MAX;
    (void)!write(out, &total, sizeof total);
    if (opened)
        rl_destroy(lim);
    _exit(0);
}

/* Runs PROCS workers started together; returns the checks they admitted. */
static uint64_t run_workers(rl_limiter *inherited)
{
    int go[2], out[2], i, status;
    pid_t pids[PROCS];
    uint64_t sum = 0, n;

    if (!CHECK(pipe(go) == 0 && pipe(out) == 0))
        return 0;
    fflush(stdout);
    fflush(stderr);
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            close(go[1]);
            close(out[0]);
            worker(inherited, go[0], out[1]);
        }
        CHECK(pids[i] > 0);
    }
    close(go[0]);
    close(out[1]);
    close(go[1]); /* go! */
    for (i = 0; i < PROCS; i++) {
        n = 0;
        if (CHECK(read(out[0], &n, sizeof n) == (ssize_t)sizeof n) && CHECK(n != UINT64_MAX))
            sum += n;
    }
    close(out[0]);
    for (i = 0; i < PROCS; i++) {
        if (pids[i] > 0) {
            CHECK(waitpid(pids[i], &status, 0) == pids[i]);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    return sum;
}

static void check_stats(rl_limiter *lim)
{
    rl_stats s;
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.allowed, 1000);
    CHECK_EQ(s.limited, PROCS * THREADS * TRIES - 1000);
    CHECK_EQ(s.keys, 1);
    CHECK_EQ(s.errors, 0);
}

/* The master creates the region; each worker opens it by name. */
static void test_opened_by_name(void)
{
    rl_limiter *lim = NULL;
    make_names("byname", "1000/hour");
    if (!CHECK_EQ(rl_create(config, &lim), RL_OK))
        return;
    CHECK_EQ(run_workers(NULL), 1000);
    check_stats(lim);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* One handle, made before fork(), used by every child. */
static void test_inherited_handle(void)
{
    rl_limiter *lim = NULL;
    make_names("inherited", "1000/hour");
    if (!CHECK_EQ(rl_create(config, &lim), RL_OK))
        return;
    CHECK_EQ(run_workers(lim), 1000);
    check_stats(lim);
    rl_destroy(lim);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* No master: the workers all create the region at the same moment; one of
 * them makes it and the others wait for it. Windows too. */
static void test_created_by_racing_workers(void)
{
    const char *rates[] = {"1000/hour", "1000/1000d algorithm=fixed_window",
                           "1000/1000d algorithm=sliding_window"};
    size_t r;
    for (r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        rl_limiter *lim = NULL;
        make_names("race", rates[r]);
        CHECK_EQ(run_workers(NULL), 1000);
        if (CHECK_EQ(rl_create(config, &lim), RL_OK)) {
            check_stats(lim);
            rl_destroy(lim);
        }
        CHECK_EQ(rl_shm_unlink(name), RL_OK);
    }
}

static uint64_t peek_remaining(const char *key)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    uint64_t remaining = UINT64_MAX;
    if (CHECK_EQ(rl_create(config, &lim), RL_OK)) {
        if (CHECK_EQ(rl_check(lim, key, strlen(key), 0, &d), RL_OK))
            remaining = d.remaining;
        rl_destroy(lim);
    }
    return remaining;
}

/* A worker spends, then goes away (cleanly, or killed): the spending stays. */
static void test_state_outlives_its_worker(void)
{
    pid_t pid;
    int status;
    make_names("outlive", "5/hour");

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        rl_limiter *lim = NULL;
        rl_decision d;
        int i, ok = rl_create(config, &lim) == RL_OK;
        for (i = 0; ok && i < 3; i++)
            ok = rl_check(lim, "k", 1, 1, &d) == RL_OK && d.allowed;
        rl_destroy(lim);
        _exit(ok ? 0 : 1);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ(peek_remaining("k"), 2);

    pid = fork();
    if (pid == 0) {
        rl_limiter *lim = NULL;
        rl_decision d;
        if (rl_create(config, &lim) != RL_OK || rl_check(lim, "k", 1, 1, &d) != RL_OK || !d.allowed)
            _exit(1);
        raise(SIGKILL); /* no rl_destroy, no exit handlers */
        _exit(2);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_EQ(peek_remaining("k"), 1);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

int main(void)
{
    test_opened_by_name();
    test_inherited_handle();
    test_created_by_racing_workers();
    test_state_outlives_its_worker();
    return CHECK_SUMMARY();
}
