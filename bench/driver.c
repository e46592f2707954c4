/*
 * driver.c — the benchmark loop shared by every C limiter in `make bench`.
 *
 * Built once per limiter: the limiter comes from the header named by
 * -DLIMITER_HEADER, which defines (usually as static inline wrappers around
 * the limiter's own API, so the call is exactly the one an application makes):
 *
 *     #define LIMITER_NAME "..."          column name in the table
 *     typedef ... limiter;
 *     limiter *limiter_new(int denying);  denying 0: a limiter that never denies
 *                                         here; 1: one that allows one check per
 *                                         key per hour
 *     int limiter_check(limiter *, const char *key, size_t key_len);  1 = allowed
 *     void limiter_free(limiter *, long denied);  (denied: how many checks the
 *                                         limiter must have denied, if it counts)
 *
 * Cases (identical in bench/governor.rs; keys from bench/keys.h):
 *   hot key              1 thread, one key
 *   100k keys            1 thread, round-robin over 100,000 keys
 *   2 threads, own keys  2 threads, each round-robin over its own 1,000 keys
 *   2 threads, one key   2 threads, the same key
 *   denied: hot key            1 thread, one key over its limit
 *   denied: 2 threads, one key 2 threads, the same key over its limit
 * (the limiter allows one check per key per hour; the untimed warm-up takes
 * it, so every timed check is a denial: what a key under attack costs)
 * and, if the header defines LIMITER_PROCESSES (limiters whose state is
 * shared between processes: lim_shm.h), the same two with processes:
 *   2 processes, own keys  2 processes, each on the keys of one thread above
 *   2 processes, one key   2 processes, the same key
 * The parent creates the limiter and inserts the keys, then fork()s the two
 * processes, which check through the handle they inherit (as the workers of a
 * pre-fork server do). They start together: each says it is ready on one
 * pipe and waits for end-of-file on another, which the parent closes once
 * both are ready; each times its own loop and sends back its start, end and
 * denials on a third pipe.
 * Every key is inserted first (untimed, in index order); the timed loop goes
 * round-robin over the case's keys in a fixed shuffled order (keys.h).
 *
 * Usage: bench_X [iterations-per-thread [case]] (case: run only the cases
 * whose name contains it, e.g. "hot", for profiling). Prints one line per case:
 *     <limiter> TAB <case> TAB <ns per check>
 * For the threaded (and 2-process) cases ns per check is per thread: wall
 * time of the run, from the first start to the last end, divided by the
 * checks ONE thread (process) made (what a caller waits per check).
 * Exits 1 if any check of an allowed case was denied, or any of a denied
 * case allowed.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keys.h"
#include LIMITER_HEADER

#ifdef LIMITER_PROCESSES
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char (*keys)[KEY_LEN + 1];     /* in index order (warm-up) */
static char (*shuffled)[KEY_LEN + 1]; /* each case's key range, shuffled within it */
static long iters = 2000000;
static const char *only; /* run only cases whose name contains this */

struct worker {
    limiter *lim;
    char (*keys)[KEY_LEN + 1];
    size_t first, count; /* keys[first .. first+count) in turn */
    long iters;
    long denied;
    pthread_barrier_t *start;
    double t0, t1;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    size_t k = 0;
    long i, denied = 0;
    if (w->start)
        pthread_barrier_wait(w->start);
    w->t0 = now_ns();
    for (i = 0; i < w->iters; i++) {
        const char *key = w->keys[w->first + k];
        denied += !limiter_check(w->lim, key, KEY_LEN);
        if (++k == w->count)
            k = 0;
    }
    w->t1 = now_ns();
    w->denied = denied;
    return NULL;
}

/* A new limiter with every key of the case inserted (untimed). */
static limiter *warm_limiter(const char *name, int workers, const size_t *first, size_t count, int denying)
{
    limiter *lim = limiter_new(denying);
    int t;
    if (!lim) {
        fprintf(stderr, "%s: cannot create the limiter\n", LIMITER_NAME);
        exit(2);
    }
    for (t = 0; t < workers; t++) {
        /* (A denying case warms up the very key it times, to spend its one check.) */
        struct worker warm = { lim, denying ? shuffled : keys, first[t], count, (long)count, 0, NULL, 0, 0 };
        run(&warm);
        if (warm.denied && !(denying && t > 0)) {
            fprintf(stderr, "%s: %s: denied during warm-up\n", LIMITER_NAME, name);
            exit(1);
        }
    }
    return lim;
}

/* Checks the workers' denials, frees the limiter, prints the case's line:
 * wall time from the first start to the last end / one worker's checks. */
static void report(const char *name, limiter *lim, const struct worker *w, int workers, int denying)
{
    long denied = 0;
    double t0 = w[0].t0, t1 = w[0].t1;
    int t;
    for (t = 1; t < workers; t++) {
        t0 = w[t].t0 < t0 ? w[t].t0 : t0;
        t1 = w[t].t1 > t1 ? w[t].t1 : t1;
    }
    for (t = 0; t < workers; t++) {
        if (w[t].denied != (denying ? w[t].iters : 0)) {
            fprintf(stderr, "%s: %s: %ld of %ld checks denied; expected %s\n", LIMITER_NAME, name, w[t].denied,
                    w[t].iters, denying ? "all" : "none");
            exit(1);
        }
        denied += w[t].denied;
    }
    /* With a denying limiter, the second worker's warm-up check was denied too. */
    limiter_free(lim, denied + (denying && workers > 1 ? workers - 1 : 0));
    printf("%s\t%s\t%.1f\n", LIMITER_NAME, name, (t1 - t0) / (double)iters);
    fflush(stdout);
}

/* One case: `threads` workers, worker t on keys[first[t] .. first[t]+count). */
static void run_case(const char *name, int threads, const size_t *first, size_t count, int denying)
{
    struct worker w[2];
    pthread_t tid[2];
    pthread_barrier_t start;
    limiter *lim;
    int t;
    if (only && !strstr(name, only))
        return;
    lim = warm_limiter(name, threads, first, count, denying);
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (t = 0; t < threads; t++) {
        struct worker init = { lim, shuffled, first[t], count, iters, 0, threads > 1 ? &start : NULL, 0, 0 };
        w[t] = init;
    }
    if (threads == 1) {
        run(&w[0]);
    } else {
        for (t = 0; t < threads; t++)
            if (pthread_create(&tid[t], NULL, run, &w[t]) != 0) {
                fprintf(stderr, "pthread_create failed\n");
                exit(2);
            }
        for (t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
    }
    pthread_barrier_destroy(&start);
    report(name, lim, w, threads, denying);
}

#ifdef LIMITER_PROCESSES
/* What a child process sends back: its timing and denials. */
struct outcome {
    double t0, t1;
    long denied;
};

static void xpipe(int fd[2])
{
    if (pipe(fd) != 0) {
        perror("pipe");
        exit(2);
    }
}

/* One case run by 2 forked processes, process p on keys[first[p] .. first[p]+count). */
static void run_case_processes(const char *name, const size_t *first, size_t count)
{
    struct worker w[2];
    pid_t pid[2];
    int ready[2], go[2], result[2], p, status;
    char c;
    limiter *lim;
    if (only && !strstr(name, only))
        return;
    lim = warm_limiter(name, 2, first, count, 0);
    xpipe(ready);
    xpipe(go);
    xpipe(result);
    fflush(stdout);
    for (p = 0; p < 2; p++) {
        struct worker init = { lim, shuffled, first[p], count, iters, 0, NULL, 0, 0 };
        w[p] = init;
        pid[p] = fork();
        if (pid[p] < 0) {
            perror("fork");
            exit(2);
        }
        if (pid[p] == 0) {
            struct outcome out;
            close(go[1]);
            close(ready[0]);
            close(result[0]);
            /* Ready; then wait for the parent to close the last write end of `go`. */
            if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 0)
                _exit(2);
            run(&w[p]);
            out.t0 = w[p].t0;
            out.t1 = w[p].t1;
            out.denied = w[p].denied;
            /* Smaller than PIPE_BUF: written at once, never interleaved. */
            _exit(write(result[1], &out, sizeof out) == (ssize_t)sizeof out ? 0 : 2);
        }
    }
    close(ready[1]);
    close(go[0]);
    close(result[1]);
    for (p = 0; p < 2; p++)
        if (read(ready[0], &c, 1) != 1) {
            fprintf(stderr, "%s: %s: a child process did not start\n", LIMITER_NAME, name);
            exit(2);
        }
    close(go[1]); /* go */
    for (p = 0; p < 2; p++) {
        struct outcome out;
        if (read(result[0], &out, sizeof out) != (ssize_t)sizeof out) {
            fprintf(stderr, "%s: %s: a child process failed\n", LIMITER_NAME, name);
            exit(2);
        }
        w[p].t0 = out.t0;
        w[p].t1 = out.t1;
        w[p].denied = out.denied;
    }
    for (p = 0; p < 2; p++)
        if (waitpid(pid[p], &status, 0) != pid[p] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "%s: %s: a child process failed\n", LIMITER_NAME, name);
            exit(2);
        }
    close(ready[0]);
    close(result[0]);
    report(name, lim, w, 2, 0);
}
#endif

int main(int argc, char **argv)
{
    size_t i, *order, zero[2] = { 0, 0 }, own[2] = { MANY_KEYS, MANY_KEYS + THREAD_KEYS };
    if (argc > 1)
        iters = atol(argv[1]);
    if (argc > 2)
        only = argv[2];
    if (iters <= 0) {
        fprintf(stderr, "usage: %s [iterations-per-thread]\n", argv[0]);
        return 2;
    }
    keys = malloc(sizeof *keys * TOTAL_KEYS);
    shuffled = malloc(sizeof *shuffled * TOTAL_KEYS);
    order = malloc(sizeof *order * TOTAL_KEYS);
    if (!keys || !shuffled || !order)
        return 2;
    for (i = 0; i < TOTAL_KEYS; i++) {
        make_key(keys[i], (unsigned long long)i);
        order[i] = i;
    }
    /* Shuffle within each case's range, so each case keeps its own keys. */
    shuffle(order, MANY_KEYS);
    shuffle(order + MANY_KEYS, THREAD_KEYS);
    shuffle(order + MANY_KEYS + THREAD_KEYS, THREAD_KEYS);
    for (i = 0; i < TOTAL_KEYS; i++)
        memcpy(shuffled[i], keys[order[i]], KEY_LEN + 1);

    run_case(CASE_HOT, 1, zero, 1, 0);
    run_case(CASE_MANY, 1, zero, MANY_KEYS, 0);
    run_case(CASE_THREADS_OWN, 2, own, THREAD_KEYS, 0);
    run_case(CASE_THREADS_ONE, 2, zero, 1, 0);
#ifdef LIMITER_PROCESSES
    run_case_processes(CASE_PROCS_OWN, own, THREAD_KEYS);
    run_case_processes(CASE_PROCS_ONE, zero, 1);
#endif
    run_case(CASE_DENIED_HOT, 1, zero, 1, 1);
    run_case(CASE_DENIED_THREADS, 2, zero, 1, 1);
    free(order);
    free(shuffled);
    free(keys);
    return 0;
}
