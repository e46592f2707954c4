/*
 * limited_log.c — one log line per key that becomes limited; see
 * limited_log.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "limited_log.h"

#include "../keytext.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SHOWN_KEY_BYTES 64

void limited_log_init(struct limited_log *log, const char *prog)
{
    struct timespec ts;
    memset(log, 0, sizeof *log);
    log->prog = prog;
    /* Not a secret worth a system call: enough that a client cannot know in
     * advance which of its keys share a slot. */
    clock_gettime(CLOCK_REALTIME, &ts);
    log->seed = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 16) ^
                (uint64_t)(uintptr_t)log;
}

/* FNV-1a over the seed and the key, never 0 (0 marks an empty slot). */
static uint64_t key_hash(uint64_t seed, const unsigned char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u ^ seed;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3u;
    }
    h ^= h >> 29;
    return h ? h : 1;
}

void limited_log_note(struct limited_log *log, const void *key, size_t len, const rl_decision *d,
                      long long now_ms)
{
    uint64_t h;
    long long quiet_ms;
    size_t s;
    char shown[KEYTEXT_SIZE(SHOWN_KEY_BYTES)];
    char cut[48] = "", dropped[64] = "";

    if (d->allowed)
        return;
    h = key_hash(log->seed, key, len);
    s = (size_t)(h % LIMITED_LOG_SLOTS);
    quiet_ms = d->window_ms < 1000 ? 1000 : d->window_ms > 86400000 ? 86400000 : (long long)d->window_ms;
    if (log->slot[s].key_hash == h && now_ms - log->slot[s].last_denial_ms < quiet_ms) {
        log->slot[s].last_denial_ms = now_ms; /* the spell goes on */
        return;
    }
    log->slot[s].key_hash = h;
    log->slot[s].last_denial_ms = now_ms;

    if (now_ms / 1000 != log->second) {
        log->second = now_ms / 1000;
        log->lines = 0;
    }
    if (log->lines >= LIMITED_LOG_PER_SECOND) {
        log->dropped++;
        return;
    }
    log->lines++;
    keytext_encode(key, len < SHOWN_KEY_BYTES ? len : SHOWN_KEY_BYTES, shown);
    if (len > SHOWN_KEY_BYTES)
        snprintf(cut, sizeof cut, "... (%zu bytes)", len);
    if (log->dropped) {
        snprintf(dropped, sizeof dropped, "; %lu more lines dropped", log->dropped);
        log->dropped = 0;
    }
    fprintf(stderr,
            "%s: limited: \"%s\"%s (rate %" PRIu32 ": %" PRIu64 " per %" PRIu64 " ms; retry after %" PRIu64
            " ms%s)\n",
            log->prog, shown, cut, d->rate_index, d->limit, d->window_ms, d->retry_after_ms, dropped);
}
