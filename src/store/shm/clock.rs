//! The time every process of a region agrees on.
//!
//! `CLOCK_MONOTONIC` is one clock for the whole host (unlike `std::time::Instant`
//! values, which cannot be shared between processes), never stepped by NTP or
//! by an operator changing the date. The region's creator stores
//! `CLOCK_REALTIME - CLOCK_MONOTONIC` in the header once; every process adds it
//! to its monotonic reading, so all of them number time from the Unix epoch
//! alike and aligned windows start on the same wall-clock boundaries (a minute
//! window on the minute) in every worker.
//!
//! Reading `CLOCK_MONOTONIC` costs ~21 ns here, more than a third of a check,
//! so it is read at most about once per millisecond per process: each reading
//! is the last `CLOCK_MONOTONIC` *anchor* plus the time-stamp counter's advance
//! since it (`quanta`'s calibrated TSC, ~9 ns; `quanta` falls back to
//! `CLOCK_MONOTONIC` itself where the TSC is unusable, and this clock reads
//! `CLOCK_MONOTONIC` on every call where the counter's calibration was found
//! off, see `src/clock.rs`). An anchor older than
//! `REANCHOR_NS` (or a counter that went backwards) is replaced by a fresh
//! `CLOCK_MONOTONIC` reading, which is returned as it is (and made the anchor
//! only if the counter readings around it are within `BRACKET_NS`: a thread
//! preempted between them would make an anchor that runs ahead). So a reading
//! is off `CLOCK_MONOTONIC` by at most the calibration error (parts per
//! million) over one millisecond, plus that bracket: at most microseconds,
//! nanoseconds on a quiet host, in every process alike. Where a new anchor
//! lands a few nanoseconds behind the previous extrapolation, time steps back
//! by that much; the algorithms take that in their stride, as they do the
//! memory backend's cross-thread TSC readings (see `src/clock.rs`).

use std::sync::atomic::{fence, AtomicU64, Ordering};

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Longest extrapolation from one `CLOCK_MONOTONIC` reading.
const REANCHOR_NS: u64 = 1_000_000;

/// Longest time between the two counter readings around an anchor's
/// `CLOCK_MONOTONIC` reading (~30 ns unless the thread was preempted).
const BRACKET_NS: u64 = 10_000;

/// The region's clock: monotonic nanoseconds numbered from the Unix epoch.
#[derive(Debug)]
pub struct SharedClock {
    offset_ns: u64,
    tsc: quanta::Clock,
    /// Whether `tsc`'s calibration is used (`crate::clock::counter_trusted`);
    /// if not, every reading is a `CLOCK_MONOTONIC` reading.
    trusted: bool,
    /// A seqlock over the anchor (even: stable; odd: being rewritten).
    seq: AtomicU64,
    /// The anchor: a counter reading, and the clock's reading then
    /// (`CLOCK_MONOTONIC` plus the offset, added once per anchor).
    anchor_raw: AtomicU64,
    anchor_ns: AtomicU64,
}

impl SharedClock {
    /// The offset a new region stores: wall-clock time minus monotonic time, now.
    pub fn epoch_offset_now() -> u64 {
        let mono = read(libc::CLOCK_MONOTONIC);
        read(libc::CLOCK_REALTIME).wrapping_sub(mono)
    }

    /// The clock, anchored once already unless that anchor's readings were
    /// too far apart (then the first reading anchors it).
    pub fn new(offset_ns: u64) -> SharedClock {
        let tsc = quanta::Clock::new();
        let clock = SharedClock {
            offset_ns,
            trusted: crate::clock::counter_trusted(&tsc),
            tsc,
            seq: AtomicU64::new(0),
            anchor_raw: AtomicU64::new(0),
            anchor_ns: AtomicU64::new(0),
        };
        clock.reanchor();
        clock
    }

    #[inline]
    pub fn now(&self) -> u64 {
        #[cfg(fuzzing)]
        if let Some(now) = crate::clock::fuzz_now() {
            return now;
        }
        if !self.trusted {
            return read(libc::CLOCK_MONOTONIC).wrapping_add(self.offset_ns);
        }
        let seq = self.seq.load(Ordering::Acquire);
        let anchor_raw = self.anchor_raw.load(Ordering::Relaxed);
        let anchor_ns = self.anchor_ns.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if seq & 1 == 0 && self.seq.load(Ordering::Relaxed) == seq {
            let raw = self.tsc.raw();
            // 0 if the counter is behind the anchor (another CPU's reading).
            let since = self.tsc.delta_as_nanos(anchor_raw, raw);
            if since < REANCHOR_NS {
                return anchor_ns.wrapping_add(since);
            }
        }
        self.reanchor()
    }

    /// Reads `CLOCK_MONOTONIC`, makes it the anchor (unless another thread is
    /// doing so) and returns it.
    #[cold]
    fn reanchor(&self) -> u64 {
        let raw = self.tsc.raw();
        let now = read(libc::CLOCK_MONOTONIC).wrapping_add(self.offset_ns);
        // The anchor pairs a counter reading with a clock reading taken at
        // the same moment. A thread preempted between the two would pair an
        // early counter with a late clock, and every reading from the anchor
        // would run ahead by the time it was away (a reading 450 µs ahead was
        // seen once on a loaded host, from this or from the calibration: see
        // src/clock.rs). So the counter is read again after the clock, and a pair
        // further apart than BRACKET_NS is not made the anchor: this reading
        // is the clock's own, and the next one tries again.
        let bracket = self.tsc.delta_as_nanos(raw, self.tsc.raw());
        let seq = self.seq.load(Ordering::Relaxed);
        if bracket < BRACKET_NS
            && seq & 1 == 0
            && self.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            fence(Ordering::Release);
            self.anchor_raw.store(raw, Ordering::Relaxed);
            self.anchor_ns.store(now, Ordering::Relaxed);
            self.seq.store(seq + 2, Ordering::Release);
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings stay close to CLOCK_MONOTONIC: within the calibration error
    /// over one re-anchoring interval. That is nanoseconds on a quiet host,
    /// but a calibration made while both cores were busy was once seen 23 µs
    /// off, so the bound is a tenth of the interval: it still catches an
    /// anchor that is not renewed or a torn one (off by up to a whole interval).
    /// Without a trusted counter every reading is CLOCK_MONOTONIC's (here
    /// the counter is stopped: were it read, time would stand still).
    #[test]
    fn without_the_counter_every_reading_is_the_clocks() {
        let (stopped, _mock) = quanta::Clock::mock();
        let c = SharedClock { tsc: stopped, trusted: false, ..SharedClock::new(7) };
        for _ in 0..1000 {
            let before = read(libc::CLOCK_MONOTONIC) + 7;
            let now = c.now();
            assert!(before <= now && now <= read(libc::CLOCK_MONOTONIC) + 7);
        }
    }

    #[test]
    fn tracks_the_monotonic_clock() {
        let c = SharedClock::new(0);
        let margin = REANCHOR_NS / 10;
        for _ in 0..2_000_000 {
            let before = read(libc::CLOCK_MONOTONIC);
            let now = c.now();
            let after = read(libc::CLOCK_MONOTONIC);
            assert!(now + margin >= before && now <= after + margin, "{before} {now} {after}");
        }
    }
}
