/*
 * limited_log.h — one log line per key that becomes limited, not one per
 * denial: an operator learns who is being limited without a flood of
 * denials from one key flooding the log.
 *
 * A key's "spell" of being limited starts at a denial that follows a whole
 * window (the deciding rate's period, at least 1 s) without one, and lasts
 * while denials keep coming; only its start is logged:
 *
 *   http_server: limited: "key:alice" (rate 0: 100 per 60000 ms; retry after 1200 ms)
 *
 * The key is written in the encoding rl_metrics and rlctl use: printable
 * ASCII but `\` as is, `\` as `\\`, any other byte as `\xHH`; at most its
 * first 64 bytes, then `...` and its length. Spells are remembered per event
 * loop in a table of 1024 slots keyed by a seeded hash, so two keys sharing a
 * slot may each be logged again; and a loop writes at most 10 lines per
 * second whatever the keys: the lines it drops are counted in the next one.
 */
#ifndef RL_EXAMPLE_HTTP_LIMITED_LOG_H
#define RL_EXAMPLE_HTTP_LIMITED_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <ratelimit.h>

#define LIMITED_LOG_SLOTS 1024
#define LIMITED_LOG_PER_SECOND 10

struct limited_log {
    const char *prog;
    uint64_t seed;
    struct {
        uint64_t key_hash;     /* 0: empty */
        long long last_denial_ms;
    } slot[LIMITED_LOG_SLOTS];
    long long second;          /* the second lines are being counted in */
    unsigned lines;            /* lines written in it */
    unsigned long dropped;     /* lines not written since the last one */
};

/* Starts an empty log for lines prefixed "prog: ". */
void limited_log_init(struct limited_log *log, const char *prog);

/* Called after every check: logs key[0..len) if d denies it and starts a
 * spell. now_ms is a monotonic clock in milliseconds. */
void limited_log_note(struct limited_log *log, const void *key, size_t len, const rl_decision *d,
                      long long now_ms);

#endif /* RL_EXAMPLE_HTTP_LIMITED_LOG_H */
