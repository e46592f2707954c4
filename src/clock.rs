//! The time the algorithms run on: nanoseconds that advance with
//! `CLOCK_MONOTONIC` (never stepped by NTP or an operator changing the date)
//! and are numbered from the Unix epoch, so that aligned windows start on
//! round wall-clock times (a minute window starts on the minute).
//!
//! The epoch offset is read once, when the clock is made; after that only the
//! monotonic clock is consulted.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic nanosecond clock numbered from the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_ns: u64,
}

impl Clock {
    /// A clock whose reading now is the current wall-clock time.
    pub fn new() -> Clock {
        let origin = Instant::now();
        let origin_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock { origin, origin_ns }
    }

    /// Nanoseconds since the Unix epoch, advancing monotonically.
    #[inline]
    pub fn now(&self) -> u64 {
        let d = self.origin.elapsed();
        self.origin_ns + d.as_secs() * 1_000_000_000 + d.subsec_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_tracks_wall_clock() {
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now();
        assert!(b - a >= 20_000_000, "{a} {b}");
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(b) < 1_000_000_000);
    }
}
