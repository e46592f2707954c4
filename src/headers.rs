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

use std::fmt::Write;

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

/// A fixed-size buffer that `write!` can fill.
pub struct HeaderText {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl HeaderText {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for HeaderText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > MAX_LEN {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Formats the header lines of the groups asked for.
pub fn format(d: &Decision, groups: Groups) -> HeaderText {
    let mut out = HeaderText { buf: [0; MAX_LEN], len: 0 };
    // The widest text fits MAX_LEN, so these writes cannot fail.
    let _ = write_lines(&mut out, d, groups);
    out
}

fn write_lines(out: &mut HeaderText, d: &Decision, groups: Groups) -> std::fmt::Result {
    let reset = ceil_secs(d.reset_ms);
    if groups.legacy {
        write!(out, "X-RateLimit-Limit: {}\r\n", d.limit)?;
        write!(out, "X-RateLimit-Remaining: {}\r\n", d.remaining)?;
        write!(out, "X-RateLimit-Reset: {reset}\r\n")?;
    }
    if groups.ietf {
        write!(out, "RateLimit-Policy: \"default\";q={};w={}\r\n", d.limit, ceil_secs(d.window_ms))?;
        write!(out, "RateLimit: \"default\";r={};t={reset}\r\n", d.remaining)?;
    }
    if groups.retry_after && !d.allowed && d.retry_after_ms != u64::MAX {
        write!(out, "Retry-After: {}\r\n", ceil_secs(d.retry_after_ms))?;
    }
    Ok(())
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
}
