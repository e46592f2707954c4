/*
 * redis_info.h — Redis's own count of the commands it ran (INFO
 * commandstats), read over a loopback connection to the bench's throwaway
 * redis-server: bench/redis_driver.c and bench/quotas.c read it before and
 * after their timed checks. Include after defining _POSIX_C_SOURCE.
 */
#ifndef REDIS_INFO_H
#define REDIS_INFO_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loopback.h"

#define MAX_CMDS 64

/* One INFO commandstats: per command, its calls and its microseconds. */
struct cmdstats {
    int n;
    char name[MAX_CMDS][48];
    unsigned long long calls[MAX_CMDS], usec[MAX_CMDS];
};

/* Reads exactly len bytes; -1 on error or end of stream. */
static int read_full(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Fills *out from the server on 127.0.0.1:port. NULL on success, else what
 * went wrong. */
static const char *commandstats(int port, struct cmdstats *out)
{
    static const char req[] = "INFO commandstats\r\n";
    char head[32], *body, *line, *save;
    size_t i = 0;
    long len;
    int fd = connect_loopback(port);
    if (fd < 0)
        return "cannot connect to redis for INFO commandstats";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return "write INFO";
    }
    /* Bulk reply: "$<len>\r\n<len bytes>\r\n". */
    for (;;) {
        if (i == sizeof head - 1 || read_full(fd, head + i, 1) != 0) {
            close(fd);
            return "bad INFO reply";
        }
        if (head[i++] == '\n')
            break;
    }
    head[i] = '\0';
    if (head[0] != '$' || (len = atol(head + 1)) <= 0) {
        close(fd);
        return "bad INFO reply header";
    }
    body = malloc((size_t)len + 3);
    if (!body || read_full(fd, body, (size_t)len + 2) != 0) {
        free(body);
        close(fd);
        return "short INFO reply";
    }
    body[len] = '\0';
    close(fd);
    out->n = 0;
    for (line = strtok_r(body, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *colon, *calls, *usec;
        if (strncmp(line, "cmdstat_", 8) != 0 || out->n == MAX_CMDS)
            continue;
        colon = strchr(line, ':');
        calls = strstr(line, "calls=");
        usec = strstr(line, "usec=");
        if (!colon || !calls || !usec || (size_t)(colon - line - 8) >= sizeof out->name[0])
            continue;
        memcpy(out->name[out->n], line + 8, (size_t)(colon - line - 8));
        out->name[out->n][colon - line - 8] = '\0';
        out->calls[out->n] = strtoull(calls + 6, NULL, 10);
        out->usec[out->n] = strtoull(usec + 5, NULL, 10);
        out->n++;
    }
    free(body);
    return NULL;
}

#endif
