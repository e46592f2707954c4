/*
 * test_concurrency.c — concurrency limiters (`concurrency=N lease=DURATION`):
 * rl_acquire, rl_renew, rl_release.
 *
 * The configuration's rules; N places per key, each lease a distinct nonzero
 * id, the N+1th acquire denied until the earliest lease expires; a release
 * frees exactly its own lease (once), stale and forged ids free nothing; a
 * renew holds on; a lease nobody releases expires on its own; rl_reset
 * forgets a key's leases; released keys are swept; a full key table keeps
 * live leases; the calls of the other kind of limiter are RL_ERR_INVALID;
 * dry_run; 8 threads never hold more than N places; and processes: shm
 * handles share a lease region, forked workers sharing one key never hold
 * more than N, and a worker SIGKILLed holding leases loses them when they
 * expire, nothing else.
 *
 * The first tests honour RL_TEST_BACKEND_CONFIG (every backend). The process
 * tests need state shared between processes: with backend=shm or redis the
 * limiter made by CFG() (each worker opens the same configuration); with
 * backend=memory a region of its own, `backend=shm name=/rl-test-conc-<pid>`,
 * unlinked at the end.
 *
 * Timing: leases are 10 s or longer where nothing may expire; the expiry
 * scenarios use leases of 300 ms to 1 s, sleep 60 ms or more past their
 * end, and leave 200 ms or more between a step and a lease's end.
 * Lease ends are kept to 2^20 ns (1.05 ms), rounded up: a lease may last up
 * to 2 ms longer than asked, in whole ms.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getpid: before any header */
#define _DEFAULT_SOURCE         /* MAP_ANONYMOUS */

#include <ratelimit.h>

#include "check.h"
#include "helpers.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>

/* Lease ends are rounded up to 2^20 ns: a few ms of slack. */
#define ROUND_MS 3

static int acq(rl_limiter *lim, const char *key, uint64_t *lease, rl_decision *d)
{
    memset(d, 0xAB, sizeof *d);
    *lease = 0x5eed5eed5eed5eedULL; /* must be overwritten */
    return rl_acquire(lim, key, strlen(key), lease, d);
}

static int rel(rl_limiter *lim, const char *key, uint64_t lease)
{
    return rl_release(lim, key, strlen(key), lease);
}

static int renew(rl_limiter *lim, const char *key, uint64_t lease)
{
    return rl_renew(lim, key, strlen(key), lease);
}

/* ---- configuration ---------------------------------------------------- */

static void test_config_errors(void)
{
    static const struct {
        const char *config, *named;
    } BAD[] = {
        {"concurrency=0", "concurrency=0"},
        {"concurrency=1025", "concurrency=1025"},
        {"concurrency=100000", "concurrency=100000"},
        {"concurrency=-1", "concurrency=-1"},
        {"concurrency=2x", "concurrency=2x"},
        {"concurrency=", "concurrency"},
        {"concurrency=2 lease=0s", "lease=0s"},
        {"concurrency=2 lease=0", "lease=0"},
        {"concurrency=2 lease=5", "lease=5"},
        {"concurrency=2 lease=-5s", "lease=-5s"},
        {"concurrency=2 lease=1001d", "lease=1001d"},
        {"rate=1/s concurrency=2", "concurrency=2"},
        {"concurrency=2 rate=1/s", "rate=1/s"},
        {"lease=5s", "lease=5s"},
        {"concurrency=2 algorithm=fixed_window", "algorithm=fixed_window"},
        {"concurrency=2 burst=3", "burst=3"},
        {"concurrency=2 concurrency=3", "concurrency"},
        {"concurrency=2 lease=5s lease=6s", "lease"},
    };
    size_t i;
    for (i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        rl_limiter *lim = (rl_limiter *)&lim; /* must become NULL */
        int rc = rl_create(CFG(BAD[i].config), &lim);
        if (!CHECK_EQ(rc, RL_ERR_CONFIG))
            fprintf(stderr, "    rl_create(\"%s\")\n", BAD[i].config);
        CHECK(lim == NULL);
        if (!CHECK_CONTAINS(rl_last_error(), BAD[i].named))
            fprintf(stderr, "    rl_create(\"%s\")\n", BAD[i].config);
        if (rc == RL_OK && lim != NULL)
            rl_destroy(lim);
    }
}

/* `a` followed by `b` (in a ring of 4 buffers). */
static const char *concat(const char *a, const char *b)
{
    static char buf[4][256];
    static unsigned next;
    char *out = buf[next++ % 4];
    snprintf(out, sizeof buf[0], "%s%s", a, b);
    return out;
}

/* The extremes that are allowed: 1 and 1024 places, and units of lease. */
static void test_config_limits(void)
{
    static const char *const GOOD[] = {
        "concurrency=1", "concurrency=1024", "concurrency=3 lease=1ms",
        "concurrency=3 lease=2m", "concurrency=3 lease=1000d", "concurrency=3 lease=1h",
    };
    size_t i;
    for (i = 0; i < sizeof GOOD / sizeof GOOD[0]; i++) {
        /* (a small capacity, but with redis, which has none: 1024 places x
         * 100000 keys would allocate 0.8 GB) */
        rl_limiter *lim = create(test_backend_is("redis") ? GOOD[i] : concat(GOOD[i], " capacity=64"));
        rl_destroy(lim);
    }
}

/* concurrency=1024: 1024 leases of one key, then denied. (At the default
 * capacity of 100000 keys that is 1.6 GB of table: address space with
 * backend=memory, but reserved in /dev/shm at rl_create with shm.) */
static void test_max_places(const char *config)
{
    rl_limiter *lim = create(config);
    static uint64_t ids[1024];
    rl_decision d;
    uint64_t lease;
    int i, j, ok = 1;

    if (!lim)
        return;
    for (i = 0; i < 1024; i++) {
        if (acq(lim, "wide", &lease, &d) != RL_OK || !d.allowed || lease == 0 ||
            d.remaining != (uint64_t)(1023 - i) || d.limit != 1024)
            ok = 0;
        ids[i] = lease;
    }
    CHECK(ok);
    /* distinct ids */
    for (i = 0; i < 1024 && ok; i++)
        for (j = i + 1; j < 1024; j++)
            if (ids[i] == ids[j])
                ok = 0;
    CHECK(ok);
    CHECK_EQ(acq(lim, "wide", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(lease, 0);
    CHECK_EQ(d.limit, 1024);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(rel(lim, "wide", ids[517]), 1);
    CHECK_EQ(acq(lim, "wide", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(lease != 0);
    rl_destroy(lim);
}

/* ---- acquire, release, renew ----------------------------------------- */

static void test_acquire_release_renew(void)
{
    rl_limiter *lim = create("concurrency=3 lease=10s");
    rl_decision d;
    uint64_t ids[3], lease, other, stale;
    int i;

    if (!lim)
        return;
    for (i = 0; i < 3; i++) {
        CHECK_EQ(acq(lim, "k", &ids[i], &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK(ids[i] != 0);
        CHECK_EQ(d.rate_index, 0);
        CHECK_EQ(d.limit, 3);
        CHECK_EQ(d.remaining, (uint64_t)(2 - i));
        CHECK_EQ(d.retry_after_ms, 0);
        CHECK_EQ(d.window_ms, 10000);
        CHECK(d.reset_ms > 9000 && d.reset_ms <= 10000 + ROUND_MS);
        CHECK_STR(rl_last_error(), "");
    }
    CHECK(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);

    /* the 4th: denied, no lease, until the earliest lease expires */
    CHECK_EQ(acq(lim, "k", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(lease, 0);
    CHECK_EQ(d.limit, 3);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(d.window_ms, 10000);
    CHECK(d.retry_after_ms > 9000 && d.retry_after_ms <= 10000 + ROUND_MS);
    CHECK(d.reset_ms >= d.retry_after_ms && d.reset_ms <= 10000 + ROUND_MS);

    /* another key has its own places */
    CHECK_EQ(acq(lim, "other", &other, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 2);

    /* forged and foreign ids free nothing, renew nothing */
    {
        const uint64_t forged[] = {0, 1, UINT64_MAX, ids[0] ^ 1, ids[0] ^ (1ULL << 32),
                                   ids[0] ^ (1ULL << 42), ids[0] ^ (1ULL << 63), ids[0] | (0x3ffULL << 32),
                                   other};
        size_t f;
        for (f = 0; f < sizeof forged / sizeof forged[0]; f++) {
            if (forged[f] == ids[0] || forged[f] == ids[1] || forged[f] == ids[2])
                continue; /* (a flip that happens to give a real id: not forged) */
            if (!CHECK_EQ(rel(lim, "k", forged[f]), 0) | !CHECK_EQ(renew(lim, "k", forged[f]), 0))
                fprintf(stderr, "    forged id #%zu: %#" PRIx64 "\n", f, forged[f]);
        }
        CHECK_EQ(rel(lim, "other", ids[0]), 0);
        CHECK_EQ(renew(lim, "other", ids[1]), 0);
        CHECK_EQ(rel(lim, "k2", ids[0]), 0);
    }
    /* nothing was freed: still denied, every real lease still held */
    CHECK_EQ(acq(lim, "k", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(d.remaining, 0);
    for (i = 0; i < 3; i++)
        CHECK_EQ(renew(lim, "k", ids[i]), 1);
    CHECK_EQ(renew(lim, "other", other), 1);

    /* release: 1, then 0 (twice is harmless), and one place is free */
    CHECK_EQ(rel(lim, "k", ids[1]), 1);
    CHECK_EQ(rel(lim, "k", ids[1]), 0);
    CHECK_EQ(renew(lim, "k", ids[1]), 0);
    stale = ids[1];
    CHECK_EQ(acq(lim, "k", &ids[1], &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK(ids[1] != 0 && ids[1] != stale && ids[1] != ids[0] && ids[1] != ids[2]);
    /* the stale id of the place's earlier lease frees nothing */
    CHECK_EQ(rel(lim, "k", stale), 0);
    CHECK_EQ(renew(lim, "k", stale), 0);
    CHECK_EQ(acq(lim, "k", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);

    /* release them all: 3 places free again */
    for (i = 0; i < 3; i++)
        CHECK_EQ(rel(lim, "k", ids[i]), 1);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(acq(lim, "k", &ids[i], &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.remaining, (uint64_t)(2 - i));
    }
    CHECK_EQ(rel(lim, "other", other), 1);
    CHECK_EQ(rel(lim, "other", other), 0);
    rl_destroy(lim);
}

/* A renewed lease holds a whole lease length from the renew. */
static void test_renew_holds_on(void)
{
    rl_limiter *lim = create("concurrency=1 lease=600ms");
    rl_decision d;
    uint64_t a, b;

    if (!lim)
        return;
    CHECK_EQ(acq(lim, "r", &a, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.window_ms, 600);
    test_sleep_ms(300);
    CHECK_EQ(renew(lim, "r", a), 1);
    test_sleep_ms(400); /* 700 ms after the acquire, 400 after the renew */
    CHECK_EQ(acq(lim, "r", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(b, 0);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 200 + ROUND_MS);
    CHECK_EQ(renew(lim, "r", a), 1);
    CHECK_EQ(rel(lim, "r", a), 1);
    CHECK_EQ(acq(lim, "r", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rel(lim, "r", b), 1);
    rl_destroy(lim);
}

/* Leases nobody releases expire: renew and release then say 0. */
static void test_leases_expire(void)
{
    rl_limiter *lim = create("concurrency=2 lease=300ms");
    rl_decision d;
    uint64_t a, b, c;

    if (!lim)
        return;
    CHECK_EQ(acq(lim, "e", &a, &d), RL_OK);
    CHECK_EQ(acq(lim, "e", &b, &d), RL_OK);
    CHECK_EQ(d.remaining, 0);
    CHECK(d.reset_ms > 200 && d.reset_ms <= 300 + ROUND_MS);
    CHECK_EQ(acq(lim, "e", &c, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 100 && d.retry_after_ms <= 300 + ROUND_MS);
    test_sleep_ms((unsigned)d.reset_ms + 60);
    CHECK_EQ(renew(lim, "e", a), 0);
    CHECK_EQ(rel(lim, "e", a), 0);
    CHECK_EQ(rel(lim, "e", b), 0);
    CHECK_EQ(renew(lim, "e", b), 0);
    CHECK_EQ(acq(lim, "e", &c, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);
    CHECK(c != 0 && c != a && c != b);
    CHECK_EQ(acq(lim, "e", &a, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    rl_destroy(lim);
}

/* An expired lease's id, once its place went to another: renew and release
 * say 0 and leave the new holder's lease alone. */
static void test_stale_id_after_expiry(void)
{
    rl_limiter *lim = create("concurrency=1 lease=300ms");
    rl_decision d;
    uint64_t a, b, c;

    if (!lim)
        return;
    CHECK_EQ(acq(lim, "s", &a, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    test_sleep_ms((unsigned)d.reset_ms + 60);
    CHECK_EQ(acq(lim, "s", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(b != 0 && b != a);
    CHECK_EQ(renew(lim, "s", a), 0);
    CHECK_EQ(rel(lim, "s", a), 0);
    CHECK_EQ(acq(lim, "s", &c, &d), RL_OK); /* b still holds the place */
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(c, 0);
    CHECK_EQ(renew(lim, "s", b), 1);
    CHECK_EQ(rel(lim, "s", b), 1);
    rl_destroy(lim);
}

/* rl_reset forgets a key's leases: its places are free, and the ids of the
 * forgotten leases free nothing later (not even the new holder's place). */
static void test_reset_forgets_leases(void)
{
    rl_limiter *lim = create("concurrency=1 lease=10s");
    rl_decision d;
    uint64_t a, b, c;

    if (!lim)
        return;
    CHECK_EQ(acq(lim, "r", &a, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(acq(lim, "r", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rl_reset(lim, "r", 1), RL_OK);
    CHECK_EQ(acq(lim, "r", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(b != 0 && b != a);
    CHECK_EQ(rel(lim, "r", a), 0);
    CHECK_EQ(renew(lim, "r", a), 0);
    CHECK_EQ(acq(lim, "r", &c, &d), RL_OK); /* b still holds the place */
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(rel(lim, "r", b), 1);
    rl_destroy(lim);
}

/* Nothing leaks: once every lease is released, rl_sweep drops the keys.
 * (memory and shm: Redis expires its keys itself, and rl_sweep and `keys`
 * say 0 there.) */
static void test_released_keys_are_swept(void)
{
    rl_limiter *lim;
    rl_decision d;
    uint64_t ids[6];
    rl_stats s;
    int i;

    if (test_backend_is("redis"))
        return;
    lim = create("concurrency=3 lease=10s");
    if (!lim)
        return;
    for (i = 0; i < 6; i++)
        CHECK_EQ(acq(lim, i < 3 ? "a" : "b", &ids[i], &d), RL_OK);
    CHECK_EQ(rl_sweep(lim), 0); /* all held: nothing to drop */
    for (i = 0; i < 6; i++)
        CHECK_EQ(rel(lim, i < 3 ? "a" : "b", ids[i]), 1);
    CHECK_EQ(rl_sweep(lim), 2); /* "a" and "b" */
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.keys, 0);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(acq(lim, "a", &ids[i], &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
    }
    rl_destroy(lim);
}

/* A key table full of keys holding live leases (capacity=16, 64 keys each
 * holding its one place): a lease is a promise that the key has a place
 * taken until it is released or expires, so no key may then admit a second
 * holder, and every lease handed out must still release as held. (A rate
 * limiter's table may drop a live key to make room, as documented for
 * `capacity`; dropping a key's live leases would let more than N requests in
 * flight. A full table should refuse the new key instead.) */
static void test_full_table_keeps_live_leases(void)
{
    rl_limiter *lim;
    rl_decision d;
    uint64_t ids[64], extra;
    int i, first_allowed = 0, second_allowed = 0, released = 0;

    if (test_backend_is("redis"))
        return; /* no capacity */
    lim = create("concurrency=1 lease=60s capacity=16");
    if (!lim)
        return;
    for (i = 0; i < 64; i++) {
        char key[16];
        snprintf(key, sizeof key, "full-%d", i);
        CHECK_EQ(acq(lim, key, &ids[i], &d), RL_OK);
        first_allowed += d.allowed == 1;
        if (!d.allowed)
            ids[i] = 0;
    }
    CHECK(first_allowed >= 16);
    for (i = 0; i < 64; i++) {
        char key[16];
        snprintf(key, sizeof key, "full-%d", i);
        CHECK_EQ(acq(lim, key, &extra, &d), RL_OK);
        if (d.allowed && ids[i] != 0) /* a second holder of a 1-place key */
            second_allowed++;
        if (d.allowed && extra)
            (void)rel(lim, key, extra);
    }
    for (i = 0; i < 64; i++) {
        char key[16];
        snprintf(key, sizeof key, "full-%d", i);
        if (ids[i])
            released += rel(lim, key, ids[i]) == 1;
    }
    if (!CHECK_EQ(second_allowed, 0) | !CHECK_EQ(released, first_allowed))
        fprintf(stderr, "    capacity=16 concurrency=1: %d keys granted a lease, %d of them then granted a "
                        "second one, %d of the %d leases still held at release\n",
                first_allowed, second_allowed, released, first_allowed);
    rl_destroy(lim);
}

/* ---- errors ------------------------------------------------------------ */

static void test_arguments(void)
{
    rl_limiter *lim = create("concurrency=2 lease=10s");
    rl_decision d;
    uint64_t lease;

    if (!lim)
        return;
    /* NULL lease: RL_ERR_NULL, *out a denial */
    memset(&d, 0xAB, sizeof d);
    CHECK_EQ(rl_acquire(lim, "k", 1, NULL, &d), RL_ERR_NULL);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    CHECK_EQ(d.limit, 2);
    CHECK(rl_last_error()[0] != '\0');

    /* NULL out: RL_ERR_NULL, and "deny with *lease = 0" */
    lease = 12345;
    CHECK_EQ(rl_acquire(lim, "k", 1, &lease, NULL), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');
    if (!CHECK_EQ(lease, 0))
        fprintf(stderr, "    rl_acquire(lim, key, 1, &lease, NULL) left *lease as it was\n");

    /* NULL limiter: RL_ERR_NULL, a denial, *lease = 0 */
    memset(&d, 0xAB, sizeof d);
    lease = 12345;
    CHECK_EQ(rl_acquire(NULL, "k", 1, &lease, &d), RL_ERR_NULL);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    if (!CHECK_EQ(lease, 0))
        fprintf(stderr, "    rl_acquire(NULL, key, 1, &lease, &d) left *lease as it was\n");

    /* NULL key with key_len > 0 */
    memset(&d, 0xAB, sizeof d);
    lease = 12345;
    CHECK_EQ(rl_acquire(lim, NULL, 1, &lease, &d), RL_ERR_NULL);
    CHECK_EQ(d.allowed, 0);
    CHECK(d.retry_after_ms > 0);
    CHECK_EQ(lease, 0);
    CHECK_EQ(rl_renew(lim, NULL, 1, 1), RL_ERR_NULL);
    CHECK_EQ(rl_release(lim, NULL, 1, 1), RL_ERR_NULL);
    CHECK_EQ(rl_renew(NULL, "k", 1, 1), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');
    CHECK_EQ(rl_release(NULL, "k", 1, 1), RL_ERR_NULL);
    CHECK(rl_last_error()[0] != '\0');

    /* none of them took a place */
    CHECK_EQ(acq(lim, "k", &lease, &d), RL_OK);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(rel(lim, "k", lease), 1);

    /* NULL key with key_len 0 is the empty key */
    CHECK_EQ(rl_acquire(lim, NULL, 0, &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(rl_renew(lim, "", 0, lease), 1);
    CHECK_EQ(rl_release(lim, "zzz", 0, lease), 1);
    CHECK_STR(rl_last_error(), "");

    /* hostile keys: NULs inside, 1 MiB */
    {
        const size_t big = (size_t)1 << 20;
        unsigned char *a = malloc(big);
        uint64_t x, y;
        CHECK_EQ(rl_acquire(lim, "a\0b", 3, &x, &d), RL_OK);
        CHECK_EQ(d.remaining, 1);
        CHECK_EQ(rl_acquire(lim, "a\0c", 3, &y, &d), RL_OK);
        CHECK_EQ(d.remaining, 1);
        CHECK_EQ(rl_release(lim, "a\0c", 3, x), 0);
        CHECK_EQ(rl_release(lim, "a", 1, x), 0);
        CHECK_EQ(rl_release(lim, "a\0b", 3, x), 1);
        CHECK_EQ(rl_release(lim, "a\0c", 3, y), 1);
        if (CHECK(a != NULL)) {
            memset(a, 0, big);
            CHECK_EQ(rl_acquire(lim, a, big, &x, &d), RL_OK);
            CHECK_EQ(d.remaining, 1);
            CHECK_EQ(rl_acquire(lim, a, big, &y, &d), RL_OK);
            CHECK_EQ(d.remaining, 0);
            CHECK_EQ(rl_acquire(lim, a, big, &lease, &d), RL_OK);
            CHECK_EQ(d.allowed, 0);
            CHECK_EQ(rl_release(lim, a, big - 1, x), 0);
            CHECK_EQ(rl_renew(lim, a, big, x), 1);
            CHECK_EQ(rl_release(lim, a, big, x), 1);
            CHECK_EQ(rl_release(lim, a, big, y), 1);
        }
        free(a);
    }
    rl_destroy(lim);
}

/* The calls of the other kind of limiter: RL_ERR_INVALID, naming it. */
static void test_wrong_kind(void)
{
    rl_limiter *conc = create("concurrency=2 lease=10s");
    rl_limiter *rate = create("rate=5/s");
    rl_decision d;
    uint64_t lease;

    if (conc) {
        memset(&d, 0xAB, sizeof d);
        CHECK_EQ(rl_check(conc, "k", 1, 1, &d), RL_ERR_INVALID);
        CHECK_EQ(d.allowed, 0);
        CHECK(d.retry_after_ms > 0);
        CHECK_CONTAINS(rl_last_error(), "rl_check");
        CHECK_CONTAINS(rl_last_error(), "concurrency");
        memset(&d, 0xAB, sizeof d);
        CHECK_EQ(rl_check(conc, "k", 1, 0, &d), RL_ERR_INVALID);
        CHECK_EQ(d.allowed, 0);
        memset(&d, 0xAB, sizeof d);
        CHECK_EQ(rl_adjust(conc, "k", 1, 5, &d), RL_ERR_INVALID);
        CHECK_EQ(d.allowed, 0);
        CHECK_CONTAINS(rl_last_error(), "rl_adjust");
        rl_destroy(conc);
    }
    if (rate) {
        memset(&d, 0xAB, sizeof d);
        lease = 12345;
        CHECK_EQ(rl_acquire(rate, "k", 1, &lease, &d), RL_ERR_INVALID);
        CHECK_EQ(d.allowed, 0);
        CHECK(d.retry_after_ms > 0);
        CHECK_EQ(lease, 0);
        CHECK_CONTAINS(rl_last_error(), "rl_acquire");
        CHECK_CONTAINS(rl_last_error(), "rate");
        CHECK_EQ(rl_renew(rate, "k", 1, 1), RL_ERR_INVALID);
        CHECK_CONTAINS(rl_last_error(), "rl_renew");
        CHECK_EQ(rl_release(rate, "k", 1, 1), RL_ERR_INVALID);
        CHECK_CONTAINS(rl_last_error(), "rl_release");
        /* and the key's quota is untouched */
        CHECK_EQ(check(rate, "k", 0, &d), RL_OK);
        CHECK_EQ(d.remaining, 5);
        rl_destroy(rate);
    }
}

/* dry_run=on: a would-be denial is reported allowed, with no lease and
 * retry_after_ms > 0; it takes nothing, and counts in `limited`. */
static void test_dry_run(void)
{
    rl_limiter *lim = create("concurrency=1 lease=10s dry_run=on");
    rl_decision d;
    uint64_t a, b;
    rl_stats before, s;

    if (!lim)
        return;
    CHECK_EQ(rl_stats_get(lim, &before), RL_OK);
    CHECK_EQ(acq(lim, "k", &a, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(a != 0);
    CHECK_EQ(d.retry_after_ms, 0);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(acq(lim, "k", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(b, 0);
    CHECK(d.retry_after_ms > 9000 && d.retry_after_ms <= 10000 + ROUND_MS);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(rel(lim, "k", b), 0); /* releasing 0 is harmless */
    CHECK_EQ(rel(lim, "k", a), 1);
    CHECK_EQ(acq(lim, "k", &b, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK(b != 0);
    CHECK_EQ(d.retry_after_ms, 0);
    CHECK_EQ(rl_stats_get(lim, &s), RL_OK);
    CHECK_EQ(s.allowed - before.allowed, 2);
    CHECK_EQ(s.limited - before.limited, 1);
    rl_destroy(lim);
}

/* ---- threads ----------------------------------------------------------- */

#define THREADS 8
#define PLACES 4

/* How many threads hold a lease now, and the most ever: under a mutex (C11
 * atomics are not C99). A thread counts itself in after rl_acquire returns
 * and out before it calls rl_release, so the count never exceeds the leases
 * actually held. */
static pthread_mutex_t holders_lock = PTHREAD_MUTEX_INITIALIZER;
static int holders, max_holders;

struct hammer {
    rl_limiter *lim;
    int rounds;
    int acquired, denied, errors, bad_releases, bad_decisions;
};

static void *hammer(void *arg)
{
    struct hammer *h = arg;
    rl_decision d;
    uint64_t lease;
    int i;
    for (i = 0; i < h->rounds; i++) {
        if (rl_acquire(h->lim, "hot", 3, &lease, &d) != RL_OK) {
            h->errors++;
            continue;
        }
        if (!d.allowed) {
            h->denied++;
            if (lease != 0 || d.retry_after_ms == 0)
                h->bad_decisions++;
            continue;
        }
        if (lease == 0 || d.remaining >= PLACES)
            h->bad_decisions++;
        h->acquired++;
        pthread_mutex_lock(&holders_lock);
        if (++holders > max_holders)
            max_holders = holders;
        pthread_mutex_unlock(&holders_lock);
        test_sleep_ms(i % 3 == 0 ? 1 : 0); /* hold it a moment, sometimes */
        pthread_mutex_lock(&holders_lock);
        holders--;
        pthread_mutex_unlock(&holders_lock);
        if (rl_release(h->lim, "hot", 3, lease) != 1)
            h->bad_releases++;
    }
    return NULL;
}

static void test_threads(void)
{
    rl_limiter *lim = create("concurrency=4 lease=60s");
    struct hammer h[THREADS];
    pthread_t t[THREADS];
    int i, acquired = 0, denied = 0, errors = 0, bad = 0, bad_releases = 0;
    uint64_t ids[PLACES + 1];
    rl_decision d;

    if (!lim)
        return;
    memset(h, 0, sizeof h);
    holders = max_holders = 0;
    for (i = 0; i < THREADS; i++) {
        h[i].lim = lim;
        h[i].rounds = 300;
    }
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, hammer, &h[i]), 0);
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_join(t[i], NULL), 0);
    for (i = 0; i < THREADS; i++) {
        acquired += h[i].acquired;
        denied += h[i].denied;
        errors += h[i].errors;
        bad += h[i].bad_decisions;
        bad_releases += h[i].bad_releases;
    }
    CHECK_EQ(acquired + denied, THREADS * 300);
    CHECK(acquired >= 300);
    CHECK_EQ(errors, 0);
    CHECK_EQ(bad, 0);
    CHECK_EQ(bad_releases, 0);
    if (!CHECK(max_holders <= PLACES) | !CHECK_EQ(max_holders, PLACES))
        fprintf(stderr, "    most holders at once: %d (places: %d)\n", max_holders, PLACES);
    CHECK_EQ(holders, 0);
    /* every place was given back */
    for (i = 0; i < PLACES; i++) {
        CHECK_EQ(acq(lim, "hot", &ids[i], &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
    }
    CHECK_EQ(acq(lim, "hot", &ids[PLACES], &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    rl_destroy(lim);
}

/* ---- processes --------------------------------------------------------- */

#define PROCS 4
#define PROC_PLACES 2
#define PROC_ROUNDS 300

/* The configuration the processes share (made once: CFG() gives a new
 * region or prefix at each call), and the region to unlink, if ours. */
static char shared_config[CFG_LEN];
static char own_region[64];

static void make_shared_config(const char *limits)
{
    if (test_backend_is("shm") || test_backend_is("redis")) {
        snprintf(shared_config, sizeof shared_config, "%s", CFG(limits));
        own_region[0] = '\0';
    } else {
        static unsigned n;
        snprintf(own_region, sizeof own_region, "/rl-test-conc-%ld-%u", (long)getpid(), n++);
        (void)rl_shm_unlink(own_region); /* a leftover of an interrupted run */
        snprintf(shared_config, sizeof shared_config, "%s backend=shm name=%s", limits, own_region);
    }
}

static void drop_shared_config(void)
{
    if (own_region[0])
        CHECK_EQ(rl_shm_unlink(own_region), RL_OK);
}

/* The holders of all processes, in memory they share (MAP_SHARED), counted
 * with the GCC/Clang __atomic builtins (C11 atomics are not C99). */
struct shared_count {
    int holders, max_holders;
    int acquired[PROCS];
};

static void count_in(struct shared_count *c)
{
    int now = __atomic_add_fetch(&c->holders, 1, __ATOMIC_SEQ_CST);
    int max = __atomic_load_n(&c->max_holders, __ATOMIC_SEQ_CST);
    while (now > max &&
           !__atomic_compare_exchange_n(&c->max_holders, &max, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

static void count_out(struct shared_count *c)
{
    __atomic_sub_fetch(&c->holders, 1, __ATOMIC_SEQ_CST);
}

/* A worker: opens the limiter, waits for EOF on `go`, then, as a client
 * that retries, acquires until it got PROC_ROUNDS leases (or tried 50 times
 * as often), holding each a moment; exit status 0 if every call went as
 * promised. */
static void proc_worker(struct shared_count *c, int me, int go)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    uint64_t lease;
    char ch;
    int i, bad = 0, acquired = 0;

    if (rl_create(shared_config, &lim) != RL_OK) {
        fprintf(stderr, "worker %ld: rl_create: %s\n", (long)getpid(), rl_last_error());
        _exit(1);
    }
    while (read(go, &ch, 1) < 0 && errno == EINTR) {
    }
    for (i = 0; acquired < PROC_ROUNDS && i < 50 * PROC_ROUNDS; i++) {
        if (rl_acquire(lim, "hot", 3, &lease, &d) != RL_OK) {
            bad++;
            continue;
        }
        if (!d.allowed) {
            bad += lease != 0 || d.retry_after_ms == 0;
            if (i % 4 == 0)
                test_sleep_ms(1);
            continue;
        }
        acquired++;
        count_in(c);
        test_sleep_ms(i % 2); /* hold it a moment, every other time */
        count_out(c);
        bad += rl_release(lim, "hot", 3, lease) != 1;
    }
    rl_destroy(lim);
    c->acquired[me] = acquired;
    _exit(bad ? 2 : 0);
}

static void test_processes_share_the_places(void)
{
    struct shared_count *c;
    rl_limiter *lim = NULL;
    int go[2], i, status;
    pid_t pids[PROCS];
    rl_decision d;
    uint64_t ids[PROC_PLACES + 1];

    make_shared_config("concurrency=2 lease=60s");
    if (!CHECK_EQ(rl_create(shared_config, &lim), RL_OK)) {
        fprintf(stderr, "    rl_create(\"%s\"): %s\n", shared_config, rl_last_error());
        return;
    }
    c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(c != MAP_FAILED) || !CHECK(pipe(go) == 0)) {
        rl_destroy(lim);
        drop_shared_config();
        return;
    }
    c->holders = c->max_holders = 0;
    fflush(stdout);
    fflush(stderr);
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            close(go[1]);
            proc_worker(c, i, go[0]);
        }
        CHECK(pids[i] > 0);
    }
    close(go[0]);
    close(go[1]); /* go! */
    for (i = 0; i < PROCS; i++) {
        if (pids[i] > 0) {
            CHECK(waitpid(pids[i], &status, 0) == pids[i]);
            if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                fprintf(stderr, "    worker %d: status %#x\n", i, status);
        }
    }
    if (!CHECK(c->max_holders <= PROC_PLACES) | !CHECK_EQ(c->max_holders, PROC_PLACES))
        fprintf(stderr, "    most holders at once: %d (places: %d)\n", c->max_holders, PROC_PLACES);
    CHECK_EQ(c->holders, 0);
    for (i = 0; i < PROCS; i++)
        CHECK(c->acquired[i] > 0);
    /* every place was given back */
    for (i = 0; i < PROC_PLACES; i++) {
        CHECK_EQ(acq(lim, "hot", &ids[i], &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
    }
    CHECK_EQ(acq(lim, "hot", &ids[PROC_PLACES], &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    munmap(c, sizeof *c);
    rl_destroy(lim);
    drop_shared_config();
}

/* backend=shm: a region made for leases is shared by every handle opening
 * it (by its configuration, or attached by name alone); another N or lease
 * length, or rates, are another region's configuration. */
static void test_shm_handles_share_a_region(void)
{
    char name[64], config[128], other[160];
    rl_limiter *a = NULL, *b = NULL, *c = NULL;
    rl_decision d;
    uint64_t x, y;
    static const char *const INCOMPATIBLE[] = {"concurrency=3 lease=5s", "concurrency=2 lease=6s", "rate=2/s"};
    size_t i;

    snprintf(name, sizeof name, "/rl-test-conc-%ld-attach", (long)getpid());
    snprintf(config, sizeof config, "concurrency=2 lease=5s backend=shm name=%s", name);
    (void)rl_shm_unlink(name);
    if (!CHECK_EQ(rl_create(config, &a), RL_OK))
        return;
    snprintf(other, sizeof other, "backend=shm name=%s", name);
    if (CHECK_EQ(rl_create(other, &b), RL_OK)) {
        CHECK_EQ(rl_acquire(b, "k", 1, &x, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.limit, 2);
        CHECK_EQ(d.window_ms, 5000);
        CHECK_EQ(rl_acquire(a, "k", 1, &y, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        CHECK_EQ(d.remaining, 0);
        CHECK_EQ(rl_acquire(b, "k", 1, &y, &d), RL_OK);
        CHECK_EQ(d.allowed, 0);
        CHECK_EQ(rl_release(a, "k", 1, x), 1); /* released by another handle */
        CHECK_EQ(rl_release(b, "k", 1, x), 0);
        CHECK_EQ(rl_acquire(b, "k", 1, &x, &d), RL_OK);
        CHECK_EQ(d.allowed, 1);
        rl_destroy(b);
    }
    for (i = 0; i < sizeof INCOMPATIBLE / sizeof INCOMPATIBLE[0]; i++) {
        snprintf(other, sizeof other, "%s backend=shm name=%s", INCOMPATIBLE[i], name);
        c = (rl_limiter *)&c;
        CHECK_EQ(rl_create(other, &c), RL_ERR_INCOMPATIBLE);
        CHECK(c == NULL);
        CHECK_CONTAINS(rl_last_error(), "concurrency=2 lease=5s");
    }
    rl_destroy(a);
    CHECK_EQ(rl_shm_unlink(name), RL_OK);
}

/* A worker SIGKILLed while it holds both places of a key: they stay held
 * until their leases expire (no one else may take them before), then they
 * are free; another key, and the worker's released lease, are not affected. */
static void test_killed_holder(void)
{
    rl_limiter *lim = NULL;
    rl_decision d;
    uint64_t lease, other, ids[2];
    int ready[2], status;
    char ch = 0;
    pid_t pid;

    make_shared_config("concurrency=2 lease=1s");
    if (!CHECK_EQ(rl_create(shared_config, &lim), RL_OK)) {
        fprintf(stderr, "    rl_create(\"%s\"): %s\n", shared_config, rl_last_error());
        return;
    }
    if (!CHECK(pipe(ready) == 0)) {
        rl_destroy(lim);
        drop_shared_config();
        return;
    }
    /* another key, held by this process across the kill */
    CHECK_EQ(acq(lim, "other", &other, &d), RL_OK);
    CHECK_EQ(d.allowed, 1);

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        rl_limiter *mine = NULL;
        rl_decision cd;
        uint64_t a, b, x;
        close(ready[0]);
        if (rl_create(shared_config, &mine) != RL_OK)
            _exit(1);
        /* a third key, taken and released: nothing of it may stay */
        if (rl_acquire(mine, "third", 5, &x, &cd) != RL_OK || !cd.allowed ||
            rl_release(mine, "third", 5, x) != 1)
            _exit(1);
        if (rl_acquire(mine, "k", 1, &a, &cd) != RL_OK || !cd.allowed ||
            rl_acquire(mine, "k", 1, &b, &cd) != RL_OK || !cd.allowed || cd.remaining != 0)
            _exit(1);
        (void)!write(ready[1], "r", 1);
        raise(SIGKILL); /* no release, no rl_destroy, no exit handlers */
        _exit(2);
    }
    close(ready[1]);
    CHECK(pid > 0);
    CHECK_EQ(read(ready[0], &ch, 1), 1);
    close(ready[0]);
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* the dead worker's leases are still held */
    CHECK_EQ(acq(lim, "k", &lease, &d), RL_OK);
    CHECK_EQ(d.allowed, 0);
    CHECK_EQ(lease, 0);
    CHECK(d.retry_after_ms > 0 && d.retry_after_ms <= 1000 + ROUND_MS);
    /* the other keys are not affected */
    CHECK_EQ(renew(lim, "other", other), 1);
    CHECK_EQ(rel(lim, "other", other), 1);
    CHECK_EQ(acq(lim, "third", &ids[0], &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(acq(lim, "third", &ids[1], &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(rel(lim, "third", ids[0]), 1);
    CHECK_EQ(rel(lim, "third", ids[1]), 1);

    /* once they expire, both places are free */
    test_sleep_ms((unsigned)d.reset_ms + 80);
    CHECK_EQ(acq(lim, "k", &ids[0], &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 1);
    CHECK_EQ(acq(lim, "k", &ids[1], &d), RL_OK);
    CHECK_EQ(d.allowed, 1);
    CHECK_EQ(d.remaining, 0);
    CHECK_EQ(rel(lim, "k", ids[0]), 1);
    CHECK_EQ(rel(lim, "k", ids[1]), 1);
    rl_destroy(lim);
    drop_shared_config();
}

int main(void)
{
    test_config_errors();
    test_config_limits();
    if (test_backend_is("redis")) {
        test_max_places("concurrency=1024");
    } else {
        test_max_places("concurrency=1024 capacity=16");
        /* the default capacity too, but not with shm: its region reserves
         * every page at rl_create (posix_fallocate), 1.6 GB of /dev/shm */
        if (!test_backend_is("shm"))
            test_max_places("concurrency=1024");
    }
    test_acquire_release_renew();
    test_renew_holds_on();
    test_leases_expire();
    test_stale_id_after_expiry();
    test_reset_forgets_leases();
    test_released_keys_are_swept();
    test_full_table_keeps_live_leases();
    test_arguments();
    test_wrong_kind();
    test_dry_run();
    test_threads();
    test_shm_handles_share_a_region();
    test_processes_share_the_places();
    test_killed_holder();
    return CHECK_SUMMARY();
}
