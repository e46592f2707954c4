//! The time the memory backend runs on: nanoseconds numbered from the Unix
//! epoch (so that aligned windows start on round wall-clock times: a minute
//! window starts on the minute) and advancing monotonically.
//!
//! Reading the clock is a large part of a check: `clock_gettime(CLOCK_MONOTONIC)`
//! costs ~21 ns on a typical VM, more than the rest of the check. The clock is
//! therefore `quanta`'s: the CPU's invariant time-stamp counter (~9 ns),
//! scaled by a calibration against `CLOCK_MONOTONIC` made once per process
//! (under a millisecond, at the first `rl_create`). It never runs backwards in
//! a thread, is never stepped by NTP or date changes, and agrees with
//! `CLOCK_MONOTONIC` to a few parts per million. Where the CPU has no usable
//! invariant TSC, `quanta` falls back to `CLOCK_MONOTONIC` itself.
//!
//! That calibration is checked once per process ([`counter_trusted`]): a
//! thread preempted at the wrong instant of it (between the two readings it
//! pairs) can leave the counter's scale off by tens of percent for the life
//! of the process, which would loosen or tighten every limit by as much. A
//! scale more than 1% off is not used: both backends then read
//! `CLOCK_MONOTONIC` itself, exact but slower (~20-50 ns a reading).
//!
//! Readings of different threads taken within a fraction of a microsecond may
//! come out in either order (the counter is read without a serialising
//! fence), and a check reads the clock *before* it takes its key's lock: a
//! thread that waits for the lock, or is descheduled, then finds the key's
//! state written by checks that read the clock after it, its own reading
//! behind theirs by as long as it waited. The algorithms take that in their
//! stride, because time never runs backwards for a key: a check runs at the
//! later of its reading and the earliest time the stored state can have been
//! written at (a token bucket's tat minus its capacity, a window's start; see
//! `algorithm/`). Deciding at an earlier time than the true one can only
//! refuse more, never admit more; `remaining` never exceeds the quota; a peek
//! (cost 0) is still allowed; and `reset`/`retry_after` count from the time
//! the check ran at (a window's) or from the caller's reading (a token
//! bucket's, which may be in debt, see gcra.rs), neither later than the true
//! time, so they are never short. `tests/crossing_clocks.rs` holds both backends to this.
//!
//! The shm backend does not use this clock: its processes must agree, so it
//! re-anchors to `CLOCK_MONOTONIC` every millisecond (see `store/shm/clock.rs`).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic nanosecond clock numbered from the Unix epoch.
#[derive(Clone, Debug)]
pub struct Clock {
    source: quanta::Clock,
    /// Whether `source`'s calibration is used ([`counter_trusted`]); if
    /// not, readings come from `origin_instant` (`CLOCK_MONOTONIC`).
    trusted: bool,
    origin_raw: u64,
    origin_instant: Instant,
    origin_ns: u64,
}

impl Clock {
    /// A clock whose reading now is the current wall-clock time.
    pub fn new() -> Clock {
        let source = quanta::Clock::new();
        let trusted = counter_trusted(&source);
        let origin_raw = source.raw();
        let origin_instant = Instant::now();
        let origin_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Clock { source, trusted, origin_raw, origin_instant, origin_ns }
    }

    /// Nanoseconds since the Unix epoch, advancing monotonically.
    #[inline]
    pub fn now(&self) -> u64 {
        #[cfg(fuzzing)]
        if let Some(now) = fuzz_now() {
            return now;
        }
        if !self.trusted {
            return self.origin_ns + self.origin_instant.elapsed().as_nanos() as u64;
        }
        self.origin_ns + self.source.delta_as_nanos(self.origin_raw, self.source.raw())
    }
}

/// Whether `quanta`'s calibration of the time-stamp counter (made once per
/// process, shared by every `quanta::Clock`) agrees with `CLOCK_MONOTONIC`
/// to 1%: measured once per process, over a millisecond
/// ([`scale_agrees`]), at the first call.
pub(crate) fn counter_trusted(source: &quanta::Clock) -> bool {
    static TRUSTED: OnceLock<bool> = OnceLock::new();
    *TRUSTED.get_or_init(|| {
        let origin = source.raw();
        scale_agrees(|| source.delta_as_nanos(origin, source.raw()), 1_000_000)
    })
}

/// Whether a counter's nanoseconds (`counter_ns`: its reading, scaled, since
/// any fixed origin) advance as `CLOCK_MONOTONIC`'s do over `span_ns`, to
/// 1%. Each end is a `CLOCK_MONOTONIC` reading with counter readings just
/// before and after it, taken again until those are within 2 µs of each
/// other (a thread preempted between them would mismatch the pair); an end
/// that cannot be read so in 100 tries counts as a disagreement (the caller
/// then uses `CLOCK_MONOTONIC`, which is exact).
pub(crate) fn scale_agrees(counter_ns: impl Fn() -> u64, span_ns: u64) -> bool {
    const BRACKET_NS: u64 = 2_000;
    let pair = || {
        (0..100).find_map(|_| {
            let before = counter_ns();
            let at = Instant::now();
            let after = counter_ns();
            (after.saturating_sub(before) <= BRACKET_NS).then_some((before, at))
        })
    };
    let Some((counter_a, at_a)) = pair() else { return false };
    while (at_a.elapsed().as_nanos() as u64) < span_ns {
        std::hint::spin_loop();
    }
    let Some((counter_b, at_b)) = pair() else { return false };
    let counted = counter_b.saturating_sub(counter_a);
    let elapsed = at_b.duration_since(at_a).as_nanos() as u64;
    counted.abs_diff(elapsed) <= elapsed / 100 + 2 * BRACKET_NS
}

/// Fuzzing builds only (`cargo fuzz` passes `--cfg fuzzing`): the reading the
/// harness set with `fuzz_set_now`, 0 for none.
#[cfg(fuzzing)]
static FUZZ_NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fuzzing builds only: makes every clock of the library (this one and the shm
/// backend's) read `now` until the next call; 0 returns them to real time.
#[cfg(fuzzing)]
pub fn fuzz_set_now(now: u64) {
    FUZZ_NOW.store(now, std::sync::atomic::Ordering::Relaxed);
}

/// Fuzzing builds only: the reading set by `fuzz_set_now`, if any.
#[cfg(fuzzing)]
pub(crate) fn fuzz_now() -> Option<u64> {
    Some(FUZZ_NOW.load(std::sync::atomic::Ordering::Relaxed)).filter(|&now| now != 0)
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// `c.now()` bracketed by two CLOCK_MONOTONIC readings (as nanoseconds
    /// since `origin`): a thread preempted between them widens the bracket
    /// instead of skewing the comparison.
    fn bracketed(c: &Clock, origin: Instant) -> (u64, u64, u64) {
        let before = origin.elapsed().as_nanos() as u64;
        let now = c.now();
        (before, now, origin.elapsed().as_nanos() as u64)
    }

    /// Between two bracketed readings the clock advanced as CLOCK_MONOTONIC
    /// did, to `tolerance_ns` either side of the brackets' span.
    fn assert_advanced_as_monotonic(c: &Clock, pause: Duration, tolerance_ns: u64) -> u64 {
        let origin = Instant::now();
        let (a0, a, a1) = bracketed(c, origin);
        std::thread::sleep(pause);
        let (b0, b, b1) = bracketed(c, origin);
        let advanced = b - a;
        assert!(
            advanced + tolerance_ns >= b0 - a1 && advanced <= b1 - a0 + tolerance_ns,
            "advanced {advanced} ns; CLOCK_MONOTONIC {} to {} ns",
            b0 - a1,
            b1 - a0
        );
        b
    }

    #[test]
    fn advances_with_the_monotonic_clock_and_tracks_wall_time() {
        let c = Clock::new();
        // Within 1% of CLOCK_MONOTONIC over 200 ms (really: a few ppm).
        let b = assert_advanced_as_monotonic(&c, Duration::from_millis(200), 2_000_000);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(b) < 1_000_000_000);
    }

    /// The calibration check passes the real counter, and fails counters
    /// whose scale is wrong: one that does not advance (a calibration 100%
    /// off), one that runs twice as fast and one that runs at half speed
    /// (a calibration thrown off by a thread descheduled for half its span).
    /// The mocks are functions of CLOCK_MONOTONIC, so no scheduling can make
    /// them look right.
    #[test]
    fn a_miscalibrated_counter_is_not_trusted() {
        // The real counter passes, unless its calibration in this process
        // really is off (then a check over 50 ms finds it so too).
        let real = quanta::Clock::new();
        let origin = real.raw();
        let real_ns = || real.delta_as_nanos(origin, real.raw());
        assert!(scale_agrees(real_ns, 1_000_000) || !scale_agrees(real_ns, 50_000_000), "a good calibration refused");
        assert!(!scale_agrees(|| 0, 1_000_000));
        let start = Instant::now();
        let monotonic_ns = || start.elapsed().as_nanos() as u64;
        assert!(scale_agrees(monotonic_ns, 1_000_000), "CLOCK_MONOTONIC itself refused");
        assert!(!scale_agrees(|| 2 * monotonic_ns(), 5_000_000));
        assert!(!scale_agrees(|| monotonic_ns() / 2, 5_000_000));
        // 2% fast is refused; the margin is 1% plus the brackets' 4 µs.
        assert!(!scale_agrees(|| monotonic_ns() * 102 / 100, 5_000_000));
    }

    /// A clock whose counter is not trusted reads CLOCK_MONOTONIC, from
    /// the same epoch (here the counter is stopped: were it read, time would
    /// stand still).
    #[test]
    fn without_the_counter_it_is_the_monotonic_clock() {
        let (stopped, _mock) = quanta::Clock::mock();
        let c = Clock { source: stopped, trusted: false, ..Clock::new() };
        let b = assert_advanced_as_monotonic(&c, Duration::from_millis(50), 0);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(b) < 1_000_000_000);
    }

    /// Across threads, no reading comes out behind one that another thread
    /// took before it (beyond 100 µs: a margin, not a measurement; counters
    /// of different cores agree far more closely).
    #[test]
    fn threads_agree() {
        let c = std::sync::Arc::new(Clock::new());
        let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (c, last) = (c.clone(), last.clone());
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        let seen = last.load(std::sync::atomic::Ordering::SeqCst);
                        let now = c.now();
                        assert!(now + 100_000 >= seen, "{now} is 100 µs before {seen}");
                        last.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
