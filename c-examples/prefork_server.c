/*
 * prefork_server.c — a pre-forking HTTP server (nginx-style) whose workers
 * share their rate limits through libratelimit's shm backend.
 *
 *   build/prefork_server --config "CONFIG" --workers N --port P [--bind ADDR]
 *
 * CONFIG must say backend=shm and name=/some-name, e.g.
 *   --config "rate=100/minute backend=shm name=/api-limits"
 *
 * The master creates (or opens) the shared region with rl_create(), binds the
 * listening sockets, and forks N workers, as nginx does. Each worker inherits
 * both and runs one event loop (http/loop.c) that accepts from the shared
 * sockets and checks requests against the inherited rl_limiter handle, whose
 * MAP_SHARED region and process-shared locks make one set of limits for all
 * workers. (A worker could equally rl_create() the same config itself: it
 * would open the region by name.) What requests get, the other options
 * (--listen, timeouts, --max-connections) and how slow clients are handled:
 * http/http.h.
 *
 * A worker that dies (a crash, the OOM killer, kill -9) is replaced at once;
 * if it died holding a lock inside the region, the library repairs it. The
 * limits are not reset: they live in the region, not in the workers.
 *
 * Shutdown: SIGINT/SIGTERM make the master send SIGTERM to every worker; each
 * stops accepting, finishes the responses it is writing (at most
 * HTTP_STOP_GRACE_MS), closes its connections and exits; the master waits for
 * them (SIGKILL after STOP_WAIT_MS), destroys its handle and, if it created
 * the region, removes it with rl_shm_unlink(), then exits 0. A region that
 * existed before the master started is left in place.
 *
 * Exit status: 0 after a signal, 2 for bad arguments or a bad config, 1 when
 * the socket or the workers cannot be set up.
 */
#define _GNU_SOURCE

#include <ratelimit.h>

#include "http/http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256
#define STOP_WAIT_MS 2000 /* then stopping workers are killed */

/* ---- logging of limiter errors (per worker): the first one in full ------- */

static int logged_error;

static void log_check_error(void)
{
    /* rl_last_error() is this thread's, valid until its next rl_* call */
    if (!logged_error) {
        logged_error = 1;
        fprintf(stderr, "prefork_server[%ld]: rl_check: %s (obeying the decision it returned; "
                        "further errors are only counted)\n", (long)getpid(), rl_last_error());
    }
}

/* ---- workers ------------------------------------------------------------ */

/* A worker's life: one event loop over the shared listening sockets until
 * SIGTERM/SIGINT. Those signals stay blocked (the master blocked them before
 * fork()) and arrive through a signalfd, which the loop watches as its stop
 * descriptor: no handler, no race between a signal and epoll_wait(). */
static void worker_main(rl_limiter *limiter, const struct http_cli *cli, const int *listen_fds)
{
    struct http_loop_options options;
    sigset_t stop_signals, chld;
    int i, stop_fd;

    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
    if (stop_fd < 0) {
        fprintf(stderr, "prefork_server[%ld]: signalfd: %s\n", (long)getpid(), strerror(errno));
        exit(1);
    }

    options.limiter = limiter;
    options.on_check_error = log_check_error;
    options.listen_fds = listen_fds;
    options.listen_count = cli->listen_count;
    options.stop_fd = stop_fd;
    options.header_timeout_ms = cli->header_timeout_s * 1000;
    options.keepalive_timeout_ms = cli->keepalive_timeout_s * 1000;
    options.max_connections = cli->max_connections;
    i = http_serve("prefork_server", &options);

    /* The handle is the master's: the child only drops its copy of the
     * mapping (rl_destroy never removes the region). */
    rl_destroy(limiter);
    for (i = 0; i < cli->listen_count; i++)
        close(listen_fds[i]);
    close(stop_fd);
    exit(0);
}

/* ---- master ------------------------------------------------------------- */

static int usage(const char *msg)
{
    fprintf(stderr,
            "prefork_server: %s\n"
            "  e.g. prefork_server --port 8080 --workers 4 \\\n"
            "         --config \"rate=100/minute backend=shm name=/api-limits\"\n",
            msg);
    return 2;
}

/* The value of "name=" in the config string, or "" (copied into out). */
static void config_name(const char *config, char *out, size_t size)
{
    const char *p = config;
    out[0] = '\0';
    while (*p) {
        size_t len;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        len = strcspn(p, " \t\n\r\f\v");
        if (len > 5 && strncmp(p, "name=", 5) == 0) {
            if (len - 5 < size) {
                memcpy(out, p + 5, len - 5);
                out[len - 5] = '\0';
            }
            return;
        }
        p += len;
    }
}

static pid_t spawn_worker(rl_limiter *limiter, const struct http_cli *cli, const int *listen_fds)
{
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0)
        worker_main(limiter, cli, listen_fds);
    return pid;
}

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends SIGTERM to every worker and waits for them; SIGKILL for any still
 * there after STOP_WAIT_MS (each needs at most HTTP_STOP_GRACE_MS). */
static void stop_workers(pid_t *pids, long workers)
{
    long long deadline = monotonic_ms() + STOP_WAIT_MS;
    long i, left = 0;
    for (i = 0; i < workers; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGTERM);
            left++;
        }
    }
    while (left > 0) {
        pid_t dead = waitpid(-1, NULL, WNOHANG);
        if (dead > 0) {
            left--;
            continue;
        }
        if (dead < 0 && errno == ECHILD)
            break;
        if (monotonic_ms() > deadline) {
            for (i = 0; i < workers; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
            }
            break;
        }
        sleep_ms(5);
    }
}

int main(int argc, char **argv)
{
    struct http_cli cli;
    int listen_fds[HTTP_MAX_LISTEN];
    long ports[HTTP_MAX_LISTEN];
    pid_t pids[MAX_WORKERS];
    char name[256];
    rl_limiter *limiter;
    sigset_t signals;
    rl_stats stats;
    long i, running = 0;
    int fd, created, sig = 0;

    if (http_cli_parse("prefork_server", argc, argv, "--workers", &cli) < 0)
        return 2;
    if (cli.count < 0)
        return usage("--workers is required");
    if (strstr(cli.config, "backend=shm") == NULL)
        return usage("--config must say backend=shm (and name=/something): workers share limits "
                     "only through a shared-memory region");
    http_fit_fd_limit(&cli, 1); /* every worker is a process of its own */
    config_name(cli.config, name, sizeof name);
    for (i = 0; i < MAX_WORKERS; i++)
        pids[i] = 0;

    /* The master handles stop signals and dead workers synchronously, with
     * sigwait(); workers inherit the mask (see worker_main). */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGCHLD);
    sigprocmask(SIG_BLOCK, &signals, NULL);

    /* Does the region exist already? Then it is someone else's to remove. */
    fd = name[0] ? shm_open(name, O_RDONLY, 0) : -1;
    created = fd < 0;
    if (fd >= 0)
        close(fd);

    if (rl_create(cli.config, &limiter) != RL_OK) {
        fprintf(stderr, "prefork_server: bad config: %s\n", rl_last_error());
        return 2;
    }
    if (http_limiter_checks("prefork_server", limiter) < 0) {
        rl_destroy(limiter);
        if (created)
            rl_shm_unlink(name);
        return 2;
    }

    if (http_listen_all("prefork_server", &cli, listen_fds, ports) < 0) {
        rl_destroy(limiter);
        if (created)
            rl_shm_unlink(name);
        return 1;
    }

    for (i = 0; i < cli.count; i++) {
        pids[i] = spawn_worker(limiter, &cli, listen_fds);
        if (pids[i] < 0) {
            perror("prefork_server: fork");
            break;
        }
        running++;
    }

    if (running == cli.count) {
        http_print_listening(&cli, ports);
        for (;;) {
            pid_t dead;
            int status;
            if (sigwait(&signals, &sig) != 0)
                continue;
            if (sig != SIGCHLD)
                break;
            /* Replace every worker that died. */
            while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
                for (i = 0; i < cli.count; i++) {
                    if (pids[i] != dead)
                        continue;
                    if (WIFSIGNALED(status))
                        fprintf(stderr, "prefork_server: worker %ld killed by signal %d; restarting it\n",
                                (long)dead, WTERMSIG(status));
                    else
                        fprintf(stderr, "prefork_server: worker %ld exited with %d; restarting it\n",
                                (long)dead, WEXITSTATUS(status));
                    sleep_ms(10); /* a worker that dies at once must not make a fork storm */
                    pids[i] = spawn_worker(limiter, &cli, listen_fds);
                    if (pids[i] < 0)
                        perror("prefork_server: fork"); /* one worker fewer */
                }
            }
        }
    }

    stop_workers(pids, cli.count);
    for (i = 0; i < cli.listen_count; i++)
        close(listen_fds[i]);

    if (rl_stats_get(limiter, &stats) == RL_OK)
        fprintf(stderr,
                "prefork_server: stopped by signal %d: %" PRIu64 " allowed, %" PRIu64 " limited, %" PRIu64
                " errors, %" PRIu64 " keys\n",
                sig, stats.allowed, stats.limited, stats.errors, stats.keys);
    rl_destroy(limiter);
    if (created && rl_shm_unlink(name) != RL_OK)
        fprintf(stderr, "prefork_server: removing %s: %s\n", name, rl_last_error());
    return running == cli.count ? 0 : 1;
}
