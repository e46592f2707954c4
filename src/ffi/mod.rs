//! The C API (see include/ratelimit.h). The only module with `extern "C"`,
//! raw pointers and status codes: each function checks its pointers, calls
//! into `Limiter`, and translates the result. Every body runs behind
//! `ffi_boundary!`, so no panic crosses into C and nothing is printed.

#![allow(non_camel_case_types)]
// Exported functions take raw pointers from C by design; each one goes through
// the NULL checks of `boundary.rs` before any is dereferenced.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub(crate) mod boundary;
#[cfg(any(test, fuzzing))]
pub mod fault;
mod status;
#[cfg(test)]
mod tests;

use std::ffi::{c_char, c_int, CStr};
use std::mem::MaybeUninit;

use boundary::{fail, ffi_boundary, try_mut, try_ref, try_slice};
pub use status::*;

use crate::error::Error;
use crate::headers;
use crate::limiter::{Decision, Limiter, Stats};
use crate::metrics;
use crate::top::Which;

/// A rate limiter. Opaque: create it with rl_create(), free it with
/// rl_destroy(). One handle may be used by any number of threads at once.
pub struct rl_limiter {
    inner: Limiter,
}

/// The answer to one rl_check().
///
/// When the check is allowed, the fields describe the configured rate with the
/// least `remaining`; when denied, the rate that denied it (the one with the
/// longest `retry_after_ms` if several did). Ties go to the first rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rl_decision {
    /// 1: serve the request; 0: answer 429. Always 1 with `dry_run=on`, where
    /// `retry_after_ms > 0` marks a check that would have been denied.
    pub allowed: u32,
    /// Which configured rate decided (0-based, in config order).
    pub rate_index: u32,
    /// Quota of that rate: the bucket capacity (burst) or the window limit.
    pub limit: u64,
    /// Units still available in that rate after this call.
    pub remaining: u64,
    /// Milliseconds until that rate is back to its full quota (rounded up).
    pub reset_ms: u64,
    /// 0 when allowed; else milliseconds until the same cost can pass (rounded
    /// up), or UINT64_MAX if it never can (the cost is above the quota). With
    /// `dry_run=on` it is that of the real decision: nonzero (with
    /// `allowed == 1`) for a check that would have been denied.
    pub retry_after_ms: u64,
    /// That rate's period in milliseconds.
    pub window_ms: u64,
}

/// Counters of a limiter, from rl_stats_get(). What they cover depends on
/// the backend:
/// - memory: this handle.
/// - shm: `allowed`, `limited`, `keys` and `evictions` are REGION-WIDE: the
///   checks of every handle in every process sharing the region, since it
///   was created (they survive a worker's restart). `errors` counts this
///   handle's failed checks only; `local_denials` is 0.
/// - redis: `allowed`, `limited`, `errors` and `local_denials` count this
///   handle's checks (this process, not the fleet sharing the Redis);
///   `keys` and `evictions` are 0 (Redis expires the keys itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rl_stats {
    /// Checks answered allowed.
    pub allowed: u64,
    /// Checks answered 429.
    pub limited: u64,
    /// Checks that hit a backend error.
    pub errors: u64,
    /// Keys currently tracked (0 if the backend can't tell). A key whose
    /// state has expired (is a fresh key's) stays tracked, and counted, until
    /// rl_sweep() drops it or, once the table is full, a new key takes its
    /// place.
    pub keys: u64,
    /// Live (not yet expired) entries dropped to make room for new keys.
    pub evictions: u64,
    /// Checks denied locally without a round trip to the backend: with
    /// backend=redis, a key Redis denied is denied by this process until its
    /// retry_after has passed (the over-limit cache). Included in `limited`.
    /// Always 0 for memory and shm.
    pub local_denials: u64,
}

/// One key of rl_top(): a heavy hitter and the bounds of its count.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rl_top_entry {
    /// The key's first bytes; not NUL-terminated.
    pub key: [u8; 64],
    /// Bytes of `key` in use (<= 64).
    pub key_len: u32,
    /// 1 if the key was longer than 64 bytes (then `key` holds its first 64;
    /// keys are told apart by a hash of the whole key, so two long keys that
    /// share their first 64 bytes are two entries).
    pub truncated: u32,
    /// Estimated count for this key, never below the true one.
    pub count: u64,
    /// `count - error <= true count <= count`.
    pub error: u64,
}

/// rl_top(): rank keys by denied checks. Every denied check is counted, so
/// the bounds of each entry are exact (Space-Saving).
pub const RL_TOP_LIMITED: u32 = 1;
/// rl_top(): rank keys by all checks. With backend=memory and backend=shm
/// one check in 64 of each shard is counted, with weight 64: `count` and
/// `error` bound 64 x the key's sampled checks, an estimate of its checks
/// (off by about sqrt(64 x checks) more: 8% for a key with 10 000 checks,
/// 2.5% with 100 000); backend=redis counts every check.
pub const RL_TOP_ACTIVE: u32 = 2;

/// rl_metrics() flag: add the most denied keys as samples
/// `ratelimit_top_limited{key="..."}` (their rl_top(RL_TOP_LIMITED) counts).
pub const RL_METRICS_TOP_KEYS: u32 = 1;

/// rl_format_headers() flag: `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
/// `X-RateLimit-Reset` (delta seconds, rounded up).
pub const RL_HEADERS_LEGACY: u32 = 1;
/// rl_format_headers() flag: `RateLimit-Policy` and `RateLimit` as in
/// draft-ietf-httpapi-ratelimit-headers-10, policy name "default".
pub const RL_HEADERS_IETF: u32 = 2;
/// rl_format_headers() flag: `Retry-After` in whole seconds (rounded up), only
/// when the decision is a denial (`allowed == 0`) that can pass later: never
/// for a dry run's would-be denial, which is served.
pub const RL_HEADERS_RETRY_AFTER: u32 = 4;

/// The library's version as numbers, the same as rl_version() returns at run
/// time ("MAJOR.MINOR.PATCH") when the header matches the library: compare
/// them to detect a program built against another version's header.
pub const RL_VERSION_MAJOR: u32 = 0;
/// See RL_VERSION_MAJOR.
pub const RL_VERSION_MINOR: u32 = 1;
/// See RL_VERSION_MAJOR.
pub const RL_VERSION_PATCH: u32 = 0;

/// `s` as a decimal number, at compile time.
const fn decimal(s: &str) -> u32 {
    let (bytes, mut i, mut n) = (s.as_bytes(), 0, 0u32);
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "a version number is decimal");
        n = n * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    n
}

// The version macros are literals (cbindgen copies them into the header),
// Cargo.toml's version is the one source of truth: the library does not
// build when they differ.
const _: () = assert!(
    RL_VERSION_MAJOR == decimal(env!("CARGO_PKG_VERSION_MAJOR"))
        && RL_VERSION_MINOR == decimal(env!("CARGO_PKG_VERSION_MINOR"))
        && RL_VERSION_PATCH == decimal(env!("CARGO_PKG_VERSION_PATCH")),
    "RL_VERSION_MAJOR/MINOR/PATCH in src/ffi/mod.rs differ from Cargo.toml's version: update them and run `make header`"
);

impl From<Decision> for rl_decision {
    fn from(d: Decision) -> rl_decision {
        rl_decision {
            allowed: d.allowed as u32,
            rate_index: d.rate_index,
            limit: d.limit,
            remaining: d.remaining,
            reset_ms: d.reset_ms,
            retry_after_ms: d.retry_after_ms,
            window_ms: d.window_ms,
        }
    }
}

impl From<&rl_decision> for Decision {
    fn from(d: &rl_decision) -> Decision {
        Decision {
            allowed: d.allowed != 0,
            rate_index: d.rate_index,
            limit: d.limit,
            remaining: d.remaining,
            reset_ms: d.reset_ms,
            retry_after_ms: d.retry_after_ms,
            window_ms: d.window_ms,
        }
    }
}

impl From<Stats> for rl_stats {
    fn from(s: Stats) -> rl_stats {
        rl_stats {
            allowed: s.allowed,
            limited: s.limited,
            errors: s.errors,
            keys: s.keys,
            evictions: s.evictions,
            local_denials: s.local_denials,
        }
    }
}

/// Creates a limiter from a configuration string such as
/// `"rate=100/minute,1000/hour algorithm=token_bucket"`.
///
/// On success `*out` is a new handle and the result is RL_OK. On failure
/// `*out` is set to NULL, the result is negative (RL_ERR_CONFIG for a bad
/// string, RL_ERR_IO/RL_ERR_INCOMPATIBLE for a shared region that cannot be
/// used) and rl_last_error() says what and where, e.g. `unknown key "burts"`.
///
/// The configuration string: `key=value` tokens separated by whitespace
/// (spaces, tabs, newlines), in any order. An unknown key, a key given twice, an empty or bad value, and a
/// key that belongs to another backend are RL_ERR_CONFIG, naming the token.
///
/// | key          | values                                           | default            |
/// |--------------|--------------------------------------------------|--------------------|
/// | `rate`       | `LIMIT/PERIOD[,LIMIT/PERIOD...]`: 1 to 8 rates   | required (*)       |
/// | `algorithm`  | `token_bucket`, `fixed_window`, `sliding_window` | `token_bucket`     |
/// | `burst`      | 1 or more (token_bucket with a single rate)      | LIMIT              |
/// | `backend`    | `memory`, `shm`, `redis`                         | `memory`           |
/// | `on_error`   | `allow`, `deny`                                  | `allow`            |
/// | `capacity`   | 1 to 4294967296 keys (memory, shm)               | 100000             |
/// | `timeout_ms` | 1 to 60000 (shm, redis)                          | shm 1000, redis 50 |
/// | `name`       | POSIX shm name, e.g. `/api-limits` (shm)         | required (shm)     |
/// | `mode`       | octal, leading 0: `0600`, `0660`... (shm)        | `0600`             |
/// | `url`        | `redis://...`, `redis+cluster://...` (redis)     | required (redis)   |
/// | `prefix`     | key prefix, no whitespace (redis)                | `rl:`              |
/// | `top`        | 0 to 1024 keys per rl_top() ranking; 0 = off     | 32                 |
/// | `dry_run`    | `on`, `off`                                      | `off`              |
///
/// (*) except to attach to an existing shm region (below). Values hold no
/// control characters, nor invisible or direction-changing ones (zero-width
/// spaces, bidi overrides): RL_ERR_CONFIG.
///
/// - `rate`: LIMIT is a whole number >= 1; PERIOD is `[N]UNIT` with N >= 1
///   (default 1) and UNIT one of `ms`, `s` `sec` `second`, `m` `min`
///   `minute`, `h` `hour`, `d` `day`; at most 1000 days. E.g. `100/minute`,
///   `5/10s`, `10/s,1000/hour`. A check takes its cost from every rate or
///   from none. Required, except to attach to a shm region (below).
/// - `algorithm=token_bucket` (GCRA): a fresh key may spend `burst` units at
///   once; units come back evenly, one every PERIOD/LIMIT (rounded up to the
///   nanosecond); a bucket may take at most 2000 days to refill.
///   `fixed_window`: at most LIMIT units in each window of PERIOD;
///   `sliding_window`: the previous window's count, weighted by how much of
///   it overlaps the last PERIOD, plus the current one's, at most LIMIT.
///   Windows are aligned to multiples of PERIOD since the Unix epoch (a
///   minute window starts on the minute, a day window at 00:00 UTC).
/// - `on_error`: the decision rl_check() returns on a backend error (an shm
///   lock held past `timeout_ms`, Redis unreachable, timed out or failing).
///   Argument errors always deny.
/// - `capacity` (memory, shm): most keys tracked, allocated at rl_create()
///   (32 bytes per key for one token-bucket rate; more for windows and
///   several rates). When full, expired keys are reclaimed first, then the
///   live key closest to expiry is dropped (counted in `evictions`).
/// - `timeout_ms`: shm: longest an operation waits for a lock another
///   process holds (per process, not part of the region's configuration);
///   redis: longest a check waits on the network.
/// - `name` (shm): one leading '/', no other '/', 2 to 200 printable ASCII
///   characters. Processes that open the same name share one region; one
///   opened with another `rate`, `algorithm`, `burst`, `capacity` or `top`
///   is RL_ERR_INCOMPATIBLE; `timeout_ms`, `on_error` and `dry_run` are each
///   handle's own and may differ.
/// - `mode` (shm): permissions of a newly created region, octal with a
///   leading 0. A mode that lets others write (o+w, e.g. `0666`) is
///   RL_ERR_CONFIG: any local user could rewrite the limits.
/// - `url` (redis): `redis://[[user]:password@]host[:port][/db]` (port 6379
///   and db 0 by default) or `redis+cluster://[[user]:password@]host:port[,host:port...]`
///   for Redis Cluster; user and password may be percent-encoded; hosts are
///   names, IPv4 or bracketed IPv6 addresses. No TLS, Unix sockets or query
///   options. Credentials are never echoed in error messages (nor by
///   rl_describe(), which writes the password as `***`). rl_create()
///   does not connect: an unreachable server is not an error until a check.
///   LIMIT and `burst` are at most 2^50 with this backend, and a token bucket
///   at most one unit per microsecond.
/// - `prefix` (redis): put before every Redis key this limiter uses.
/// - `top`: keys tracked for rl_top() in each ranking (denied checks, all
///   checks), with Space-Saving bounds. Tracking costs memory (about
///   200 bytes x `top` per shard of the key table, up to 64 shards: 400 KB
///   at the defaults) and a few ns per denied check; `top=0` turns it off
///   and costs nothing. With backend=shm it is part of the region's
///   configuration (the counts live in the region), like `capacity`.
/// - `dry_run=on`: every check is decided and recorded as when enforcing
///   (a would-be denial consumes nothing and counts in `limited`), but
///   reported allowed: `allowed == 1 && retry_after_ms > 0` marks a would-be
///   429 (see rl_check()). Per handle: never part of an shm region's
///   configuration, so workers may switch a live region between dry run and
///   enforcing (by recreating their handles) and keep its state.
///
/// **Attach** (`backend=shm name=/x` without `rate=`): opens the existing
/// region `/x` with the limits stored in it (its `rate`, `algorithm`, `burst`,
/// `capacity` and `top`); creates nothing. Besides `backend` and `name` it
/// takes only the keys that are each handle's own: `timeout_ms`, `on_error`
/// and `dry_run`. `algorithm`, `burst`, `capacity`, `top` (which would
/// restate the region's configuration) and `mode` (which only applies to
/// creating one) are RL_ERR_CONFIG, naming the token. No region by that
/// name is RL_ERR_IO (naming it); an object that is not a region of this
/// library's layout version is RL_ERR_INCOMPATIBLE; a region still being
/// created is waited for (at most 2 s), as when opening one with `rate=`.
///
/// rl_create() also builds, once, the configuration's canonical form that
/// rl_describe() returns: every key that applies to the backend, defaults
/// included, in the order `rate algorithm burst capacity top backend name
/// mode url prefix timeout_ms on_error dry_run` (passwords as `***`).
///
/// With `backend=shm` the handle keeps one descriptor of the region open
/// (close-on-exec) until rl_destroy(): it identifies this handle's process to
/// the others, so closing it behind the library's back is like destroying
/// the handle. A handle made before fork() works in the child (a fork
/// handler gives the child's copy of the descriptor an identity of its own).
#[no_mangle]
pub extern "C" fn rl_create(config: *const c_char, out: *mut *mut rl_limiter) -> c_int {
    ffi_boundary! {
        let out = try_mut!(out);
        *out = std::ptr::null_mut();
        let config = try_ref!(config);
        // SAFETY: `config` is non-NULL and the caller promises a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(config) };
        let Ok(text) = text.to_str() else {
            return fail(Error::Config("the configuration string is not valid UTF-8".into()));
        };
        match Limiter::from_config_str(text) {
            Ok(inner) => {
                *out = Box::into_raw(Box::new(rl_limiter { inner }));
                RL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// Frees a limiter made by rl_create(). NULL is a no-op. No other thread may
/// be using the handle, and it must not be used afterwards.
#[no_mangle]
pub extern "C" fn rl_destroy(lim: *mut rl_limiter) {
    ffi_boundary! {
        if !lim.is_null() {
            // SAFETY: a non-NULL handle came from Box::into_raw in rl_create and
            // the caller promises it is destroyed once, when no one uses it.
            drop(unsafe { Box::from_raw(lim) });
        }
    }
}

/// May `key` spend `cost` units now? Fills `*out` and returns RL_OK.
///
/// `key` is `key_len` arbitrary bytes (NUL bytes included); it may be NULL
/// only when `key_len` is 0 (the empty key). `cost` units are taken
/// all-or-nothing from EVERY configured rate: a denied check consumes nothing.
/// `cost == 0` is a peek: it fills `*out` (allowed = 1, since zero units always
/// fit) and consumes nothing.
///
/// `*out` is always filled with a decision the caller can obey, even on error:
/// - an argument error (RL_ERR_NULL: a NULL `lim`, or a NULL `key` with
///   `key_len > 0`) is a DENIAL: `allowed = 0`, `retry_after_ms = 1000`,
///   whatever `on_error` says; nothing is consumed;
/// - a backend error (RL_ERR_BACKEND) follows the `on_error` setting:
///   `allowed = 1` and `retry_after_ms = 0` for allow (the default),
///   `allowed = 0` and `retry_after_ms = 1000` for deny;
/// - an internal error (RL_ERR_PANIC: a bug in the library, caught) gives
///   the same decision as a backend error.
///
/// With `dry_run=on` the check is decided and recorded exactly as when
/// enforcing (a would-be denial consumes nothing and counts in `limited`),
/// but `*out` says `allowed = 1`, its other fields those of the real
/// decision: `retry_after_ms > 0` marks a would-be 429. So does a backend
/// error with `on_error=deny` (`allowed = 1`, `retry_after_ms = 1000`).
/// Argument errors still deny: they are the caller's bug, not a decision.
///
/// In these error decisions `limit` and `window_ms` are those of the first
/// configured rate (0 when `lim` is NULL), `rate_index`, `remaining` and
/// `reset_ms` are 0. Only a NULL `out` leaves nothing to fill (RL_ERR_NULL).
///
/// Never blocks longer than the configured timeout. Allocates nothing for
/// the memory and shm backends.
#[no_mangle]
pub extern "C" fn rl_check(
    lim: *mut rl_limiter,
    key: *const std::ffi::c_void,
    key_len: usize,
    cost: u64,
    out: *mut rl_decision,
) -> c_int {
    ffi_boundary! {
        on_panic: after_panic(lim, out);
        check_into(lim, key, key_len, cost, out)
    }
}

/// rl_check()'s body, a function of its own: the boundary's closure is then
/// one call, inlined into rl_check, that passes the arguments in registers
/// (the whole body in the closure stayed a call, its arguments passed
/// through memory).
#[inline(never)]
fn check_into(
    lim: *mut rl_limiter,
    key: *const std::ffi::c_void,
    key_len: usize,
    cost: u64,
    out: *mut rl_decision,
) -> c_int {
    decide_into(lim, key, key_len, out, Op::Check(cost))
}

/// What rl_check() or rl_adjust() does to the key.
enum Op {
    Check(u64),
    Adjust(i64),
}

/// The body rl_check() and rl_adjust() share, inside their boundary: the
/// argument checks (each error after filling `*out` with a denial when
/// there is an `out`), then `op` on the limiter and the key, whose
/// decision goes into `*out` whatever the status. (`op` rather than a
/// closure: each caller's constant `op` picks its one arm, and the check
/// is inlined whole into rl_check, its decision written straight into `*out`.)
#[inline(always)]
fn decide_into(
    lim: *mut rl_limiter,
    key: *const std::ffi::c_void,
    key_len: usize,
    out: *mut rl_decision,
    op: Op,
) -> c_int {
    let out = try_mut!(out);
    if lim.is_null() {
        *out = argument_denial(None);
    }
    let lim = try_ref!(lim);
    if key.is_null() && key_len != 0 {
        *out = argument_denial(Some(lim));
    }
    let key = try_slice!(key, key_len);
    #[cfg(any(test, fuzzing))]
    fault::check_point();
    let decided = match op {
        Op::Check(cost) => lim.inner.check(key, cost),
        Op::Adjust(delta) => lim.inner.adjust(key, delta),
    };
    match decided {
        Ok(d) => {
            *out = d.into();
            RL_OK
        }
        Err((e, d)) => {
            *out = d.into();
            fail(e)
        }
    }
}

/// The decision that goes with an argument error: a denial, whatever
/// `on_error` says (a caller's bug must not fail open), with the first rate's
/// `limit` and `window_ms` when the limiter is known.
fn argument_denial(lim: Option<&rl_limiter>) -> rl_decision {
    let base = lim.map(|l| rl_decision::from(l.inner.error_decision())).unwrap_or_default();
    rl_decision {
        allowed: 0,
        rate_index: 0,
        remaining: 0,
        reset_ms: 0,
        retry_after_ms: crate::limiter::ERROR_RETRY_MS,
        ..base
    }
}

/// What rl_check() returns when its body panicked: RL_ERR_PANIC, with `*out`
/// (when there is one) holding the limiter's error decision (on_error), as
/// for a backend error. Runs outside the boundary, so whatever could panic
/// runs under a boundary of its own.
#[cold]
fn after_panic(lim: *mut rl_limiter, out: *mut rl_decision) -> c_int {
    if !out.is_null() {
        let decision = boundary::catch(|| {
            // SAFETY: non-NULL; the caller promises a live handle for the
            // duration of the call. Only the immutable configuration is read.
            (!lim.is_null()).then(|| rl_decision::from(unsafe { &*lim }.inner.error_decision()))
        })
        .flatten()
        .unwrap_or_else(|| argument_denial(None));
        // SAFETY: non-NULL, and the caller promises a writable rl_decision;
        // the body's borrow of it ended with the panic.
        unsafe { *out = decision };
    }
    RL_ERR_PANIC
}

/// Settles a cost after the fact: an LLM call reserved `prompt + max_tokens`
/// with rl_check(), then used more or fewer. Fills `*out` and returns RL_OK.
///
/// - `delta > 0` charges `delta` units to EVERY rate and is never denied: the
///   key may go over its limit (into debt), and its checks are then denied
///   until time pays the debt back (token bucket: at the refill rate;
///   windows: the excess counts in the current window, until it ends).
/// - `delta < 0` refunds `-delta` units, never past a fresh key's state (a
///   window refunds only units counted in the current window).
/// - `delta == 0` changes nothing (a peek).
///
/// `*out` describes the key AFTERWARDS: `allowed` = 1 if a check of cost 1
/// would pass now (else `retry_after_ms` says when it will), `remaining` =
/// units available now, `reset_ms` = until the rate is back to its full
/// quota (over a window when in debt). `INT64_MIN` and `INT64_MAX` are fine
/// (they saturate). Like a check, an adjust is shared by every process of
/// an shm region and every host of a Redis (one round trip); it is not
/// counted in rl_stats' `allowed` or `limited`.
///
/// With backend=redis a refund also forgets this handle's local over-limit
/// entry for the key; other processes' handles may still deny the key from
/// their own entries until the retry_after Redis gave them has passed.
///
/// Errors fill `*out` as rl_check() does: RL_ERR_NULL (NULL `lim`, or NULL
/// `key` with `key_len > 0`) and RL_ERR_INVALID (`lim` is a concurrency
/// limiter) deny; RL_ERR_BACKEND follows `on_error`.
#[no_mangle]
pub extern "C" fn rl_adjust(
    lim: *mut rl_limiter,
    key: *const std::ffi::c_void,
    key_len: usize,
    delta: i64,
    out: *mut rl_decision,
) -> c_int {
    ffi_boundary! {
        on_panic: after_panic(lim, out);
        decide_into(lim, key, key_len, out, Op::Adjust(delta))
    }
}

/// Takes one of `key`'s in-flight places on a concurrency limiter
/// (`concurrency=N lease=DURATION`) for the length of a lease. Fills `*out`
/// and `*lease`, returns RL_OK.
///
/// - allowed: `*lease` is a nonzero id; pass it to rl_release() when the
///   request ends (and to rl_renew() to hold on longer than a lease).
/// - denied (N leases held): `*lease` = 0 and `retry_after_ms` = until the
///   earliest held lease expires.
///
/// `limit` = N, `remaining` = free places after this call, `reset_ms` =
/// until every lease of the key has expired, `window_ms` = the lease length.
/// A lease nobody releases (its process crashed) frees its place when it
/// expires; nothing else is lost. With backend=shm the places are shared by
/// every process of the region; with backend=redis by the fleet, on the
/// server's clock. Counted in rl_stats' `allowed`/`limited` like a check.
///
/// Errors: RL_ERR_NULL (NULL `lim`, `lease` or `out`, or NULL `key` with
/// `key_len > 0`) and RL_ERR_INVALID (a rate limiter) deny with `*lease` = 0;
/// RL_ERR_BACKEND follows `on_error` with `*lease` = 0: an allowed request
/// then holds no lease (releasing 0 is harmless). With `dry_run=on` a
/// would-be denial is reported allowed, with `*lease` = 0.
#[no_mangle]
pub extern "C" fn rl_acquire(
    lim: *mut rl_limiter,
    key: *const std::ffi::c_void,
    key_len: usize,
    lease: *mut u64,
    out: *mut rl_decision,
) -> c_int {
    ffi_boundary! {
        on_panic: after_panic_acquire(lim, lease, out);
        // No lease until one is taken, whatever fails first.
        if !lease.is_null() {
            // SAFETY: non-NULL, and the caller promises a writable uint64_t.
            unsafe { *lease = 0 };
        }
        let out = try_mut!(out);
        if lim.is_null() || lease.is_null() {
            *out = argument_denial(None);
        }
        let lim = try_ref!(lim);
        if lease.is_null() {
            *out = argument_denial(Some(lim));
        }
        let lease = try_mut!(lease);
        if key.is_null() && key_len != 0 {
            *out = argument_denial(Some(lim));
        }
        let key = try_slice!(key, key_len);
        #[cfg(any(test, fuzzing))]
        fault::check_point();
        match lim.inner.acquire(key) {
            Ok((d, id)) => {
                *out = d.into();
                *lease = id;
                RL_OK
            }
            Err((e, d)) => {
                *out = d.into();
                fail(e)
            }
        }
    }
}

/// rl_acquire()'s panic answer: as rl_check()'s, and no lease.
#[cold]
fn after_panic_acquire(lim: *mut rl_limiter, lease: *mut u64, out: *mut rl_decision) -> c_int {
    if !lease.is_null() {
        // SAFETY: non-NULL, and the caller promises a writable uint64_t;
        // the body's borrow of it ended with the panic.
        unsafe { *lease = 0 };
    }
    after_panic(lim, out)
}

/// Extends a lease from rl_acquire() to a whole lease length from now (for
/// a stream that runs longer than one lease). Returns 1 if the lease was
/// held, 0 if it had expired or been released, or never existed (harmless:
/// the caller no longer holds a place and should stop or acquire again),
/// or a negative status (RL_ERR_NULL, RL_ERR_INVALID on a rate limiter,
/// RL_ERR_BACKEND).
#[no_mangle]
pub extern "C" fn rl_renew(lim: *mut rl_limiter, key: *const std::ffi::c_void, key_len: usize, lease: u64) -> c_int {
    ffi_boundary! {
        let lim = try_ref!(lim);
        let key = try_slice!(key, key_len);
        match lim.inner.renew(key, lease) {
            Ok(held) => held as c_int,
            Err(e) => fail(e),
        }
    }
}

/// Frees a lease from rl_acquire(). Returns 1 if the lease was held, 0 if it
/// had expired or been released already, or is 0 or forged (all harmless:
/// nothing else is freed), or a negative status (RL_ERR_NULL,
/// RL_ERR_INVALID on a rate limiter, RL_ERR_BACKEND).
#[no_mangle]
pub extern "C" fn rl_release(lim: *mut rl_limiter, key: *const std::ffi::c_void, key_len: usize, lease: u64) -> c_int {
    ffi_boundary! {
        let lim = try_ref!(lim);
        let key = try_slice!(key, key_len);
        match lim.inner.release(key, lease) {
            Ok(held) => held as c_int,
            Err(e) => fail(e),
        }
    }
}

/// Drops every entry whose state has expired (is the same as a fresh key's);
/// returns how many, or a negative status. Dropping an expired entry never
/// changes a future decision. Safe to call from any thread at any time, e.g.
/// from a timer once a minute.
#[no_mangle]
pub extern "C" fn rl_sweep(lim: *mut rl_limiter) -> i64 {
    ffi_boundary! {
        let lim = try_ref!(lim);
        match lim.inner.sweep() {
            Ok(n) => n as i64,
            Err(e) => fail(e) as i64,
        }
    }
}

/// Forgets `key`: its next check starts fresh. Resetting an unknown key is
/// RL_OK. `key` may be NULL only when `key_len` is 0.
#[no_mangle]
pub extern "C" fn rl_reset(lim: *mut rl_limiter, key: *const std::ffi::c_void, key_len: usize) -> c_int {
    ffi_boundary! {
        let lim = try_ref!(lim);
        let key = try_slice!(key, key_len);
        match lim.inner.reset(key) {
            Ok(()) => RL_OK,
            Err(e) => fail(e),
        }
    }
}

/// Fills `*out` with the limiter's counters and returns RL_OK; see
/// rl_stats for what they cover on each backend (with backend=shm, the whole
/// region: every process sharing it). On an error
/// (a NULL `lim`: RL_ERR_NULL; with backend=shm, a lock held too long by a
/// stopped process: RL_ERR_BACKEND) `*out` is all zeros.
#[no_mangle]
pub extern "C" fn rl_stats_get(lim: *mut rl_limiter, out: *mut rl_stats) -> c_int {
    ffi_boundary! {
        let out = try_mut!(out);
        *out = rl_stats::default();
        let lim = try_ref!(lim);
        match lim.inner.stats() {
            Ok(s) => {
                *out = s.into();
                RL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// The heaviest keys of the limiter: fills `out[0 .. n)` with at most `cap`
/// entries, highest `count` first, and returns `n` (>= 0), or a negative
/// status.
///
/// `which` is RL_TOP_LIMITED (keys ranked by denied checks) or RL_TOP_ACTIVE
/// (by all checks; sampled with backend=memory and shm, see RL_TOP_ACTIVE).
/// The limiter tracks `top=N` keys per ranking (config, default 32, 0 =
/// off: then the result is always 0), so at most N entries come back. The
/// bounds are Space-Saving's: each entry's true count lies between
/// `count - error` and `count`, and any key whose true count exceeds
/// total / N (total: all denied checks for RL_TOP_LIMITED, rl_stats
/// `limited`; all checks for RL_TOP_ACTIVE) is listed.
///
/// Scope: this handle with backend=memory and backend=redis (this
/// process's checks, since rl_create); the whole region with backend=shm
/// (every process sharing it, since the region was created; the region
/// keeps the counts in its own memory, so they survive a worker's restart,
/// and a worker killed in the middle of an update leaves them within their
/// bounds).
///
/// Counts are history: rl_reset() of a key does not clear them.
///
/// `cap == 0` writes nothing and returns 0 (`out` may then be NULL): to get
/// every tracked key, pass `cap` = N. Returns RL_ERR_NULL for a NULL `lim`
/// or a NULL `out` with `cap > 0`, RL_ERR_INVALID for a `which` other than
/// RL_TOP_LIMITED or RL_TOP_ACTIVE, and with backend=shm RL_ERR_BACKEND if a
/// shard's lock is held past `timeout_ms` by a stopped process;
/// rl_last_error() names the problem. Allocates; meant for an operator's
/// tools and metrics, not for every request.
#[no_mangle]
pub extern "C" fn rl_top(lim: *mut rl_limiter, which: u32, out: *mut rl_top_entry, cap: usize) -> i64 {
    ffi_boundary! {
        let lim = try_ref!(lim);
        let which = match which {
            RL_TOP_LIMITED => Which::Limited,
            RL_TOP_ACTIVE => Which::Active,
            _ => {
                let why = format!("argument \"which\" is {which}: expected RL_TOP_LIMITED (1) or RL_TOP_ACTIVE (2)");
                return fail(Error::Invalid(why)) as i64;
            }
        };
        if cap == 0 {
            return 0;
        }
        if out.is_null() {
            boundary::set_last_error("argument \"out\" is NULL but \"cap\" is not 0");
            return RL_ERR_NULL as i64;
        }
        match lim.inner.top(which, cap) {
            Ok(entries) => {
                let n = entries.len().min(cap);
                for (i, e) in entries.iter().take(n).enumerate() {
                    let entry = rl_top_entry {
                        key: e.key,
                        key_len: e.key_len,
                        truncated: e.truncated as u32,
                        count: e.count,
                        error: e.error,
                    };
                    // SAFETY: `out` is non-NULL and the caller promises
                    // `cap` writable entries; i < n <= cap.
                    unsafe { out.add(i).write(entry) };
                }
                n as i64
            }
            Err(e) => fail(e) as i64,
        }
    }
}

/// Writes the limiter's counters into `buf` as Prometheus metrics (the text
/// exposition format 0.0.4, the body of a `GET /metrics` answer served with
/// `Content-Type: text/plain; version=0.0.4`), NUL-terminated.
///
/// Every metric comes with `# HELP` and `# TYPE` lines:
///
/// | metric | type | value |
/// |--------|------|-------|
/// | `ratelimit_checks_total{decision="allowed"}` | counter | rl_stats `allowed` |
/// | `ratelimit_checks_total{decision="limited"}` | counter | rl_stats `limited` |
/// | `ratelimit_errors_total` | counter | rl_stats `errors` |
/// | `ratelimit_keys` | gauge | rl_stats `keys` (0 with backend=redis, which cannot tell) |
/// | `ratelimit_capacity` | gauge | `capacity=` (memory and shm only) |
/// | `ratelimit_evictions_total` | counter | rl_stats `evictions` |
/// | `ratelimit_local_denials_total` | counter | rl_stats `local_denials` (redis only) |
/// | `ratelimit_top_limited{key="..."}` | gauge | with RL_METRICS_TOP_KEYS: each rl_top(RL_TOP_LIMITED) entry's `count`, highest first |
///
/// The counts cover what rl_stats_get() and rl_top() cover: with
/// backend=shm the whole region (every process sharing it) except `errors`,
/// which counts this handle's failed checks; with memory and redis this handle.
///
/// `labels` is NULL (or "") for none, or `name="value"[,name="value"...]`,
/// put first in every sample, e.g. `zone="api",instance="a"` gives
/// `ratelimit_keys{zone="api",instance="a"} 12`. It is checked strictly:
/// label names match `[a-zA-Z_][a-zA-Z0-9_]*`, do not start with `__`, are
/// not given twice and are neither `decision` nor `key` (ours); values are
/// double-quoted UTF-8 without control characters, with the escapes `\\`,
/// `\"` and `\n` only; pairs are separated by one comma, without spaces,
/// and nothing follows the last. Anything else is RL_ERR_INVALID and
/// rl_last_error() names the problem.
///
/// Keys become `key` label values by one unambiguous encoding (the one
/// `rlctl` prints and reads): printable ASCII other than `\` as is, `\` as
/// the two characters `\\`, every other byte (newline, control, non-ASCII)
/// as the four characters `\xHH` (lower-case hex); that text is then
/// escaped as the format requires (each `\` doubled, `"` as `\"`). So the
/// byte 0xff appears in the exposition as `\\xff`, a backslash as `\\\\`
/// and a quote as `\"`: no key can end its label or inject a sample, and a
/// parser's label value, decoded, gives back the key's first 64 bytes (what
/// rl_top() keeps). Long keys that share their first 64 bytes are one
/// sample with the sum of their counts.
///
/// `flags` is 0 or RL_METRICS_TOP_KEYS; other bits are RL_ERR_INVALID.
///
/// snprintf semantics, like rl_format_headers(): returns the length the text
/// needs (without the NUL) and writes at most `buf_len` bytes, always
/// NUL-terminated when `buf_len > 0`; if the result is `>= buf_len` the
/// output is truncated and not usable. `buf` may be NULL when `buf_len` is
/// 0, to learn the length. The counts move between two calls, so the length
/// learnt is a hint: allocate more (say twice as much) and call again while
/// the result is `>= buf_len`. Without RL_METRICS_TOP_KEYS the text is well
/// under 2 KiB plus 7 times the length of `labels`; each top key adds at
/// most 400 bytes plus `labels`.
///
/// Errors (negative): RL_ERR_NULL for a NULL `lim` or a NULL `buf` with
/// `buf_len > 0`; RL_ERR_INVALID for bad `labels` or `flags`; with
/// backend=shm RL_ERR_BACKEND if a lock is held past `timeout_ms` by a
/// stopped process. On an error a non-NULL `buf` with `buf_len > 0` holds
/// the empty string. Allocates a little (the top keys' list); meant for a
/// scrape every few seconds, not for every request.
#[no_mangle]
pub extern "C" fn rl_metrics(
    lim: *mut rl_limiter,
    labels: *const c_char,
    flags: u32,
    buf: *mut c_char,
    buf_len: usize,
) -> i64 {
    ffi_boundary! {
        if !buf.is_null() && buf_len > 0 {
            // SAFETY: non-NULL, and the caller promises `buf_len >= 1`
            // writable bytes. The empty string until the text is written.
            unsafe { *buf = 0 };
        }
        let lim = try_ref!(lim);
        if flags & !RL_METRICS_TOP_KEYS != 0 {
            let why = format!("argument \"flags\" has unknown bits 0x{flags:x}: expected 0 or RL_METRICS_TOP_KEYS (1)");
            return fail(Error::Invalid(why)) as i64;
        }
        if buf.is_null() && buf_len > 0 {
            boundary::set_last_error("argument \"buf\" is NULL but \"buf_len\" is not 0");
            return RL_ERR_NULL as i64;
        }
        let labels = if labels.is_null() {
            metrics::Labels::NONE
        } else {
            // SAFETY: non-NULL, and the caller promises a NUL-terminated
            // string that lives for the duration of the call.
            let text = unsafe { CStr::from_ptr(labels) };
            match metrics::Labels::parse(text.to_bytes()) {
                Ok(l) => l,
                Err(e) => return fail(e) as i64,
            }
        };
        let snapshot = match lim.inner.metrics(flags & RL_METRICS_TOP_KEYS != 0) {
            Ok(s) => s,
            Err(e) => return fail(e) as i64,
        };
        let out: &mut [MaybeUninit<u8>] = if buf_len == 0 {
            &mut []
        } else {
            // SAFETY: `buf` is non-NULL (checked above) and the caller
            // promises `buf_len` writable bytes, not used elsewhere during
            // the call; as MaybeUninit they need not be initialised.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<MaybeUninit<u8>>(), buf_len) }
        };
        let mut sink = metrics::Sink::new(out);
        // A Sink never fails: it counts what does not fit.
        let _ = metrics::write(&mut sink, &snapshot, labels);
        sink.finish() as i64
    }
}

/// Writes the HTTP header lines for decision `d` into `buf`: each line
/// `Name: value\r\n`, the whole NUL-terminated.
///
/// `flags` is a combination of RL_HEADERS_LEGACY, RL_HEADERS_IETF and
/// RL_HEADERS_RETRY_AFTER; 0 means LEGACY | RETRY_AFTER. snprintf semantics:
/// returns the length the text needs (without the NUL) and writes at most
/// `buf_len` bytes, always NUL-terminated when `buf_len > 0`; if the result is
/// `>= buf_len` the output is truncated and not usable. `buf` may be NULL when
/// `buf_len` is 0, to learn the length. Returns RL_ERR_NULL for a NULL `d`
/// (or a NULL `buf` with `buf_len > 0`) and RL_ERR_INVALID for unknown flags;
/// on an error a non-NULL `buf` with `buf_len > 0` holds the empty string.
/// The text is never longer than 511 bytes.
///
/// A dry-run decision (`dry_run=on`: `allowed == 1` and `retry_after_ms > 0`,
/// a would-be 429) is formatted as what it is, an allowed request: its
/// `X-RateLimit-*`/`RateLimit` lines show the real `remaining` (often 0) and
/// reset, but it gets no `Retry-After`, which is written only for a decision
/// with `allowed == 0` (a client would wait on a limit nobody enforces).
#[no_mangle]
pub extern "C" fn rl_format_headers(d: *const rl_decision, flags: u32, buf: *mut c_char, buf_len: usize) -> i64 {
    ffi_boundary! {
        if !buf.is_null() && buf_len > 0 {
            // SAFETY: non-NULL, and the caller promises `buf_len >= 1`
            // writable bytes. The empty string until the text is written.
            unsafe { *buf = 0 };
        }
        let d = try_ref!(d);
        if flags & !(RL_HEADERS_LEGACY | RL_HEADERS_IETF | RL_HEADERS_RETRY_AFTER) != 0 {
            return fail(Error::Invalid(format!("unknown bits in flags 0x{flags:x}"))) as i64;
        }
        if buf.is_null() && buf_len > 0 {
            boundary::set_last_error("argument \"buf\" is NULL but \"buf_len\" is not 0");
            return RL_ERR_NULL as i64;
        }
        let flags = if flags == 0 { RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER } else { flags };
        let groups = headers::Groups {
            legacy: flags & RL_HEADERS_LEGACY != 0,
            ietf: flags & RL_HEADERS_IETF != 0,
            retry_after: flags & RL_HEADERS_RETRY_AFTER != 0,
        };
        let text = headers::format(&Decision::from(d), groups);
        // SAFETY: `buf` is non-NULL when `buf_len > 0` (checked above), and
        // the caller promises `buf_len` writable bytes there.
        unsafe { write_c_string(text.as_bytes(), buf, buf_len) }
    }
}

/// snprintf's contract, for the functions that write text into a caller's
/// buffer: copies as much of `text` as fits in `buf_len - 1` bytes, then a
/// NUL (nothing at all when `buf_len` is 0), and returns `text`'s whole
/// length.
///
/// # Safety
/// When `buf_len > 0`, `buf` must point to `buf_len` writable bytes.
unsafe fn write_c_string(text: &[u8], buf: *mut c_char, buf_len: usize) -> i64 {
    if buf_len > 0 {
        let n = text.len().min(buf_len - 1);
        // SAFETY: `buf` has `buf_len` writable bytes (the caller's promise);
        // we write `n + 1 <= buf_len` of them, from a slice that is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    // A text is far shorter than i64::MAX bytes (it is in memory).
    text.len() as i64
}

/// Writes the limiter's configuration, in canonical form, into `buf`, with
/// the snprintf semantics of rl_format_headers(): returns the length the
/// text needs (without the NUL), writes at most `buf_len` bytes, always
/// NUL-terminated when `buf_len > 0`; if the result is `>= buf_len` the
/// text is cut and not usable. `buf` may be NULL when `buf_len` is 0, to
/// learn the length. Returns RL_ERR_NULL for a NULL `lim` (or a NULL `buf`
/// with `buf_len > 0`); on an error a non-NULL `buf` with `buf_len > 0`
/// holds the empty string. Never fails otherwise, and allocates nothing.
///
/// The text is one line of `key=value` tokens separated by single spaces:
/// every key that applies to the limiter's backend, defaults included, in
/// the order `rate algorithm burst capacity top backend name mode url prefix
/// timeout_ms on_error dry_run`. Rates are written in the largest unit that
/// divides their period (`rate=100/min,5000/d`, `rate=5/10s`, `rate=7/250ms`),
/// `burst` only for a token bucket with a single rate, `mode` as four octal
/// digits. E.g. for `"rate=100/minute"`:
/// `rate=100/min algorithm=token_bucket burst=100 capacity=100000 top=32
/// backend=memory on_error=allow dry_run=off` (one line). Passing it to
/// rl_create() gives an equivalent limiter (with backend=shm, the same
/// region; one opened by attach, without `rate=`, is described with the
/// region's `rate`, `algorithm`, `burst`, `capacity` and `top`, and its
/// object's permissions as `mode`).
///
/// **Passwords are never written.** A `url=` password is written `***`
/// (`url=redis://alice:***@host:6379`), so the text is safe to print and
/// log (rlctl's `show` prints it). Such a text cannot recreate the limiter
/// as it is: rl_create() refuses a url whose password is exactly `***`
/// (RL_ERR_CONFIG, rather than a limiter that fails to authenticate at every
/// check) until the real password is put back in its place.
#[no_mangle]
pub extern "C" fn rl_describe(lim: *mut rl_limiter, buf: *mut c_char, buf_len: usize) -> i64 {
    ffi_boundary! {
        if !buf.is_null() && buf_len > 0 {
            // SAFETY: non-NULL, and the caller promises `buf_len >= 1`
            // writable bytes. The empty string until the text is written.
            unsafe { *buf = 0 };
        }
        let lim = try_ref!(lim);
        if buf.is_null() && buf_len > 0 {
            boundary::set_last_error("argument \"buf\" is NULL but \"buf_len\" is not 0");
            return RL_ERR_NULL as i64;
        }
        // SAFETY: `buf` is non-NULL when `buf_len > 0` (checked above), and
        // the caller promises `buf_len` writable bytes there.
        unsafe { write_c_string(lim.inner.describe().as_bytes(), buf, buf_len) }
    }
}

/// A static, human-readable description of a status code; never NULL.
#[no_mangle]
pub extern "C" fn rl_strerror(status: c_int) -> *const c_char {
    ffi_boundary! { keep_last_error; status::describe(status) }
}

/// This thread's last error message, or "" if the last rl_* call on this
/// thread succeeded. Every rl_* call except rl_last_error(), rl_strerror()
/// and rl_version() clears it first. The pointer is valid until this
/// thread's next rl_* call. Never NULL.
#[no_mangle]
pub extern "C" fn rl_last_error() -> *const c_char {
    ffi_boundary! { keep_last_error; boundary::last_error_ptr() }
}

/// The library's version, e.g. "0.1.0": RL_VERSION_MAJOR, RL_VERSION_MINOR
/// and RL_VERSION_PATCH of the header it was built with, joined by dots.
/// Static; never NULL.
#[no_mangle]
pub extern "C" fn rl_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the crate version is a C string"),
    };
    ffi_boundary! { keep_last_error; VERSION.as_ptr() }
}

/// Removes the shared-memory region `name` (e.g. "/api-limits") that
/// rl_create() made for `backend=shm name=...`. Returns RL_OK once it is gone.
///
/// Regions outlive the processes that use them (that is how limits survive a
/// worker's restart), and rl_destroy() never removes one: call this when the
/// whole service stops for good, typically from the master process that
/// created the region, or to start over with another configuration. Handles
/// that are still open keep working on the old memory, which the system frees
/// when the last of them is destroyed; the next rl_create() with this name
/// makes a new, empty region.
///
/// Returns RL_ERR_NULL for a NULL `name`, RL_ERR_INVALID for a string that is
/// not a POSIX shm name (one leading '/', no other '/', at most 200 printable
/// characters), RL_ERR_IO if there is no such region or it cannot be removed
/// (rl_last_error() says why, e.g. "No such file or directory").
#[no_mangle]
pub extern "C" fn rl_shm_unlink(name: *const c_char) -> c_int {
    ffi_boundary! {
        let name = try_ref!(name);
        // SAFETY: `name` is non-NULL and the caller promises a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(name) };
        match crate::store::shm_unlink(name) {
            Ok(()) => RL_OK,
            Err(e) => fail(e),
        }
    }
}
