// header_cxx.cpp — include/ratelimit.h must be usable from C++ (extern "C",
// no C-only constructs). Compiled with -fsyntax-only by `make test-c`.
#include <ratelimit.h>

#include <cstdint>

// Taking each function's address with its exact C signature checks the
// declarations, their linkage and constness.
static int (*const create_fn)(const char *, rl_limiter **) = rl_create;
static void (*const destroy_fn)(rl_limiter *) = rl_destroy;
static int (*const check_fn)(rl_limiter *, const void *, size_t, uint64_t,
                             rl_decision *) = rl_check;
static int64_t (*const sweep_fn)(rl_limiter *) = rl_sweep;
static int (*const reset_fn)(rl_limiter *, const void *, size_t) = rl_reset;
static int (*const stats_fn)(rl_limiter *, rl_stats *) = rl_stats_get;
static int64_t (*const format_fn)(const rl_decision *, uint32_t, char *,
                                  size_t) = rl_format_headers;
static const char *(*const strerror_fn)(int) = rl_strerror;
static const char *(*const last_error_fn)(void) = rl_last_error;
static const char *(*const version_fn)(void) = rl_version;

static_assert(RL_OK == 0, "RL_OK is 0");
static_assert(RL_ERR_NULL < 0 && RL_ERR_CONFIG < 0 && RL_ERR_IO < 0 &&
                  RL_ERR_BACKEND < 0 && RL_ERR_INCOMPATIBLE < 0 &&
                  RL_ERR_INVALID < 0 && RL_ERR_PANIC < 0,
              "errors are negative");
static_assert(RL_HEADERS_LEGACY == 1 && RL_HEADERS_IETF == 2 &&
                  RL_HEADERS_RETRY_AFTER == 4,
              "header flags");

int use_everything()
{
    rl_limiter *lim = nullptr;
    rl_decision d = rl_decision();
    rl_stats s = rl_stats();
    char buf[256];
    d.allowed = 1u;
    d.rate_index = 0u;
    d.limit = d.remaining = d.reset_ms = d.retry_after_ms = d.window_ms = 0u;
    s.allowed = s.limited = s.errors = s.keys = s.evictions = 0u;
    int rc = create_fn("rate=5/s", &lim);
    rc += check_fn(lim, "k", 1, 1, &d);
    rc += reset_fn(lim, "k", 1);
    rc += stats_fn(lim, &s);
    rc += static_cast<int>(sweep_fn(lim));
    rc += static_cast<int>(format_fn(&d, RL_HEADERS_IETF, buf, sizeof buf));
    rc += strerror_fn(rc)[0] + last_error_fn()[0] + version_fn()[0];
    destroy_fn(lim);
    return rc;
}
