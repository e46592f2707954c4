//! Where the keys' states live. Every backend answers the same questions with
//! the same algorithms (`algorithm/`); only the home of the state differs.

mod breaker;
// The over-limit cache and its tally, the backends' own (and generic over
// where their entries live, which cbindgen cannot parse):
/// cbindgen:ignore
mod denials;
mod memory;
/// cbindgen:ignore
mod tally;
// Nothing in the shm backend but rl_shm_unlink (in ffi/) is part of the C API:
/// cbindgen:ignore
mod shm;
// Nothing in the Redis backend is part of the C API:
/// cbindgen:ignore
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use shm::{shm_unlink, ShmStore};

use crate::algorithm::{Limits, Verdict};
use crate::error::Error;
use crate::top::{TopEntry, Which};

/// The error for an operation of the other kind of limiter: `rl_check` or
/// `rl_adjust` on a concurrency limiter, a lease on a rate limiter.
pub(crate) fn wrong_kind(limits: &Limits, op: &str) -> Error {
    Error::Invalid(match limits {
        Limits::Rates(_) => {
            format!("{op} works on concurrency limiters (concurrency=N); this limiter has rates: use rl_check")
        }
        Limits::Leases(_) => format!(
            "{op} works on rate limiters (rate=); this is a concurrency limiter (concurrency=N): use rl_acquire, \
             rl_renew and rl_release"
        ),
    })
}

/// Counters a backend keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub allowed: u64,
    pub limited: u64,
    /// Keys currently tracked (0 if the backend cannot tell).
    pub keys: u64,
    /// Live entries dropped for room.
    pub evictions: u64,
}

/// One backend. Implementations are shared by all threads of the process.
///
/// A backend answers with a `Verdict` (algorithm/: the deciding rate and its
/// `Outcome`) whose durations are in the backend's ticks, `TICK_NS`
/// nanoseconds each; the limiter turns it into the caller's `Decision`, in
/// milliseconds. Three names, three layers: one rate's outcome, all rates'
/// verdict, the caller's decision.
pub trait Store: Send + Sync {
    /// Nanoseconds per tick of this backend's clock (memory and shm count
    /// nanoseconds, Redis microseconds).
    const TICK_NS: u64;

    /// `TICK_NS`, through a handle.
    fn tick_ns(&self) -> u64 {
        Self::TICK_NS
    }

    /// Takes `cost` units for `key` from every rate, all or nothing.
    fn check(&self, key: &[u8], cost: u64) -> Result<Verdict, Error>;
    /// Settles `delta` units after the fact on every rate of `key`
    /// (`rl_adjust`); the answer describes the key afterwards.
    fn adjust(&self, key: &[u8], delta: i64) -> Result<Verdict, Error>;
    /// Takes one of `key`'s in-flight places (`rl_acquire`): the answer, and
    /// the lease's id (0 when denied).
    fn acquire(&self, key: &[u8]) -> Result<(Verdict, u64), Error>;
    /// Extends a held lease (`rl_renew`): whether it was held.
    fn renew(&self, key: &[u8], lease: u64) -> Result<bool, Error>;
    /// Frees a lease (`rl_release`): whether it was held.
    fn release(&self, key: &[u8], lease: u64) -> Result<bool, Error>;
    /// Forgets `key`.
    fn reset(&self, key: &[u8]) -> Result<(), Error>;
    /// Drops expired entries; returns how many.
    fn sweep(&self) -> Result<u64, Error>;
    fn stats(&self) -> Result<StoreStats, Error>;
    /// The keys ranked by `which`, highest count first, at most `max` (and
    /// at most `top=`); empty when tracking is off.
    fn top(&self, which: Which, max: usize) -> Result<Vec<TopEntry>, Error>;
    /// Checks denied locally, without asking the backend (the Redis
    /// backend's over-limit cache); 0 for backends that have none.
    fn local_denials(&self) -> u64 {
        0
    }
}
