/*
 * prefork_server.c — a pre-forking HTTP server (nginx-style) whose workers
 * share their rate limits through libratelimit's shm backend.
 *
 *   build/prefork_server --port P --workers N --config "CONFIG" [--bind ADDR]
 *
 * CONFIG must say backend=shm and name=/some-name, e.g.
 *   --config "rate=100/minute backend=shm name=/api-limits"
 *
 * The master creates (or opens) the shared region with rl_create(), binds the
 * listening socket, and forks N workers. Each worker inherits both: it accepts
 * connections on the shared socket and checks requests against the inherited
 * rl_limiter handle, whose MAP_SHARED region and process-shared locks make one
 * set of limits for all workers. (A worker could equally rl_create() the same
 * config itself: it would open the region by name.) Requests are answered as
 * by http_server.c, with the same http_serve_connection() (http.c):
 *
 *   GET /        200 "ok", or 429 with a JSON body once the caller's quota
 *                is spent; both carry the rl_format_headers() lines
 *   other paths  404          other methods on /  405          malformed  400
 *
 * keyed by "key:<X-API-Key>" when that header is present, else "ip:<client IP>".
 *
 * A worker that dies (a crash, the OOM killer, kill -9) is replaced at once;
 * if it died holding a lock inside the region, the library repairs it. The
 * limits are not reset: they live in the region, not in the workers.
 *
 * Shutdown: SIGINT/SIGTERM make the master send SIGTERM to every worker; each
 * finishes the request in hand and exits; the master waits for them (at most
 * STOP_WAIT_SEC, then SIGKILL), destroys its handle and, if it created the
 * region, removes it with rl_shm_unlink(), then exits 0. A region that existed
 * before the master started is left in place.
 *
 * Exit status: 0 after a signal, 2 for bad arguments or a bad config, 1 when
 * the socket or the workers cannot be set up.
 */
#define _POSIX_C_SOURCE 200809L

#include <ratelimit.h>

#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256
#define STOP_WAIT_SEC 10      /* how long stopping workers may take */

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

static volatile sig_atomic_t worker_stop;

static void on_worker_signal(int sig)
{
    (void)sig;
    worker_stop = 1;
}

/* A worker's life: accept and serve until SIGTERM/SIGINT. */
static void worker_main(rl_limiter *limiter, int listen_fd)
{
    struct sigaction sa;
    sigset_t none;
    struct pollfd pfd;

    /* Stop signals set a flag (no SA_RESTART: poll() returns EINTR). They
     * were blocked by the master before fork(); unblock them only now. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_worker_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    pfd.fd = listen_fd;
    pfd.events = POLLIN;
    while (!worker_stop) {
        int fd;
        if (poll(&pfd, 1, -1) < 0)
            continue; /* EINTR: look at worker_stop again */
        if (!(pfd.revents & POLLIN))
            continue;
        fd = http_accept(listen_fd);
        if (fd < 0)
            continue; /* another worker took it (EAGAIN), or the client left */
        http_serve_connection(fd, limiter, log_check_error);
    }
    /* The handle is the master's: the child only drops its copy of the
     * mapping (rl_destroy never removes the region). */
    rl_destroy(limiter);
    close(listen_fd);
    exit(0);
}

/* ---- master ------------------------------------------------------------- */

static int usage(const char *msg)
{
    fprintf(stderr,
            "prefork_server: %s\n"
            "usage: prefork_server --port P --workers N --config \"CONFIG\" [--bind ADDR]\n"
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

static pid_t spawn_worker(rl_limiter *limiter, int listen_fd)
{
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0)
        worker_main(limiter, listen_fd);
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

int main(int argc, char **argv)
{
    const char *config = NULL, *bind_addr = "127.0.0.1";
    long port = -1, workers = -1, bound_port = 0;
    pid_t pids[MAX_WORKERS];
    char name[256];
    rl_limiter *limiter;
    sigset_t signals;
    rl_stats stats;
    int i, rc, fd, listen_fd, created, sig = 0, running = 0;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc)
            return usage("missing value after the last option");
        if (strcmp(opt, "--port") == 0) {
            if (http_parse_number(argv[++i], 0, 65535, &port) < 0)
                return usage("--port wants a number from 0 to 65535");
        } else if (strcmp(opt, "--workers") == 0) {
            if (http_parse_number(argv[++i], 1, MAX_WORKERS, &workers) < 0)
                return usage("--workers wants a number from 1 to 256");
        } else if (strcmp(opt, "--config") == 0) {
            config = argv[++i];
        } else if (strcmp(opt, "--bind") == 0) {
            bind_addr = argv[++i];
        } else {
            return usage("unknown option");
        }
    }
    if (port < 0 || workers < 0 || config == NULL)
        return usage("--port, --workers and --config are required");
    if (strstr(config, "backend=shm") == NULL)
        return usage("--config must say backend=shm (and name=/something): workers share limits "
                     "only through a shared-memory region");
    config_name(config, name, sizeof name);
    for (i = 0; i < MAX_WORKERS; i++)
        pids[i] = 0;

    /* The master handles stop signals and dead workers synchronously, with
     * sigwait(); workers inherit the mask and unblock what they need. */
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

    rc = rl_create(config, &limiter);
    if (rc != RL_OK) {
        fprintf(stderr, "prefork_server: bad config: %s (%s)\n", rl_last_error(), rl_strerror(rc));
        return 2;
    }

    listen_fd = http_listen("prefork_server", bind_addr, port, &bound_port);
    if (listen_fd < 0) {
        rl_destroy(limiter);
        if (created)
            rl_shm_unlink(name);
        return 1;
    }

    for (i = 0; i < workers; i++) {
        pids[i] = spawn_worker(limiter, listen_fd);
        if (pids[i] < 0) {
            perror("prefork_server: fork");
            break;
        }
        running++;
    }

    if (running == workers) {
        http_print_listening(bind_addr, bound_port);
        for (;;) {
            pid_t dead;
            int status;
            if (sigwait(&signals, &sig) != 0)
                continue;
            if (sig != SIGCHLD)
                break;
            /* Replace every worker that died. */
            while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
                for (i = 0; i < workers; i++) {
                    if (pids[i] != dead)
                        continue;
                    if (WIFSIGNALED(status))
                        fprintf(stderr, "prefork_server: worker %ld killed by signal %d; restarting it\n",
                                (long)dead, WTERMSIG(status));
                    else
                        fprintf(stderr, "prefork_server: worker %ld exited with %d; restarting it\n",
                                (long)dead, WEXITSTATUS(status));
                    sleep_ms(10); /* a worker that dies at once must not make a fork storm */
                    pids[i] = spawn_worker(limiter, listen_fd);
                    if (pids[i] < 0)
                        perror("prefork_server: fork"); /* one worker fewer */
                }
            }
        }
    }

    /* Stop: every worker finishes the request in hand and exits. */
    for (i = 0; i < workers; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    {
        time_t deadline = time(NULL) + STOP_WAIT_SEC;
        int left = 0;
        for (i = 0; i < workers; i++)
            left += pids[i] > 0;
        while (left > 0) {
            pid_t dead = waitpid(-1, NULL, WNOHANG);
            if (dead > 0) {
                left--;
                continue;
            }
            if (dead < 0 && errno == ECHILD)
                break;
            if (time(NULL) > deadline) {
                for (i = 0; i < workers; i++)
                    if (pids[i] > 0)
                        kill(pids[i], SIGKILL);
                while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
                }
                break;
            }
            sleep_ms(10);
        }
    }
    close(listen_fd);

    if (rl_stats_get(limiter, &stats) == RL_OK)
        fprintf(stderr,
                "prefork_server: stopped by signal %d: %" PRIu64 " allowed, %" PRIu64
                " limited, %" PRIu64 " keys\n",
                sig, stats.allowed, stats.limited, stats.keys);
    rl_destroy(limiter);
    if (created && rl_shm_unlink(name) != RL_OK)
        fprintf(stderr, "prefork_server: removing %s: %s\n", name, rl_last_error());
    return running == workers ? 0 : 1;
}
