//! `backend=redis`: every server of a fleet shares the limits.
//!
//! Each check is ONE `FCALL` of the Lua script `check.lua` (its first argument the cost), which reads the
//! key's states, decides with the same algorithms as `algorithm/` (in
//! microsecond ticks, on the server's `TIME`, so all hosts agree), writes the
//! new states with a TTL until each is fresh again (a token bucket's rounded
//! up to a grid of min(bucket, 1 s): `check.lua`'s `store`; no key
//! lives forever; Redis drops them itself, so `rl_sweep` reclaims nothing and
//! returns 0) and answers. The script runs as a Redis Function (Redis >= 7:
//! the library `rl_<sha of check.lua>`, whose definitions are made once at
//! `FUNCTION LOAD` instead of on every call: `script.rs` `library`; about
//! 18% fewer instructions per check on the server). If the server lacks it
//! ("Function not found": it never had it, or was restarted or flushed) the
//! library is loaded (`FUNCTION LOAD REPLACE`, on every primary of a
//! cluster) and the call retried once. A server without functions (before
//! Redis 7: "unknown command"; or an ACL refusing FCALL, or refusing to
//! load the library) makes the handle use `EVALSHA` of the same script from
//! then on; if the server lost that script (`NOSCRIPT`) the same call is
//! retried once as `EVAL`, which also puts the script back in its cache. A
//! denial Redis gave is replayed locally until its `retry_after`
//! (`../denials.rs`): such checks cost no round trip.
//!
//! **Adjusts** (`rl_adjust`) are ONE `FCALL` (or `EVALSHA`) of the same script with the
//! operation "a<delta>": on the server's `TIME`, every rate of the key settles the
//! delta at once, as `algorithm::adjust_all` does in microsecond ticks (a
//! charge is never denied and may go into debt; a refund never goes past a
//! fresh key, and in a window takes back only the current window's count;
//! 0 peeks and writes nothing). The reply describes the key afterwards:
//! `allowed` = a check of cost 1 would pass, `retry_after` = until it
//! does, `remaining`/`reset` a peek's, the deciding rate chosen as for a
//! check of cost 1. Written keys get the TTL until they are fresh again (a
//! debt makes it longer); a refund back to a fresh state deletes them. An
//! `i64` delta is clamped to ±2^50 before it is sent, and a charge stops at
//! 2^51 µs of a bucket's debt or a window count of 2^51, so that every
//! number stays exact in Lua's doubles (`script::clamp_delta`, `rates.rs`):
//! a debt that long is "never" in practice. A refund forgets this handle's
//! over-limit cache entry for the key (after the round trip), and a reply
//! that says "denied" is cached like a check's denial of cost 1.
//! **Caveat:** other handles (other processes, other hosts) keep their own
//! caches: one that cached a denial of the key before the refund keeps
//! denying it locally until that cached `retry_after` passes (at most the
//! wait Redis told it; `rl_reset` on that handle clears it sooner).
//!
//! **Concurrency limiters** (`concurrency=N lease=DURATION`) keep one
//! sorted set per key, `{<prefix><key>}:c<N>/<lease_us>` (`script.rs`):
//! member = a lease id, score = the lease's expiry in µs of server time.
//! `rl_acquire`, `rl_renew` and `rl_release` are ONE `EVALSHA` each of
//! `leases.lua` (same NOSCRIPT→EVAL fallback), atomic on the server, so at
//! most N leases are held at once across every thread, process and host.
//! An acquire drops the expired members, adds one if fewer than N are held,
//! and answers `remaining` (free places after), `reset` (until the latest
//! expiry), `retry_after` (denied: until the earliest expiry). A renew
//! moves a held lease's expiry to now + lease; renew and release answer
//! whether the lease was held (an expired one is removed and answers 0).
//! The set is PEXPIRE'd to its latest expiry, so a process that dies
//! holding leases leaks nothing past them. Lease ids are nonzero u64s made
//! by the handle (a random seed, the pid and a counter through a bijection:
//! unique per process, the children of a fork() included; two processes
//! collide with a 2^-64 chance per pair of ids, and the script refuses a
//! live id, ZADD NX, so a new one is drawn). A lease
//! longer than 2^50 µs is refused at `rl_create` (the config grammar's
//! 1000-day cap keeps every lease far below). The store never runs the rate
//! script with no keys: `check` and `adjust` of a concurrency limiter are
//! `RL_ERR_INVALID` before any round trip (the limiter refuses them first).
//!
//! Files: `url.rs` (the `url=` forms), `rates.rs` (microsecond ticks and the
//! exact range of Lua numbers), `script.rs` + `check.lua` + `leases.lua`
//! (key names, arguments, replies), `pool.rs` (connections per process,
//! fork-safe), `../breaker.rs` (failing fast during an outage), `../denials.rs` (the local
//! over-limit cache).
//!
//! **Timeouts.** A check takes an idle connection or makes one (connect, and
//! AUTH/SELECT from the URL, bounded by `timeout_ms`), then gives its command
//! whatever is left of `timeout_ms` as read and write timeouts: a check never
//! waits on the network much longer than `timeout_ms` (host names are resolved
//! by the system resolver, which these timeouts do not bound: prefer
//! addresses). On any failure `Store::check` returns `Error::Backend`, the
//! limiter answers with `on_error` and counts it in `errors`. In cluster mode
//! the redis crate may follow a redirect or reconnect once within a call, so
//! a call can take up to about twice `timeout_ms`.
//!
//! **Creating a limiter never touches the network**: a malformed `url=` is
//! `RL_ERR_CONFIG`, an unreachable server is found out by the first check.
//! No thread is started.
//!
//! **Credentials.** No message carries the password of `url=`: the URL is
//! quoted with its credentials masked (`url.rs`), and the text of every
//! error from the redis crate or the server has the password masked too, in
//! case either ever echoes it.
//!
//! **Stats.** `allowed` and `limited` are counted by this process (all
//! processes share the limits, not the counters); `keys` is 0 (Redis cannot
//! say cheaply how many of its keys are ours) and `evictions` is 0 (Redis
//! expires keys by TTL; under `maxmemory` with an evicting policy it may drop
//! live keys without telling anyone). `local_denials` counts the checks the
//! over-limit cache answered; acquires count as allowed or limited, adjusts
//! in neither. `rl_top` too covers this handle's checks and acquires
//! (every decided check, local denials included, in a `LocalTop`), not the
//! fleet's: the fleet's heavy hitters are the sum of every host's lists.

mod pool;
pub mod rates;
pub mod script;
pub mod url;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{Cmd, ConnectionLike, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

use super::{wrong_kind, Store, StoreStats};

/// Consecutive failures (connect refused, timeout, connection reset) after
/// which a handle fails fast, without a network call (`store/breaker.rs`).
/// A reply that is an error from a live server does not count.
pub const THRESHOLD: u32 = 3;
/// How long a handle fails fast before one check probes Redis again.
pub const COOL_DOWN_MS: u64 = 1000;
/// Entries of the over-limit cache (64 bytes each).
const DENIALS: usize = 1024;
use super::breaker::{Admit, Breaker};
use super::denials::Denials;
use crate::algorithm::{Leases, Limits, Outcome, Rate, Verdict};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{quoted, scrub, Error};
use crate::keyhash::Seed;
use crate::top::{LocalTop, TopEntry, Which, DEFAULT_TOP};
use pool::Pool;
pub use rates::TICK_NS;
use script::{Op, Script};
use url::Target;

enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

enum Link {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

/// A connection, and the timeout its socket(s) were last given.
struct Conn {
    link: Link,
    /// None: not known (never set, or setting it failed).
    timeout: Option<Duration>,
}

impl Conn {
    fn new(link: Link) -> Conn {
        Conn { link, timeout: None }
    }

    /// Gives the socket(s) a read and write timeout of `d` rounded down to
    /// the millisecond (`socket_timeout`), unless they have that one
    /// already. Setting it costs two system calls, where a check otherwise
    /// makes three (a write, a read, and `Pool::take`'s `getpid`), and from
    /// one check to the next the time a call has left moves by
    /// microseconds, so the rounding skips them on almost every check.
    /// Rounded down, it is never longer than the `d` it is given (the time
    /// the call has left, or the 1 ms `call_with` gives at least); a command
    /// may give up at most 1 ms sooner than it would have. (A cluster
    /// connection gives the timeout it was last set to to the node
    /// connections it makes later, so the remembered one stays true.)
    fn set_timeout(&mut self, d: Duration) -> RedisResult<()> {
        let ms = socket_timeout(d);
        if self.timeout == Some(ms) {
            return Ok(());
        }
        self.timeout = None;
        match &self.link {
            Link::Single(c) => {
                c.set_read_timeout(Some(ms))?;
                c.set_write_timeout(Some(ms))?;
            }
            Link::Cluster(c) => {
                c.set_read_timeout(Some(ms))?;
                c.set_write_timeout(Some(ms))?;
            }
        }
        self.timeout = Some(ms);
        Ok(())
    }

    fn run(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let value = match &mut self.link {
            Link::Single(c) => c.req_command(cmd)?,
            Link::Cluster(c) => c.req_command(cmd)?,
        };
        value.extract_error()
    }
}

/// The socket timeout for a command with `left` to go: rounded down to
/// the millisecond, and at least 1 ms.
fn socket_timeout(left: Duration) -> Duration {
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// Whether an error means the connection (or the server) is unusable, as
/// opposed to an error reply from a live server.
fn is_connection_failure(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain,
        ) => true,
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType | ErrorKind::Parse => false,
        _ => true,
    }
}

/// Sends `evalsha`; if the server has lost the script (NOSCRIPT: it was
/// restarted or flushed), the same call as `EVAL` (made by `eval` only
/// then), which also puts the script back in its cache.
fn evalsha_or_eval(
    run: &mut dyn FnMut(&Cmd) -> RedisResult<Value>,
    evalsha: &Cmd,
    eval: impl FnOnce() -> Cmd,
) -> RedisResult<Value> {
    match run(evalsha) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => run(&eval()),
        result => result,
    }
}

/// Whether `e` says the server has no Redis Function by the name called:
/// it never had the library, or lost it (a restart, `FUNCTION FLUSH`).
fn is_missing_function(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && e.detail().is_some_and(|d| d.starts_with("Function not found"))
}

/// Whether `e` is `FUNCTION LOAD` refusing the library itself (its Lua).
fn is_refused_library(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && e.detail().is_some_and(|d| d.starts_with("Error registering functions") || d.starts_with("Error compiling"))
}

/// Whether `e` says the server takes no `FCALL`: a server before Redis 7
/// ("unknown command"), or an ACL that does not allow it (NOPERM).
fn is_without_functions(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::NoPerm) => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            e.detail().is_some_and(|d| d.to_ascii_lowercase().starts_with("unknown command"))
        }
        _ => false,
    }
}

/// `e` as `Error::Backend`, with `password` masked wherever the client or
/// the server may have echoed it.
fn backend(what: &str, e: &RedisError, password: Option<&str>) -> Error {
    Error::Backend(scrub(&format!("redis: {what}: {e}"), password))
}

/// splitmix64's finalizer: a bijection of u64 that scatters its input.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// State shared in Redis, one `FCALL` (or `EVALSHA`) per check.
pub struct RedisStore {
    /// In microsecond ticks; empty for a concurrency limiter.
    rates: Vec<Rate>,
    /// A concurrency limiter's N and lease length in µs (None: rates).
    leases: Option<Leases>,
    /// The concurrency script (`leases.lua`).
    leases_script: Script,
    /// Lease ids: a bijection of a per-handle counter, keyed by a random
    /// seed (see `next_lease_id`).
    lease_seed: u64,
    lease_counter: AtomicU64,
    client: Client,
    /// The password of `url=`, to mask in messages.
    password: Option<String>,
    prefix: Vec<u8>,
    timeout: Duration,
    script: Script,
    /// Whether checks and adjusts call the rate script as a Redis Function
    /// (`FCALL`); cleared for good, in favour of `EVALSHA`, when the server
    /// turns out to take none (see `eval`).
    functions: AtomicBool,
    pool: Pool<Conn>,
    breaker: Breaker,
    denials: Denials,
    /// The seed of the fingerprints `denials` is indexed by.
    denial_seed: Seed,
    /// Checks answered from `denials`.
    local_denials: AtomicU64,
    clock: Clock,
    allowed: AtomicU64,
    limited: AtomicU64,
    /// This handle's heavy hitters (`top=`; None for 0).
    top: Option<LocalTop>,
}

impl RedisStore {
    /// The store `config` describes (`backend=redis`). Validates `url=`,
    /// `prefix=` and the rates' range; connects to nothing.
    pub fn new(config: &Config) -> Result<RedisStore, Error> {
        let rates = rates::rates_in_us(config).map_err(Error::Config)?;
        let url = config.url.as_deref().ok_or_else(|| Error::Config("backend=redis needs \"url=\"".into()))?;
        let mut store = RedisStore::with_rates(rates, url, &config.prefix, config.timeout_ms)?;
        store.top = LocalTop::new(config.top)?;
        if let Some(c) = config.concurrency {
            // Periods are whole milliseconds: exact in µs.
            let lease = c.lease_ns.div_ceil(TICK_NS);
            if lease > rates::MAX_QUANTITY {
                return Err(Error::Config(format!(
                    "lease of {lease} µs is above 2^50 µs (backend=redis counts in microseconds with Lua doubles)"
                )));
            }
            store.leases = Some(Leases { slots: c.slots as usize, lease });
        }
        Ok(store)
    }

    /// A store for `rates` given in microsecond ticks (tests and benchmarks
    /// use this to run rates no config string can express).
    pub fn with_rates(rates: Vec<Rate>, url: &str, prefix: &str, timeout_ms: u64) -> Result<RedisStore, Error> {
        for r in &rates {
            rates::check(r).map_err(Error::Config)?;
        }
        if prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "bad value in {}: may not contain '{{' or '}}' (they make the Redis Cluster hash tag)",
                quoted(&format!("prefix={prefix}"))
            )));
        }
        let target = Target::parse(url).map_err(Error::Config)?;
        let refused = |e: RedisError| {
            let why = scrub(&e.to_string(), target.password.as_deref());
            Error::Config(format!("bad value in {}: {why}", quoted(&format!("url={url}"))))
        };
        let timeout = Duration::from_millis(timeout_ms.max(1));
        let client = if target.cluster {
            let nodes: Vec<_> = (0..target.nodes.len()).map(|i| target.connection_info(i)).collect();
            let mut b =
                ClusterClientBuilder::new(nodes).connection_timeout(timeout).response_timeout(timeout).retries(1);
            if let Some(u) = &target.username {
                b = b.username(u);
            }
            if let Some(p) = &target.password {
                b = b.password(p);
            }
            Client::Cluster(b.build().map_err(refused)?)
        } else {
            Client::Single(redis::Client::open(target.connection_info(0)).map_err(refused)?)
        };
        let seed = Seed::random().map_err(|e| Error::Io(format!("reading /dev/urandom for the hash seed: {e}")))?;
        let denials = Denials::new(DENIALS, &rates);
        Ok(RedisStore {
            rates,
            leases: None,
            leases_script: Script::leases(),
            lease_seed: seed.0[1],
            lease_counter: AtomicU64::new(0),
            client,
            password: target.password.clone(),
            prefix: prefix.as_bytes().to_vec(),
            timeout,
            script: Script::new(),
            functions: AtomicBool::new(true),
            pool: Pool::new(),
            // A probe's call takes at most about twice the timeout (a
            // cluster redirect), after which another check may probe.
            breaker: Breaker::new(THRESHOLD, COOL_DOWN_MS * 1_000_000, 2 * timeout.as_nanos() as u64 + 1_000_000),
            denials,
            denial_seed: seed,
            local_denials: AtomicU64::new(0),
            clock: Clock::new(),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            top: LocalTop::new(DEFAULT_TOP)?,
        })
    }

    fn connect(&self) -> RedisResult<Conn> {
        match &self.client {
            Client::Single(c) => c.get_connection_with_timeout(self.timeout).map(|c| Conn::new(Link::Single(c))),
            Client::Cluster(c) => c.get_connection().map(|c| Conn::new(Link::Cluster(Box::new(c)))),
        }
    }

    /// Runs `cmd` on a pooled connection within the timeout, minding the
    /// breaker.
    fn call(&self, what: &str, cmd: &Cmd) -> Result<Value, Error> {
        self.call_with(what, |run| run(cmd))
    }

    /// Runs `calls` on a pooled connection within the timeout, minding the
    /// breaker: `calls` gets `run`, which sends one command on that
    /// connection (with what is left of the timeout) and returns its reply,
    /// and decides what to send next from each reply (a fallback after an
    /// error reply, say). The last result is the call's.
    fn call_with(
        &self,
        what: &str,
        calls: impl FnOnce(&mut dyn FnMut(&Cmd) -> RedisResult<Value>) -> RedisResult<Value>,
    ) -> Result<Value, Error> {
        let start = Instant::now();
        let admit = self.breaker.admit(self.clock.now());
        if admit == Admit::No {
            return Err(Error::Backend(format!(
                "redis: not tried: {THRESHOLD} consecutive failures, failing fast for {COOL_DOWN_MS} ms before probing again"
            )));
        }
        let deadline = start + self.timeout;
        let mut conn = match self.pool.take() {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => self.pool.wrap(c),
                Err(e) => {
                    self.breaker.failure(self.clock.now());
                    return Err(backend("connecting", &e, self.password.as_deref()));
                }
            },
        };
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let result = calls(&mut |cmd| conn.conn.set_timeout(left()).and_then(|()| conn.conn.run(cmd)));
        match result {
            Ok(v) => {
                self.pool.put(conn);
                self.breaker.success();
                Ok(v)
            }
            Err(e) if is_connection_failure(&e) => {
                self.pool.fail(conn);
                self.breaker.failure(self.clock.now());
                Err(backend(what, &e, self.password.as_deref()))
            }
            Err(e) => {
                self.pool.put(conn);
                self.breaker.success();
                Err(backend(what, &e, self.password.as_deref()))
            }
        }
    }

    /// One call of the rate script: `FCALL` of its Redis Function while
    /// the server takes them, else `EVALSHA` (see the module docs).
    fn eval(&self, key: &[u8], op: Op, now_us: Option<u64>) -> Result<Verdict, Error> {
        let name = script::key_name(&self.prefix, key, &self.rates);
        let what = match op {
            Op::Check(_) => "check",
            Op::Adjust(_) => "adjust",
        };
        let value = self.call_with(what, |run| {
            if self.functions.load(Ordering::Relaxed) {
                let fcall = self.script.fcall(&name, &self.rates, op, now_us);
                match run(&fcall) {
                    Err(e) if is_missing_function(&e) => match run(&self.script.function_load()) {
                        Ok(_) => return run(&fcall),
                        Err(e) if is_connection_failure(&e) => return Err(e),
                        // A server that has FCALL but will not load the
                        // library (an ACL, a Lua it does not take): scripts
                        // from now on.
                        Err(e) if is_without_functions(&e) || is_refused_library(&e) => {
                            self.functions.store(false, Ordering::Relaxed)
                        }
                        // Anything else (out of memory, a replica) may pass:
                        // this call tries the script, the next the function.
                        Err(_) => {}
                    },
                    Err(e) if is_without_functions(&e) => self.functions.store(false, Ordering::Relaxed),
                    result => return result,
                }
            }
            let evalsha = self.script.evalsha(&name, &self.rates, op, now_us);
            evalsha_or_eval(run, &evalsha, || self.script.eval(&name, &self.rates, op, now_us))
        })?;
        script::parse_reply(&value, &self.rates).map_err(Error::Backend)
    }

    /// One check at a given server time in µs instead of `TIME`, bypassing
    /// the local over-limit cache and the counters. For the test vectors only.
    #[doc(hidden)]
    pub fn check_at(&self, key: &[u8], cost: u64, now_us: u64) -> Result<Verdict, Error> {
        self.eval(key, Op::Check(cost), Some(now_us))
    }

    /// One adjust at a given server time in µs instead of `TIME`, bypassing
    /// the local over-limit cache. For the test vectors only.
    #[doc(hidden)]
    pub fn adjust_at(&self, key: &[u8], delta: i64, now_us: u64) -> Result<Verdict, Error> {
        self.eval(key, Op::Adjust(delta), Some(now_us))
    }

    /// What this store limits, for `wrong_kind`'s message.
    fn limits(&self) -> Limits {
        match self.leases {
            Some(l) => Limits::Leases(l),
            None => Limits::Rates(self.rates.clone()),
        }
    }

    /// A fresh lease id: nonzero, and never the same twice in this process
    /// (the counter goes through a bijection of u64, splitmix64's mixer,
    /// after adding a start made of the handle's random seed and the pid,
    /// so that the children of a fork(), which inherit the seed and the
    /// counter, draw other ids than their parent and each other). Two
    /// processes draw the same id only by a 2^-64 chance per pair of ids,
    /// and even then the script refuses to reuse a live one (ZADD NX) and a
    /// new id is drawn.
    fn next_lease_id(&self) -> u64 {
        let start = self.lease_seed ^ mix64(u64::from(std::process::id()));
        loop {
            let n = self.lease_counter.fetch_add(1, Ordering::Relaxed);
            let z = mix64(start.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            if z != 0 {
                return z;
            }
        }
    }

    /// One call of the concurrency script on `key` (see `leases.lua`).
    fn leases_call(&self, what: &str, l: &Leases, key: &[u8], op: &str, id: u64) -> Result<Value, Error> {
        let name = script::lease_key_name(&self.prefix, key, l.slots, l.lease);
        let (lease, slots, id) = (l.lease.to_string(), l.slots.to_string(), id.to_string());
        let args: [&[u8]; 4] = [op.as_bytes(), lease.as_bytes(), slots.as_bytes(), id.as_bytes()];
        let evalsha = self.leases_script.leases_call(false, &name, &args);
        self.call_with(what, |run| {
            evalsha_or_eval(run, &evalsha, || self.leases_script.leases_call(true, &name, &args))
        })
    }

    /// The Redis key name of `key` on a concurrency limiter (see `script.rs`).
    pub fn lease_key_name(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.leases.map(|l| script::lease_key_name(&self.prefix, key, l.slots, l.lease))
    }

    /// The Redis key name of `key`: its rates' state, or its set of leases
    /// (see `script.rs`).
    pub fn key_name(&self, key: &[u8]) -> Vec<u8> {
        match self.lease_key_name(key) {
            Some(name) => name,
            None => script::key_name(&self.prefix, key, &self.rates),
        }
    }

    /// Checks answered by the local over-limit cache, without Redis.
    pub fn local_denials(&self) -> u64 {
        self.local_denials.load(Ordering::Relaxed)
    }

    /// Whether the handle is failing fast now (after repeated failures).
    pub fn failing_fast(&self) -> bool {
        self.breaker.is_open(self.clock.now())
    }
}

impl Store for RedisStore {
    const TICK_NS: u64 = TICK_NS;

    fn check(&self, key: &[u8], cost: u64) -> Result<Verdict, Error> {
        if self.rates.is_empty() {
            // (the limiter refuses it first; never run the script on no keys)
            return Err(wrong_kind(&self.limits(), "rl_check"));
        }
        let now = self.clock.now();
        let fp = (cost > 0).then(|| self.denial_seed.fingerprint(key));
        if let Some(fp) = fp {
            if let Some(verdict) = self.denials.lookup(fp, cost, now, TICK_NS) {
                self.local_denials.fetch_add(1, Ordering::Relaxed);
                self.limited.fetch_add(1, Ordering::Relaxed);
                if let Some(top) = &self.top {
                    top.record(key, false);
                }
                return Ok(verdict);
            }
        }
        let verdict = self.eval(key, Op::Check(cost), None)?;
        if verdict.outcome.allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
            if let Some(fp) = fp {
                self.denials.remember(fp, cost, now, TICK_NS, verdict);
            }
        }
        if let Some(top) = &self.top {
            top.record(key, verdict.outcome.allowed);
        }
        Ok(verdict)
    }

    /// One `FCALL` (or `EVALSHA`) of check.lua with the operation "a<delta>" (see the module docs).
    fn adjust(&self, key: &[u8], delta: i64) -> Result<Verdict, Error> {
        if self.rates.is_empty() {
            return Err(wrong_kind(&self.limits(), "rl_adjust"));
        }
        let now = self.clock.now();
        let fp = self.denial_seed.fingerprint(key);
        let result = self.eval(key, Op::Adjust(delta), None);
        if delta < 0 {
            // After the round trip (whatever it answered): a denial
            // remembered from before the refund must not outlive it here.
            self.denials.forget(fp);
        }
        let verdict = result?;
        if !verdict.outcome.allowed {
            // A key in debt: checks of it are denied until retry_after
            // (by this handle's own reckoning; another handle's refund is
            // the cache's known caveat, see the module docs).
            self.denials.remember(fp, 1, now, TICK_NS, verdict);
        }
        Ok(verdict)
    }

    /// One `EVALSHA` of leases.lua with op "a".
    fn acquire(&self, key: &[u8]) -> Result<(Verdict, u64), Error> {
        let Some(l) = self.leases else { return Err(wrong_kind(&self.limits(), "rl_acquire")) };
        // A collision of ids is a 2^-64 event: a few draws settle it.
        for _ in 0..4 {
            let id = self.next_lease_id();
            let value = self.leases_call("acquire", &l, key, "a", id)?;
            let Some(outcome): Option<Outcome> = script::parse_acquire(&value).map_err(Error::Backend)? else {
                continue;
            };
            if outcome.allowed {
                self.allowed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.limited.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(top) = &self.top {
                top.record(key, outcome.allowed);
            }
            let answer = Verdict { index: 0, outcome };
            return Ok((answer, if outcome.allowed { id } else { 0 }));
        }
        Err(Error::Backend("redis: acquire: the lease ids drawn were all taken".into()))
    }

    /// One `EVALSHA` of leases.lua with op "r" (none for id 0, never issued).
    fn renew(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Some(l) = self.leases else { return Err(wrong_kind(&self.limits(), "rl_renew")) };
        if lease == 0 {
            return Ok(false);
        }
        let value = self.leases_call("renew", &l, key, "r", lease)?;
        script::parse_held(&value).map_err(Error::Backend)
    }

    /// One `EVALSHA` of leases.lua with op "x" (none for id 0, never issued).
    fn release(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Some(l) = self.leases else { return Err(wrong_kind(&self.limits(), "rl_release")) };
        if lease == 0 {
            return Ok(false);
        }
        let value = self.leases_call("release", &l, key, "x", lease)?;
        script::parse_held(&value).map_err(Error::Backend)
    }

    /// `DEL` of the key's Redis key (all its rates), and of its local denial.
    fn reset(&self, key: &[u8]) -> Result<(), Error> {
        self.denials.forget(self.denial_seed.fingerprint(key));
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key_name(key));
        self.call("reset", &cmd).map(|_| ())
    }

    /// Redis expires keys by their TTL: nothing to reclaim here.
    fn sweep(&self) -> Result<u64, Error> {
        Ok(0)
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        Ok(StoreStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            keys: 0,
            evictions: 0,
        })
    }

    /// This handle's checks only (every check recorded, none sampled).
    fn top(&self, which: Which, max: usize) -> Result<Vec<TopEntry>, Error> {
        Ok(self.top.as_ref().map(|t| t.get(which, max)).unwrap_or_default())
    }

    fn local_denials(&self) -> u64 {
        self.local_denials.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Limiter;

    /// A socket timeout is never longer than the time left, is whole
    /// milliseconds (so checks a few microseconds apart ask for the same
    /// one, and it is set once), and is never 0 (no timeout at all).
    #[test]
    fn socket_timeouts_round_down_to_the_millisecond() {
        let ms = Duration::from_millis;
        assert_eq!(socket_timeout(ms(50)), ms(50));
        assert_eq!(socket_timeout(ms(50) - Duration::from_micros(3)), ms(49));
        assert_eq!(socket_timeout(ms(49) + Duration::from_micros(999)), ms(49));
        assert_eq!(socket_timeout(Duration::from_micros(1500)), ms(1));
        assert_eq!(socket_timeout(Duration::from_micros(10)), ms(1));
        assert_eq!(socket_timeout(Duration::ZERO), ms(1));
        assert_eq!(socket_timeout(Duration::MAX), ms(u64::MAX));
        for us in (1_000..3_000_000).step_by(997) {
            let left = Duration::from_micros(us);
            let t = socket_timeout(left);
            assert!(t <= left && left - t < ms(1), "{left:?} -> {t:?}");
        }
    }

    /// A password no message may contain, in any of its spellings.
    const PW: &str = "Zq7xSecretPW";

    fn assert_no_secret(context: &str, message: &str) {
        for spelling in [PW, "Zq7x", "SecretPW", "Zq7x%53ecretPW", "cretPW"] {
            assert!(!message.contains(spelling), "{context}: the message leaks the password: {message}");
        }
    }

    /// Every refusal of a `url=` (by the config parser, by the URL parser,
    /// by the redis crate) names the problem and never contains the password.
    #[test]
    fn refusals_never_contain_the_password() {
        let table: &[(&str, &str)] = &[
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@h:notaport", "bad port \"notaport\""),
            ("rate=1/s backend=redis url=redis://alice:Zq7xSecretPW@h:notaport", "redis://alice:***@h:notaport"),
            ("rate=1/s backend=redis url=redis://Zq7xSecretPW@h:0", "bad port"),
            ("rate=1/s backend=redis url=redis://:Zq7x%53ecretPW@h:1/x", "is not a number"),
            ("rate=1/s backend=redis url=redis://:Zq7x@SecretPW@h:99999", "bad port"),
            ("rate=1/s backend=redis url=redis://:Zq7x:SecretPW@h:1?db=1", "query strings"),
            ("rate=1/s backend=redis url=redis://:Zq7x?SecretPW@h:1", "query strings"),
            ("rate=1/s backend=redis url=redis://:Zq7x%zzSecretPW@h:1", "percent-encoding in the password"),
            ("rate=1/s backend=redis url=redis://bob%zz:Zq7xSecretPW@h:1", "percent-encoding in the user name"),
            ("rate=1/s backend=redis url=redis+cluster://u:Zq7xSecretPW@a:1,b:x", "bad port \"x\""),
            ("rate=1/s backend=redis url=redis+cluster://u:Zq7xSecretPW@a:1,b:2/0", "takes no database"),
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@a:1,b:2", "redis+cluster://"),
            ("rate=1/s backend=redis url=redis:/:Zq7xSecretPW@h:1", "expected redis://"),
            ("rate=1/s backend=redis url=rediss://:Zq7xSecretPW@h:1", "expected redis://"),
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@h:1 url=redis://:Zq7xSecretPW@h:2", "given twice"),
            ("rate=1/s backend=redis ulr=redis://:Zq7xSecretPW@h:1", "unknown key \"ulr\""),
            ("rate=1/s backend=redis redis://:Zq7xSecretPW@h:1", "is not key=value"),
            ("rate=1/s backend=redis redis://:Zq7x=SecretPW@h:1", "unknown key"),
            ("rate=1/s url=redis://:Zq7xSecretPW@h:1", "applies only to backend=redis"),
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@h:1 prefix=a{b", "prefix="),
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@h:1 capacity=5", "capacity"),
            ("rate=1/s backend=redis url=redis://:Zq7xSecretPW@h:1 mode=0600", "mode"),
        ];
        for (text, why) in table {
            let message = match Limiter::from_config_str(text) {
                Ok(_) => panic!("{text}: accepted"),
                Err(e @ Error::Config(_)) => e.to_string(),
                Err(e) => panic!("{text}: not a config error: {e:?}"),
            };
            assert!(message.contains(why), "{text}: the message does not say {why:?}: {message}");
            assert_no_secret(text, &message);
        }
    }

    /// A valid URL whose server cannot be reached: the connection error
    /// (and the Debug of the config and of the parsed URL) hide the password.
    #[test]
    fn connection_errors_never_contain_the_password() {
        for url in [
            "redis://:Zq7xSecretPW@127.0.0.1:1",
            "redis://alice:Zq7xSecretPW@127.0.0.1:1/3",
            "redis://:Zq7x%40SecretPW@127.0.0.1:1",
            "redis+cluster://alice:Zq7xSecretPW@127.0.0.1:1,127.0.0.1:2",
        ] {
            let text = format!("rate=1/s backend=redis url={url} timeout_ms=200 on_error=deny");
            let config = Config::parse(&text).unwrap();
            assert_no_secret(url, &format!("{config:?}"));
            assert_no_secret(url, &format!("{:?}", Target::parse(url).unwrap()));
            let store = RedisStore::new(&config).unwrap();
            for _ in 0..THRESHOLD + 1 {
                let e = store.check(b"k", 1).expect_err(url);
                let message = e.to_string();
                assert!(message.starts_with("redis: "), "{url}: {message}");
                assert_no_secret(url, &message);
            }
        }
    }

    #[test]
    fn creating_needs_no_server_but_a_good_url() {
        let ok = Config::parse("rate=5/s backend=redis url=redis://127.0.0.1:1").unwrap();
        assert!(RedisStore::new(&ok).is_ok());
        let ok = Config::parse("rate=5/s backend=redis url=redis+cluster://127.0.0.1:1,127.0.0.1:2").unwrap();
        assert!(RedisStore::new(&ok).is_ok());
        for (text, why) in [
            ("rate=5/s backend=redis url=redis:/x", "url="),
            ("rate=5/s backend=redis url=redis://h:1 prefix=a{b", "prefix="),
            ("rate=5000000/s backend=redis url=redis://h:1", "microsecond"),
        ] {
            match RedisStore::new(&Config::parse(text).unwrap()) {
                Err(Error::Config(m)) => assert!(m.contains(why), "{text}: {m}"),
                Err(e) => panic!("{text}: {e:?}"),
                Ok(_) => panic!("{text} accepted"),
            }
        }
    }
}
