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
 * by http_server.c:
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

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 8192         /* largest request head we read */
#define MAX_WORKERS 256
#define CLIENT_TIMEOUT_SEC 5  /* a silent client holds a worker at most this long */
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

/* ---- I/O helpers ------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads until the end of the request head ("\r\n\r\n"). Returns its length
 * (NUL-terminated in buf), 0 if the client sent nothing, -1 on error or when
 * the head does not fit in buf. */
static int read_head(int fd, char *buf, size_t size)
{
    size_t used = 0;
    while (used + 1 < size) {
        ssize_t n = recv(fd, buf + used, size - 1 - used, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return used == 0 ? 0 : -1;
        used += (size_t)n;
        buf[used] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return (int)used;
    }
    return -1;
}

/* Closes a connection without losing the response: closing a socket with
 * unread input makes the kernel send a reset, which can destroy the answer
 * before the client reads it. So: send FIN, then read and drop what the client
 * still sends, until it closes (bounded by size and by a short timeout). */
static void close_gently(int fd)
{
    char sink[4096];
    size_t drained = 0;
    struct timeval linger = {1, 0};
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &linger, sizeof linger);
    while (drained < 1024 * 1024) {
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        drained += (size_t)n;
    }
    close(fd);
}

/* ---- HTTP ---------------------------------------------------------------- */

static void respond(int fd, const char *status, const char *extra_headers,
                    const char *content_type, const char *body)
{
    char out[MAX_HEAD];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     status, content_type, strlen(body), extra_headers, body);
    if (n > 0 && (size_t)n < sizeof out)
        (void)send_all(fd, out, (size_t)n);
}

/* Finds header `name` (case-insensitive) in the header lines that follow the
 * request line. Returns a pointer to its value (leading blanks skipped) and
 * sets *len (trailing blanks dropped); NULL when absent. */
static const char *find_header(const char *head, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line && line[2] != '\r' && line[2] != '\0') {
        const char *start = line + 2;
        const char *end = strstr(start, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - start) > name_len && start[name_len] == ':' &&
            strncasecmp(start, name, name_len) == 0) {
            const char *v = start + name_len + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            *len = (size_t)(end - v);
            return v;
        }
        line = end;
    }
    return NULL;
}

/* The rate-limit key of a request: "key:<X-API-Key>" or "ip:<client IP>". */
static size_t request_key(int fd, const char *head, char *key, size_t size)
{
    size_t len = 0;
    const char *api_key = find_header(head, "X-API-Key", &len);
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    char ip[INET6_ADDRSTRLEN] = "unknown";

    if (api_key && len > 0) {
        if (len > size - 5)
            len = size - 5; /* head is <= 8 KiB and key is as large: no-op */
        memcpy(key, "key:", 4);
        memcpy(key + 4, api_key, len);
        return 4 + len;
    }
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) {
        if (peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, ip, sizeof ip);
        else if (peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, ip, sizeof ip);
    }
    return (size_t)snprintf(key, size, "ip:%s", ip);
}

static void serve_home(rl_limiter *limiter, int fd, const char *head)
{
    char key[MAX_HEAD + 8];
    char headers[512];
    char body[96];
    rl_decision d;
    size_t key_len = request_key(fd, head, key, sizeof key);
    int rc = rl_check(limiter, key, key_len, 1, &d);
    int64_t n;

    if (rc != RL_OK)
        log_check_error(); /* d is filled all the same: obey it */

    n = rl_format_headers(&d, 0, headers, sizeof headers);
    if (n < 0 || (size_t)n >= sizeof headers)
        headers[0] = '\0'; /* cannot happen with 512 bytes; serve without them */

    if (d.allowed) {
        respond(fd, "200 OK", headers, "text/plain", "ok");
    } else {
        snprintf(body, sizeof body, "{\"error\":\"rate_limited\",\"retry_after_ms\":%" PRIu64 "}",
                 d.retry_after_ms);
        respond(fd, "429 Too Many Requests", headers, "application/json", body);
    }
}

/* Splits the request line "METHOD SP TARGET SP HTTP/1.x" into method and path
 * (the target without its query string). Returns 0, or -1 if malformed. */
static int parse_request_line(const char *head, char *method, size_t method_size,
                              char *path, size_t path_size)
{
    const char *eol = strstr(head, "\r\n");
    const char *sp1, *sp2, *query;
    size_t method_len, path_len;

    if (!eol)
        return -1;
    sp1 = memchr(head, ' ', (size_t)(eol - head));
    if (!sp1)
        return -1;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(eol - sp2 - 1)))
        return -1;
    if ((size_t)(eol - sp2 - 1) != 8 ||
        (strncmp(sp2 + 1, "HTTP/1.1", 8) != 0 && strncmp(sp2 + 1, "HTTP/1.0", 8) != 0))
        return -1;
    query = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    method_len = (size_t)(sp1 - head);
    path_len = (size_t)((query ? query : sp2) - sp1 - 1);
    if (method_len == 0 || method_len >= method_size || path_len == 0 ||
        path_len >= path_size || sp1[1] != '/')
        return -1;
    memcpy(method, head, method_len);
    method[method_len] = '\0';
    memcpy(path, sp1 + 1, path_len);
    path[path_len] = '\0';
    return 0;
}

static void handle_connection(rl_limiter *limiter, int fd)
{
    char head[MAX_HEAD + 1];
    char method[16], path[MAX_HEAD];
    struct timeval timeout = {CLIENT_TIMEOUT_SEC, 0};
    int len;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

    len = read_head(fd, head, sizeof head);
    if (len == 0)
        return; /* connected and left */
    if (len < 0 || parse_request_line(head, method, sizeof method, path, sizeof path) < 0) {
        respond(fd, "400 Bad Request", "", "text/plain", "bad request\n");
        return;
    }

    if (strcmp(path, "/") != 0)
        respond(fd, "404 Not Found", "", "text/plain", "not found\n");
    else if (strcmp(method, "GET") != 0)
        respond(fd, "405 Method Not Allowed", "Allow: GET\r\n", "text/plain",
                "method not allowed\n");
    else
        serve_home(limiter, fd, head);
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
        int fd, flags;
        if (poll(&pfd, 1, -1) < 0)
            continue; /* EINTR: look at worker_stop again */
        if (!(pfd.revents & POLLIN))
            continue;
        fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue; /* another worker took it (EAGAIN), or the client left */
        /* accepted sockets may inherit O_NONBLOCK (BSD): serve them blocking */
        flags = fcntl(fd, F_GETFL);
        if (flags >= 0)
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        handle_connection(limiter, fd);
        close_gently(fd);
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

static int parse_number(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Binds and listens on addr:port (IPv4 or IPv6 literal). Returns the socket
 * and the bound port in *bound_port, or -1. */
static int open_listener(const char *addr, long port, long *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    int fd, one = 1, flags;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        ss_len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        fprintf(stderr, "prefork_server: --bind %s: not an IPv4 or IPv6 address\n", addr);
        return -1;
    }

    fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("prefork_server: socket");
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, ss_len) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "prefork_server: %s port %ld: %s\n", addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        perror("prefork_server: fcntl");
        close(fd);
        return -1;
    }
    ss_len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &ss_len);
    *bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
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
            if (parse_number(argv[++i], 0, 65535, &port) < 0)
                return usage("--port wants a number from 0 to 65535");
        } else if (strcmp(opt, "--workers") == 0) {
            if (parse_number(argv[++i], 1, MAX_WORKERS, &workers) < 0)
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

    listen_fd = open_listener(bind_addr, port, &bound_port);
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
        int v6 = strchr(bind_addr, ':') != NULL;
        /* scripts wait for this line */
        printf("listening on %s%s%s:%ld\n", v6 ? "[" : "", bind_addr, v6 ? "]" : "", bound_port);
        fflush(stdout);
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
