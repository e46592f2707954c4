/*
 * cli.c — the command line both example servers take; see http.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_MAX 64 /* an IPv6 literal with a scope is shorter */

static int usage(const char *prog, const char *count_option, const char *msg)
{
    fprintf(stderr,
            "%s: %s\n"
            "usage: %s --config CONFIG (--port P [--bind ADDR] | --listen ADDR:PORT ...) [%s N]\n"
            "          [--header-timeout S] [--keepalive-timeout S] [--max-connections N]\n",
            prog, msg, prog, count_option);
    return -1;
}

/* A whole decimal number in [min, max] into *out; 0, or -1. */
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

/* Whether addr is an IPv4 or IPv6 literal. */
static int is_ip(const char *addr)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, addr, buf) == 1 || inet_pton(AF_INET6, addr, buf) == 1;
}

/* "ADDR:PORT" or "[ADDR6]:PORT": the address (brackets dropped) into addr. */
static int parse_listen(const char *s, char *addr, long *port)
{
    const char *colon;
    size_t len;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        len = (size_t)(close - s - 1);
        s++;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        len = (size_t)(colon - s);
    }
    if (len == 0 || len >= ADDR_MAX)
        return -1;
    memcpy(addr, s, len);
    addr[len] = '\0';
    if (!is_ip(addr))
        return -1;
    return parse_number(colon + 1, 0, 65535, port);
}

int http_cli_parse(const char *prog, int argc, char **argv, const char *count_option, struct http_cli *cli)
{
    static char addrs[HTTP_MAX_LISTEN][ADDR_MAX];
    const char *bind_addr = NULL;
    long port = -1;
    int i;

    memset(cli, 0, sizeof *cli);
    cli->count = -1;
    cli->header_timeout_s = 5;
    cli->keepalive_timeout_s = 15;
    cli->max_connections = 4096;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *val;
        if (i + 1 >= argc)
            return usage(prog, count_option, "missing value after the last option");
        val = argv[++i];
        if (strcmp(opt, "--config") == 0) {
            cli->config = val;
        } else if (strcmp(opt, "--port") == 0) {
            if (parse_number(val, 0, 65535, &port) < 0)
                return usage(prog, count_option, "--port wants a number from 0 to 65535");
        } else if (strcmp(opt, "--bind") == 0) {
            if (!is_ip(val))
                return usage(prog, count_option, "--bind wants an IPv4 or IPv6 address");
            bind_addr = val;
        } else if (strcmp(opt, "--listen") == 0) {
            int k = cli->listen_count;
            if (k == HTTP_MAX_LISTEN - 1) /* one kept for --port */
                return usage(prog, count_option, "too many --listen options");
            if (parse_listen(val, addrs[k], &cli->listen_port[k]) < 0)
                return usage(prog, count_option, "--listen wants IPv4:PORT or [IPv6]:PORT");
            cli->listen_addr[k] = addrs[k];
            cli->listen_count++;
        } else if (strcmp(opt, count_option) == 0) {
            if (parse_number(val, 1, 256, &cli->count) < 0)
                return usage(prog, count_option, "the count wants a number from 1 to 256");
        } else if (strcmp(opt, "--header-timeout") == 0) {
            if (parse_number(val, 1, 3600, &cli->header_timeout_s) < 0)
                return usage(prog, count_option, "--header-timeout wants whole seconds from 1 to 3600");
        } else if (strcmp(opt, "--keepalive-timeout") == 0) {
            if (parse_number(val, 1, 3600, &cli->keepalive_timeout_s) < 0)
                return usage(prog, count_option, "--keepalive-timeout wants whole seconds from 1 to 3600");
        } else if (strcmp(opt, "--max-connections") == 0) {
            if (parse_number(val, 1, 1000000, &cli->max_connections) < 0)
                return usage(prog, count_option, "--max-connections wants a number from 1 to 1000000");
        } else {
            return usage(prog, count_option, "unknown option");
        }
    }

    if (bind_addr && port < 0)
        return usage(prog, count_option, "--bind needs --port");
    if (port >= 0) {
        cli->listen_addr[cli->listen_count] = bind_addr ? bind_addr : "127.0.0.1";
        cli->listen_port[cli->listen_count] = port;
        cli->listen_count++;
    }
    if (cli->config == NULL)
        return usage(prog, count_option, "--config is required");
    if (cli->listen_count == 0)
        return usage(prog, count_option, "--port or --listen is required");
    return 0;
}

int http_limiter_checks(const char *prog, rl_limiter *limiter)
{
    char description[512];
    if (rl_describe(limiter, description, sizeof description) < 0) {
        fprintf(stderr, "%s: rl_describe: %s\n", prog, rl_last_error());
        return -1;
    }
    if (strncmp(description, "concurrency=", 12) == 0) {
        fprintf(stderr,
                "%s: bad config: a concurrency limiter (concurrency=N) hands out leases with rl_acquire, "
                "it does not answer rl_check; give rate=... (build/llm_server shows leases)\n",
                prog);
        return -1;
    }
    return 0;
}
