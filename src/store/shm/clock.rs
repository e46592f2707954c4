//! The time every process of a region agrees on.
//!
//! `CLOCK_MONOTONIC` is one clock for the whole host (unlike `std::time::Instant`
//! values, which cannot be shared between processes), never stepped by NTP or
//! by an operator changing the date. The region's creator stores
//! `CLOCK_REALTIME - CLOCK_MONOTONIC` in the header once; every process adds it
//! to its monotonic reading, so all of them number time from the Unix epoch
//! alike and aligned windows start on the same wall-clock boundaries (a minute
//! window on the minute) in every worker.

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The region's clock: monotonic nanoseconds numbered from the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct SharedClock {
    offset_ns: u64,
}

impl SharedClock {
    /// The offset a new region stores: wall-clock time minus monotonic time, now.
    pub fn epoch_offset_now() -> u64 {
        let mono = read(libc::CLOCK_MONOTONIC);
        read(libc::CLOCK_REALTIME).wrapping_sub(mono)
    }

    pub fn new(offset_ns: u64) -> SharedClock {
        SharedClock { offset_ns }
    }

    #[inline]
    pub fn now(&self) -> u64 {
        read(libc::CLOCK_MONOTONIC).wrapping_add(self.offset_ns)
    }
}
