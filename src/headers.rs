//! Decisions as HTTP response header lines.
//!
//! - legacy: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//!   (delta seconds until the quota is full again, rounded up);
//! - IETF (draft-ietf-httpapi-ratelimit-headers-10): `RateLimit-Policy` with
//!   the quota `q` and window `w` in seconds, and `RateLimit` with the remaining
//!   units `r` and `t`, the seconds until the quota resets (rounded up). The
//!   policy is named `"default"`;
//! - `Retry-After` in whole seconds, rounded up, only on a denial that can
//!   pass later (none when the cost is more than the quota: waiting won't help).
//!
//! Lines end in CRLF. The text is built in a fixed stack buffer: no allocation.

use crate::limiter::Decision;

/// Which groups of header lines to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Groups {
    pub legacy: bool,
    pub ietf: bool,
    pub retry_after: bool,
}

/// Longest text `format` can produce: every line at its widest (u64 numbers).
pub(crate) const MAX_LEN: usize = 512;

/// A fixed-size buffer of header text. Numbers are written by hand, not by
/// `std::fmt`: an example server formats these lines for every response,
/// and `write!` cost four times as much as the rest of `rl_format_headers`.
pub struct HeaderText {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl HeaderText {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends `bytes`. The widest text fits MAX_LEN (see the test), so
    /// nothing is ever cut; were it, the line would be dropped, not split.
    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(room) = self.buf.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
            self.len = end;
        }
    }

    /// Appends `n` in decimal.
    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20]; // u64::MAX has 20 digits
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    /// Appends `name`, `n` and CRLF: one whole header line.
    fn line(&mut self, name: &[u8], n: u64) {
        self.push(name);
        self.push_number(n);
        self.push(b"\r\n");
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Formats the header lines of the groups asked for.
pub fn format(d: &Decision, groups: Groups) -> HeaderText {
    let mut out = HeaderText { buf: [0; MAX_LEN], len: 0 };
    let reset = ceil_secs(d.reset_ms);
    if groups.legacy {
        out.line(b"X-RateLimit-Limit: ", d.limit);
        out.line(b"X-RateLimit-Remaining: ", d.remaining);
        out.line(b"X-RateLimit-Reset: ", reset);
    }
    if groups.ietf {
        out.push(b"RateLimit-Policy: \"default\";q=");
        out.push_number(d.limit);
        out.line(b";w=", ceil_secs(d.window_ms));
        out.push(b"RateLimit: \"default\";r=");
        out.push_number(d.remaining);
        out.line(b";t=", reset);
    }
    if groups.retry_after && !d.allowed && d.retry_after_ms != u64::MAX {
        out.line(b"Retry-After: ", ceil_secs(d.retry_after_ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Groups = Groups { legacy: true, ietf: false, retry_after: true };
    const IETF: Groups = Groups { legacy: false, ietf: true, retry_after: false };
    const ALL: Groups = Groups { legacy: true, ietf: true, retry_after: true };

    fn text(d: &Decision, groups: Groups) -> String {
        String::from_utf8(format(d, groups).as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn legacy_ietf_and_retry_after() {
        let denied = Decision {
            allowed: false,
            rate_index: 0,
            limit: 100,
            remaining: 0,
            reset_ms: 41_001,
            retry_after_ms: 1001,
            window_ms: 60_000,
        };
        assert_eq!(
            text(&denied, DEFAULT),
            "X-RateLimit-Limit: 100\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 42\r\nRetry-After: 2\r\n"
        );
        assert_eq!(
            text(&denied, IETF),
            "RateLimit-Policy: \"default\";q=100;w=60\r\nRateLimit: \"default\";r=0;t=42\r\n"
        );
        let allowed = Decision { allowed: true, retry_after_ms: 0, ..denied };
        assert!(!text(&allowed, ALL).contains("Retry-After"));
        let never = Decision { retry_after_ms: u64::MAX, ..denied };
        assert!(!text(&never, ALL).contains("Retry-After"));
        let widest = Decision {
            limit: u64::MAX,
            remaining: u64::MAX,
            reset_ms: u64::MAX,
            window_ms: u64::MAX,
            retry_after_ms: u64::MAX - 1,
            ..denied
        };
        let t = text(&widest, ALL);
        assert!(t.ends_with("Retry-After: 18446744073709552\r\n"), "{t}");
    }

    /// The hand-written number formatting says what `std::fmt` would, for
    /// every decision tried: edges of every digit count and a spread between.
    #[test]
    fn numbers_as_std_fmt_writes_them() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 999, 1000, u64::MAX - 1, u64::MAX];
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            values.extend([p - 1, p, p + 1]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for (i, &v) in values.iter().enumerate() {
            let w = values[(i * 7 + 3) % values.len()];
            let d = Decision {
                allowed: i % 2 == 0,
                rate_index: 0,
                limit: v,
                remaining: w,
                reset_ms: v ^ w,
                retry_after_ms: w.wrapping_add(v) % u64::MAX,
                window_ms: w,
            };
            let reset = d.reset_ms.div_ceil(1000);
            let mut want = format!(
                "X-RateLimit-Limit: {}\r\nX-RateLimit-Remaining: {}\r\nX-RateLimit-Reset: {reset}\r\n\
                 RateLimit-Policy: \"default\";q={};w={}\r\nRateLimit: \"default\";r={};t={reset}\r\n",
                d.limit,
                d.remaining,
                d.limit,
                d.window_ms.div_ceil(1000),
                d.remaining
            );
            if !d.allowed {
                want += &format!("Retry-After: {}\r\n", d.retry_after_ms.div_ceil(1000));
            }
            assert_eq!(text(&d, ALL), want);
        }
    }
}
