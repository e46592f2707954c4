//! The governor column of `make bench`: governor's keyed limiter
//! (`DefaultKeyedRateLimiter<String>`: a DashMap of GCRA states, governor's
//! default quanta clock) through the cases of bench/cases.rs.
//!
//! Run by scripts/bench.sh; by hand: `cargo bench --features governor --bench governor -- [iterations [case]]`.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

#[path = "cases.rs"]
mod cases;

struct Governor(DefaultKeyedRateLimiter<String>);

impl cases::Limiter for Governor {
    fn check(&self, key: &String) -> bool {
        self.0.check_key(key).is_ok()
    }
}

fn main() {
    cases::main("governor (Rust)", |denying| {
        Governor(match denying {
            // 10^9 per second, burst 10^9: never denies at the speeds measured.
            false => RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())),
            true => RateLimiter::keyed(Quota::per_hour(NonZeroU32::new(1).unwrap())),
        })
    });
}
